import type { DeviceStore } from "../store/connection-store";
import { deleteInBatches, inBatches, type BatchBudget } from "../session/maintenance";
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

/**
 * The scheduled sweep of device tokens, beside the sessions' clean-up. First, the removals of
 * tokens from their former owners that a registration left unconfirmed: the owner might never
 * register the token again to do them, and until then the former owner's messages reach the
 * phone. Then the stale tokens: users are found by the oldest time of their tokens and releases
 * (`oldest_at`), and each record's stale ones removed in a transaction that also recomputes it;
 * owner records likewise, each in a transaction that checks its time again. So a sweep racing a
 * registration does no harm.
 * Each of the three starts no batch once `stopped` says the step's share of the run is up.
 */
export async function sweepDevices(options: BatchBudget & { readonly store: DeviceStore; readonly now: number }): Promise<DeviceSweepReport> {
  const { store, now, batchSize } = options;
  const releasedTokens = await inBatches(options, () => store.findPendingReleases(now, batchSize), async (hashes) => {
    // Settled: one token the database fails on must not stop the others; it is found again next run.
    const results = await Promise.allSettled(
      hashes.map(async (hash) => releaseToken(store, hash, (await store.readTokenOwner(hash))?.released_from ?? {}, now)),
    );
    return results.filter((result) => result.status === "fulfilled" && result.value).length;
  });
  const cutoff = now - STALE_AFTER_MS;
  const staleDevices = await inBatches(options, () => store.findStaleDevices(cutoff, batchSize), async (userKeys) => {
    const results = await Promise.allSettled(userKeys.map((key) => store.updateDevices(key, removeDevices([], now))));
    return results.filter((result) => result.status === "fulfilled" && result.value.removed.length > 0).length;
  });
  const staleTokenOwners = await deleteInBatches(options, () => store.deleteStaleTokenOwners(cutoff, batchSize));
  return { releasedTokens, staleDevices, staleTokenOwners };
}
