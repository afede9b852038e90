import type { Blocks, ClosedStatus, ConnectionMessage, ConnectionState, Participant, PairRecord } from "../store/connection-records";
import type { ConnectionRule, MessageRule } from "../store/connection-store";
import type { LedgerRule } from "../store/session-store";
import { takeToken } from "../session/ledger/token-bucket";
import { newestEntries } from "./newest-entries";

/**
 * The rules of connections between users, as pure functions of what is stored: the pair's record
 * (one open connection per pair, and the pair's blocks) and a connection's state (consent, end,
 * blocks, and each message's place). The store applies each inside a transaction, so every
 * decision is made on the very value it changes.
 */

export interface ConnectionPolicy {
  /** Messages each participant may send per minute in one connection (a bucket in its state). */
  readonly messagesPerMinute: number;
}

/** The `Idempotency-Key`s a connection's state remembers: those of its last keyed messages. */
export const KEYS_REMEMBERED = 64;

/**
 * The flagged messages' keys it remembers beside them (`flagged_keys`), the last flagged. Fewer:
 * each must outlive the sends racing its own (a request's lifetime) and the client's retries, and
 * a key forgotten only has its next send checked again; every transaction on the state carries them.
 */
export const FLAGGED_KEYS_REMEMBERED = 16;

const MINUTE = 60_000;

export function otherParticipant(participant: Participant): Participant {
  return participant === "a" ? "b" : "a";
}

function isBlocked(blocks: Blocks | undefined): boolean {
  return blocks?.a !== undefined || blocks?.b !== undefined;
}

/** The pair's current connection, as its record names it. */
export type CurrentConnection = NonNullable<PairRecord["current"]>;

export type PairRequestOutcome =
  | { readonly kind: "blocked" }
  /**
   * `created`: this request made it the pair's current connection; its node is still to be written.
   * `blockVersion`: the pair's, which held no block as of it (see `requestAgain`).
   */
  | { readonly kind: "current"; readonly current: CurrentConnection; readonly created: boolean; readonly blockVersion: number }
  /** The pair has no open connection, and the request had no candidate to make one: nothing written. */
  | { readonly kind: "none" };

/**
 * A request for a connection, on the pair's record: the pair's current connection answers it,
 * unless the caller knows that one is closed (`closed`: declined and ended are final, so once seen
 * they stay true), in which case `candidate` becomes the pair's current connection. Without a
 * candidate (a requester past their hourly limit) the request makes nothing: it is answered by the
 * pair's open connection or by none. Refused while either user blocks the other.
 */
export function requestOnPair(
  users: { readonly a: string; readonly b: string },
  requester: Participant,
  candidate: { readonly id: string; readonly createdAt: number } | undefined,
  closed: ReadonlySet<string>,
): LedgerRule<PairRecord, PairRequestOutcome> {
  return (pair) => {
    const base: PairRecord = pair ?? { user_a: users.a, user_b: users.b };
    if (isBlocked(base.blocked)) return { outcome: { kind: "blocked" } };
    const blockVersion = base.block_version ?? 0;
    if (base.current && !closed.has(base.current.id)) return { outcome: { kind: "current", current: base.current, created: false, blockVersion } };
    if (candidate === undefined) return { outcome: { kind: "none" } };
    const current: CurrentConnection = { id: candidate.id, requested_by: requester, created_at: candidate.createdAt };
    return { outcome: { kind: "current", current, created: true, blockVersion }, next: { ...base, current } };
  };
}

/** The pair's blocks after a block or an unblock, as of `version`, and its current connection, which they reach too. */
export interface PairBlocks {
  readonly current?: CurrentConnection;
  readonly blocked?: Blocks;
  readonly version: number;
}

/**
 * Sets (`at`) or lifts (undefined) `by`'s block on the pair's record, the blocks' source of truth:
 * each change counts one more `block_version`, which the connections' copies carry (`followPair`).
 * Only a record that names both users changes (undefined otherwise): a request made every live
 * pair's record, so one missing was removed by an erasure (rebuilding it would write the erased
 * user's id back), and one naming neither user is the block an erasure kept from the other user,
 * which stands for good (docs/connections.md, "Erasure").
 */
export function blockOnPair(users: { readonly a: string; readonly b: string }, by: Participant, at: number | undefined): LedgerRule<PairRecord, PairBlocks | undefined> {
  return (pair) => {
    if (pair === null || pair.user_a !== users.a || pair.user_b !== users.b) return { outcome: undefined };
    const blocked = withBlock(pair.blocked, by, at);
    const version = pair.block_version ?? 0;
    if (sameBlocks(blocked, pair.blocked)) return { outcome: { current: pair.current, blocked, version } };
    const { blocked: previous, ...rest } = pair;
    const next: PairRecord = { ...rest, ...(blocked === undefined ? {} : { blocked }), block_version: version + 1 };
    return { outcome: { current: pair.current, blocked, version: version + 1 }, next };
  };
}

/**
 * A connection takes the pair's blocks, unless it holds a newer copy already: two blocks and
 * unblocks racing (two devices) each copy what the pair had after their own change, and the copy
 * of the last one to change the pair is the one that stays, whatever order the copies land in.
 * A block or an unblock changes the pair first, so a connection's blocks are only such copies and
 * never lead the pair's; one an older version wrote ahead of the pair, at the pair's version, gives
 * way to the pair's blocks.
 */
export function followPair(blocks: PairBlocks): ConnectionRule<AnswerOutcome> {
  return (state) => {
    const next = following(state, blocks);
    return next ? { outcome: { kind: "changed" }, next } : { outcome: { kind: "unchanged" } };
  };
}

/** The state with the pair's blocks, or undefined when it holds them, or a newer copy, already. */
function following(state: ConnectionState, blocks: PairBlocks): ConnectionState | undefined {
  // Absent on both sides until the pair's first change: version 0.
  const held = state.block_version ?? 0;
  if (held > blocks.version || (held === blocks.version && sameBlocks(state.blocked, blocks.blocked))) return undefined;
  const { blocked: previous, ...rest } = state;
  return { ...rest, ...(blocks.blocked === undefined ? {} : { blocked: blocks.blocked }), block_version: blocks.version };
}

export type AgainOutcome =
  | { readonly kind: "pending" }
  /** `now`: this request accepted the other user's pending request (both asked). */
  | { readonly kind: "accepted"; readonly now: boolean }
  | { readonly kind: "closed"; readonly status: ClosedStatus }
  | { readonly kind: "blocked" };

/**
 * A request that found the pair's connection: it answers as it stands, except that a request from
 * the user who was asked accepts the pending one (two users asking each other agree).
 * `unblockedAt`: the pair's `block_version`, the pair holding no block as of it (`requestOnPair`
 * let the request through). A block the connection holds from that version or an older one is a
 * copy the pair's later change did not reach (an unblock whose copy failed): it is lifted first,
 * in this same transaction, and the request answered as the pair's blocks say. A newer copy (a
 * block since) stays.
 */
export function requestAgain(requester: Participant, requestedBy: Participant, now: number, unblockedAt?: number): ConnectionRule<AgainOutcome> {
  return (stored) => {
    const caughtUp = unblockedAt !== undefined && isBlocked(stored.blocked) ? following(stored, { version: unblockedAt }) : undefined;
    const state = caughtUp ?? stored;
    const answer = answerAgain(requester, requestedBy, now, state);
    return answer.next !== undefined || caughtUp === undefined ? answer : { outcome: answer.outcome, next: caughtUp };
  };
}

function answerAgain(requester: Participant, requestedBy: Participant, now: number, state: ConnectionState): ReturnType<ConnectionRule<AgainOutcome>> {
  if (state.status === "declined" || state.status === "ended") return { outcome: { kind: "closed", status: state.status } };
  if (isBlocked(state.blocked)) return { outcome: { kind: "blocked" } };
  if (state.status === "accepted") return { outcome: { kind: "accepted", now: false } };
  if (requester === requestedBy) return { outcome: { kind: "pending" } };
  return { outcome: { kind: "accepted", now: true }, next: accepted(state, now) };
}

export type AnswerOutcome =
  | { readonly kind: "changed" }
  /** Already so: accepting an accepted connection, blocking twice. */
  | { readonly kind: "unchanged" }
  | { readonly kind: "closed"; readonly status: ClosedStatus }
  /** Declining an accepted connection: it can only be ended now. */
  | { readonly kind: "not-pending" }
  /** Only the user who was asked accepts or declines. */
  | { readonly kind: "not-asked" }
  | { readonly kind: "blocked" };

/** The asked user accepts a pending request; a blocked connection is accepted once unblocked. */
export function accept(by: Participant, requestedBy: Participant, now: number): ConnectionRule<AnswerOutcome> {
  return (state) => {
    if (by === requestedBy) return { outcome: { kind: "not-asked" } };
    if (state.status === "declined" || state.status === "ended") return { outcome: { kind: "closed", status: state.status } };
    if (state.status === "accepted") return { outcome: { kind: "unchanged" } };
    if (isBlocked(state.blocked)) return { outcome: { kind: "blocked" } };
    return { outcome: { kind: "changed" }, next: accepted(state, now) };
  };
}

/** The asked user declines a pending request: final, as an end is. */
export function decline(by: Participant, requestedBy: Participant, now: number): ConnectionRule<AnswerOutcome> {
  return (state) => {
    if (by === requestedBy) return { outcome: { kind: "not-asked" } };
    if (state.status === "declined" || state.status === "ended") return { outcome: { kind: "closed", status: state.status } };
    if (state.status === "accepted") return { outcome: { kind: "not-pending" } };
    return { outcome: { kind: "changed" }, next: closed(state, "declined", by, now) };
  };
}

/** Either participant ends the connection, pending (a request withdrawn) or accepted: final; its history stays. */
export function end(by: Participant, now: number): ConnectionRule<AnswerOutcome> {
  return (state) => {
    if (state.status === "declined" || state.status === "ended") return { outcome: { kind: "closed", status: state.status } };
    return { outcome: { kind: "changed" }, next: closed(state, "ended", by, now) };
  };
}

export type MessageOutcome =
  | { readonly kind: "stored"; readonly position: number; readonly message: ConnectionMessage }
  /** The same `Idempotency-Key` stored message `position` already. */
  | { readonly kind: "duplicate"; readonly position: number }
  /** Moderation flagged this message, sent with the same `Idempotency-Key`: the key's answer for good. */
  | { readonly kind: "flagged" }
  /** The `Idempotency-Key` was flagged with another text. */
  | { readonly kind: "reused" }
  | { readonly kind: "pending" }
  | { readonly kind: "closed"; readonly status: ClosedStatus }
  | { readonly kind: "blocked" }
  | { readonly kind: "limited"; readonly retryAfterMs: number };

/** A message's `Idempotency-Key` as its connection's state knows it. */
export interface MessageKey {
  /** The key's hash, scoped to its sender and connection. */
  readonly hash: string;
  /**
   * What tells this message's text from another's sent with the key, kept for a flagged key (whose
   * text is stored nowhere): a hash of the text with the key itself, which only its sender knows,
   * so the other participant (who may read the state) cannot test guesses of the text against it.
   */
  readonly fingerprint: string;
}

export interface MessageInput {
  readonly sender: Participant;
  readonly senderId: string;
  readonly text: string;
  readonly now: number;
  readonly key?: MessageKey;
  readonly policy: ConnectionPolicy;
}

/**
 * Stores a message: its key is the next count, decided here, in the transaction that stores it,
 * so that the order of the keys is the order of the commits on every instance. A retry with the
 * same key finds its message first (even after the connection ended), or the key flagged. The
 * message's timestamp never goes back from the last activity, so timestamps follow the keys'
 * order whatever the instances' clocks.
 */
export function appendMessage(input: MessageInput): MessageRule<MessageOutcome> {
  const { sender, senderId, text, now, key, policy } = input;
  return (state) => {
    const done = key === undefined ? undefined : state.recent_keys?.[key.hash];
    if (done !== undefined) return { outcome: { kind: "duplicate", position: done } };
    const flagged = key === undefined ? undefined : state.flagged_keys?.[key.hash];
    if (flagged !== undefined) return { outcome: { kind: flagged.fingerprint === key?.fingerprint ? "flagged" : "reused" } };
    if (state.status === "declined" || state.status === "ended") return { outcome: { kind: "closed", status: state.status } };
    if (state.status === "pending") return { outcome: { kind: "pending" } };
    if (isBlocked(state.blocked)) return { outcome: { kind: "blocked" } };
    const took = takeToken(state.rate?.[sender], now, policy.messagesPerMinute, MINUTE);
    if (!took.admitted) return { outcome: { kind: "limited", retryAfterMs: took.retryAfterMs } };
    const position = state.message_count + 1;
    const timestamp = Math.max(now, state.last_activity);
    const message: ConnectionMessage = { sender_id: senderId, content: text, timestamp };
    const next: ConnectionState = {
      ...state,
      message_count: position,
      last_activity: timestamp,
      rate: { ...state.rate, [sender]: took.bucket },
      ...(key === undefined ? {} : { recent_keys: remembered(state.recent_keys, key.hash, position) }),
    };
    return { outcome: { kind: "stored", position, message }, next, message };
  };
}

/** What a flagged keyed message comes to: flagged, or what its connection answers anyway. */
export type FlagOutcome = Exclude<MessageOutcome, { kind: "stored" }>;

/**
 * A keyed message moderation flagged: its key is kept as flagged, in a transaction on the state
 * (where the message's own would have been decided), so that a send with the same key whose check
 * let it through (an outage, MODERATION_ON_OUTAGE=open) and whose transaction comes later is
 * refused there, and a later retry gets the same 422. Answered as the message's own transaction would
 * answer it otherwise: a key whose message is stored already (that send landed first) is a
 * duplicate, one flagged already is flagged (or reused, for another text), and a connection that
 * refuses the message gets its refusal. The key is written unless the connection is closed (no
 * send can be stored there, ever): a pending, blocked or rate-limited connection may take the
 * racing send once that changes. Takes nothing from the sender's rate, as an unkeyed flagged
 * message, whose state is only read, does not.
 */
export function flagMessage(input: MessageInput & { readonly key: MessageKey }): ConnectionRule<FlagOutcome> {
  const { key, now } = input;
  const judged = appendMessage(input);
  return (state) => {
    const { outcome } = judged(state);
    if (outcome.kind === "duplicate" || outcome.kind === "flagged" || outcome.kind === "reused" || outcome.kind === "closed") return { outcome };
    const next: ConnectionState = { ...state, flagged_keys: flaggedWith(state.flagged_keys, key, now) };
    return { outcome: outcome.kind === "stored" ? { kind: "flagged" } : outcome, next };
  };
}

/** The recent keys with this one, the oldest forgotten past KEYS_REMEMBERED. */
function remembered(keys: Readonly<Record<string, number>> | undefined, keyHash: string, position: number): Record<string, number> {
  return Object.fromEntries(newestEntries([...Object.entries(keys ?? {}), [keyHash, position]], (at) => at, KEYS_REMEMBERED));
}

/**
 * The flagged keys with this one, the oldest forgotten past FLAGGED_KEYS_REMEMBERED. Its time is
 * past theirs, strictly (another instance's clock may run ahead): the times keep the order in which
 * the keys were flagged, so a later flag forgets the first flagged, never one flagged since. Tied,
 * the order would fall to the keys' own (the database gives children in key order, of hashes).
 */
function flaggedWith(keys: ConnectionState["flagged_keys"], key: MessageKey, now: number): NonNullable<ConnectionState["flagged_keys"]> {
  const byTime = (flagged: { readonly at: number }) => flagged.at;
  const newest = newestEntries(Object.entries(keys ?? {}), byTime, 1)[0]?.[1].at;
  const at = newest === undefined ? now : Math.max(now, newest + 1);
  return Object.fromEntries(newestEntries([...Object.entries(keys ?? {}), [key.hash, { fingerprint: key.fingerprint, at }]], byTime, FLAGGED_KEYS_REMEMBERED));
}

function accepted(state: ConnectionState, now: number): ConnectionState {
  const at = Math.max(now, state.last_activity);
  return { ...state, status: "accepted", accepted_at: at, last_activity: at };
}

function closed(state: ConnectionState, status: ClosedStatus, by: Participant, now: number): ConnectionState {
  const at = Math.max(now, state.last_activity);
  return { ...state, status, closed_at: at, closed_by: by, last_activity: at };
}

function withBlock(blocks: Blocks | undefined, by: Participant, at: number | undefined): Blocks | undefined {
  if (at !== undefined) return blocks?.[by] !== undefined ? blocks : { ...blocks, [by]: at };
  const { [by]: lifted, ...rest } = blocks ?? {};
  return Object.keys(rest).length > 0 ? rest : undefined;
}

function sameBlocks(a: Blocks | undefined, b: Blocks | undefined): boolean {
  return a?.a === b?.a && a?.b === b?.b;
}
