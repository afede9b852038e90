import { MessageFlaggedError } from "../llm/moderation";
import type { Log } from "../log/log";
import type { MessageModeration } from "../moderation/message-moderation";
import { ForbiddenError, IdempotencyKeyReusedError, LimitExceededError } from "../session/errors";
import { fingerprint, keyHash } from "../session/idempotency";
import { ErasureInProgressError } from "../session/erasure/erasure-errors";
import { ERASING_RETRY_MS, userKey } from "../session/ledger/limits";
import { seconds } from "../session/message/refusals";
import type { ConnectionMessage, ConnectionMeta, ConnectionState, Participant } from "../store/connection-records";
import type { ConnectionRule, ConnectionStore, ListCursor, StoredMessage } from "../store/connection-store";
import { StoreDataError, StoreUnavailableError } from "../store/errors";
import type { LedgerStore } from "../store/session-store";
import {
  accept,
  appendMessage,
  blockOnPair,
  decline,
  end,
  flagMessage,
  followPair,
  otherParticipant,
  requestAgain,
  requestOnPair,
  type AnswerOutcome,
  type ConnectionPolicy,
  type CurrentConnection,
  type MessageInput,
  type MessageKey,
  type MessageOutcome,
} from "./connection-rules";
import { ConnectionBlockedError, ConnectionClosedError, ConnectionNotFoundError, ConnectionNotPendingError, ConnectionPendingError, ConnectionRequestLimitError } from "./errors";
import { knownFrom, KnownConnections, pairKeyOf, pairOf, participantOf, type KnownConnection, type PairUsers } from "./known-connections";
import type { NotifyReport, RecipientNotifier } from "./recipient-notifier";
import { returnRequest, takeRequest } from "./request-limit";

export interface ConnectionServiceOptions {
  readonly store: ConnectionStore;
  /** The users' usage records, where the connection requests bucket is kept beside the AI side's, and erasures are marked. */
  readonly ledger: Pick<LedgerStore, "updateUsage" | "readUsage">;
  readonly notifier: RecipientNotifier;
  readonly log: Log;
  readonly clock: () => number;
  readonly newConnectionId: () => string;
  readonly policy: ConnectionPolicy;
  /** CONNECTION_REQUESTS_PER_HOUR, per requester. */
  readonly requestsPerHour: number;
  /** USER_MESSAGES_PER_MINUTE: the AI side's bucket, full in a usage record a request creates. */
  readonly aiMessagesPerMinute: number;
  readonly cache: { readonly maxEntries: number; readonly ttlMs: number };
  /** With MODERATION on: each message is checked before it is stored, as the AI side's are. */
  readonly moderation?: MessageModeration;
}

/** A connection as one of its users sees it (`you`). */
export interface ConnectionView {
  readonly id: string;
  readonly meta: ConnectionMeta;
  readonly state: ConnectionState;
  readonly you: Participant;
}

export interface RequestResult {
  readonly connection: ConnectionView;
  /** This request made a new connection (and notified the other user, unless they answered it first); else the pair's answered it. */
  readonly created: boolean;
  /** Present when this request notified the asked user: one that made the connection, or the repeat of one that failed before it could. */
  readonly notified?: NotifyReport;
}

export interface SentMessage {
  readonly connectionId: string;
  readonly position: number;
  readonly message: ConnectionMessage;
  /** The connection's messages with this one (exact: counted in the transaction that stored it). */
  readonly messageCount: number;
  /** The answer repeats the one given to an earlier request with the same `Idempotency-Key`. */
  readonly replayed: boolean;
  readonly notified?: NotifyReport;
}

export interface ConnectionPage {
  readonly connections: readonly ConnectionView[];
  /** Where the next page starts; absent on the last. */
  readonly next?: ListCursor;
}

/** How a request settled on its pair. */
interface SettledRequest {
  readonly known: KnownConnection;
  readonly state: ConnectionState;
  /** This request made the connection. */
  readonly created: boolean;
  /**
   * The asked user is to hear of the request: it made the connection, still pending as stored; or
   * it repeats the request that made it, and finds the asked user never heard of it.
   */
  readonly unannounced: boolean;
}

/** Attempts at settling a request on its pair when each finds the pair's connection closed meanwhile. */
const REQUEST_ATTEMPTS = 5;

/**
 * Connections between users: consent (request, accept, decline), end, blocks, and the messages
 * between them, each change one rule applied in one transaction (connection-rules.ts), and each
 * message and request notifying the other user's devices (recipient-notifier.ts).
 */
export class ConnectionService {
  private readonly known: KnownConnections;

  constructor(private readonly options: ConnectionServiceOptions) {
    this.known = new KnownConnections(options.store, options.cache, options.clock);
  }

  /**
   * Asks `otherUserId` for a connection, or finds the one the pair has: one per pair at a time,
   * however many requests race, from either side; the other side's request accepts it. Only a
   * request that makes a new connection counts against the requester's hourly limit, and notifies
   * (or, when it failed before that, its repeat: see `settleRequest`): one the pair's open
   * connection answers is answered past the limit too, and only one that would make a connection
   * is refused there (429).
   * Refused while either user's data is being erased: the connection would name them after it.
   */
  async request(userId: string, otherUserId: string): Promise<RequestResult> {
    if (userId === otherUserId) throw new Error("a connection needs two users");
    const { ledger, clock, requestsPerHour, aiMessagesPerMinute } = this.options;
    const now = clock();
    const users = pairOf(userId, otherUserId);
    const requester: Participant = userId === users.a ? "a" : "b";
    const requesterKey = userKey(userId);
    // The other user's mark is read beside the requester's bucket: a request that read it just before
    // it was set made a connection asked for before the erasure, which the erasure's second pass finds.
    // Settled apart: a token taken must be given back when the read fails (the request made nothing).
    const [taking, marking] = await Promise.allSettled([ledger.updateUsage(requesterKey, takeRequest(now, requestsPerHour, aiMessagesPerMinute)), ledger.readUsage(userKey(otherUserId))]);
    // A take that failed may have committed or not: nothing is given back (a token lost only delays one request).
    if (taking.status === "rejected") throw taking.reason;
    const admission = taking.value;
    if (!admission.admitted && admission.erasing) throw new ErasureInProgressError(seconds(admission.retryAfterMs));
    // Past the limit, the request is still settled on the pair, with a rule that makes nothing:
    // refused only when a new connection would be needed.
    const limited = admission.admitted ? undefined : new ConnectionRequestLimitError(seconds(admission.retryAfterMs));
    let settled: SettledRequest | undefined;
    // Set once the pair's record names a connection this request made, or may (its transaction
    // offering one failed): it counts against the requester's limit from then on, even when writing
    // or listing it fails after (the request's retry then answers with that connection, and gives
    // its own token back).
    const taken = { made: false };
    try {
      if (marking.status === "rejected") throw marking.reason;
      if (marking.value?.erasing !== undefined) throw new ErasureInProgressError(seconds(ERASING_RETRY_MS));
      settled = await this.settleRequest(users, requester, now, limited ? undefined : () => {
        taken.made = true;
      });
      if (!settled) throw limited ?? new Error("a request with a token settles on a connection");
    } finally {
      // Off the answer's path: a request that made nothing new costs nothing; a lost refund only delays one.
      if (!limited && !taken.made) void ledger.updateUsage(requesterKey, returnRequest(requestsPerHour)).catch(() => undefined);
    }
    const connection = this.view(settled.known, settled.state, requester);
    if (!settled.unannounced) return { connection, created: settled.created };
    const { ref } = settled.known;
    const notified = await this.options.notifier.notify(this.options.notifier.audience(ref.userKeys[otherParticipant(requester)], requesterKey), {
      connectionId: ref.id,
      kind: "request",
    });
    return { connection, created: settled.created, notified };
  }

  async get(userId: string, connectionId: string): Promise<ConnectionView> {
    const known = await this.known.get(connectionId);
    const you = participantOf(known.meta, userId);
    const state = await this.options.store.readConnectionState(connectionId);
    if (!state) throw this.gone(connectionId);
    return this.view(known, state, you);
  }

  /**
   * A page of the user's connections, newest activity first: one read of the user's list, then
   * each connection's fields and state beside each other, so a page costs the same however many
   * connections the user has. An entry whose connection is gone is left out of the page (which
   * then holds fewer than `limit`) and removed from the list.
   */
  async list(userId: string, page: { readonly limit: number; readonly after?: ListCursor }): Promise<ConnectionPage> {
    const { store } = this.options;
    const key = userKey(userId);
    const entries = await store.listConnections(key, { limit: page.limit + 1, ...(page.after ? { after: page.after } : {}) });
    const shown = entries.slice(0, page.limit);
    const views = await Promise.all(
      shown.map(async (entry) => {
        const [known, state] = await Promise.all([this.known.get(entry.id).catch(undefinedIfNotFound), store.readConnectionState(entry.id)]);
        if (known && state) {
          // A copy that landed after a newer one (sent by another instance) set the entry back; no
          // later change may come (an ended connection): the entry catches up with the state it
          // shows, for the next read's order. Awaited as the removal below is, and may fail alike.
          if (entry.lastActivity < state.last_activity) await store.relistConnection(key, entry.id, state.last_activity).catch(() => undefined);
          return [this.view(known, state, participantOf(known.meta, userId))];
        }
        // Erased with the other user, then listed again by a message's copy that landed after the
        // deletion (the erasure's second pass would drop it, up to a sweep later): no route can
        // serve it, so neither can the list. Its removal is awaited (an instance gets no CPU after
        // answering) but may fail: the page is right without it, and the next one tries again.
        this.known.forget(entry.id);
        await store.unlistConnection(key, entry.id).catch(() => undefined);
        return [];
      }),
    );
    const last = shown.at(-1);
    return { connections: views.flat(), ...(entries.length > page.limit && last ? { next: { lastActivity: last.lastActivity, id: last.id } } : {}) };
  }

  accept(userId: string, connectionId: string): Promise<ConnectionView> {
    return this.change(userId, connectionId, (you, meta, now) => accept(you, meta.requested_by, now));
  }

  decline(userId: string, connectionId: string): Promise<ConnectionView> {
    return this.change(userId, connectionId, (you, meta, now) => decline(you, meta.requested_by, now));
  }

  end(userId: string, connectionId: string): Promise<ConnectionView> {
    return this.change(userId, connectionId, (you, _meta, now) => end(you, now));
  }

  /** Blocks the other user: no request, message or notification between them until unblocked (see `setBlock`). */
  block(userId: string, connectionId: string): Promise<ConnectionView> {
    return this.setBlock(userId, connectionId, this.options.clock());
  }

  /** Lifts the caller's block the way it was set (see `setBlock`). */
  unblock(userId: string, connectionId: string): Promise<ConnectionView> {
    return this.setBlock(userId, connectionId, undefined);
  }

  /**
   * Sets (`at`) or lifts (undefined) the caller's block: on the pair's record first, whose blocks
   * are the source of truth (it governs requests), then the pair's blocks as this change left them
   * are copied, with their version, to the connection named and to the pair's current one (their
   * messages stop or pass from then on, before the answer). So a connection, and what its users
   * are shown of it, is never ahead of the pair.
   * - A change whose write on the pair, or whose copy, fails (503) leaves the connections as they
   *   were, or behind the pair: each shows what it holds, so the user is offered the same action
   *   again (Block or Unblock), whose repeat finds the pair changed and copies it. Written the other
   *   way round, a failed write on the pair left the connection showing a block the pair did not
   *   hold, offered Unblock, and nothing repaired it. Meanwhile a block not copied refuses requests
   *   (the pair's), not yet the connection's messages; an unblock not copied lets requests through
   *   once the connection closed, and a request through it lifts its block (`requestAgain`).
   * - The named connection's state is read first (from the listener `participant` starts beside
   *   its fields' read: no round trip on a warm instance that holds it): an instance that knows its
   *   fields warm learns there that it is gone (its user erased: 404, nothing written), as a cold
   *   one does from the fields. The pair's rule then changes only a record that names both users: a
   *   lifted block must not rebuild a pair's record the erasure removed, nor lift the block it kept
   *   (the two stay apart). Such a record, found after that read, says an erasure ran in
   *   between: the change holds nowhere and is answered 404, as a moment later (answered 200, a
   *   block would promise what nothing holds). No block is made from it as the erasure keeps one
   *   set before it: the record does not tell which user was erased, and a user's own blocks go
   *   with their data. An erasure that deletes the connection after the read and reaches the pairs
   *   after this write finds the change there, as any made before it (the other user's block kept,
   *   the erased user's gone); the copy finds the connection gone: 404.
   * - The copies: a block and an unblock by the same user racing (two devices) each copy what the
   *   pair had after their own change. Each copy carries the pair's version and none is taken over
   *   a newer one, so the connections end as the pair's last change left them, whatever order the
   *   copies land in.
   */
  private async setBlock(userId: string, connectionId: string, at: number | undefined): Promise<ConnectionView> {
    const { store } = this.options;
    const { known, you } = await this.participant(userId, connectionId);
    if (!(await store.readConnectionState(connectionId))) throw this.gone(connectionId);
    const blocks = await store.updatePair(known.meta.pair, blockOnPair(usersOf(known.meta), you, at));
    if (!blocks) throw this.gone(connectionId);
    const { current } = blocks;
    const [followed] = await Promise.all([
      this.changeKnown(known, followPair(blocks)),
      current && current.id !== connectionId ? this.currentOf(known.meta, current).then((other) => this.changeKnown(other, followPair(blocks))) : undefined,
    ]);
    return this.view(known, followed, you);
  }

  /**
   * Sends a message: one transaction on the connection's state decides and stores it (its key, the
   * count, the sender's rate, a retry's key), with the recipient's devices read beside it; then the
   * recipient is notified, waiting at most NOTIFICATION_DEADLINE_MS. A retry with the same
   * `Idempotency-Key` gets the stored message back and notifies no one again. With MODERATION on,
   * a participant's message is checked first: there is no model call to run the check beside, so
   * its verdict comes before the transaction (a flagged one is stored nowhere, notified to no one).
   * A refused check gives way to the answer the connection's state gives anyway (gone, a stored
   * retry, or the transaction's own refusal); a flagged keyed message keeps its key as flagged
   * there, for a send with the same key racing it to be refused too (see `refusedCheck`).
   */
  async send(input: { readonly userId: string; readonly connectionId: string; readonly text: string; readonly idempotencyKey?: string }): Promise<SentMessage> {
    const { store, notifier, clock, policy } = this.options;
    const { userId, connectionId, text, idempotencyKey } = input;
    const now = clock();
    const { known, you: sender } = await this.participant(userId, connectionId);
    const key = idempotencyKey === undefined ? undefined : messageKey(connectionId, userId, idempotencyKey, text);
    const message: MessageInput = { sender, senderId: userId, text, now, policy, ...(key === undefined ? {} : { key }) };
    try {
      await this.options.moderation?.admit(text, { connection_id: connectionId });
    } catch (error) {
      return await this.refusedCheck(input, known, message, error);
    }
    const { ref } = known;
    const recipientKey = ref.userKeys[otherParticipant(sender)];
    const senderKey = ref.userKeys[sender];
    // The devices' listeners start beside the commit, and the audience is read once it has landed:
    // the database answers in order, so the copy then holds every device change made before the
    // message (a phone that changed hands, a device unregistered), at no round trip more. Read
    // before the commit, a warm instance's copy could trail them without bound.
    notifier.prepare(recipientKey, senderKey);
    const result = await store.appendMessage(ref, appendMessage(message));
    if (!result.found) throw this.gone(connectionId);
    const { outcome, state } = result;
    if (outcome.kind === "duplicate") return this.replay(input, outcome.position);
    if (outcome.kind !== "stored") throw messageRefusal(outcome);
    const notified = await notifier.notify(notifier.audience(recipientKey, senderKey), { connectionId, kind: "message", text });
    return { connectionId, position: outcome.position, message: outcome.message, messageCount: state.message_count, replayed: false, notified };
  }

  /**
   * A message whose check refused it, answered as its own transaction would answer it whatever the
   * check says: a connection gone is 404 on any instance (a cold one learns it from the fields'
   * read, a warm one knows them still); a retry of a message already stored gets it back (its
   * first send passed the check); a message the connection refuses anyway (ended, declined,
   * pending, blocked, past the sender's rate) gets that refusal, so that an outage with
   * MODERATION_ON_OUTAGE=closed never asks a client to retry what no retry stores; a key flagged
   * before is flagged again (422), not an outage's 503.
   * - A flagged keyed message is settled in a transaction that keeps its key as flagged
   *   (`flagMessage`): a send with the same key may be running, its check let through by an outage
   *   (open), its transaction still to come. Read instead, the state would not hold that send's
   *   key yet, and the 422 ("not sent") would be followed by its commit and notification. That
   *   send's transaction now finds the key flagged and is refused (422); one that landed first is
   *   found by this one: the flagged send gets its message back.
   * - Otherwise (unkeyed, or an outage while closed: no answer for good) the state is read once,
   *   and the rule, pure, applied to it decides without writing.
   */
  private async refusedCheck(input: { readonly userId: string; readonly connectionId: string; readonly text: string }, known: KnownConnection, message: MessageInput, error: unknown): Promise<SentMessage> {
    const { store } = this.options;
    const { connectionId } = input;
    const { key } = message;
    let outcome: MessageOutcome;
    if (error instanceof MessageFlaggedError && key !== undefined) {
      const flagged = await store.updateConnection(known.ref, flagMessage({ ...message, key }));
      if (!flagged.found) throw this.gone(connectionId);
      outcome = flagged.outcome;
    } else {
      const state = await store.readConnectionState(connectionId);
      if (!state) throw this.gone(connectionId);
      outcome = appendMessage(message)(state).outcome;
    }
    if (outcome.kind === "duplicate") return this.replay(input, outcome.position);
    // This check's own refusal, with what it says (a flag's categories, an outage's wait).
    if (outcome.kind === "stored" || (outcome.kind === "flagged" && error instanceof MessageFlaggedError)) throw error;
    throw messageRefusal(outcome);
  }

  /**
   * A page of the connection's messages, newest first as pages go, oldest first within one. The
   * read tells whether the connection still exists: the fields may come from this instance's
   * memory, and a gone connection's messages can outlive it for a while (a copy that landed after
   * its erasure), so without it a warm instance would answer what a cold one refuses.
   */
  async messages(userId: string, connectionId: string, page: { readonly before?: number; readonly limit: number }): Promise<StoredMessage[]> {
    const known = await this.known.get(connectionId);
    participantOf(known.meta, userId);
    const messages = await this.options.store.readConnectionMessages(connectionId, page);
    if (messages === null) throw this.gone(connectionId);
    return messages;
  }

  /** A change of the connection by one of its users, refused as its rule says. */
  private async change(userId: string, connectionId: string, rule: (you: Participant, meta: ConnectionMeta, now: number) => ConnectionRule<AnswerOutcome>): Promise<ConnectionView> {
    const { known, you } = await this.participant(userId, connectionId);
    return this.view(known, await this.changeKnown(known, rule(you, known.meta, this.options.clock())), you);
  }

  /**
   * The connection a request names, and which of its users the caller is, for a request that
   * transacts on its state: the state's listener starts now, beside the fields' read on a cold
   * instance, not after it. On a guess, confirmed once the caller is found to be one of its users
   * and withdrawn otherwise: requests naming connections that do not exist (404), or that belong
   * to others (403), would push out the listeners of the connections this instance serves.
   */
  private async participant(userId: string, connectionId: string): Promise<{ readonly known: KnownConnection; readonly you: Participant }> {
    const { store } = this.options;
    const withdraw = store.guessConnection(connectionId);
    try {
      const known = await this.known.get(connectionId);
      const you = participantOf(known.meta, userId);
      store.prepareConnection(connectionId);
      return { known, you };
    } catch (error) {
      withdraw();
      throw error;
    }
  }

  private async changeKnown(known: KnownConnection, rule: ConnectionRule<AnswerOutcome>): Promise<ConnectionState> {
    const result = await this.options.store.updateConnection(known.ref, rule);
    if (!result.found) throw this.gone(known.ref.id);
    const refused = answerRefusal(result.outcome);
    if (refused) throw refused;
    return result.state;
  }

  /**
   * Settles a request on the pair: its current connection, or a new one. A current connection
   * found closed is passed over (closed is final) and the pair asked again; one its record names
   * but nobody has written yet (its creator is writing it, or died first) is written from the record.
   * Without `made` (the requester has no token) no connection is made: undefined when one would be.
   */
  private async settleRequest(users: PairUsers, requester: Participant, now: number, made: (() => void) | undefined): Promise<SettledRequest | undefined> {
    const { store, newConnectionId } = this.options;
    const pair = pairKeyOf(users);
    const closed = new Set<string>();
    for (let attempt = 0; attempt < REQUEST_ATTEMPTS; attempt += 1) {
      const onPair = await store.updatePair(pair, requestOnPair(users, requester, made ? { id: newConnectionId(), createdAt: now } : undefined, closed)).catch((error: unknown) => {
        // Its outcome unknown (an answer lost after the commit), the candidate offered may be the
        // pair's connection now: the request counts, as a take that failed does (its repeat answers
        // with that connection, and gives its own token back). A token lost only delays one request.
        made?.();
        throw error;
      });
      if (onPair.kind === "blocked") throw new ConnectionBlockedError();
      if (onPair.kind === "none") return undefined;
      const known = knownFrom(onPair.current.id, metaOf(users, pair, onPair.current));
      this.known.remember(known);
      store.prepareConnection(known.ref.id);
      if (onPair.created && made) {
        made();
        await store.createConnection({ ...known.ref, meta: known.meta, state: initialState(onPair.current) });
        // The state as stored, whoever wrote it: since the pair's transaction, the other user may
        // have found the connection and answered it (their request accepts it, and they may end
        // it), or blocked them (a block reaches the pair's current connection, writing it from the
        // pair's record if nobody has yet), and a request they blocked is notified to no one. Read
        // from the listener held since prepareConnection: no round trip added.
        const state = await store.readConnectionState(known.ref.id);
        if (!state) throw new StoreUnavailableError("create connection");
        // Answered as this request's repeat would be (its own request: nothing to accept).
        const found = requestAgain(requester, requester, now)(state).outcome;
        if (found.kind === "blocked") throw new ConnectionBlockedError();
        if (found.kind !== "closed") return { known, state, created: true, unannounced: found.kind === "pending" };
        closed.add(known.ref.id);
        continue;
      }
      // A block the connection holds that the pair, letting the request through, no longer does is lifted with it.
      const again = requestAgain(requester, known.meta.requested_by, now, onPair.blockVersion);
      // The requester asking again may be retrying a request that failed after writing the
      // connection, before both users' lists took it (a separate update) and before the asked
      // user was notified. Whether the lists hold it is read beside the transaction: no round
      // trip added to a repeat whose first request went through.
      const listed = requester === known.meta.requested_by ? store.readListed(known.ref).catch(() => undefined) : undefined;
      let result = await store.updateConnection(known.ref, again);
      let wrote = false;
      if (!result.found) {
        wrote = (await store.createConnection({ ...known.ref, meta: known.meta, state: initialState(onPair.current) })) === "created";
        result = await store.updateConnection(known.ref, again);
        if (!result.found) throw new StoreUnavailableError("create connection");
      }
      const { outcome, state } = result;
      if (outcome.kind === "blocked") throw new ConnectionBlockedError();
      if (outcome.kind === "pending") {
        // The asked user has not heard of it when this repeat wrote the connection itself (its
        // first request died first) or listed it where it was missing (the first failed or died
        // before its notification, which comes after both lists).
        const relisted = await this.relistLost(known, state, listed);
        return { known, state, created: false, unannounced: wrote || relisted };
      }
      if (outcome.kind !== "closed") return { known, state, created: false, unannounced: false };
      closed.add(known.ref.id);
    }
    throw new StoreUnavailableError("request connection");
  }

  /**
   * Lists a pending connection in both users' lists where it is missing (`listed`: what was read
   * beside the transaction that found it; undefined when unknown); true when an entry was missing.
   * The pair's record and the connection's state were both just found: an erasure did not remove
   * it, so an entry written now is no erased one come back (a later erasure's passes remove it).
   */
  private async relistLost(known: KnownConnection, state: ConnectionState, listed: Promise<{ readonly a: boolean; readonly b: boolean } | undefined> | undefined): Promise<boolean> {
    const seen = await listed;
    if (seen?.a === true && seen.b) return false;
    return this.options.store.listConnection(known.ref, state.last_activity);
  }

  /** The pair's current connection, known (written from the pair's record if nobody has yet). */
  private async currentOf(meta: ConnectionMeta, current: CurrentConnection): Promise<KnownConnection> {
    const known = knownFrom(current.id, metaOf(usersOf(meta), meta.pair, current));
    await this.options.store.createConnection({ ...known.ref, meta: known.meta, state: initialState(current) });
    return known;
  }

  /** The first answer again: a message's position is the connection's count once it was stored, whatever came after. */
  private async replay(input: { readonly userId: string; readonly connectionId: string; readonly text: string }, position: number): Promise<SentMessage> {
    const { store } = this.options;
    const stored = await store.readConnectionMessage(input.connectionId, position);
    if (!stored) {
      // None either when the connection went since the key was found (an erasure between the two):
      // that is the connection gone, not a message missing from one that holds its key.
      if (!(await store.readConnectionState(input.connectionId))) throw this.gone(input.connectionId);
      throw new StoreDataError(`connections/${input.connectionId}/messages`, `message ${position} named by an idempotency key is missing`);
    }
    if (stored.sender_id !== input.userId || stored.content !== input.text) throw new IdempotencyKeyReusedError();
    return { connectionId: input.connectionId, position, message: stored, messageCount: position, replayed: true };
  }

  /**
   * The connection is gone (its state is not found: erased): the error every route answers, and
   * this instance forgets its fields, which would otherwise keep answering for it until they expire.
   */
  private gone(connectionId: string): ConnectionNotFoundError {
    this.known.forget(connectionId);
    return new ConnectionNotFoundError(connectionId);
  }

  private view(known: KnownConnection, state: ConnectionState, you: Participant): ConnectionView {
    return { id: known.ref.id, meta: known.meta, state, you };
  }
}

/** To a reader of a list, a connection whose fields are not found is gone, as one without a state is. */
function undefinedIfNotFound(error: unknown): undefined {
  if (error instanceof ConnectionNotFoundError) return undefined;
  throw error;
}

function usersOf(meta: ConnectionMeta): PairUsers {
  return { a: meta.user_a, b: meta.user_b };
}

function metaOf(users: PairUsers, pair: string, current: CurrentConnection): ConnectionMeta {
  return { user_a: users.a, user_b: users.b, requested_by: current.requested_by, created_at: current.created_at, pair };
}

function initialState(current: CurrentConnection): ConnectionState {
  return { status: "pending", message_count: 0, last_activity: current.created_at };
}

/** The one place where a refused change becomes its error (undefined: not refused). */
function answerRefusal(outcome: AnswerOutcome): Error | undefined {
  switch (outcome.kind) {
    case "changed":
    case "unchanged":
      return undefined;
    case "closed":
      return new ConnectionClosedError(outcome.status);
    case "not-pending":
      return new ConnectionNotPendingError();
    case "not-asked":
      return new ForbiddenError("only the user who was asked may accept or decline");
    case "blocked":
      return new ConnectionBlockedError();
  }
}

/** A message's `Idempotency-Key`, scoped to its sender and connection, with its text's fingerprint (see MessageKey). */
function messageKey(connectionId: string, userId: string, idempotencyKey: string, text: string): MessageKey {
  return { hash: keyHash(`connectionMessage\u0000${connectionId}\u0000${userId}`, idempotencyKey), fingerprint: fingerprint(idempotencyKey, text) };
}

/** The one place where a refused message becomes its error. */
function messageRefusal(outcome: Exclude<MessageOutcome, { kind: "stored" } | { kind: "duplicate" }>): Error {
  switch (outcome.kind) {
    case "flagged":
      // A send with a key moderation flagged: that send's answer, without its categories (not kept).
      return new MessageFlaggedError([]);
    case "reused":
      return new IdempotencyKeyReusedError();
    case "pending":
      return new ConnectionPendingError();
    case "closed":
      return new ConnectionClosedError(outcome.status);
    case "blocked":
      return new ConnectionBlockedError();
    case "limited":
      return new LimitExceededError("messages", seconds(outcome.retryAfterMs));
  }
}
