import type { AddressUsage } from "../../store/records";
import type { LedgerRule } from "../../store/session-store";
import type { Admission } from "./limits";
import { keyHash } from "../idempotency";
import { returnToken, takeToken } from "./token-bucket";

/**
 * Sessions one network address may create per hour when the caller shows no ID token, or an
 * anonymous one (ADDRESS_SESSIONS_PER_HOUR): anonymous sign-in mints users at will, so per-user
 * limits alone bound nothing for them. A token bucket per address, in the database, so that it
 * holds across instances.
 */

const HOUR = 3_600_000;

/**
 * Takes one session token from the address's bucket of `perHour`, refilled over an hour, or says
 * when to retry. `keyedSession`: the session a keyed create names (by a hash of its id), which its repeats and retries
 * admit again (the first may still be writing it, or have failed with its fate unknown): the
 * address pays for it once, and a later admission of it takes nothing (`already`): taking it
 * again would refuse the repeat once the bucket is empty, though the first answers 201. Noted for
 * an hour, as long as the sweep keeps an idle bucket: at most twice `perHour` notes at a time.
 */
export function admitAddress(now: number, perHour: number, keyedSession?: string): LedgerRule<AddressUsage, Admission> {
  return (usage) => {
    const paid = paidWithin(usage, now);
    if (keyedSession !== undefined && keyedSession in paid) return { outcome: { admitted: true, already: true } };
    const took = takeToken(usage, now, perHour, HOUR);
    if (!took.admitted) return { outcome: took };
    const sessions = keyedSession === undefined ? paid : { ...paid, [keyedSession]: now };
    return { outcome: { admitted: true }, next: { ...took.bucket, ...(Object.keys(sessions).length > 0 ? { sessions } : {}) } };
  };
}

/** Gives back the session token of a create refused for another reason (and, for a keyed one, its note). */
export function refundAddress(perHour: number, keyedSession?: string): LedgerRule<AddressUsage, undefined> {
  return (usage) => {
    if (!usage) return { outcome: undefined };
    const { sessions, ...bucket } = usage;
    const others = Object.fromEntries(Object.entries(sessions ?? {}).filter(([sessionId]) => sessionId !== keyedSession));
    return { outcome: undefined, next: { ...returnToken(bucket, perHour), ...(Object.keys(others).length > 0 ? { sessions: others } : {}) } };
  };
}

/** The keyed sessions the address paid for within the last hour: older ones its bucket has given back since. */
function paidWithin(usage: AddressUsage | null, now: number): Record<string, number> {
  return Object.fromEntries(Object.entries(usage?.sessions ?? {}).filter(([, at]) => now - at < HOUR));
}

/**
 * Where an address's bucket is kept: a hash, so that any address makes a valid database key (not
 * a secret: an IPv4 address's hash is found by trying them all; the sweep removes a bucket an hour
 * after its last use). An IPv6
 * address counts by its /64 network, which one host or home gets whole: per address, a host
 * could otherwise walk through 2^64 of them.
 */
export function addressKey(address: string): string {
  const bare = address.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, "").replace(/%.*$/, "");
  return keyHash("address", bare.includes(":") ? ipv6Network(bare) : bare);
}

/** The first four groups of an IPv6 address, written out in full (`::` expanded), lower case. */
function ipv6Network(address: string): string {
  const [head = "", tail] = address.toLowerCase().split("::");
  const left = head === "" ? [] : head.split(":");
  const right = tail === undefined || tail === "" ? [] : tail.split(":");
  const groups = tail === undefined ? left : [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill("0"), ...right];
  return groups.slice(0, 4).map((group) => group.replace(/^0+(?=.)/, "")).join(":");
}
