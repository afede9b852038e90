import type { Log, LogFields } from "../log/log";
import type { SessionStore } from "../store/session-store";
import type { SweepCursor, SweepPage } from "../store/sweep-page";
import { expireRule, retentionRule, sweepLapsedClaims, type SessionPolicy } from "./session-rules";

export interface MaintenanceOptions {
  readonly store: SessionStore;
  readonly now: number;
  /** Active sessions idle longer than `policy.idleTtlMs` are expired. */
  readonly policy: SessionPolicy;
  /** Ended and expired sessions are deleted this long after they closed; 0 keeps them forever. */
  readonly retentionMs: number;
  /**
   * How long after its `now` the writes of a request or a run that closes a session may still land
   * (the longer of their timeouts, plus a database deadline: runtime/time-budget.ts
   * closingCopyLandsWithinMs): retention deletes no session whose close was recorded more recently,
   * so the copy its closer sent lands before the deletion (session-rules.ts `retentionRule`).
   */
  readonly closingCopyLandsWithinMs: number;
  /** `createSession` idempotency keys are forgotten after this long. */
  readonly createKeyTtlMs: number;
  /** Sessions handled per query; each query downloads whole session nodes, so keep it modest. */
  readonly batchSize: number;
  /**
   * Batches per kind of work in one run, per database instance the sessions' queries span
   * (`store.databaseInstances`); the next run continues where this one stopped.
   */
  readonly maxBatches: number;
  /** Where a step that failed is reported (see `MaintenanceSteps`). */
  readonly log: Log;
}

/** How far one step of a run may go: batches of `batchSize`, at most `maxBatches`, none started once `stopped` says so. */
export interface BatchBudget {
  readonly batchSize: number;
  readonly maxBatches: number;
  /** The step's time is up (its share of the run's: `MaintenanceSteps`); absent, the batch count alone bounds it. */
  readonly stopped?: () => boolean;
}

/** The time of a run: when it must stop starting batches, by `clock`, shared out among its `steps` (see `MaintenanceSteps`). */
export interface RunTime {
  readonly clock: () => number;
  readonly deadline: number;
  readonly steps: number;
}

/** The steps `runMaintenance` runs, each given its share of a run's time (a larger run adds its own: `RunTime.steps`). */
export const MAINTENANCE_STEPS = 6;

export interface MaintenanceReport {
  readonly expired: number;
  /**
   * Closed sessions whose journal this run copied to `messages` (their copy failed as they closed),
   * and which it took out of the flush's query. Every figure counts each change once between runs
   * at once: the run whose transaction made it (docs/sessions-over-time.md).
   */
  readonly flushed: number;
  readonly deleted: number;
  readonly keysForgotten: number;
  /** Claims of requests that died before their commit, dropped with the partial replies they left. */
  readonly lapsedClaims: number;
  /** Network addresses' session buckets unused for an hour (full again), removed. */
  readonly addressesForgotten: number;
  /** The steps that failed, by their figure's name, comma-separated (absent when none): each counts 0, and was logged. */
  readonly failed?: string;
}

/**
 * The scheduled clean-up: expires idle sessions, drops the claims and partial replies of requests
 * that died, deletes closed ones past retention, forgets old idempotency keys. Each change is a transaction or a delete that is harmless to repeat,
 * so two runs at once, or a run racing a user, do no harm: a session that became active again
 * is left alone. `steps`: those of a larger run this is part of, whose report names every failure.
 */
export async function runMaintenance(options: MaintenanceOptions, steps: MaintenanceSteps = new MaintenanceSteps(options.log)): Promise<MaintenanceReport> {
  const { store, now, batchSize } = options;
  const changed = <T>(step: string, results: readonly PromiseSettledResult<T>[], ids: readonly string[], count: (value: T) => number) =>
    countSettled(options.log, "maintenance change failed; the run goes on", results, (index) => ({ step, session_id: ids[index] }), count);
  // The sessions' queries span every database instance (store/sharded-store.ts), one batch over
  // all of them at a time: each instance gets the batches one alone would, or a run would leave
  // more behind with every instance added. The home instance's steps (keys, addresses) keep one share.
  const instances = Math.max(1, store.databaseInstances);
  const everywhere = (stopped: () => boolean): BatchBudget => ({ batchSize, maxBatches: options.maxBatches * instances, stopped });
  const home = (stopped: () => boolean): BatchBudget => ({ batchSize, maxBatches: options.maxBatches, stopped });
  // Idle *longer* than the TTL, as the request path judges it: activity at exactly the TTL keeps a session.
  const cutoff = now - options.policy.idleTtlMs - 1;
  const expired = await steps.run("expired", 0, (stopped) => inBatches(everywhere(stopped), (after) => store.findIdleSessions(cutoff, after, batchSize, stopped), async (ids) => {
    // Settled, not all: one session the database fails on must not stop the rest of the run.
    const results = await Promise.allSettled(ids.map((id) => store.updateState(id, expireRule(now, options.policy))));
    return changed("expired", results, ids, (ruled) => (ruled.found && ruled.outcome ? 1 : 0));
  }));
  // Counted when this run finished the copy: not when it failed again, nor when another run did.
  const flushed = await steps.run("flushed", 0, (stopped) => inBatches(everywhere(stopped), (after) => store.findUnflushedSessions(after, batchSize, stopped), async (ids) => {
    const results = await Promise.allSettled(ids.map((id) => store.flushSession(id)));
    return changed("flushed", results, ids, (done) => (done ? 1 : 0));
  }));
  // A request that died mid-reply left its claim and partial; a later message of its session drops them, else this.
  const lapsedClaims = await steps.run("lapsedClaims", 0, (stopped) => inBatches(everywhere(stopped), (after) => store.findLapsedClaims(now, after, batchSize, stopped), async (ids) => {
    const results = await Promise.allSettled(ids.map((id) => store.updateState(id, sweepLapsedClaims(now))));
    return changed("lapsedClaims", results, ids, (ruled) => (ruled.found ? ruled.outcome : 0));
  }));
  // A step even with no retention: the steps after it keep their share of the run's time.
  // The store checks the rule on each session's state before it deletes anything: one found past the
  // retention whose close was recorded a moment ago (an expiry of this run or another) stays, passed
  // by the page, for a run after its closing copy landed.
  const deletable = retentionRule(now - options.retentionMs, now - options.closingCopyLandsWithinMs);
  const deleted = await steps.run("deleted", 0, async (stopped) =>
    options.retentionMs > 0
      ? inBatches(everywhere(stopped), (after) => store.findClosedSessions(now - options.retentionMs, after, batchSize, stopped), async (ids) => {
          // Settled, as above: a failed delete is found again by the next run. Counted when this
          // run removed the session, not when another run (or an erasure) had already.
          const results = await Promise.allSettled(ids.map((id) => store.deleteSession(id, deletable)));
          return changed("deleted", results, ids, (done) => (done ? 1 : 0));
        })
      : 0,
  );
  const keysForgotten = await steps.run("keysForgotten", 0, (stopped) => deleteInBatches(home(stopped), () => store.deleteCreateKeys(now - options.createKeyTtlMs, batchSize)));
  // A bucket untouched for an hour has refilled: removing it changes no limit. The store checks
  // each again as it goes, so one a create took from since the query stays.
  const addressesForgotten = await steps.run("addressesForgotten", 0, (stopped) => deleteInBatches(home(stopped), () => store.deleteIdleAddresses(now - HOUR, batchSize)));
  return { expired, flushed, deleted, keysForgotten, lapsedClaims, addressesForgotten, ...steps.failures() };
}

const HOUR = 3_600_000;
/** The share of a run's time kept for each step (see `MaintenanceSteps`): with 8 steps, 7 later ones keep 35% from the first. */
const STEP_RESERVE = 1 / 20;

/**
 * The steps of one clean-up run, each settled on its own: a step that fails (a database deadline
 * on a query, say) is logged and counts 0, and the steps after it still run, so that one failing
 * part (an instance, the create keys, an erasure) never holds back the rest run after run. What
 * failed is named in the run's report as well (`failed`), beside the figures it logs.
 *
 * With a `time`, each step starts no batch once only the reserves of the steps after it are left
 * (a twentieth of the run each: STEP_RESERVE), and has at least its own reserve while the run's
 * time lasts. So a step with a large backlog (expiry over many instances) takes what the steps
 * after it leave unused, yet cannot take their time (the erasures, the device sweep).
 */
export class MaintenanceSteps {
  private readonly failed: string[] = [];
  private started = 0;
  /** Each step's reserve of the run's time. */
  private readonly reserve: number;

  constructor(
    private readonly log: Log,
    private readonly time?: RunTime,
  ) {
    this.reserve = time ? Math.max(0, time.deadline - time.clock()) * STEP_RESERVE : 0;
  }

  /** `work`'s result, or `fallback` when it failed (logged, and named in `failures`); `stopped` says when the step's time is up. */
  async run<T>(step: string, fallback: T, work: (stopped: () => boolean) => Promise<T>): Promise<T> {
    const stopped = this.share();
    try {
      return await work(stopped);
    } catch (error) {
      this.failed.push(step);
      this.log.error("maintenance step failed; the run goes on", {
        step,
        error: error instanceof Error ? error.name : typeof error,
        detail: error instanceof Error ? error.message : undefined,
      });
      return fallback;
    }
  }

  /** The time of the step that starts now: whether it is up. */
  private share(): () => boolean {
    const { time } = this;
    this.started += 1;
    if (!time) return () => false;
    const later = Math.max(0, time.steps - this.started);
    const until = Math.min(time.deadline, Math.max(time.clock() + this.reserve, time.deadline - later * this.reserve));
    return () => time.clock() >= until;
  }

  /** The report's `failed`: the failed steps, or nothing when every step ran. */
  failures(): { readonly failed?: string } {
    return this.failed.length === 0 ? {} : { failed: this.failed.join(",") };
  }
}

/**
 * What `results` count (`count`, each fulfilled one). Each failure is logged as `message`, with what
 * it was about (`about`): a record whose change fails every run (one the service cannot parse) is
 * passed by every run and waits for an operator, who learns of it here.
 */
export function countSettled<T>(log: Log, message: string, results: readonly PromiseSettledResult<T>[], about: (index: number) => LogFields, count: (value: T) => number): number {
  let total = 0;
  results.forEach((result, index) => {
    if (result.status === "fulfilled") {
      total += count(result.value);
      return;
    }
    const error: unknown = result.reason;
    log.warn(message, { ...about(index), error: error instanceof Error ? error.name : typeof error, detail: error instanceof Error ? error.message : undefined });
  });
  return total;
}

/** Runs `remove` (which deletes up to a batch and says how many) until a batch comes back short or the budget is spent. */
async function deleteInBatches(options: BatchBudget, remove: () => Promise<number>): Promise<number> {
  let total = 0;
  for (let batch = 0; batch < options.maxBatches && options.stopped?.() !== true; batch += 1) {
    const removed = await remove();
    total += removed;
    if (removed < options.batchSize) break;
  }
  return total;
}

/**
 * Runs `handle` on the keys of each page `find` answers, until a page comes back short or the
 * budget is spent. Each page starts after where the last one ended (`after`: its `next`), not from
 * the query's head again: what `handle` failed on (a change the database keeps refusing, a record
 * it cannot read) stays in the query among the oldest, and is passed here, tried once a run, while
 * the records behind it are reached; the next run meets it again. `find` answers from the oldest
 * when `after` is undefined.
 */
export async function inBatches(options: BatchBudget, find: (after: SweepCursor | undefined) => Promise<SweepPage>, handle: (keys: readonly string[]) => Promise<number>): Promise<number> {
  let total = 0;
  let after: SweepCursor | undefined;
  for (let batch = 0; batch < options.maxBatches && options.stopped?.() !== true; batch += 1) {
    const page = await find(after);
    total += await handle(page.keys);
    if (page.keys.length < options.batchSize) break;
    after = page.next;
  }
  return total;
}

/**
 * Reads with `read` a page at a time, each after the last one's `cursor`, and hands each page to
 * `visit` before reading the next, until a page comes back short ("done") or, before a page,
 * `stopped` says the pass's time is up ("stopped": the next run goes on from the first item left).
 */
export async function eachPage<T>(
  batchSize: number,
  stopped: () => boolean,
  read: (after: string | undefined) => Promise<readonly T[]>,
  cursor: (item: T) => string,
  visit: (page: readonly T[]) => Promise<void>,
): Promise<"done" | "stopped"> {
  let after: string | undefined;
  for (;;) {
    if (stopped()) return "stopped";
    const page = await read(after);
    const last = page.at(-1);
    after = last === undefined ? undefined : cursor(last);
    await visit(page);
    if (page.length < batchSize) return "done";
  }
}
