import type { Device, DeviceRecord, TokenOwner } from "../store/connection-records";
import type { LedgerRule } from "../store/session-store";
import { keyHash } from "../session/idempotency";
import { newestEntries } from "./newest-entries";

/**
 * The rules of a user's registered devices, as pure functions of the stored record: at most
 * MAX_DEVICES tokens (a new one drops the oldest), a token not registered again for
 * STALE_AFTER_MS is stale (dropped by any change of the record, skipped by a send, swept on
 * schedule), a token released from the user (another user claimed it, or they unregistered it)
 * stays released for their registrations up to the release (`released`, kept as long as such a
 * registration could still be fresh, at most MAX_RELEASES, the newest), the preview setting goes by
 * the newest registration that set it (`previews_at`), and `oldest_at`
 * names the oldest time of either so that the sweep finds the users it concerns. A registration
 * goes by the time of its claim (`claimToken`), which orders the claims on one token.
 */

export const MAX_DEVICES = 20;
export const STALE_AFTER_MS = 60 * 86_400_000;

/**
 * The most releases a user's devices keep (`released`), the newest: as many as the tokens they can
 * hold, all of which one sign-out everywhere releases at once. A release is otherwise kept 60 days
 * (STALE_AFTER_MS), and one account registering and unregistering new tokens added one a token
 * (nothing rate-limits registrations) to a record the notifier reads whole for each of their
 * messages and each registration rewrites whole. A 21st drops the oldest, whose late add would then
 * be kept: only a user unregistering more than MAX_RELEASES tokens between a registration's claim
 * and its add's landing gets there. No shorter time bound can stand in for this one: an add has no
 * latest time to land (a write the Firebase SDK queued while its instance was cut off from the
 * database is resent on reconnect, however late; a deadline does not cancel it).
 */
export const MAX_RELEASES = MAX_DEVICES;

/** Where a token is kept: a hash (a token is a credential for the device: never a path, never logged). */
export function tokenHash(token: string): string {
  return keyHash("device", token);
}

export interface DeviceChange {
  /** Tokens of the user now. */
  readonly count: number;
  /** Hashes of the tokens this change removed: asked for, over the cap, or stale. */
  readonly removed: readonly string[];
}

/**
 * Registers `token` (again: its time moves on, never back), drops stale tokens, then the oldest past
 * MAX_DEVICES; sets the user's preview setting when `previews` is given. An older registration of
 * the user landing after a newer one keeps the newer time: a removal meant for the older one (up to
 * a claim between the two, `releaseDevice`) must not take the newer one, and the token's staleness
 * and its place under the cap go by the user's last registration.
 *
 * A registration no later than a release of the token from the user (`released`: another user's
 * claim took it, or the user unregistered it, `unregisterToken`) adds nothing: its add lands after
 * that release, which found nothing to remove, and the token is another user's, or the user's no
 * more. The preview setting is still set: it is the user's, not the token's, but only by a
 * registration no older than the one that set it last (`previews_at`): an older one landing late
 * (its request answered 503 at its database deadline, the write still on its way) must not undo a
 * newer choice. `now` is the time of the registration's claim (`TokenClaim.at`), not a clock
 * reading: a claim that landed after the one that released the user is later than it, whatever the
 * clocks said.
 */
export function registerDevice(hash: string, token: string, now: number, previews: boolean | undefined): LedgerRule<DeviceRecord, DeviceChange> {
  return (record) => {
    const fresh = freshTokens(record, now);
    const released = freshReleases(record, now);
    if (!releasedSince(released, hash, now)) fresh.set(hash, { token, updated_at: Math.max(now, fresh.get(hash)?.updated_at ?? now) });
    const kept = [...fresh].sort(([hashA, a], [hashB, b]) => b.updated_at - a.updated_at || (hashA < hashB ? -1 : 1)).slice(0, MAX_DEVICES);
    const removed = Object.keys(record?.tokens ?? {}).filter((known) => !kept.some(([keptHash]) => keptHash === known)).sort();
    const next = withTokens(record, new Map(kept), released);
    // A record of a version before previews_at has none: its setting is older than any registration now.
    const setsPreviews = previews !== undefined && (record?.previews_at ?? -Infinity) <= now;
    return { outcome: { count: kept.length, removed }, next: setsPreviews ? { ...next, previews, previews_at: now } : next };
  };
}

/** Removes the tokens of `hashes`, and any stale token or release (and the oldest past MAX_RELEASES). */
export function removeDevices(hashes: readonly string[], now: number): LedgerRule<DeviceRecord, DeviceChange> {
  return (record) => {
    const fresh = freshTokens(record, now);
    for (const hash of hashes) fresh.delete(hash);
    return changed(record, fresh, freshReleases(record, now));
  };
}

/** The user's tokens to notify at `now`: the stale ones left out. */
export function liveTokens(record: DeviceRecord | null, now: number): string[] {
  return [...freshTokens(record, now).values()].map((device) => device.token);
}

/**
 * Releases the token of `hash` from the user up to `upTo`, the time of the claim that took it from
 * them: their entry goes only while it was registered at or before then (a removal decided earlier
 * must not take away a registration made since, which may land before it), and the release is kept
 * (`released`) so that an add of theirs up to then landing after it adds nothing. Their add may land
 * on either side of this release (it is sent once their claim commits, however long after), and
 * nothing else is sure to take the token back out should it land after: the read of the owner
 * record after each add (kept for deploys) can fail or never run (a deadline, the instance dying).
 * A release is kept until a registration up to it would be stale anyway (STALE_AFTER_MS), the later
 * of two for one token, and at most MAX_RELEASES, the newest: an add can land any time before then
 * (a write its instance queued while cut off from the database, resent on reconnect). Also drops
 * any stale token or release.
 *
 * A user with no record gets one for the release only within `addLandsWithinMs` of `upTo` (a
 * request's lifetime after the last claim it releases). A later release (the sweep's, a retry's)
 * writes nothing: a user without a record may be one whose erasure has deleted it, and a record
 * made then would outlive the erasure. One made within that time is deleted again by the erasure's
 * second pass, which waits as long. What this leaves open: an add of such a user landing later
 * still (a write queued that long) is kept, their record having no release to refuse it.
 */
export function releaseDevice(hash: string, upTo: number, now: number, addLandsWithinMs: number): LedgerRule<DeviceRecord, DeviceChange> {
  return (record) => {
    if (!record && now - upTo >= addLandsWithinMs) return { outcome: { count: 0, removed: [] } };
    const fresh = freshUpTo(record, hash, upTo, now);
    const released = freshReleases(record, now);
    if (now - upTo < STALE_AFTER_MS && !releasedSince(released, hash, upTo)) released.set(hash, upTo);
    return changed(record, fresh, newest(released));
  };
}

/**
 * Removes the token of `hash` from the user while it was registered at or before `upTo`, keeping
 * no release (an unregistration of a token they do not hold: `unregisterToken`); also drops any
 * stale token or release. A registration of theirs timed after `upTo` stays, however late this
 * lands; a record it finds missing it leaves missing.
 */
export function removeDeviceUpTo(hash: string, upTo: number, now: number): LedgerRule<DeviceRecord, DeviceChange> {
  return (record) => changed(record, freshUpTo(record, hash, upTo, now), freshReleases(record, now));
}

/** What a user's unregistration of a token removes from their devices. */
export interface TokenUnregistration {
  /** Their registrations of the token up to this time go; a later one stays. */
  readonly upTo: number;
  /**
   * Whether the removal is kept in their devices (`releaseDevice`), refusing a late add of theirs
   * up to `upTo`: only when they held the token. Otherwise it is removed up to then only
   * (`removeDeviceUpTo`): another user's claim has released them up to its time already, or no
   * claim of theirs has committed.
   */
  readonly keep: boolean;
}

/**
 * The time up to which a user's unregistration of a token removes it from their devices, and
 * whether it keeps the removal there. Whatever the case, the unregistration is ordered here with
 * the claims, as they land: it removes the registrations whose claims landed before it, and a
 * claim of theirs landing after it is timed after `upTo`, so its add stays however late the
 * unregistration's removal lands (a slow link, a transaction retried). An unbounded removal
 * would delete that registration while the owner record names them: nothing would put it back,
 * and the phone would hear of none of their messages.
 *
 * - **They hold it.** A registration of theirs that answered 503 at its database deadline may
 *   still have its add on the way, and it lands whenever it does: the release refuses it, as a
 *   claim's release refuses an add of the former owner's. So the release is timed no earlier than
 *   any claim of theirs that committed (the owner record's `updated_at`, whatever this instance's
 *   clock says), and the record moves on past it, so that their next claim, however behind its
 *   instance's clock, is later than the release and its add is kept.
 * - **Another user holds it.** Every claim of theirs that committed is earlier than that user's
 *   `updated_at`, and their next claim, taking the token over, is later (`claimToken`): that is
 *   the bound, and the record is left as it is. That user's claim released them already.
 * - **No record** (no claim of theirs committed, or the record was swept stale or erased). The
 *   record is made, naming them, one millisecond after this clock, as when they hold it: their
 *   next claim, or another user's, is then timed after the bound whatever its instance's clock
 *   says, where with clock times alone a claim read on a clock behind this one had its add
 *   deleted. A stale token's record made so is swept as any other, 60 days on.
 */
export function unregisterToken(userKey: string, now: number): LedgerRule<TokenOwner, TokenUnregistration> {
  return (owner) => {
    if (owner !== null && owner.user_key !== userKey) return { outcome: { upTo: owner.updated_at, keep: false } };
    const upTo = Math.max(now, owner?.updated_at ?? now);
    const next: TokenOwner = owner === null ? { user_key: userKey, updated_at: upTo + 1 } : { ...owner, updated_at: upTo + 1 };
    return { outcome: { upTo, keep: owner !== null }, next };
  };
}

/**
 * Users a token is to leave, by user key, each with the time of the claim that took it from them:
 * their registrations of it up to that time go (`releaseDevice`), a later one of theirs stays.
 */
export type TokenReleases = Readonly<Record<string, number>>;

/** A claim on a token: the users it is to leave, and the claim's time, which the claimer's add registers. */
export interface TokenClaim {
  readonly at: number;
  readonly releases: TokenReleases;
}

/**
 * Takes a token for `userKey`. `releases` is every user the token is to leave: the former owner
 * when another, and those a claim before named and whose removal is not confirmed yet (it failed,
 * or its request died), so that any registration of the owner does it again. The record keeps them
 * until `confirmReleases`; the claimer is never among them (their own registration is the newest).
 *
 * The claim's time (`at`, the owner record's `updated_at`) never moves back, and a claim over
 * another user's is later than theirs (at least their `updated_at` + 1), whatever the instances'
 * clocks say: the claims on a token are ordered as they landed. The former owner is released up to
 * it, and the claimer's add registers it, so the add is always later than any release of the
 * claimer that a claim before this one made (`registerDevice` refuses an add at or before one):
 * with clock times, a claim that landed last but read an earlier clock (a registration that began
 * first) had its add refused by the release the claim before it made, while the owner record named
 * it: the token was then nobody's. An older claim of the owner's own landing after a newer one
 * keeps the newer time, or the next owner's claim would release them only up to the older one.
 */
export function claimToken(userKey: string, now: number): LedgerRule<TokenOwner, TokenClaim> {
  return (owner) => {
    const pending = Object.entries(owner?.released_from ?? {}).filter(([key]) => key !== userKey);
    const taken = owner !== null && owner.user_key !== userKey;
    const at = owner === null ? now : Math.max(now, taken ? owner.updated_at + 1 : owner.updated_at);
    const former: [string, number][] = taken ? [[owner.user_key, at]] : [];
    const releases = Object.fromEntries([...pending, ...former]);
    return { outcome: { at, releases }, next: withReleases({ user_key: userKey, updated_at: at }, releases) };
  };
}

/**
 * Names `userKey` among the users the token is to leave, as of `at` (the time of their claim),
 * when another user holds it: a registration that finds another owner after its add takes the token
 * back out (see DeviceRegistry.register), and until that removal is confirmed (`confirmReleases`)
 * the record keeps it for the owner's next registration or the sweep, as a claim does. The outcome
 * is the release to do: none when the user holds the token again by now. A record gone (an
 * erasure) cannot keep it: the release is done once.
 */
export function leaveToken(userKey: string, at: number): LedgerRule<TokenOwner, TokenReleases> {
  return (owner) => {
    if (!owner) return { outcome: { [userKey]: at } };
    if (owner.user_key === userKey) return { outcome: {} };
    // A claim may have named the user already, as of a later time: that stays, and is done here.
    const upTo = Math.max(at, owner.released_from?.[userKey] ?? at);
    const releases = { ...owner.released_from, [userKey]: upTo };
    return { outcome: { [userKey]: upTo }, next: withReleases({ user_key: owner.user_key, updated_at: owner.updated_at }, releases) };
  };
}

/** Forgets the releases of `done` once their removals are confirmed; one a later claim made again (a newer time) stays. */
export function confirmReleases(done: TokenReleases): LedgerRule<TokenOwner, void> {
  return (owner) => {
    const pending = Object.entries(owner?.released_from ?? {});
    const left = pending.filter(([key, at]) => {
      const confirmed = done[key];
      return confirmed === undefined || at > confirmed;
    });
    // A record gone meanwhile (swept, erased) is not written back.
    if (!owner || left.length === pending.length) return { outcome: undefined };
    return { outcome: undefined, next: withReleases({ user_key: owner.user_key, updated_at: owner.updated_at }, Object.fromEntries(left)) };
  };
}

/** The owner record with `releases` pending, and the earliest one's time for the sweep (both absent with none). */
function withReleases(owner: TokenOwner, releases: TokenReleases): TokenOwner {
  const since = earliest(Object.values(releases));
  if (since === undefined) return owner;
  return { ...owner, released_from: { ...releases }, releasing_since: since };
}

function freshTokens(record: DeviceRecord | null, now: number): Map<string, Device> {
  return new Map(Object.entries(record?.tokens ?? {}).filter(([, device]) => now - device.updated_at < STALE_AFTER_MS));
}

/** The record's fresh tokens less that of `hash` when it was registered at or before `upTo`. */
function freshUpTo(record: DeviceRecord | null, hash: string, upTo: number, now: number): Map<string, Device> {
  const fresh = freshTokens(record, now);
  const device = fresh.get(hash);
  if (device !== undefined && device.updated_at <= upTo) fresh.delete(hash);
  return fresh;
}

/**
 * The record's releases that a registration they cover could still be fresh after, the newest
 * MAX_RELEASES of them (which also trims a record grown past it by a version that kept more).
 */
function freshReleases(record: DeviceRecord | null, now: number): Map<string, number> {
  return newest(new Map(Object.entries(record?.released ?? {}).filter(([, upTo]) => now - upTo < STALE_AFTER_MS)));
}

/** The newest MAX_RELEASES of `released`. */
function newest(released: ReadonlyMap<string, number>): Map<string, number> {
  return new Map(newestEntries(released, (upTo) => upTo, MAX_RELEASES));
}

/** Whether the token of `hash` was released from the user as of `at` or later. */
function releasedSince(released: ReadonlyMap<string, number>, hash: string, at: number): boolean {
  const upTo = released.get(hash);
  return upTo !== undefined && upTo >= at;
}

/** The change from `record` to these tokens and releases: written only when either differs. */
function changed(record: DeviceRecord | null, tokens: ReadonlyMap<string, Device>, released: ReadonlyMap<string, number>): { outcome: DeviceChange; next?: DeviceRecord } {
  const removed = Object.keys(record?.tokens ?? {}).filter((known) => !tokens.has(known)).sort();
  const before = Object.entries(record?.released ?? {});
  const same = removed.length === 0 && before.length === released.size && before.every(([hash, upTo]) => released.get(hash) === upTo);
  const outcome = { count: tokens.size, removed };
  return same ? { outcome } : { outcome, next: withTokens(record, tokens, released) };
}

/**
 * The record with these tokens and releases, and the oldest time among them (absent with none, so
 * the sweep no longer finds it): the sweep drops stale releases as it drops stale tokens.
 */
function withTokens(record: DeviceRecord | null, tokens: ReadonlyMap<string, Device>, released: ReadonlyMap<string, number>): DeviceRecord {
  const { tokens: previous, released: previouslyReleased, oldest_at, ...rest } = record ?? {};
  const oldest = earliest([...[...tokens.values()].map((device) => device.updated_at), ...released.values()]);
  return {
    ...rest,
    ...(tokens.size === 0 ? {} : { tokens: Object.fromEntries(tokens) }),
    ...(released.size === 0 ? {} : { released: Object.fromEntries(released) }),
    ...(oldest === undefined ? {} : { oldest_at: oldest }),
  };
}

/**
 * The earliest of `times`, undefined with none. A loop, not `Math.min(...times)`: a spread passes
 * each time as an argument, and past about 125,000 of them (V8, Node 24) the call throws RangeError
 * (Maximum call stack size exceeded), which failed every change of a record holding that many.
 */
function earliest(times: readonly number[]): number | undefined {
  let least: number | undefined;
  for (const time of times) if (least === undefined || time < least) least = time;
  return least;
}
