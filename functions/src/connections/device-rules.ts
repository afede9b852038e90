import type { Device, DeviceRecord, TokenOwner } from "../store/connection-records";
import type { LedgerRule } from "../store/session-store";
import { keyHash } from "../session/idempotency";

/**
 * The rules of a user's registered devices, as pure functions of the stored record: at most
 * MAX_DEVICES tokens (a new one drops the oldest), a token not registered again for
 * STALE_AFTER_MS is stale (dropped by any change of the record, skipped by a send, swept on
 * schedule), and `oldest_at` names the oldest token so that the sweep finds the users it concerns.
 */

export const MAX_DEVICES = 20;
export const STALE_AFTER_MS = 60 * 86_400_000;

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
 */
export function registerDevice(hash: string, token: string, now: number, previews: boolean | undefined): LedgerRule<DeviceRecord, DeviceChange> {
  return (record) => {
    const fresh = freshTokens(record, now);
    fresh.set(hash, { token, updated_at: Math.max(now, fresh.get(hash)?.updated_at ?? now) });
    const kept = [...fresh].sort(([hashA, a], [hashB, b]) => b.updated_at - a.updated_at || (hashA < hashB ? -1 : 1)).slice(0, MAX_DEVICES);
    const removed = Object.keys(record?.tokens ?? {}).filter((known) => !kept.some(([keptHash]) => keptHash === known)).sort();
    const next = withTokens(record, new Map(kept));
    return { outcome: { count: kept.length, removed }, next: previews === undefined ? next : { ...next, previews } };
  };
}

/** Removes the tokens of `hashes`, and any stale one. */
export function removeDevices(hashes: readonly string[], now: number): LedgerRule<DeviceRecord, DeviceChange> {
  return (record) => {
    const fresh = freshTokens(record, now);
    for (const hash of hashes) fresh.delete(hash);
    const removed = Object.keys(record?.tokens ?? {}).filter((known) => !fresh.has(known)).sort();
    if (!record || removed.length === 0) return { outcome: { count: fresh.size, removed } };
    return { outcome: { count: fresh.size, removed }, next: withTokens(record, fresh) };
  };
}

/** The user's tokens to notify at `now`: the stale ones left out. */
export function liveTokens(record: DeviceRecord | null, now: number): string[] {
  return [...freshTokens(record, now).values()].map((device) => device.token);
}

/**
 * Removes the token of `hash` only while its entry was registered at or before `upTo` (and any
 * stale token): a removal decided earlier (a claim that took the token, a registration that found
 * another owner) must not take away a registration made since, which may land before it.
 */
export function releaseDevice(hash: string, upTo: number, now: number): LedgerRule<DeviceRecord, DeviceChange> {
  return (record) => {
    const device = record?.tokens?.[hash];
    return removeDevices(device !== undefined && device.updated_at <= upTo ? [hash] : [], now)(record);
  };
}

/**
 * Users a token is to leave, by user key, each with the time of the claim that took it from them:
 * their registrations of it up to that time go (`releaseDevice`), a later one of theirs stays.
 */
export type TokenReleases = Readonly<Record<string, number>>;

/**
 * Takes a token for `userKey`. The outcome is every user the token is to leave: the former owner
 * when another, and those a claim before named and whose removal is not confirmed yet (it failed,
 * or its request died), so that any registration of the owner does it again. The record keeps them
 * until `confirmReleases`; the claimer is never among them (their own registration is the newest).
 * The former owner is released as of the later of this claim and their own last claim: with the
 * instances' clocks a little apart, a registration of theirs that came before this claim still goes.
 * So the owner's time never moves back: an older claim of theirs landing after a newer one keeps the
 * newer time, or the next owner's claim would release them only up to the older one.
 */
export function claimToken(userKey: string, now: number): LedgerRule<TokenOwner, TokenReleases> {
  return (owner) => {
    const pending = Object.entries(owner?.released_from ?? {}).filter(([key]) => key !== userKey);
    const former: [string, number][] = owner && owner.user_key !== userKey ? [[owner.user_key, Math.max(now, owner.updated_at)]] : [];
    const releases = Object.fromEntries([...pending, ...former]);
    const updatedAt = owner?.user_key === userKey ? Math.max(now, owner.updated_at) : now;
    return { outcome: releases, next: withReleases({ user_key: userKey, updated_at: updatedAt }, releases) };
  };
}

/**
 * Names `userKey` among the users the token is to leave, as of `now`, when another user holds it:
 * a registration whose add landed after another user's claim takes the token back out, and until
 * that removal is confirmed (`confirmReleases`) the record keeps it for the owner's next
 * registration or the sweep, as a claim does. The outcome is the release to do: none when the user
 * holds the token again by now. A record gone (an erasure) cannot keep it: the release is done once.
 */
export function leaveToken(userKey: string, now: number): LedgerRule<TokenOwner, TokenReleases> {
  return (owner) => {
    if (!owner) return { outcome: { [userKey]: now } };
    if (owner.user_key === userKey) return { outcome: {} };
    // A claim may have named the user already, as of a later time: that stays, and is done here.
    const at = Math.max(now, owner.released_from?.[userKey] ?? now);
    const releases = { ...owner.released_from, [userKey]: at };
    return { outcome: { [userKey]: at }, next: withReleases({ user_key: owner.user_key, updated_at: owner.updated_at }, releases) };
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
  const times = Object.values(releases);
  if (times.length === 0) return owner;
  return { ...owner, released_from: { ...releases }, releasing_since: Math.min(...times) };
}

function freshTokens(record: DeviceRecord | null, now: number): Map<string, Device> {
  return new Map(Object.entries(record?.tokens ?? {}).filter(([, device]) => now - device.updated_at < STALE_AFTER_MS));
}

/** The record with these tokens, and the oldest one's time (absent with none, so the sweep no longer finds it). */
function withTokens(record: DeviceRecord | null, tokens: ReadonlyMap<string, Device>): DeviceRecord {
  const { tokens: previous, oldest_at, ...rest } = record ?? {};
  if (tokens.size === 0) return rest;
  return { ...rest, tokens: Object.fromEntries(tokens), oldest_at: Math.min(...[...tokens.values()].map((device) => device.updated_at)) };
}
