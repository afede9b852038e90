import { isDoneKey, ofCreation, type RequestEntry, type SessionState, type SessionStatus, type TokenUsage } from "../store/records";
import { addUsage, NO_USAGE } from "./ledger/token-usage";
import type { StateRule } from "../store/session-store";

/**
 * The rules of a session's life, as pure functions of its stored state. The store applies them
 * inside a transaction, so each decision is made on the state it changes.
 */

export type Closed = Exclude<SessionStatus, "active">;

export interface SessionPolicy {
  /** A session idle longer than this is expired, by the sweep or by the first request that finds it. */
  readonly idleTtlMs: number;
  /** The most exchanges a session may hold. */
  readonly maxExchanges: number;
}

/**
 * A message request's claim on a slot of the session, held while its model call runs. With an
 * `Idempotency-Key` it is stored under the key's hash and remembered after the exchange, for
 * replays; without one, under a random id, and dropped once the exchange is stored.
 */
export interface RequestClaim {
  readonly hash: string;
  readonly fingerprint: string;
  /** A random id of the request that claims the slot. */
  readonly owner: string;
  /** Keep the entry after the exchange (it has an Idempotency-Key). */
  readonly remember: boolean;
}

/**
 * The state as it stands at `now`: an active session idle past the TTL is expired. A message
 * still running (a claim within its lease) is activity: it arrived while the session was active,
 * and its commit judges expiry as of its arrival, so neither the sweep nor another message may
 * expire the session under it (the model's reply, billed, would be refused at the commit).
 */
export function expiredIfIdle(state: SessionState, now: number, policy: SessionPolicy): SessionState {
  if (state.status !== "active" || now - state.last_activity <= policy.idleTtlMs || liveClaims(state, now) > 0) return state;
  // Recorded now, whenever the TTL ran out: retention waits for the copies this close sends (retentionRule).
  return { ...closedState(state, "expired", state.last_activity + policy.idleTtlMs), closed_at: now };
}

function closedState(state: SessionState, status: Closed, at: number): SessionState {
  const { idle_since, ...rest } = state;
  return { ...rest, status, ended_at: at };
}

export type ClaimOutcome =
  /** `alone`: no other message of the session was running. */
  | { readonly kind: "claimed"; readonly alone: boolean }
  | ExchangeLimit
  | { readonly kind: "done"; readonly seq: number }
  /** The key's first request was flagged by moderation: a repeat gets the same refusal. */
  | { readonly kind: "flagged" }
  | { readonly kind: "busy"; readonly leaseUntil: number }
  | { readonly kind: "reused" }
  | { readonly kind: "closed"; readonly status: Closed };

/**
 * Claims a slot before the model is called. The session's exchange limit counts stored exchanges
 * and live claims together, so concurrent requests can never carry it past the limit, nor call the
 * model for a message that cannot be stored; a refusal that live claims alone make says so
 * (`running`). With a key, a repeat of the request waits for this one instead of calling the model
 * again. A claim lapses at its lease: if its request died, the slot frees and a repeat takes over.
 */
export function claimRequest(claim: RequestClaim, now: number, leaseMs: number, policy: SessionPolicy): StateRule<ClaimOutcome> {
  return (state) => {
    const current = expiredIfIdle(state, now, policy);
    const entry = current.requests?.[claim.hash];
    if (entry && entry.fingerprint !== claim.fingerprint) return { outcome: { kind: "reused" } };
    if (entry?.seq !== undefined) return { outcome: { kind: "done", seq: entry.seq } };
    if (entry?.flagged === true) return { outcome: { kind: "flagged" } };
    if (current.status !== "active") return closing(state, current);
    if (entry?.lease_until !== undefined && entry.lease_until > now && entry.owner !== claim.owner) {
      return { outcome: { kind: "busy", leaseUntil: entry.lease_until } };
    }
    const others = liveClaims(current, now, claim.hash);
    if (current.message_count + others >= policy.maxExchanges) {
      const refused = exchangeLimit(current, now, policy);
      return { outcome: current.message_count < policy.maxExchanges ? { ...refused, running: true } : refused };
    }
    const claimed: RequestEntry = { fingerprint: claim.fingerprint, owner: claim.owner, lease_until: now + leaseMs };
    // Taking over a lapsed claim of this key: the request that held it died, and its partial with it.
    const overtaken = entry?.owner !== undefined && entry.owner !== claim.owner ? [entry.owner] : [];
    return { outcome: { kind: "claimed", alone: others === 0 }, next: withRequest(current, claim.hash, claimed), ...strays(overtaken) };
  };
}

/**
 * Gives up a claim whose request failed before storing anything, so its slot frees at once. With
 * `partial` (the request may have written a partial reply), names it for the copy to remove: the
 * request's own removal is sent on its own and may be lost, and once the claim is gone nothing
 * else leads to the partial (the sweep and the commits find partials through lapsed claims), so it
 * would be shown as a live reply for as long as the session is active. Partials are keyed by their
 * claim's owner, so only this request's can go. Without one, nothing is named: the copy it would
 * call for costs writes (the session node and its index entry) for nothing.
 */
export function releaseClaim(claim: RequestClaim, partial = false): StateRule<undefined> {
  return (state) => {
    const entry = state.requests?.[claim.hash];
    if (entry?.owner !== claim.owner || isDoneKey(entry)) return { outcome: undefined };
    return { outcome: undefined, next: withoutRequest(state, claim.hash), ...strays(partial ? [entry.owner] : []) };
  };
}

/**
 * Ends a keyed claim whose message moderation flagged: the key is kept as flagged, as a stored
 * exchange's is, so a repeat of it (waiting on the claim, or later, on any instance) gets the
 * same 422 without a model call, and its slot frees at once. Anything else is released as
 * releaseClaim does: an unkeyed claim, or one this request no longer holds.
 */
export function flagClaim(claim: RequestClaim, partial = false): StateRule<undefined> {
  if (!claim.remember) return releaseClaim(claim, partial);
  return (state) => {
    const entry = state.requests?.[claim.hash];
    if (entry?.owner !== claim.owner || isDoneKey(entry)) return { outcome: undefined };
    const flagged: RequestEntry = { fingerprint: claim.fingerprint, flagged: true };
    return { outcome: undefined, next: withRequest(state, claim.hash, flagged), ...strays(partial ? [entry.owner] : []) };
  };
}

/**
 * The session holds all the exchanges it may (stored, or claimed by requests still running): no
 * wait helps, and the client learns when the session expires and stops counting against the
 * user's active sessions (`retryAfterMs` from `now`). A refused message is no activity: that is a
 * TTL after its last activity, a millisecond past it (expiredIfIdle), or, while other messages run,
 * a TTL after the last of their leases at the latest (each commits by its lease, and is activity).
 */
export interface ExchangeLimit {
  readonly kind: "limit";
  readonly retryAfterMs: number;
  /**
   * A claim's refusal with fewer exchanges stored than the limit: claims of requests still running
   * hold the rest, and any of them may yet give its slot back (a keyed repeat that turns out a
   * replay of a key moved to its record, a message that fails), so the claimant may wait for them
   * (message/slot-claim.ts).
   */
  readonly running?: true;
}

function exchangeLimit(state: SessionState, now: number, policy: SessionPolicy): ExchangeLimit {
  return { kind: "limit", retryAfterMs: Math.max(state.last_activity, ...liveLeases(state, now)) + policy.idleTtlMs + 1 - now };
}

/** Claims of requests still running at `now`, other than `except`. */
function liveClaims(state: SessionState, now: number, except?: string): number {
  return liveLeases(state, now, except).length;
}

/** The leases of the claims of requests still running at `now`, other than `except`. */
function liveLeases(state: SessionState, now: number, except?: string): number[] {
  return Object.entries(state.requests ?? {}).flatMap(([hash, entry]) => (hash !== except && !isDoneKey(entry) && (entry.lease_until ?? 0) > now ? [entry.lease_until ?? 0] : []));
}

export type AppendOutcome =
  | { readonly kind: "appended"; readonly seq: number }
  | ExchangeLimit
  | { readonly kind: "duplicate"; readonly seq: number }
  | { readonly kind: "reused" }
  | { readonly kind: "lost" }
  /** The state under the id is another creation's (ofCreation): the claimed session is gone, erased. */
  | { readonly kind: "gone" }
  | { readonly kind: "closed"; readonly status: Closed };

/**
 * Stores an exchange: the session must still be open (judged when the message arrived), and a
 * key must not have produced an exchange already (a repeat that outlived its claim). A keyed
 * exchange needs its own claim in the state: without it the claim lapsed, and was dropped or taken
 * over by a repeat, and the key may have completed and moved to its record, out of this rule's
 * sight: storing it could store the key twice, so it is refused as lost (the client's retry with
 * the key finds whichever request stored it).
 */
export function appendRule(options: {
  readonly receivedAt: number;
  readonly answeredAt: number;
  readonly policy: SessionPolicy;
  readonly claim?: RequestClaim;
  /** What the exchange's model calls used, added to the session's totals with it. */
  readonly usage?: TokenUsage;
  /** The `created_at` of the session the claim was made on. */
  readonly createdAt?: number;
}): StateRule<AppendOutcome> {
  const { receivedAt, answeredAt, policy, claim, usage, createdAt } = options;
  return (state) => {
    if (createdAt !== undefined && !ofCreation(state, createdAt)) return { outcome: { kind: "gone" } };
    const current = expiredIfIdle(state, receivedAt, policy);
    const entry = claim && current.requests?.[claim.hash];
    if (claim && entry && entry.fingerprint !== claim.fingerprint) return { outcome: { kind: "reused" } };
    if (entry?.seq !== undefined) return { outcome: { kind: "duplicate", seq: entry.seq } };
    if (current.status !== "active") return closing(state, current);
    // Only the claim's owner commits a keyed exchange. Any other entry is a repeat's claim: one
    // that took this lapsed claim over (it commits, this one is lost), or one that only passed
    // through to replay a key already done and moved to its record, where this rule cannot see it.
    if (claim?.remember && entry?.owner !== claim.owner) return { outcome: { kind: "lost" } };
    if (current.message_count >= policy.maxExchanges) return { outcome: exchangeLimit(current, answeredAt, policy) };
    const seq = current.message_count + 1;
    const lastActivity = Math.max(current.last_activity, answeredAt);
    let next: SessionState = { ...current, message_count: seq, last_activity: lastActivity, idle_since: lastActivity };
    if (usage) next = { ...next, usage: addUsage(current.usage ?? NO_USAGE, usage) };
    if (claim?.remember) next = withRequest(next, claim.hash, { fingerprint: claim.fingerprint, seq });
    else if (claim) next = withoutRequest(next, claim.hash);
    const { state: kept, owners } = dropLapsedClaims(next, answeredAt);
    return { outcome: { kind: "appended", seq }, next: kept, ...strays(owners) };
  };
}

/**
 * The sweep's rule for a session holding claims past their lease (requests that died before
 * their commit): drops them, and with them the partial replies they left.
 */
export function sweepLapsedClaims(now: number): StateRule<number> {
  return (state) => {
    const { state: kept, owners } = dropLapsedClaims(state, now);
    return kept === state ? { outcome: 0 } : { outcome: owners.length, next: kept, ...strays(owners) };
  };
}

function strays(owners: readonly string[]): { strayPartials?: readonly string[] } {
  return owners.length > 0 ? { strayPartials: owners } : {};
}

export type EndOutcome = { readonly kind: "ended" } | { readonly kind: "closed"; readonly status: Closed };

/**
 * Ends an active session. One already closed is refused, and written back as it is: a change the
 * store then follows with the closing copy again, which mends an index entry whose closing fields
 * an earlier copy lost (it costs only this refusal's path).
 */
export function endRule(now: number, policy: SessionPolicy): StateRule<EndOutcome> {
  return (state) => {
    const current = expiredIfIdle(state, now, policy);
    if (current.status !== "active") {
      const refused = closing(state, current);
      return refused.next === undefined ? { ...refused, next: state } : refused;
    }
    return { outcome: { kind: "ended" }, next: { ...closedState(current, "ended", now), last_activity: Math.max(current.last_activity, now) } };
  };
}

/** The sweep's rule: expires the session if it is idle past the TTL now (activity since keeps it). */
export function expireRule(now: number, policy: SessionPolicy): StateRule<boolean> {
  return (state) => {
    const current = expiredIfIdle(state, now, policy);
    return current === state ? { outcome: false } : { outcome: true, next: current };
  };
}

/**
 * Whether retention may delete a session (`cutoff`: now less the retention): closed, ended at or
 * before `cutoff`, and its close recorded at or before `settledBy` (now less the time the copy a
 * close sends may take to land: runtime/time-budget.ts closingCopyLandsWithinMs). The transaction that closes a
 * session is followed by the copy of its journal and closing fields (plain updates, beside the
 * state: rtdb-store.ts copyJournal), which lands when it lands; deleted before it, the session
 * comes back as messages and an index entry with no state, which no query finds again. An end is
 * recorded at its `ended_at`, so the retention covers that time; an expiry recorded late (an
 * instance out of reach, a backlog, a shorter TTL) ended long before, and goes by its `closed_at`.
 * A state an older version closed (no `closed_at`) goes by `ended_at` alone, as it did.
 */
export function retentionRule(cutoff: number, settledBy: number): (state: SessionState) => boolean {
  return (state) => state.status !== "active" && state.ended_at !== undefined && state.ended_at <= cutoff && (state.closed_at ?? state.ended_at) <= settledBy;
}

/** A refusal because the session is over, recording its expiry when only now it turned out expired. */
function closing(state: SessionState, current: SessionState): { outcome: { kind: "closed"; status: Closed }; next?: SessionState } {
  const outcome = { kind: "closed", status: current.status as Closed } as const;
  return current === state ? { outcome } : { outcome, next: current };
}

function withRequest(state: SessionState, hash: string, entry: RequestEntry): SessionState {
  return withRequests(state, { ...state.requests, [hash]: entry });
}

function withoutRequest(state: SessionState, hash: string): SessionState {
  const { [hash]: dropped, ...others } = state.requests ?? {};
  return withRequests(state, others);
}

/** The state with this map of requests; without the field when it is empty, as the database stores it. */
function withRequests(state: SessionState, requests: Record<string, RequestEntry>): SessionState {
  const { requests: previous, ...rest } = state;
  return Object.keys(requests).length > 0 ? { ...rest, requests } : rest;
}

/**
 * Drops claims whose lease ran out, and names their owners (the keys of the partial replies their
 * requests may have left). Done keys (stored or flagged) stay: the store moves each to its record beside the session
 * once its exchange is copied, which keeps the state small however many keys a session remembers.
 */
function dropLapsedClaims(state: SessionState, now: number): { state: SessionState; owners: string[] } {
  if (!state.requests) return { state, owners: [] };
  const entries = Object.entries(state.requests);
  const lapsed = (entry: RequestEntry) => !isDoneKey(entry) && (entry.lease_until ?? 0) <= now;
  if (!entries.some(([, entry]) => lapsed(entry))) return { state, owners: [] };
  const owners = entries.flatMap(([, entry]) => (lapsed(entry) && entry.owner !== undefined ? [entry.owner] : []));
  return { state: withRequests(state, Object.fromEntries(entries.filter(([, entry]) => !lapsed(entry)))), owners };
}
