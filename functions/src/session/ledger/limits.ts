import { roundUsd } from "../../llm/model-table";
import type { UserUsage } from "../../store/records";
import type { UsageRule } from "../../store/session-store";
import { addCounts } from "./token-usage";
import { keyHash } from "../idempotency";
import { takeToken } from "./token-bucket";

/**
 * Per-user limits, as pure rules over the user's usage record, which the store applies in a
 * transaction: every instance counts against the same record, so a limit holds however many
 * instances serve the user at once.
 */

export interface UsagePolicy {
  /** Messages a user may send per minute: a token bucket of this size, refilled over a minute. */
  readonly messagesPerMinute: number;
  readonly maxActiveSessions: number;
  /** A session not used for this long is expired, and no longer counts as active. */
  readonly idleTtlMs: number;
  /** Model tokens a user may use per UTC day, across sessions and instances; 0: unlimited (still counted). */
  readonly tokensPerDay: number;
  /** Model tokens the deployment may use per UTC day; 0 or absent: no cap (not counted). See service-cap.ts. */
  readonly serviceTokensPerDay?: number;
  /** Sessions a network address may create per hour without a non-anonymous ID token; 0 or absent: no limit. See address-limit.ts. */
  readonly addressSessionsPerHour?: number;
  /** The longest a request may run (the function's timeout): a reservation counts as open at least this long. */
  readonly requestTimeoutMs?: number;
}

/** `already`: what was asked for was counted before (a keyed create's repeat); this admission took nothing, so it has nothing to give back. */
export type Admission = { readonly admitted: true; readonly already?: true } | { readonly admitted: false; readonly retryAfterMs: number; readonly erasing?: true };

/** The model tokens a message's calls may use, reserved against the daily limit until its commit settles them. */
export interface Reservation {
  /** The UTC day whose count holds it. */
  readonly day: string;
  readonly tokens: number;
  /** What it added to the session's context bound, taken back when its exchange cannot have landed. */
  readonly fresh: number;
  /**
   * When it was admitted (its arrival, and its entry's `at` in its context's `held`): it counted the
   * session as active from then, or from the count it found when that was later; and that count
   * (absent: not counted).
   */
  readonly countedAt: number;
  readonly countedBefore?: number;
  /**
   * Its admission found the session's context bound built from no settled call (none kept: the
   * session's first message, or a bound dropped while the session lived, see liveContexts; or one
   * built on such a bound since): it may miss history the prompt sends (see countedTokens).
   */
  readonly unanchored?: true;
}

export type MessageAdmission =
  | { readonly admitted: true; readonly reservation: Reservation }
  | { readonly admitted: false; readonly limit: "messages" | "sessions" | "tokens" | "erasing"; readonly retryAfterMs: number }
  /** The session's end released it (releaseEnded): the message is refused as its closed claim would be, taking nothing. */
  | { readonly admitted: false; readonly limit: "ended" };

/**
 * What a message may cost in tokens beyond the session's context bound (held in the usage
 * record): `fresh` covers what its exchange can add to the session's next prompts (the new
 * message, the reply's `max_tokens` and the framing it pays as a message, a summary) and a summary
 * call beside it; `firstPrompt` bounds the prompt of a session's first call (its system prompt).
 */
export interface TokenNeed {
  readonly fresh: number;
  readonly firstPrompt: number;
}

/** What a message's model calls used, to settle its reservation. */
export interface Spent {
  readonly tokens: number;
  readonly costUsd?: number;
  /**
   * The most the calls can have used as the service's own estimates count them (call-usage.ts
   * callBound: each prompt's estimate and its max_tokens). Absent: the reservation alone bounds
   * what is counted (see countedTokens).
   */
  readonly bound?: number;
  /** The `message_count` its claim saw: its prompt holds the exchanges up to that one (absent: none). */
  readonly claimedCount?: number;
  /** Present when the message's exchange may have been stored (its commit was sent). */
  readonly exchange?: {
    /** What the next prompt sends of the reply call: its prompt, and its reply as a message (its completion tokens and the message's framing). */
    readonly context: number;
    /** Its claim found no other message of the session running. */
    readonly alone: boolean;
    /**
     * What its reply carries into later prompts past `max_tokens` (a provider that ignored it), which
     * its admission's need did not count: absent or 0 for a reply within it.
     */
    readonly overrun?: number;
    /** When its reply was answered: the session's last activity if the exchange lands (session-rules.ts appendRule), from which its idle TTL runs. */
    readonly answeredAt: number;
  };
}

const MINUTE = 60_000;
const DAY = 86_400_000;
/** What a request refused while the user's data is being erased is told to wait (see session/erasure/). */
export const ERASING_RETRY_MS = 5_000;
/**
 * Longer than any request can run with the default timeout: a reservation still open after it (or
 * after the function's timeout, when that is longer) belongs to a request that died. Counted
 * closed while its request still runs, it would let another message's settlement lower the
 * session's bound past what that request's exchange adds: the next reservation too small.
 */
const OPEN_RESERVATION_MS = 120_000;

/** The longest a request may still be running: what an open reservation and an end's mark wait out. */
export function requestLifetimeMs(policy: Pick<UsagePolicy, "requestTimeoutMs">): number {
  return Math.max(OPEN_RESERVATION_MS, policy.requestTimeoutMs ?? 0);
}

/** Where a user's usage is kept: a hash, so that any user id makes a valid database key. */
export function userKey(userId: string): string {
  return keyHash("user", userId);
}

/** The last day `utcDay` worked out, with its bounds: several calls per message fall on the same day. */
let lastDay = { day: "", from: 0, until: 0 };

/** The UTC day of `now`, as YYYY-MM-DD. */
export function utcDay(now: number): string {
  if (now >= lastDay.from && now < lastDay.until) return lastDay.day;
  const day = new Date(now).toISOString().slice(0, 10);
  const from = Date.parse(`${day}T00:00:00Z`);
  lastDay = { day, from, until: from + DAY };
  return day;
}

/**
 * Takes one message token for `sessionId` and reserves the tokens its model calls may use, or
 * says when to retry. The reservation is the session's context bound plus the message's need,
 * worked out here, from the record every instance shares, so that concurrent messages, on any
 * instances, never carry a user past the daily limit together.
 *
 * The bound (`contexts[sessionId].tokens`) holds the largest prompt, less the new message, that
 * any coming message of the session can send. A prompt holds at most the one before it, that
 * call's reply and whatever exchanges landed meanwhile (what leaves the window only shrinks it; a
 * token window never reaches back past where the last prompt's began), so each admission raises
 * the bound by its own need, a message whose exchange cannot have landed takes its need back, and
 * a settlement brings the bound down to its call's real size only when no other exchange can land
 * outside that call's prompt: no other message open, none settled that claimed at or after its
 * count, and none running when it claimed.
 *
 * The session counts as active from now (see liveSessions), or from the count it found when that
 * is later, and its context keeps what it was counted from before its open admissions (`since`,
 * see activitySince), for a refund to put the count back to (refundMessage). One no longer counted (its count
 * lapsed, or was given back) is counted again only within the user's limit of active sessions: the
 * record never counts more sessions than it allows, whatever a lost settlement left behind. One
 * whose end released it (marked in `ended`: this admission was sent before the end, its claim
 * landing before it too, and it landed after) is refused, taking nothing: counted, it would hold a
 * slot for the idle TTL whatever became of its message, and the release dropped its context bound,
 * so a reservation from the first prompt's would not cover the history its model call would send.
 * The session never stores another exchange, so nothing is lost.
 */
export function admitMessage(sessionId: string, now: number, policy: UsagePolicy, need: TokenNeed): UsageRule<MessageAdmission> {
  return (usage) => {
    if (usage?.erasing !== undefined) return { outcome: { admitted: false, limit: "erasing", retryAfterMs: ERASING_RETRY_MS } };
    const ended = recentEnds(usage, now, policy);
    if (ended?.[sessionId] !== undefined) return { outcome: { admitted: false, limit: "ended" } };
    const took = takeToken(usage, now, policy.messagesPerMinute, MINUTE);
    if (!took.admitted) return { outcome: { admitted: false, limit: "messages", retryAfterMs: took.retryAfterMs } };
    // A count of a later day is that day's: an admission received before midnight whose
    // transaction lands after one of the new day (a cold instance, a rerun on contention) counts
    // into it, and never starts the new day's count over. Days are YYYY-MM-DD: ordered as strings.
    const day = utcDay(now);
    const used = usage?.daily !== undefined && usage.daily.day >= day ? usage.daily : { day, tokens: 0 };
    const live = liveSessions(usage, now, policy);
    const before = live[sessionId];
    const active = Object.values(live);
    if (before === undefined && active.length >= policy.maxActiveSessions) {
      return { outcome: { admitted: false, limit: "sessions", retryAfterMs: untilSlotFrees(active, now, policy) } };
    }
    const context = usage?.contexts?.[sessionId];
    const reserved = Math.ceil(addCounts(context?.tokens ?? need.firstPrompt, need.fresh));
    // A bound started here, from the first prompt, holds what the session's messages add from now
    // on, not what it sent before: until a settlement sets it to a real call's, it is unanchored.
    const unanchored = context === undefined || context.unanchored === true;
    if (policy.tokensPerDay > 0 && used.tokens + reserved > policy.tokensPerDay) {
      return { outcome: { admitted: false, limit: "tokens", retryAfterMs: untilTokensFree(usage, used, reserved, now, policy) } };
    }
    const open = openReservations(context, now, policy);
    const held = { ...open, [freeKey(context?.held, now.toString(36))]: { at: now, tokens: reserved, day: used.day } };
    // Never moved back: an admission landing after a later count (another message's answer or
    // arrival, whose transaction landed first: a second tab, a cold instance, a rerun on
    // contention, clocks apart) keeps it, or the session would be counted from before its last
    // activity, and a refund, which never raises the count, would leave it there.
    const sessions = { ...live, [sessionId]: before === undefined ? now : Math.max(before, now) };
    // Counted anew, the session's answers before its count lapsed are no activity to go back to.
    const { answered: _lapsed, ...kept } = context ?? {};
    return {
      outcome: {
        admitted: true,
        reservation: { day: used.day, tokens: reserved, fresh: Math.ceil(need.fresh), countedAt: now, ...(before === undefined ? {} : { countedBefore: before }), ...(unanchored ? { unanchored } : {}) },
      },
      next: withoutUndefined({
        // What other rules keep in the record (a user's connection requests) stays as it is.
        ...usage,
        ...took.bucket,
        sessions,
        daily: { ...used, tokens: addCounts(used.tokens, reserved) },
        // A lapsed session's context goes, and its open reservations (if any) are kept apart.
        released_held: keptApart(usage, (id) => !(id in sessions), now, policy),
        contexts: {
          ...liveContexts(usage, sessions),
          [sessionId]: {
            ...(before === undefined ? kept : context),
            tokens: reserved,
            open: Object.keys(held).length,
            landed: context?.landed ?? 0,
            at: now,
            held,
            since: activitySince(context, open, before, now, policy),
            ...(unanchored ? { unanchored } : {}),
          },
        },
        ended,
      }),
    };
  };
}

/**
 * Settles a message's reservation with what its calls used, whatever became of the exchange (the
 * provider charged them): the day's count moves from the reservation to the tokens spent (on the
 * day the record counts: a reservation from a day that has ended stays in that day's count), and
 * the session's context bound follows what the message's exchange can add (see admitMessage).
 *
 * An exchange that may have landed moves the session's count to its answer, as its commit moves
 * the session's last activity: counted from the message's arrival, the session would stop counting
 * (and its context bound be dropped) up to a model call's length before it expires, letting a
 * create past USER_MAX_ACTIVE_SESSIONS meanwhile. Only a count still there moves: a session
 * released (ended) or forgotten (erased) since is not counted again. A count newer than the answer
 * (another message admitted since) stays; the answer is kept in the session's context
 * (`answered`), for that message's refund to put the count back to (refundMessage).
 */
export function settleTokens(sessionId: string, reservation: Reservation, spent: Spent): UsageRule<undefined> {
  return (usage) => {
    if (!usage) return { outcome: undefined };
    const counted = usage.daily ?? { day: reservation.day, tokens: 0 };
    const reserved = counted.day === reservation.day ? reservation.tokens : 0;
    // Against the limit a message counts no report above both what it reserved and the service's
    // estimate of its calls, so that reservations that fit under it bound the day (the cost keeps
    // what the provider reported; see countedTokens).
    const tokens = Math.max(0, addCounts(counted.tokens, countedTokens(reservation, spent)) - reserved);
    const cost = spent.costUsd === undefined ? counted.cost_usd : roundUsd((counted.cost_usd ?? 0) + spent.costUsd);
    const daily = { day: counted.day, tokens, ...(cost === undefined ? {} : { cost_usd: cost }) };
    const { exchange } = spent;
    const claimedCount = spent.claimedCount ?? 0;
    const since = usage.sessions?.[sessionId];
    const sessions = exchange && since !== undefined && since < exchange.answeredAt ? { ...usage.sessions, [sessionId]: exchange.answeredAt } : usage.sessions;
    const found = usage.contexts?.[sessionId];
    const kept = found && closed(found, reservation);
    // Not in its context: kept apart when its session's count was released while it ran (heldApart).
    const apart = kept === found ? closedApart(usage.released_held, reservation) : usage.released_held;
    if (!kept) return { outcome: undefined, next: withoutUndefined({ ...usage, daily, sessions, released_held: apart }) };
    // Never before its own arrival: the settlement moves the count only forwards, so a count at
    // that arrival stays (clocks of instances apart), and a refund must not go below it either.
    const answer = Math.max(exchange?.answeredAt ?? 0, reservation.countedAt);
    const context = exchange ? { ...kept, answered: Math.max(kept.answered ?? answer, answer) } : kept;
    const { open } = context;
    let settled: typeof context;
    if (!exchange) {
      // Nothing of this message can reach a prompt: its need comes off the bound (no bound was
      // lowered since it was admitted, as it was open all along).
      settled = { ...context, tokens: Math.max(0, context.tokens - reservation.fresh) };
    } else {
      const alone = exchange.alone && open === 0 && context.landed <= claimedCount;
      const landed = Math.max(context.landed, claimedCount + 1);
      if (alone) {
        // The bound is now the real call's: anchored.
        const { unanchored: _anchored, ...rest } = context;
        settled = { ...rest, tokens: exchange.context, landed };
      } else {
        // Not alone, the bound keeps each admission's need, which counted this reply at `max_tokens`
        // (with its framing as a message): a longer one adds the rest, or the next reservation would
        // leave it out of a prompt that sends it.
        settled = { ...context, tokens: addCounts(context.tokens, exchange.overrun ?? 0), landed };
      }
    }
    return { outcome: undefined, next: withoutUndefined({ ...usage, daily, sessions, released_held: apart, contexts: { ...usage.contexts, [sessionId]: settled } }) };
  };
}

/**
 * What a settlement counts against the daily limit: what the calls spent, at most what the message
 * reserved. A report the service believes (call-usage.ts: up to 4x its estimate of the prompt plus
 * 256, for a tokenizer that counts more than o200k) can pass the reservation, which is built from
 * the session's last reported call and the service's raw estimates of what is new; counted in
 * full, concurrent messages admitted at the edge would carry the day past the limit together.
 * Only a reservation that may have missed history counts more, up to the service's own estimate of
 * the calls made (`spent.bound`, the prompts' estimates raised by the session's calibration): one
 * built on an unanchored bound (a bound dropped while the session lived, see liveContexts, reserves
 * from the system prompt) whose claim saw exchanges, which its prompt sends. Any other reservation
 * holds the history: counted up to that estimate, a report above the raw estimate of the new
 * message (within its calibrated one) would pass the limit by its excess. OpenAI's reports (o200k
 * counts, which the estimate never passes) are never cut: the reservation holds them. What was
 * spent beyond is still the user's cost, and is logged (in-flight-message.ts).
 */
export function countedTokens(reservation: Pick<Reservation, "tokens" | "unanchored">, spent: Pick<Spent, "tokens" | "bound" | "claimedCount">): number {
  const missed = reservation.unanchored === true && (spent.claimedCount ?? 0) > 0;
  return Math.min(spent.tokens, missed ? Math.max(reservation.tokens, spent.bound ?? reservation.tokens) : reservation.tokens);
}

/**
 * A context's open reservations, each with when it was admitted and what it holds, without those
 * older than a request can run: a reservation still open then belongs to a request that died (its
 * admission's answer or its settlement was lost), and kept, it would leave every later settlement
 * of the session short of "alone" and the bound growing by each message's need. Each lapses from
 * its own admission: a session's later admissions never keep a dead one alive. A record an older
 * version wrote counts its open reservations in `open` alone: each taken as admitted at `at` (its
 * last admission, so never before its own) and holding nothing known. So a context lists at most
 * the session's admissions of a request's lifetime, which the per-minute bucket bounds.
 */
function openReservations(context: SessionContext | undefined, now: number, policy: UsagePolicy): Held {
  if (!context) return {};
  const known = context.held ?? {};
  // Lapsed from the instant its lifetime ends, which is when untilTokensFree tells a refused message to retry.
  const kept = Object.entries(withoutLapsed(known, now, policy) ?? {});
  const untracked = context.open - Object.keys(known).length;
  if (now - context.at < requestLifetimeMs(policy)) for (let i = 0; i < untracked; i += 1) kept.push([`old${i}`, { at: context.at, tokens: 0 }]);
  return Object.fromEntries(kept);
}

/** A key from `base` (an admission's time, in base 36) that no entry of `held` has. */
function freeKey(held: Held | undefined, base: string): string {
  let key = base;
  for (let i = 1; held?.[key] !== undefined; i += 1) key = `${base}-${i}`;
  return key;
}

/**
 * The context with `reservation` no longer open: one entry admitted when it was, holding what it
 * holds, removed (entries alike are interchangeable). One not found was forgotten already (it
 * lapsed), or was admitted by an older version, which settles it itself: nothing else is closed.
 */
function closed(context: SessionContext, reservation: Reservation): SessionContext {
  const entries = Object.entries(context.held ?? {});
  const index = entries.findIndex(([, entry]) => entry.at === reservation.countedAt && entry.tokens === reservation.tokens);
  if (index < 0) return context;
  const held = Object.fromEntries(entries.filter((_, i) => i !== index));
  const { held: _closed, ...rest } = context;
  return { ...rest, open: Math.max(0, context.open - 1), ...(entries.length > 1 ? { held } : {}) };
}

/**
 * The reservations kept apart (heldApart) without `reservation`: one entry admitted when it was,
 * holding what it holds (entries alike are interchangeable, whatever their session: they only say
 * how long a refused message waits). Absent when none is left.
 */
function closedApart(apart: Held | undefined, reservation: Reservation): Held | undefined {
  const entries = Object.entries(apart ?? {});
  const index = entries.findIndex(([, entry]) => entry.at === reservation.countedAt && entry.tokens === reservation.tokens);
  if (index < 0) return apart;
  return entries.length > 1 ? Object.fromEntries(entries.filter((_, i) => i !== index)) : undefined;
}

/**
 * The user's open reservations that no session's context holds any more (`released_held`): those of
 * the contexts dropped for the sessions `gone` says (no longer counted: ended, given back or lapsed
 * while a message of theirs ran; or deleted by the user's erasure), added to those kept apart
 * before. Their messages still hold them in the day's count until they settle (settleTokens finds
 * them here) or lapse, and a message the daily limit refuses meanwhile waits for them, not for
 * midnight (untilTokensFree). Only what a refusal's wait needs is kept: when each was admitted,
 * what it holds and on which day, and no session id. An instance of an older version drops them
 * when it writes the record: a refusal then waits for midnight, as that version answers.
 */
function heldApart(usage: UserUsage | null, gone: (sessionId: string) => boolean): Held | undefined {
  const apart: Held = { ...usage?.released_held };
  for (const [sessionId, context] of Object.entries(usage?.contexts ?? {})) {
    if (!gone(sessionId)) continue;
    for (const [key, entry] of Object.entries(context.held ?? {})) if (entry.tokens > 0) apart[freeKey(apart, key)] = entry;
  }
  return Object.keys(apart).length > 0 ? apart : undefined;
}

/**
 * The reservations kept apart once the contexts of the sessions `gone` says are dropped (heldApart),
 * without those lapsed at `now`: for each rule that drops contexts, here and in the erasure's
 * (erasure-rules.ts forgetSessions), so that a message still running in a session deleted meanwhile
 * shortens a refusal's wait as one of a session ended does.
 */
export function keptApart(usage: UserUsage | null, gone: (sessionId: string) => boolean, now: number, policy: Pick<UsagePolicy, "requestTimeoutMs">): UserUsage["released_held"] {
  return withoutLapsed(heldApart(usage, gone), now, policy);
}

/** The reservations kept apart without those older than a request can run (their requests died): none left, absent. */
function withoutLapsed(apart: Held | undefined, now: number, policy: Pick<UsagePolicy, "requestTimeoutMs">): Held | undefined {
  const lifetime = requestLifetimeMs(policy);
  const kept = Object.entries(apart ?? {}).filter(([, entry]) => now - entry.at < lifetime);
  return kept.length > 0 ? Object.fromEntries(kept) : undefined;
}

/**
 * When to retry a message the daily limit refused: when the day ends, unless what the user's open
 * reservations hold (those counted in the day's count, of messages still running: each settles to at most what it reserved,
 * unless its reservation missed history: countedTokens) is what keeps it out; then once the last of them has settled or lapsed, at the latest. The day's
 * count holds them at their upper bound until their settlements, seconds later most often: the
 * same message may then fit.
 */
function untilTokensFree(usage: UserUsage | null, used: { readonly day: string; readonly tokens: number }, reserved: number, now: number, policy: UsagePolicy): number {
  const midnight = Date.parse(`${used.day}T00:00:00Z`) + DAY - now;
  const lifetime = requestLifetimeMs(policy);
  const apart = Object.values(withoutLapsed(usage?.released_held, now, policy) ?? {});
  const open = Object.values(usage?.contexts ?? {})
    .flatMap((context) => Object.values(openReservations(context, now, policy)))
    .concat(apart)
    // The day whose count holds it: an admission received before midnight and landed after one of
    // the new day counts into the new day (admitMessage). A record of an older version names no day.
    .filter((entry) => entry.tokens > 0 && (entry.day ?? utcDay(entry.at)) === used.day);
  const holding = open.reduce((sum, entry) => sum + entry.tokens, 0);
  if (open.length === 0 || used.tokens - holding + reserved > policy.tokensPerDay) return midnight;
  // When the last one lapses: from that instant on it no longer counts as open (openReservations),
  // so a retry then, as Retry-After's whole seconds round it up, gets the day's own answer.
  return Math.min(midnight, Math.max(...open.map((entry) => entry.at)) + lifetime - now);
}

type SessionContext = NonNullable<UserUsage["contexts"]>[string];
type Held = NonNullable<SessionContext["held"]>;

/**
 * Gives back what a message took and did not use: its token reservation (the model was not called,
 * or failed; of it, what its calls were billed stays counted: `spent`, as settleTokens counts it,
 * a reply refused by moderation or a summary call), the session's count as it was before (nothing
 * was stored, so the session's idle TTL still runs from its last activity, and so must its count:
 * a failed message near the TTL would otherwise hold the expired session's slot for another TTL),
 * and when it was `refused` before the model, its message token. The admission counts the session
 * as active before its claim's answer is known (both are sent at once): a message refused because
 * its session has ended, or is gone, or a replay, must not count an ended session as active again
 * for the idle TTL (against USER_MAX_ACTIVE_SESSIONS), nor put an erased session back in the record.
 *
 * The count goes back to the session's last activity that this message does not account for (see
 * lastActivity): what the context counted it from before its open admissions (`since`), the latest
 * answer settled (`answered`) and the arrival of each other admission still open. Not the count
 * this admission read: that may be another message's arrival, one that failed as well (two
 * messages near the TTL failing together would each leave the other's arrival, and the expired
 * session would keep its slot for almost another TTL), or one answered since. A refund only ever
 * lowers the count, which is never below that last activity: no admission moves a count back
 * (admitMessage), whatever order the admissions land in. So the admissions, refunds and
 * settlements of one session's messages leave the same count in whatever order they land. A
 * session not counted before its admissions (lapsed, or released) is not counted again; one
 * released since stays released. A record of an older version (no `since`) keeps the rule it was
 * written under: the count goes back to the later of what the admission read and `answered`, only
 * while it is still this admission's.
 */
export function refundMessage(policy: UsagePolicy, sessionId: string, reservation: Reservation, refused: boolean, spent: Omit<Spent, "exchange"> = { tokens: 0 }): UsageRule<undefined> {
  const settle = settleTokens(sessionId, reservation, spent);
  return (usage) => {
    const settled = settle(usage).next;
    if (!settled) return { outcome: undefined };
    const refunded = refused ? { ...settled, tokens: Math.min(policy.messagesPerMinute, settled.tokens + 1) } : settled;
    const count = settled.sessions?.[sessionId];
    if (count === undefined) return { outcome: undefined, next: refunded };
    const context = settled.contexts?.[sessionId];
    if (context?.since === undefined) {
      if (count !== reservation.countedAt) return { outcome: undefined, next: refunded };
      const before = reservation.countedBefore === undefined ? undefined : Math.max(reservation.countedBefore, context?.answered ?? reservation.countedBefore);
      return { outcome: undefined, next: countedAsBefore(refunded, sessionId, before) };
    }
    const last = lastActivity(context);
    // A refund never counts the session later than it is counted now.
    return { outcome: undefined, next: countedAsBefore(refunded, sessionId, last === 0 ? undefined : Math.min(count, last)) };
  };
}

/**
 * What a session is counted from, once its admissions in `held` (those still open, and those that
 * lapsed unsettled, not yet forgotten) are taken as they are: 0 when nothing counts it.
 */
function lastActivity(context: SessionContext): number {
  const held = Object.values(context.held ?? {}).map((entry) => entry.at);
  // A record an older version wrote counts some open reservations in `open` alone, admitted at `at` at the latest.
  const untracked = context.open > held.length ? [context.at] : [];
  return Math.max(context.since ?? 0, context.answered ?? 0, ...held, ...untracked);
}

/**
 * What an admission keeps in its session's context as `since`: the session's last activity that no
 * admission still open accounts for. With none open, the count it found (`before`: the session's
 * creation, its latest settled answer, or the arrival of an admission that lapsed unsettled, whose
 * exchange may have landed: counted high). With others open, what the context kept, raised by the
 * arrival of each admission that lapses now (forgotten from `held`, unsettled); a context an older
 * version wrote keeps none, so the count found stands in for it (high, as that version counted).
 * 0: the session was not counted (its count lapsed, or was released).
 */
function activitySince(context: SessionContext | undefined, open: Held, before: number | undefined, now: number, policy: UsagePolicy): number {
  if (before === undefined) return 0;
  if (Object.keys(open).length === 0 || context?.since === undefined) return before;
  const lifetime = requestLifetimeMs(policy);
  const lapsed = Object.values(context.held ?? {})
    .filter((entry) => now - entry.at >= lifetime)
    .map((entry) => entry.at);
  return Math.min(before, Math.max(context.since, ...lapsed));
}

/** The record with `sessionId` counted since `before` again, or, for none, not counted (released: its context bound going with it). */
function countedAsBefore(usage: UserUsage, sessionId: string, before: number | undefined): UserUsage {
  if (before !== undefined) return { ...usage, sessions: { ...usage.sessions, [sessionId]: before } };
  return releaseSession(sessionId)(usage).next ?? usage;
}

/**
 * Counts `sessionId` as active for the user, unless that would exceed the limit (then: when a slot
 * frees). One counted already, or ended (releaseEnded: a keyed create's repeat whose admission
 * landed after the first request created the session and the client ended it), takes nothing: the
 * repeat replays the session, and counted again the ended session would hold a slot for the idle TTL.
 */
export function admitSession(sessionId: string, now: number, policy: UsagePolicy): UsageRule<Admission> {
  return (usage) => {
    if (usage?.erasing !== undefined) return { outcome: { admitted: false, retryAfterMs: ERASING_RETRY_MS, erasing: true } };
    const live = liveSessions(usage, now, policy);
    if (sessionId in live || recentEnds(usage, now, policy)?.[sessionId] !== undefined) return { outcome: { admitted: true, already: true } };
    const active = Object.values(live);
    if (active.length >= policy.maxActiveSessions) return { outcome: { admitted: false, retryAfterMs: untilSlotFrees(active, now, policy) } };
    const base = usage ?? { tokens: policy.messagesPerMinute, refilled_at: now };
    return { outcome: { admitted: true }, next: { ...base, sessions: { ...live, [sessionId]: now } } };
  };
}

/**
 * How long until the first of the `active` counts lapses (at least a second): a millisecond past
 * the TTL, since a session idle exactly the TTL still counts (liveSessions), and a create that
 * waited until then, as a whole number of seconds in Retry-After can say, would be refused again.
 */
function untilSlotFrees(active: readonly number[], now: number, policy: UsagePolicy): number {
  return Math.max(1_000, Math.min(...active) + policy.idleTtlMs + 1 - now);
}

/** Stops counting a session (one not created after all, or no longer active). */
export function releaseSession(sessionId: string): UsageRule<undefined> {
  return (usage) => {
    if (!usage?.sessions || !(sessionId in usage.sessions)) return { outcome: undefined };
    const { [sessionId]: released, ...others } = usage.sessions;
    return { outcome: undefined, next: withoutUndefined({ ...usage, sessions: others, contexts: liveContexts(usage, others), released_held: heldApart(usage, (id) => !(id in others)) }) };
  };
}

/**
 * Stops counting a session that ended, for good: a message admitted before the end may have its
 * usage transaction (sent beside its claim) land after this one, and would count the ended session
 * again, and whatever became of that message next (refused at its commit, its model call failed,
 * its commit's answer lost, its instance gone) it would hold a slot of USER_MAX_ACTIVE_SESSIONS
 * for the idle TTL. So the session is noted in `ended` for as long as a request may run, which
 * admitMessage (refusing the message) and admitSession (a keyed create's repeat, counting nothing)
 * respect; an ended session never takes a message again, so nothing is lost.
 */
export function releaseEnded(sessionId: string, now: number, policy: UsagePolicy): UsageRule<undefined> {
  return (usage) => {
    if (!usage) return { outcome: undefined };
    const released = releaseSession(sessionId)(usage).next ?? usage;
    return { outcome: undefined, next: withoutUndefined({ ...released, released_held: withoutLapsed(released.released_held, now, policy), ended: { ...recentEnds(usage, now, policy), [sessionId]: now } }) };
  };
}

/**
 * The sessions ended (releaseEnded) within as long as a request may run: an admission sent before
 * an end lands by then. Older marks are dropped, so the record holds only a few minutes' ends.
 */
function recentEnds(usage: UserUsage | null, now: number, policy: UsagePolicy): UserUsage["ended"] {
  const kept = Object.entries(usage?.ended ?? {}).filter(([, at]) => now - at <= requestLifetimeMs(policy));
  return kept.length > 0 ? Object.fromEntries(kept) : undefined;
}

/**
 * The sessions still counted: those used within the idle TTL, each counted from its creation, its
 * latest message's arrival, or that message's answer once settled (settleTokens), whichever is
 * last: the session's own last activity (session-rules.ts). A session idle longer is expired by
 * definition, whether or not the sweep has marked it yet; an end whose release was lost stops
 * counting once the TTL has passed.
 */
function liveSessions(usage: UserUsage | null, now: number, policy: UsagePolicy): Record<string, number> {
  return Object.fromEntries(Object.entries(usage?.sessions ?? {}).filter(([, lastActivity]) => now - lastActivity <= policy.idleTtlMs));
}

/** The contexts of the sessions still counted: a record never grows with sessions long gone. */
function liveContexts(usage: UserUsage | null, sessions: Readonly<Record<string, number>>): UserUsage["contexts"] {
  const kept = Object.entries(usage?.contexts ?? {}).filter(([sessionId]) => sessionId in sessions);
  return kept.length > 0 ? Object.fromEntries(kept) : undefined;
}

/** The record without absent fields (the database stores none). */
function withoutUndefined(usage: Readonly<Partial<Record<keyof UserUsage, unknown>>>): UserUsage {
  return Object.fromEntries(Object.entries(usage).filter(([, value]) => value !== undefined)) as UserUsage;
}
