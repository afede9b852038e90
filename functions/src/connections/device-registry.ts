import type { DeviceStore } from "../store/connection-store";
import { userKey } from "../session/ledger/limits";
import { claimToken, confirmReleases, registerDevice, releaseDevice, removeDevices, tokenHash, type TokenReleases } from "./device-rules";

export interface DeviceRegistryOptions {
  readonly store: DeviceStore;
  readonly clock: () => number;
}

/** What a registration or an unregistration left. */
export interface DevicesAfter {
  /** The user's registered devices now. */
  readonly devices: number;
  /** Whether the token asked about was removed (unregistration only). */
  readonly removed?: boolean;
}

/** Registers and unregisters users' devices (their FCM tokens); the rules are device-rules.ts. */
export class DeviceRegistry {
  constructor(private readonly options: DeviceRegistryOptions) {}

  /**
   * Registers `token` for the user (again: it stays fresh another 60 days). A token belongs to one
   * user: registered by another, it leaves that user's devices, so that a phone that changed hands
   * never hears of its former user's messages. `previews` sets the user's own preview setting.
   *
   * The claim commits before the add is sent. Sent side by side, an add could land beside a claim
   * that failed: the token then sat in this user's devices while the owner record still named the
   * former owner, and nothing recorded it to take it out again (both users' notifications reached
   * the phone until it went stale). A claim that failed leaves the devices as they were; one that
   * committed names the users the token is to leave, whatever becomes of the rest.
   *
   * Another user's claim may land between this claim and this add, and its removal of the token
   * from this user's devices before the add. That removal is kept in this user's devices
   * (`releaseDevice`), and the add, landing after it, adds nothing (`registerDevice`); landing
   * before it, the add is taken by it. Either way the token ends with its last owner only, with no
   * further step here that could fail or never run: the claim that took the token names this user
   * in the owner record until its removal is done, by that registration, the owner's next one or
   * the sweep.
   *
   * Two round trips: the claim, then the add, with the removals of `releaseToken` beside the add
   * when the claim names users the token is to leave (it moved, or an earlier removal is still
   * unconfirmed), and their confirmation after them.
   */
  async register(userId: string, token: string, previews: boolean | undefined): Promise<DevicesAfter> {
    const { store, clock } = this.options;
    const now = clock();
    const hash = tokenHash(token);
    const key = userKey(userId);
    const releases = await store.updateTokenOwner(hash, claimToken(key, now));
    const [, after] = await Promise.all([releaseToken(store, hash, releases, now), store.updateDevices(key, registerDevice(hash, token, now, previews))]);
    return { devices: after.count };
  }

  /** Removes `token` from the user's devices; harmless to repeat. */
  async unregister(userId: string, token: string): Promise<DevicesAfter> {
    const { store, clock } = this.options;
    const change = await store.updateDevices(userKey(userId), removeDevices([tokenHash(token)], clock()));
    return { devices: change.count, removed: change.removed.includes(tokenHash(token)) };
  }
}

/**
 * Takes the token out of the devices of each user in `releases` (their registrations up to the
 * claim that took it from them: a newer one of theirs stays, however late this lands, and an older
 * one landing after this adds nothing), then, once all are done, forgets them in the owner record.
 * Until then the record names them, so a removal that failed (the request answered 503, or died)
 * is done again by the owner's next registration or by the sweep: a token never stays in a former
 * owner's devices because one write failed.
 * Harmless to repeat; nothing to do, and no round trip, without releases. True when it did some.
 */
export async function releaseToken(store: DeviceStore, hash: string, releases: TokenReleases, now: number): Promise<boolean> {
  const former = Object.entries(releases);
  if (former.length === 0) return false;
  await Promise.all(former.map(([key, claimedAt]) => store.updateDevices(key, releaseDevice(hash, claimedAt, now))));
  await store.updateTokenOwner(hash, confirmReleases(releases));
  return true;
}
