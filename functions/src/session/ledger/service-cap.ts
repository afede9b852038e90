import { roundUsd } from "../../llm/model-table";
import type { ServiceUsage } from "../../store/records";
import type { LedgerRule, SessionStore } from "../../store/session-store";
import { utcDay } from "./limits";
import { addCounts } from "./token-usage";

/**
 * The deployment-wide daily cap on model tokens (SERVICE_TOKENS_PER_DAY): a bound on the whole
 * bill that per-user limits cannot give, since anonymous sign-in mints users at will.
 *
 * The count is split over SERVICE_SHARDS records, each allowed an equal share of the cap, so that
 * no single record takes every message's write (one database node serialises its transactions):
 * a message reserves on a random shard, and the sum of the shards never passes the cap, however
 * many instances count at once. A shard that is full sends the message to the emptiest one (read
 * once, only then): the cap is used up before anything is refused, not a share of it.
 */
export const SERVICE_SHARDS = 8;

/** The shard names: `s0` .. `s7`. */
export const SERVICE_SHARD_KEYS: readonly string[] = Array.from({ length: SERVICE_SHARDS }, (_, i) => `s${i}`);

/** What a message holds of the deployment's day: settled or refunded once its calls are done. */
export interface ServiceReservation {
  readonly shard: string;
  readonly day: string;
  readonly tokens: number;
}

export type ServiceAdmission =
  | { readonly admitted: true; readonly reservation: ServiceReservation }
  | { readonly admitted: false; readonly retryAfterMs: number };

const DAY = 86_400_000;

/** A shard's count as of `day`: a count of an earlier day starts over. */
function today(usage: ServiceUsage | null, day: string): ServiceUsage {
  return usage?.day === day ? usage : { day, tokens: 0 };
}

/** Reserves `tokens` of the day on `shard` if its share of `capPerDay` holds them, else says when the day ends. */
export function reserveServiceTokens(shard: string, now: number, tokens: number, capPerDay: number): LedgerRule<ServiceUsage, ServiceAdmission> {
  return (usage) => {
    const day = utcDay(now);
    const counted = today(usage, day);
    if (counted.tokens + tokens > capPerDay / SERVICE_SHARDS) {
      return { outcome: { admitted: false, retryAfterMs: Date.parse(`${day}T00:00:00Z`) + DAY - now } };
    }
    return { outcome: { admitted: true, reservation: { shard, day, tokens } }, next: { ...counted, tokens: addCounts(counted.tokens, tokens) } };
  };
}

/**
 * Replaces a reservation by what the message's calls spent (nothing, for a refund), on the day it
 * was made: a reservation of a day that has ended stays in that day's count, never in the next.
 */
export function settleServiceTokens(reservation: ServiceReservation, spent: { readonly tokens: number; readonly costUsd?: number }): LedgerRule<ServiceUsage, undefined> {
  return (usage) => {
    if (usage?.day !== reservation.day) return { outcome: undefined };
    const tokens = Math.max(0, addCounts(usage.tokens, spent.tokens) - reservation.tokens);
    const cost = spent.costUsd === undefined ? usage.cost_usd : roundUsd((usage.cost_usd ?? 0) + spent.costUsd);
    return { outcome: undefined, next: { day: usage.day, tokens, ...(cost === undefined ? {} : { cost_usd: cost }) } };
  };
}

/** The shard with the most room left today, of the counts read (a shard never written counts as empty). */
export function emptiestShard(shards: Readonly<Record<string, ServiceUsage>>, now: number): string {
  const day = utcDay(now);
  let best = SERVICE_SHARD_KEYS[0] ?? "s0";
  let least = Number.POSITIVE_INFINITY;
  for (const key of SERVICE_SHARD_KEYS) {
    const used = today(shards[key] ?? null, day).tokens;
    if (used < least) [best, least] = [key, used];
  }
  return best;
}

/** The deployment's day of model tokens, as the session module reserves and settles it. */
export class ServiceLedger {
  private prepared = false;

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
   * Reserves `tokensOf()` on a random shard, or, when that one is full, on the emptiest (one read
   * and one more transaction, only near the cap). Undefined, and nothing worked out, when there is no cap.
   */
  async reserve(tokensOf: () => number, now: number): Promise<ServiceAdmission | undefined> {
    if (!this.capped) return undefined;
    const tokens = tokensOf();
    if (!this.prepared) {
      // Every shard listened to from the first message on, so that each reservation takes one round trip.
      this.store.prepareServiceUsage(SERVICE_SHARD_KEYS);
      this.prepared = true;
    }
    const first = SERVICE_SHARD_KEYS[Math.floor(this.random() * SERVICE_SHARDS)] ?? "s0";
    const admission = await this.store.updateServiceUsage(first, reserveServiceTokens(first, now, tokens, this.capPerDay));
    if (admission.admitted) return admission;
    const emptiest = emptiestShard(await this.store.readServiceUsage(), now);
    if (emptiest === first) return admission;
    return this.store.updateServiceUsage(emptiest, reserveServiceTokens(emptiest, now, tokens, this.capPerDay));
  }

  /** Settles a reservation with what was spent; a lost settlement leaves the reservation counted (never too low). */
  settle(reservation: ServiceReservation | undefined, spent: { readonly tokens: number; readonly costUsd?: number }): Promise<void> {
    if (!reservation) return Promise.resolve();
    return this.store.updateServiceUsage(reservation.shard, settleServiceTokens(reservation, spent)).catch(() => undefined);
  }
}
