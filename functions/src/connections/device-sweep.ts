import type { DeviceStore } from "../store/connection-store";
import { deleteInBatches, inBatches } from "../session/maintenance";
import { removeDevices, STALE_AFTER_MS } from "./device-rules";

export interface DeviceSweepReport {
  /** Users whose stale tokens (not registered again for 60 days) were removed. */
  readonly staleDevices: number;
  /** Records of which user holds a token, for tokens not registered again for 60 days, removed. */
  readonly staleTokenOwners: number;
}

/**
 * The scheduled sweep of stale device tokens, beside the sessions' clean-up: users are found by
 * their oldest token's time (`oldest_at`), and each record's stale tokens removed in a transaction
 * that also recomputes it, so a sweep racing a registration does no harm.
 */
export async function sweepDevices(options: { readonly store: DeviceStore; readonly now: number; readonly batchSize: number; readonly maxBatches: number }): Promise<DeviceSweepReport> {
  const { store, now, batchSize } = options;
  const cutoff = now - STALE_AFTER_MS;
  const staleDevices = await inBatches(options, () => store.findStaleDevices(cutoff, batchSize), async (userKeys) => {
    const results = await Promise.allSettled(userKeys.map((key) => store.updateDevices(key, removeDevices([], now))));
    return results.filter((result) => result.status === "fulfilled" && result.value.removed.length > 0).length;
  });
  const staleTokenOwners = await deleteInBatches(options, () => store.deleteStaleTokenOwners(cutoff, batchSize));
  return { staleDevices, staleTokenOwners };
}
