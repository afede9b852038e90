import type { Log } from "../log/log";
import type { SessionStore } from "../store/session-store";
import { expireRule, sweepLapsedClaims, type SessionPolicy } from "./session-rules";

export interface MaintenanceOptions {
  readonly store: SessionStore;
  readonly now: number;
  /** Active sessions idle longer than `policy.idleTtlMs` are expired. */
  readonly policy: SessionPolicy;
  /** Ended and expired sessions are deleted this long after they closed; 0 keeps them forever. */
  readonly retentionMs: number;
  /** `createSession` idempotency keys are forgotten after this long. */
  readonly createKeyTtlMs: number;
  /** Sessions handled per query; each query downloads whole session nodes, so keep it modest. */
  readonly batchSize: number;
  /** Batches per kind of work in one run; the next run continues where this one stopped. */
  readonly maxBatches: number;
  /** Where a step that failed is reported (see `MaintenanceSteps`). */
  readonly log: Log;
}

export interface MaintenanceReport {
  readonly expired: number;
  /** Closed sessions whose journal was copied to `messages` now (their copy failed as they closed). */
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
  // Idle *longer* than the TTL, as the request path judges it: activity at exactly the TTL keeps a session.
  const cutoff = now - options.policy.idleTtlMs - 1;
  const expired = await steps.run("expired", 0, () => inBatches(options, () => store.findIdleSessions(cutoff, batchSize), async (ids) => {
    // Settled, not all: one session the database fails on must not stop the rest of the run.
    const results = await Promise.allSettled(ids.map((id) => store.updateState(id, expireRule(now, options.policy))));
    return results.filter((result) => result.status === "fulfilled" && result.value.found && result.value.outcome).length;
  }));
  // A transaction that changes nothing still makes the store finish a closed session's copy.
  const flushed = await steps.run("flushed", 0, () => inBatches(options, () => store.findUnflushedSessions(batchSize), async (ids) => {
    const results = await Promise.allSettled(ids.map((id) => store.updateState(id, () => ({ outcome: undefined }))));
    return results.filter((result) => result.status === "fulfilled").length;
  }));
  // A request that died mid-reply left its claim and partial; a later message of its session drops them, else this.
  const lapsedClaims = await steps.run("lapsedClaims", 0, () => inBatches(options, () => store.findLapsedClaims(now, batchSize), async (ids) => {
    const results = await Promise.allSettled(ids.map((id) => store.updateState(id, sweepLapsedClaims(now))));
    return results.reduce((sum, result) => sum + (result.status === "fulfilled" && result.value.found ? result.value.outcome : 0), 0);
  }));
  const deleted =
    options.retentionMs > 0
      ? await steps.run("deleted", 0, () => inBatches(options, () => store.findClosedSessions(now - options.retentionMs, batchSize), async (ids) => {
          // Settled, as above: a failed delete is found again by the next run.
          const results = await Promise.allSettled(ids.map((id) => store.deleteSession(id)));
          return results.filter((result) => result.status === "fulfilled").length;
        }))
      : 0;
  const keysForgotten = await steps.run("keysForgotten", 0, () => deleteInBatches(options, () => store.deleteCreateKeys(now - options.createKeyTtlMs, batchSize)));
  // A bucket untouched for an hour has refilled: removing it changes no limit.
  const addressesForgotten = await steps.run("addressesForgotten", 0, () => deleteInBatches(options, () => store.deleteIdleAddresses(now - HOUR, batchSize)));
  return { expired, flushed, deleted, keysForgotten, lapsedClaims, addressesForgotten, ...steps.failures() };
}

const HOUR = 3_600_000;

/**
 * The steps of one clean-up run, each settled on its own: a step that fails (a database deadline
 * on a query, say) is logged and counts 0, and the steps after it still run, so that one failing
 * part (an instance, the create keys, an erasure) never holds back the rest run after run. What
 * failed is named in the run's report as well (`failed`), beside the figures it logs.
 */
export class MaintenanceSteps {
  private readonly failed: string[] = [];

  constructor(private readonly log: Log) {}

  /** `work`'s result, or `fallback` when it failed (logged, and named in `failures`). */
  async run<T>(step: string, fallback: T, work: () => Promise<T>): Promise<T> {
    try {
      return await work();
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

  /** The report's `failed`: the failed steps, or nothing when every step ran. */
  failures(): { readonly failed?: string } {
    return this.failed.length === 0 ? {} : { failed: this.failed.join(",") };
  }
}

/** Runs `remove` (which deletes up to a batch and says how many) until a batch comes back short or the budget is spent. */
export async function deleteInBatches(options: Pick<MaintenanceOptions, "batchSize" | "maxBatches">, remove: () => Promise<number>): Promise<number> {
  let total = 0;
  for (let batch = 0; batch < options.maxBatches; batch += 1) {
    const removed = await remove();
    total += removed;
    if (removed < options.batchSize) break;
  }
  return total;
}

/** Runs `handle` on what `find` returns until a batch comes back short or the budget is spent. */
export async function inBatches(
  options: Pick<MaintenanceOptions, "batchSize" | "maxBatches">,
  find: () => Promise<string[]>,
  handle: (ids: string[]) => Promise<number>,
): Promise<number> {
  let total = 0;
  for (let batch = 0; batch < options.maxBatches; batch += 1) {
    const ids = await find();
    total += await handle(ids);
    if (ids.length < options.batchSize) break;
  }
  return total;
}
