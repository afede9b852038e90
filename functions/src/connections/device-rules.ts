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
 * Registers `token` (again: its time moves on), drops stale tokens, then the oldest past
 * MAX_DEVICES; sets the user's preview setting when `previews` is given.
 */
export function registerDevice(hash: string, token: string, now: number, previews: boolean | undefined): LedgerRule<DeviceRecord, DeviceChange> {
  return (record) => {
    const fresh = freshTokens(record, now);
    fresh.set(hash, { token, updated_at: now });
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

/** Takes a token for `userKey`; the outcome is the user it was registered to before, when another. */
export function claimToken(userKey: string, now: number): LedgerRule<TokenOwner, string | undefined> {
  return (owner) => ({ outcome: owner && owner.user_key !== userKey ? owner.user_key : undefined, next: { user_key: userKey, updated_at: now } });
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
