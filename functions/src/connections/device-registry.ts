import type { DeviceStore } from "../store/connection-store";
import { userKey } from "../session/ledger/limits";
import { claimToken, confirmReleases, leaveToken, registerDevice, releaseDevice, removeDeviceUpTo, tokenHash, unregisterToken, type DeviceChange, type TokenReleases } from "./device-rules";

export interface DeviceRegistryOptions {
  readonly store: DeviceStore;
  readonly clock: () => number;
  /**
   * A request's lifetime (the function's timeout) and one database deadline for a write already
   * sent: how long a registration's add takes to land after its claim unless its instance queued
   * it while cut off from the database (then it lands on reconnect, however late). A release makes
   * a devices record for a user without one only that long (`releaseDevice`), for an erasure's sake.
   */
  readonly addLandsWithinMs: number;
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
   * further step here that must succeed: the claim that took the token names this user in the
   * owner record until its removal is done, by that registration, the owner's next one or the
   * sweep. The add registers the claim's time, not this clock's: claims are ordered as they landed
   * (`claimToken`), so an add whose claim landed last is never refused by an earlier claim's release.
   *
   * The read of the owner record after the add (`dropUnlessOwned`) is a second line, kept for
   * deploys: an instance of a version before releases were kept in users' devices writes none, and
   * drops those it finds when it rewrites a user's devices, so while both versions serve, this read
   * is what takes back an add landing after such an instance's handover. It can go once no instance
   * of such a version serves registrations (docs/connections.md).
   *
   * Three round trips when the token stays with its owner (the claim, the add, then the read); the
   * removals of `releaseToken`, when the claim names users the token is to leave (it moved, or an
   * earlier removal is still unconfirmed), go beside the add and the read, and their confirmation
   * after them.
   */
  async register(userId: string, token: string, previews: boolean | undefined): Promise<DevicesAfter> {
    const { store, clock, addLandsWithinMs } = this.options;
    const now = clock();
    const hash = tokenHash(token);
    const key = userKey(userId);
    const { at, releases } = await store.updateTokenOwner(hash, claimToken(key, now));
    const [, after] = await Promise.all([releaseToken(store, hash, releases, now, addLandsWithinMs), this.addUnlessTaken(key, hash, token, at, previews)]);
    return { devices: after.count };
  }

  private async addUnlessTaken(key: string, hash: string, token: string, at: number, previews: boolean | undefined): Promise<DeviceChange> {
    const added = await this.options.store.updateDevices(key, registerDevice(hash, token, at, previews));
    return (await this.dropUnlessOwned(key, hash, at)) ?? added;
  }

  /**
   * Takes the token back out of the user's devices, up to their claim at `at`, when another user
   * holds it by now: that user's claim, and its removal from these devices, may have landed
   * between this claim and this add, and the removal kept here may be gone (an older instance
   * rewrote the record without it) or never written (an older instance made the removal). The
   * removal is first recorded in the owner record (`leaveToken`), as a claim's is, so that one that
   * fails is done again by the owner's next registration or the sweep. A registration of the user
   * newer than this one (they took the token back) stays.
   */
  private async dropUnlessOwned(key: string, hash: string, at: number): Promise<DeviceChange | undefined> {
    const { store, clock, addLandsWithinMs } = this.options;
    const owner = await store.readTokenOwner(hash);
    if (owner?.user_key === key) return undefined;
    // `leaveToken` names this user alone, or no one (they hold it by now): a release of theirs alone.
    const released = await releaseToken(store, hash, await store.updateTokenOwner(hash, leaveToken(key, at)), clock(), addLandsWithinMs);
    return released?.[key];
  }

  /**
   * Removes `token` from the user's devices; harmless to repeat. An add of theirs may still be on
   * its way (a registration answered 503 at its database deadline, the write already sent): when
   * they hold the token, the removal is kept in their devices as a claim's release is
   * (`releaseDevice`), so that add, landing after it, adds nothing, and the phone they signed out
   * of hears nothing more. A registration of theirs after this one is added, whenever this one's
   * removal lands: it removes only their registrations up to the time the owner record gives it
   * (`unregisterToken`), which a later claim is always after. Two round trips: the owner record,
   * then their devices.
   */
  async unregister(userId: string, token: string): Promise<DevicesAfter> {
    const { store, clock, addLandsWithinMs } = this.options;
    const hash = tokenHash(token);
    const key = userKey(userId);
    const { upTo, keep } = await store.updateTokenOwner(hash, unregisterToken(key, clock()));
    const rule = keep ? releaseDevice(hash, upTo, clock(), addLandsWithinMs) : removeDeviceUpTo(hash, upTo, clock());
    const change = await store.updateDevices(key, rule);
    return { devices: change.count, removed: change.removed.includes(hash) };
  }
}

/**
 * Takes the token out of the devices of each user in `releases` (their registrations up to the
 * claim that took it from them: a newer one of theirs stays, however late this lands, and an older
 * one landing after this adds nothing), then, once all are done, forgets them in the owner record.
 * Until then the record names them, so a removal that failed (the request answered 503, or died)
 * is done again by the owner's next registration or by the sweep: a token never stays in a former
 * owner's devices because one write failed.
 * Harmless to repeat; nothing to do, and no round trip, without releases. When it did some, what
 * each released user's devices hold now, by user key; undefined when there were none.
 */
export async function releaseToken(store: DeviceStore, hash: string, releases: TokenReleases, now: number, addLandsWithinMs: number): Promise<Readonly<Record<string, DeviceChange>> | undefined> {
  const former = Object.entries(releases);
  if (former.length === 0) return undefined;
  const changes = await Promise.all(former.map(async ([key, claimedAt]) => [key, await store.updateDevices(key, releaseDevice(hash, claimedAt, now, addLandsWithinMs))] as const));
  await store.updateTokenOwner(hash, confirmReleases(releases));
  return Object.fromEntries(changes);
}
