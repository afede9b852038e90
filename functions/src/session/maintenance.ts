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
}

/**
 * The scheduled clean-up: expires idle sessions, drops the claims and partial replies of requests
 * that died, deletes closed ones past retention, forgets old idempotency keys. Each change is a transaction or a delete that is harmless to repeat,
 * so two runs at once, or a run racing a user, do no harm: a session that became active again
 * is left alone.
 */
export async function runMaintenance(options: MaintenanceOptions): Promise<MaintenanceReport> {
  const { store, now, batchSize } = options;
  // Idle *longer* than the TTL, as the request path judges it: activity at exactly the TTL keeps a session.
  const cutoff = now - options.policy.idleTtlMs - 1;
  const expired = await inBatches(options, () => store.findIdleSessions(cutoff, batchSize), async (ids) => {
    // Settled, not all: one session the database fails on must not stop the rest of the run.
    const results = await Promise.allSettled(ids.map((id) => store.updateState(id, expireRule(now, options.policy))));
    return results.filter((result) => result.status === "fulfilled" && result.value.found && result.value.outcome).length;
  });
  // A transaction that changes nothing still makes the store finish a closed session's copy.
  const flushed = await inBatches(options, () => store.findUnflushedSessions(batchSize), async (ids) => {
    const results = await Promise.allSettled(ids.map((id) => store.updateState(id, () => ({ outcome: undefined }))));
    return results.filter((result) => result.status === "fulfilled").length;
  });
  // A request that died mid-reply left its claim and partial; a later message of its session drops them, else this.
  const lapsedClaims = await inBatches(options, () => store.findLapsedClaims(now, batchSize), async (ids) => {
    const results = await Promise.allSettled(ids.map((id) => store.updateState(id, sweepLapsedClaims(now))));
    return results.reduce((sum, result) => sum + (result.status === "fulfilled" && result.value.found ? result.value.outcome : 0), 0);
  });
  const deleted =
    options.retentionMs > 0
      ? await inBatches(options, () => store.findClosedSessions(now - options.retentionMs, batchSize), async (ids) => {
          // Settled, as above: a failed delete is found again by the next run.
          const results = await Promise.allSettled(ids.map((id) => store.deleteSession(id)));
          return results.filter((result) => result.status === "fulfilled").length;
        })
      : 0;
  const keysForgotten = await deleteInBatches(options, () => store.deleteCreateKeys(now - options.createKeyTtlMs, batchSize));
  // A bucket untouched for an hour has refilled: removing it changes no limit.
  const addressesForgotten = await deleteInBatches(options, () => store.deleteIdleAddresses(now - HOUR, batchSize));
  return { expired, flushed, deleted, keysForgotten, lapsedClaims, addressesForgotten };
}

const HOUR = 3_600_000;

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
