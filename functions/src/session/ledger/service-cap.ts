import { roundUsd } from "../../llm/model-table";
import type { ServiceUsage } from "../../store/records";
import type { LedgerRule, SessionStore } from "../../store/session-store";
import { requestLifetimeMs, utcDay, type UsagePolicy } from "./limits";
import { addCounts } from "./token-usage";

/**
 * The deployment-wide daily cap on model tokens (SERVICE_TOKENS_PER_DAY): a bound on the whole
 * bill that per-user limits cannot give, since anonymous sign-in mints users at will.
 *
 * The count is split over SERVICE_SHARDS records, each allowed an equal share of the cap, so that
 * no single record takes every message's write (one database node serialises its transactions):
 * a message reserves on a random shard, and the sum of the shards never passes the cap, however
 * many instances count at once, since every write that adds to a shard is a transaction bounded
 * by its share. A shard that cannot hold the whole reservation sends the message to the others
 * (read once, only then): the reservation is spread over the shards with room, emptiest first,
 * each part taking what its shard holds, and given back whole if the parts together fall short.
 * So a reservation larger than one share, or than any one shard has left, is admitted while the
 * shards together hold it: the cap is used up before anything is refused, not a share of it.
 */
export const SERVICE_SHARDS = 8;

/** The shard names: `s0` .. `s7`. */
export const SERVICE_SHARD_KEYS: readonly string[] = Array.from({ length: SERVICE_SHARDS }, (_, i) => `s${i}`);

/** The tokens one shard holds of a reservation. */
export interface ServicePart {
  readonly shard: string;
  readonly tokens: number;
}

/**
 * What a message holds of the deployment's day: settled or refunded once its calls are done. One
 * part, unless no single shard could hold it; then several, each on its own shard.
 */
export interface ServiceReservation {
  readonly day: string;
  readonly parts: readonly ServicePart[];
}

export type ServiceAdmission =
  | { readonly admitted: true; readonly reservation: ServiceReservation }
  | { readonly admitted: false; readonly retryAfterMs: number };

const DAY = 86_400_000;

/**
 * A shard's count as of `day`: a count of an earlier day starts over; one of a later day (a
 * reservation received before midnight landing after one of the new day) is that day's, never
 * started over. Days are YYYY-MM-DD: ordered as strings.
 */
function today(usage: ServiceUsage | null | undefined, day: string): ServiceUsage {
  return usage !== null && usage !== undefined && usage.day >= day ? usage : { day, tokens: 0 };
}

/** Whole tokens a shard may still take today under its share. */
function roomOf(usage: ServiceUsage | null | undefined, day: string, capPerDay: number): number {
  return Math.max(0, Math.floor(capPerDay / SERVICE_SHARDS - today(usage, day).tokens));
}

/**
 * What a shard's open reservations hold at `now`: none from the instant the last of them lapses
 * (what is left, settlements lost, is spent as far as anyone knows), which is when serviceRefusal
 * tells a refused message to retry: a retry then gets the day's own answer.
 */
function heldOf(counted: ServiceUsage, now: number): number {
  return counted.held !== undefined && counted.held_until !== undefined && now < counted.held_until ? Math.min(counted.held, counted.tokens) : 0;
}

/** `counted` with `tokens` more reserved at `now`, held open for as long as a request may run (`lifetimeMs`). */
function withReserved(counted: ServiceUsage, tokens: number, now: number, lifetimeMs: number): ServiceUsage {
  const held = heldOf(counted, now);
  const until = held > 0 ? Math.max(counted.held_until ?? 0, now + lifetimeMs) : now + lifetimeMs;
  return { ...counted, tokens: addCounts(counted.tokens, tokens), held: addCounts(held, tokens), held_until: until };
}

/** When the UTC day of `now` ends. */
function untilMidnight(now: number): number {
  return Date.parse(`${utcDay(now)}T00:00:00Z`) + DAY - now;
}

/**
 * The refusal of `tokens`, the shards read as `shards`: retry when the day ends, unless the open
 * reservations are what keeps them out (the shards' room, theirs given back, would hold them);
 * then once the last of those has settled or lapsed, at the latest (each settles at most to what
 * it reserved). A shard's held tokens lost their settlement at worst, and lapse with it.
 *
 * `own`: what the refused message itself already holds (a top-up's admission reservation). The
 * message gives it back with the refusal, so it is no reservation to wait for, and a retry needs
 * it again on top of `tokens`: the room, with it and the others' open reservations given back,
 * must hold both, and only the others' open reservations make the wait short. A shard's `held`
 * does not say whose each token is: the message's own part comes off it first (were it lapsed
 * already, the others' on that shard count as spent: a later Retry-After, never an earlier one).
 */
function serviceRefusal(shards: Readonly<Record<string, ServiceUsage>>, tokens: number, now: number, capPerDay: number, own?: ServiceReservation): ServiceAdmission {
  const day = utcDay(now);
  const midnight = untilMidnight(now);
  const mine = (shard: string): number => (own?.day === day ? own.parts.filter((part) => part.shard === shard).reduce((sum, part) => sum + part.tokens, 0) : 0);
  const counted = SERVICE_SHARD_KEYS.map((shard) => {
    const usage = today(shards[shard], day);
    const ownTokens = Math.min(mine(shard), usage.tokens);
    const othersHeld = Math.max(0, heldOf(usage, now) - ownTokens);
    const room = Math.max(0, Math.floor(capPerDay / SERVICE_SHARDS - (usage.tokens - ownTokens - othersHeld)));
    return { usage, othersHeld, room };
  });
  const holding = counted.filter(({ othersHeld }) => othersHeld > 0);
  const room = counted.reduce((sum, shard) => sum + shard.room, 0);
  const whole = tokens + (own?.parts.reduce((sum, part) => sum + part.tokens, 0) ?? 0);
  if (holding.length === 0 || room < whole) return { admitted: false, retryAfterMs: midnight };
  return { admitted: false, retryAfterMs: Math.min(midnight, Math.max(...holding.map(({ usage }) => usage.held_until ?? now)) - now) };
}

/**
 * Reserves `tokens` of the day on `shard` if its share of `capPerDay` holds them all, else says when
 * the day ends (the ledger, reading every shard, may then spread it or answer sooner). Held open
 * `lifetimeMs` at most.
 */
export function reserveServiceTokens(shard: string, now: number, tokens: number, capPerDay: number, lifetimeMs = requestLifetimeMs({})): LedgerRule<ServiceUsage, ServiceAdmission> {
  return (usage) => {
    const day = utcDay(now);
    const counted = today(usage, day);
    if (counted.tokens + tokens > capPerDay / SERVICE_SHARDS) return { outcome: { admitted: false, retryAfterMs: untilMidnight(now) } };
    return { outcome: { admitted: true, reservation: { day: counted.day, parts: [{ shard, tokens }] } }, next: withReserved(counted, tokens, now, lifetimeMs) };
  };
}

/** One part of a spread reservation: what it took, and its shard as the part's transaction found it, before the part. */
export interface TakenPart {
  readonly taken: number;
  readonly found: ServiceUsage | null;
}

/**
 * Takes up to `tokens` of the day from one shard, what its share of `capPerDay` has left: one part
 * of a spread reservation. The outcome is what was taken (0, and nothing written, when the shard is
 * full), with the shard as found: when the parts fall short, what others did since the read is
 * what tells when to retry.
 */
export function takeServiceTokens(now: number, tokens: number, capPerDay: number, lifetimeMs = requestLifetimeMs({})): LedgerRule<ServiceUsage, TakenPart> {
  return (usage) => {
    const counted = today(usage, utcDay(now));
    const taken = Math.min(tokens, roomOf(counted, counted.day, capPerDay));
    if (taken <= 0) return { outcome: { taken: 0, found: usage } };
    return { outcome: { taken, found: usage }, next: withReserved(counted, taken, now, lifetimeMs) };
  };
}

/**
 * Replaces one part of a reservation (`reserved` tokens of `day`) by what the calls spent of it
 * (nothing, for a refund), on the day it was made: a reservation of a day that has ended stays in
 * that day's count, never in the next. A part counts at most what it reserved (splitSpent): the
 * shards' sum never passes the cap.
 */
export function settleServiceTokens(day: string, reserved: number, spent: { readonly tokens: number; readonly costUsd?: number }): LedgerRule<ServiceUsage, undefined> {
  return (usage) => {
    if (usage?.day !== day) return { outcome: undefined };
    const tokens = Math.max(0, addCounts(usage.tokens, Math.min(spent.tokens, reserved)) - reserved);
    const cost = spent.costUsd === undefined ? usage.cost_usd : roundUsd((usage.cost_usd ?? 0) + spent.costUsd);
    const held = usage.held === undefined ? {} : { held: Math.max(0, usage.held - reserved), ...(usage.held_until === undefined ? {} : { held_until: usage.held_until }) };
    return { outcome: undefined, next: { day: usage.day, tokens, ...(cost === undefined ? {} : { cost_usd: cost }), ...held } };
  };
}

/**
 * What each part of a reservation settles to, so that the parts together count `spent` once, up to
 * the whole reservation: the spent tokens fill the parts in order, each up to what it reserved (no
 * shard ends above what it held, so none passes its share), a part the calls did not reach is
 * refunded, and the cost goes on the first part. What was spent beyond the whole reservation (a
 * report the service believes can pass the estimates it reserved) is not counted against the cap,
 * which bounds counted tokens; its cost is, and it is logged (in-flight-message.ts).
 */
export function splitSpent(parts: readonly ServicePart[], spent: { readonly tokens: number; readonly costUsd?: number }): { readonly tokens: number; readonly costUsd?: number }[] {
  let left = spent.tokens;
  const shares = parts.map((part) => {
    const tokens = Math.min(part.tokens, Math.max(0, left));
    left -= tokens;
    return tokens;
  });
  return shares.map((tokens, index) => (index === 0 && spent.costUsd !== undefined ? { tokens, costUsd: spent.costUsd } : { tokens }));
}

/** The shards with room left today, of the counts read, most room first (a shard never written counts as empty). */
export function emptiestFirst(shards: Readonly<Record<string, ServiceUsage>>, now: number, capPerDay: number): { readonly shard: string; readonly room: number }[] {
  const day = utcDay(now);
  return SERVICE_SHARD_KEYS.map((shard) => ({ shard, room: roomOf(shards[shard], day, capPerDay) }))
    .filter(({ room }) => room > 0)
    .sort((a, b) => b.room - a.room);
}

/** The deployment's day of model tokens, as the session module reserves and settles it. */
export class ServiceLedger {
  constructor(
    private readonly store: Pick<SessionStore, "prepareServiceUsage" | "updateServiceUsage" | "readServiceUsage">,
    /** SERVICE_TOKENS_PER_DAY; 0: no cap, nothing counted. */
    private readonly capPerDay: number,
    private readonly random: () => number = Math.random,
  ) {}

  private get capped(): boolean {
    return this.capPerDay > 0;
  }

  /**
   * Reserves `tokensOf()` on a random shard (one transaction), or, when that one cannot hold it
   * all, spread over the shards with room (a read, then a transaction per part, only near a
   * shard's share or for a reservation larger than one). Undefined, and nothing worked out, when there is no cap.
   * `policy`: the function's timeout, past which the reservation no longer counts as open (held).
   * `own`: what the message already holds, for a top-up (see serviceRefusal): a refusal's
   * Retry-After then counts on the message's whole need, its own reservation given back.
   */
  async reserve(tokensOf: () => number, now: number, policy: Pick<UsagePolicy, "requestTimeoutMs"> = {}, own?: ServiceReservation): Promise<ServiceAdmission | undefined> {
    if (!this.capped) return undefined;
    const tokens = tokensOf();
    // How long the reservation counts as open at most: the longest a request may run.
    const lifetimeMs = requestLifetimeMs(policy);
    // Every shard listened to, and kept so by every reservation (the store drops a listener left
    // unused: the Realtime Database's after 5 minutes), so that whichever shard this one draws,
    // its transaction starts from the shard's value and takes one round trip. A hold already there
    // is only refreshed: no message to the database.
    this.store.prepareServiceUsage(SERVICE_SHARD_KEYS);
    const first = SERVICE_SHARD_KEYS[Math.floor(this.random() * SERVICE_SHARDS)] ?? "s0";
    const admission = await this.store.updateServiceUsage(first, reserveServiceTokens(first, now, tokens, this.capPerDay, lifetimeMs));
    if (admission.admitted) return admission;
    return this.spread(tokens, now, lifetimeMs, own);
  }

  /**
   * Reserves `tokens` in parts over the shards with room, emptiest first (as read once), each part
   * a transaction taking what its shard holds of what is still missing: others may fill a shard
   * between the read and the part, and the next shard then takes the rest. Parts are taken one
   * after the other, since each needs to know what the last one took. When the read shows too
   * little room, or the parts fall short, what was taken goes back and the message is refused
   * (serviceRefusal says when to retry: from the read, or, the parts short, from the shards as
   * the parts' transactions found them, since what others reserved after the read is what kept
   * the message out; no read more).
   */
  private async spread(tokens: number, now: number, lifetimeMs: number, own: ServiceReservation | undefined): Promise<ServiceAdmission> {
    const shards = await this.store.readServiceUsage();
    const rooms = emptiestFirst(shards, now, this.capPerDay);
    if (rooms.reduce((sum, { room }) => sum + room, 0) < tokens) return serviceRefusal(shards, tokens, now, this.capPerDay, own);
    const day = utcDay(now);
    const parts: ServicePart[] = [];
    const found: Record<string, ServiceUsage> = { ...shards };
    let missing = tokens;
    try {
      for (const { shard } of rooms) {
        if (missing <= 0) break;
        const part = await this.store.updateServiceUsage(shard, takeServiceTokens(now, missing, this.capPerDay, lifetimeMs));
        found[shard] = part.found ?? { day, tokens: 0 };
        if (part.taken > 0) {
          parts.push({ shard, tokens: part.taken });
          missing -= part.taken;
        }
      }
    } catch (error) {
      // The database failed: the message is refused by the failure. What was taken goes back
      // (settled as nothing spent), awaited: a refusal holds nothing once it is answered.
      await this.settle({ day, parts }, { tokens: 0 });
      throw error;
    }
    if (missing > 0) {
      await this.settle({ day, parts }, { tokens: 0 });
      return serviceRefusal(found, tokens, now, this.capPerDay, own);
    }
    return { admitted: true, reservation: { day, parts } };
  }

  /**
   * Settles a reservation with what was spent, every part at once (see splitSpent); a lost
   * settlement of a part leaves that part counted as reserved, never less than was spent of it (never too low).
   */
  async settle(reservation: ServiceReservation | undefined, spent: { readonly tokens: number; readonly costUsd?: number }): Promise<void> {
    if (!reservation) return;
    const shares = splitSpent(reservation.parts, spent);
    await Promise.all(
      reservation.parts.map((part, index) =>
        this.store.updateServiceUsage(part.shard, settleServiceTokens(reservation.day, part.tokens, shares[index] ?? { tokens: 0 })).catch(() => undefined),
      ),
    );
  }
}
