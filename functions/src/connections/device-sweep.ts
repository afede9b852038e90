import type { Log, LogFields } from "../log/log";
import type { DeviceStore } from "../store/connection-store";
import { countSettled, inBatches, type BatchBudget } from "../session/maintenance";
import { releaseToken } from "./device-registry";
import { removeDevices, STALE_AFTER_MS } from "./device-rules";

export interface DeviceSweepReport {
  /** Tokens taken out of former owners' devices whose removal a registration left unconfirmed (it failed, or its request died). */
  readonly releasedTokens: number;
  /** Users whose stale tokens (not registered again for 60 days) were removed. */
  readonly staleDevices: number;
  /** Records of which user holds a token, for tokens not registered again for 60 days, removed. */
  readonly staleTokenOwners: number;
}

/** The report of a sweep that did nothing (or failed as a whole). */
export const NO_DEVICE_SWEEP: DeviceSweepReport = { releasedTokens: 0, staleDevices: 0, staleTokenOwners: 0 };

type SweepOptions = BatchBudget & {
  readonly store: DeviceStore;
  readonly now: number;
  readonly log: Log;
  /** How long a registration's add can land after its claim (DeviceRegistryOptions): a release older than that makes no record. */
  readonly addLandsWithinMs: number;
};

/**
 * The scheduled sweep of device tokens, beside the sessions' clean-up. First, the removals of
 * tokens from their former owners that a registration left unconfirmed: the owner might never
 * register the token again to do them, and until then the former owner's messages reach the
 * phone. Then the stale tokens: users are found by the oldest time of their tokens and releases
 * (`oldest_at`), and each record's stale ones removed in a transaction that also recomputes it;
 * owner records likewise, each in a transaction that checks its time again. So a sweep racing a
 * registration does no harm.
 * Each of the three starts no batch once `stopped` says the step's share of the run is up, and
 * pages on from where its last page ended (`inBatches`). Each change is settled on its own: one the
 * database fails on, or a record it cannot read, is logged (by hash or user key, never a token) and
 * counts nothing, and the others go on, those after it in the query included; the next run meets
 * it again.
 */
export async function sweepDevices(options: SweepOptions): Promise<DeviceSweepReport> {
  const { store, now, batchSize } = options;
  const counted = <T>(change: string, results: readonly PromiseSettledResult<T>[], about: (index: number) => LogFields, count: (value: T) => number) =>
    countSettled(options.log, "device sweep change failed; the sweep goes on", results, (index) => ({ change, ...about(index) }), count);
  const releasedTokens = await inBatches(options, (after) => store.findPendingReleases(now, after, batchSize), async (hashes) => {
    const results = await Promise.allSettled(
      hashes.map(async (hash) => releaseToken(store, hash, (await store.readTokenOwner(hash))?.released_from ?? {}, now, options.addLandsWithinMs)),
    );
    return counted("release", results, (index) => ({ tokenHash: hashes[index] }), (released) => (released !== undefined ? 1 : 0));
  });
  const cutoff = now - STALE_AFTER_MS;
  const staleDevices = await inBatches(options, (after) => store.findStaleDevices(cutoff, after, batchSize), async (userKeys) => {
    const results = await Promise.allSettled(userKeys.map((key) => store.updateDevices(key, removeDevices([], now))));
    return counted("stale devices", results, (index) => ({ userKey: userKeys[index] }), (result) => (result.removed.length > 0 ? 1 : 0));
  });
  const staleTokenOwners = await inBatches(options, (after) => store.findStaleTokenOwners(cutoff, after, batchSize), async (hashes) => {
    const results = await Promise.allSettled(hashes.map((hash) => store.deleteStaleTokenOwner(hash, cutoff)));
    return counted("stale token owner", results, (index) => ({ tokenHash: hashes[index] }), (gone) => (gone ? 1 : 0));
  });
  return { releasedTokens, staleDevices, staleTokenOwners };
}
