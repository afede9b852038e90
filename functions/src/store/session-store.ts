import type { ConversationPosition, ErasureRule, ListedConversation, StoredConversation } from "./conversation-records";
import type { AddressUsage, ChatMessage, CreateKey, Exchange, KeyRecord, PartialReply, ServiceUsage, SessionMeta, SessionState, SessionSummary, Template, UserUsage } from "./records";
import type { SweepCursor, SweepPage } from "./sweep-page";

/**
 * A rule deciding, from the current stored state, what happens: an outcome for the caller and,
 * to change the session, the next state. It runs inside the store's atomic section (a database
 * transaction handler), so it must be synchronous, pure and cheap: it can run several times
 * under contention, and only its last run counts. `strayPartials`: the keys of partial replies
 * whose writers' claims the next state drops as lapsed (requests that died): the store removes
 * them once the state is committed.
 */
export type StateRule<O> = (state: SessionState) => { readonly outcome: O; readonly next?: SessionState; readonly strayPartials?: readonly string[] };

/** Like `StateRule`, for a record of the usage ledger, which may not exist yet (`null`). */
export type LedgerRule<R, O> = (record: R | null) => { readonly outcome: O; readonly next?: R };

/** A `LedgerRule` for a user's usage record. */
export type UsageRule<O> = LedgerRule<UserUsage, O>;

export type Ruled<O> =
  | { readonly found: true; readonly outcome: O; readonly state: SessionState }
  | { readonly found: false };

/** A rule applied to the state, with the record of one `Idempotency-Key` read alongside. */
export type RuledWithKey<O> =
  | { readonly found: true; readonly outcome: O; readonly state: SessionState; readonly record: KeyRecord | null }
  | { readonly found: false };

export interface HistoryWindow {
  readonly messages: ChatMessage[];
  /** The exchange the window ends with: the history as of that many exchanges. */
  readonly through: number;
}

export interface NewSession {
  readonly id: string;
  readonly meta: SessionMeta;
  readonly state: SessionState;
}

/*
 * The ports through which the session module reaches its database, one per role. Every method is
 * atomic on its own; none leaves a half-written session behind when it fails. The rules live in
 * the session module; adapters only apply them atomically. One adapter implements them all
 * (`SessionStore`); each consumer names only the roles it uses.
 */

/** The personalities sessions are created from. */
export interface TemplateStore {
  readTemplate(templateId: string): Promise<Template | null>;

  /** Writes `templates` that are not stored yet; existing ones are left untouched. */
  seedTemplates(templates: Readonly<Record<string, Template>>): Promise<string[]>;
}

/** A session's fixed fields and its small mutable state: the only node transacted on per message. */
export interface StateStore {
  /** Creates the session unless one with this id exists (then nothing is written). */
  createSession(session: NewSession): Promise<"created" | "exists">;

  /** The fields fixed at creation. Safe to cache: they never change. */
  readSessionMeta(sessionId: string): Promise<SessionMeta | null>;

  /**
   * A hint, for a session a request names before it is known to exist or to be the caller's, that
   * its state is about to be transacted on: an adapter may start following it now, beside the read
   * of its fields. The returned function withdraws the hint (call it on a 404 or a 403), and a
   * `prepareSession` confirms it. An adapter's early follow must not make requests for sessions
   * that do not exist, or that belong to others, cost the ones it serves.
   */
  guessSession(sessionId: string): () => void;

  /** A hint that the session's state is about to be transacted on (its guess confirmed): an adapter may keep following it. Changes nothing. */
  prepareSession(sessionId: string): void;

  /** The current mutable state, always read from the database. */
  readSessionState(sessionId: string): Promise<SessionState | null>;

  /**
   * Atomically applies `rule` to the session's state. When the state it leaves is closed, every
   * exchange the session holds is in `messages` before this returns.
   */
  updateState<O>(sessionId: string, rule: StateRule<O>): Promise<Ruled<O>>;

  /**
   * `updateState`, and the record of `keyHash` (an `Idempotency-Key` whose exchange is done and
   * moved out of the state), read no earlier than the state the rule last saw: a key is always
   * found in one or the other, never in neither.
   */
  updateStateReadingKey<O>(sessionId: string, rule: StateRule<O>, keyHash: string | undefined): Promise<RuledWithKey<O>>;

  /**
   * Atomically applies `rule`; when it returns a next state, that state must count one more
   * exchange, and `exchange` is stored under that number together with it. Concurrent appends
   * are serialised, none is lost. Done keys (`requests` entries with `seq`) are moved to their
   * records once their exchange is in `messages`. `partialKey` names the partial reply this
   * exchange completes: it is removed together with the exchange's arrival in `messages` (in the
   * same atomic update), so a listening client never sees both, nor neither; and the stored reply
   * carries it (`partial`), so a client that reads the exchange before the partial is gone (a
   * journaled exchange, a listener that sees `messages` first) knows which partial it completes.
   */
  appendExchange<O>(sessionId: string, exchange: Exchange, rule: StateRule<O>, partialKey?: string): Promise<Ruled<O>>;

  /**
   * Writes (or with null removes) the partial reply `key` of an existing session, for clients
   * that listen to it; never touches `state`. Best effort and unordered with respect to nothing
   * but this instance's own later writes: callers send it and do not wait for it. A partial
   * written after its exchange was appended would be left behind, so callers stop writing first.
   */
  writePartial(sessionId: string, key: string, partial: PartialReply | null): Promise<void>;

  /**
   * Calls `closed`, once, when this instance learns that the session is closed (ended, expired)
   * or gone, at once when it knows so already; nothing once the returned stop is called. From what the
   * instance knows of the session anyway, never at the cost of a read or a round trip: an adapter
   * that listens to the state of the sessions it serves tells from that listener, and tells
   * nothing of a session it does not listen to. For a partial's writer, whose session another
   * instance may close while its reply is still being written.
   */
  onClosed(sessionId: string, closed: () => void): () => void;

  /**
   * Whether anyone but this service reads partial replies (a database clients listen to). When
   * not, and no HTTP stream asks for deltas, the model is called without streaming, which costs
   * less CPU per message.
   */
  readonly partialsReadable: boolean;

  /**
   * Stores `key` under `hash` unless a record is there already; returns the stored record. A record
   * there with `key`'s fingerprint that is another request's claim is taken over (`adoptedClaim`),
   * in the same transaction, and returned so.
   */
  claimCreateKey(hash: string, key: CreateKey): Promise<CreateKey>;

  /**
   * Removes the record under `hash` while it is still the claim `key` and no repeat took it over
   * (`isReleasable`), atomically: a request's own claim for a session it was then refused. A claim
   * another request made once this one went, or took over, stays. True when it went.
   */
  releaseCreateKey(hash: string, key: CreateKey): Promise<boolean>;

  /**
   * Marks the record under `hash` refused for its user's erasure (`refusedClaim`) while it is still
   * `read` (`isUnchangedCreateKey`), atomically: what a repeat that took the key over leaves once
   * refused `409 ERASURE_IN_PROGRESS`. A record changed since (taken over again, claimed anew,
   * gone) is left as it is. True when marked.
   */
  refuseCreateKey(hash: string, read: CreateKey): Promise<boolean>;
}

/** Whether a stored create key is the claim `key`: the same session id, claimed at the same time (both adapters' check). */
export function isSameClaim(stored: CreateKey | null, key: CreateKey): boolean {
  return stored !== null && stored.session_id === key.session_id && stored.created_at === key.created_at;
}

/**
 * What `claimCreateKey` stores when it finds `stored` and `key` is claimed (both adapters' rule):
 * a repeat (the same fingerprint, another claim) marks the record taken over, so that the first
 * request, refused meanwhile, does not delete the key of a session its repeat goes on to create,
 * and stamps it with its time (`adopted_at`), every repeat again, so that an erasure's delete of
 * the key, decided on the record as it was, leaves it (`isUnchangedCreateKey`), and a refusal's
 * mark (`refused_at`), kept as it is, names an earlier claim (`isRefusedCreateKey`). Anything else
 * (the same claim again, a reused key refused for its fingerprint) leaves it as it is.
 */
export function adoptedClaim(stored: CreateKey, key: CreateKey): CreateKey {
  if (stored.fingerprint !== key.fingerprint || isSameClaim(stored, key)) return stored;
  if (stored.adopted === true && stored.adopted_at === key.created_at) return stored;
  return { ...stored, adopted: true, adopted_at: key.created_at };
}

/**
 * Whether `stored` is still the record `read` (both adapters' check for `deleteUnchangedCreateKey`
 * and `refuseCreateKey`): every field alike, `adopted_at` and `refused_at` included. Not the claim
 * alone (session id and time): a repeat taking a key over keeps those, and its create of that
 * session may be running.
 */
export function isUnchangedCreateKey(stored: CreateKey | null, read: CreateKey): boolean {
  return (
    stored !== null &&
    stored.fingerprint === read.fingerprint &&
    stored.session_id === read.session_id &&
    stored.created_at === read.created_at &&
    stored.user_key === read.user_key &&
    stored.adopted === read.adopted &&
    stored.adopted_at === read.adopted_at &&
    stored.refused_at === read.refused_at
  );
}

/** The time of `key`'s last claim: its last take-over's, else its own. */
export function lastClaimedAt(key: CreateKey): number {
  return key.adopted_at ?? key.created_at;
}

/** What `refuseCreateKey` stores (both adapters' rule): `read`, its last claim marked refused. */
export function refusedClaim(read: CreateKey): CreateKey {
  return { ...read, refused_at: lastClaimedAt(read) };
}

/**
 * Whether `key`'s last claim or take-over is the one refused for an erasure: marked, and taken
 * over by none since (a take-over, an older version's too, keeps the mark as it is and moves
 * `adopted_at` past it). One taken over with no time (a version from before `adopted_at`) may have
 * been taken over after the mark: not refused.
 */
export function isRefusedCreateKey(key: CreateKey): boolean {
  if (key.adopted === true && key.adopted_at === undefined) return false;
  return key.refused_at !== undefined && key.refused_at === lastClaimedAt(key);
}

/** A `createSession` key's record with the hash it is stored under. */
export interface StoredCreateKey {
  readonly hash: string;
  readonly key: CreateKey;
}

/** Whether `releaseCreateKey` of the claim `key` removes `stored`: it is that claim, and no repeat took it over. */
export function isReleasable(stored: CreateKey | null, key: CreateKey): boolean {
  return isSameClaim(stored, key) && stored?.adopted !== true;
}

/** A session's conversation: its messages, read across the journal, and its rolling summary. */
export interface HistoryStore {
  /** The last `limit` stored messages, oldest first, with the number of the last exchange they reach (0 for none). */
  readWindow(sessionId: string, limit: number): Promise<HistoryWindow>;

  /**
   * The stored messages at positions `first` to `last` (1-based, inclusive: exchange n is 2n-1
   * and 2n), oldest first; those past the session's last exchange are left out (every one for a
   * session not stored, or one a deletion removes while it is read). A position before that end
   * that is not stored (a message removed by hand) is bad data, StoreDataError, never left out:
   * a caller numbers the messages from `first`, and would show each one after it out of place.
   */
  readMessages(sessionId: string, first: number, last: number): Promise<ChatMessage[]>;

  /** Exchange number `seq` (1-based), or null when it is not stored. */
  readExchange(sessionId: string, seq: number): Promise<Exchange | null>;

  /** The session's rolling summary, or null when it has none. */
  readSummary(sessionId: string): Promise<SessionSummary | null>;

  /**
   * Stores `summary` for an existing session unless the stored one stands (records.ts
   * replacesSummary: it reaches as far or further, or is of a later creation of the id; then
   * nothing is written, and false is returned). Never touches `state` or `messages`.
   */
  writeSummary(sessionId: string, summary: SessionSummary): Promise<boolean>;

  /**
   * Removes the session's summary if it is one stamped `createdAt` (a creation of the id found
   * gone: its summary, written beside a commit that then found the session erased, must not stay).
   */
  dropSummary(sessionId: string, createdAt: number): Promise<void>;
}

/** The counts limits are held against: per user, per network address, and the deployment's. */
export interface LedgerStore {
  /**
   * A hint that `userKey`'s usage is about to be updated: an adapter may start fetching it now,
   * beside other reads, so the update finds it. Changes nothing.
   */
  prepareUsage(userKey: string): void;

  /**
   * `prepareUsage` for a caller named by a request whose session is not yet known to exist or to
   * be theirs: the returned function withdraws the hint (on a 404 or a 403), and a `prepareUsage`
   * confirms it (see `guessSession`).
   */
  guessUsage(userKey: string): () => void;

  /** Atomically applies `rule` to the usage record stored under `userKey`. */
  updateUsage<O>(userKey: string, rule: UsageRule<O>): Promise<O>;

  /**
   * A hint that the deployment's usage shards are about to be updated: an adapter may start
   * fetching them now, so that updates find them. Changes nothing.
   */
  prepareServiceUsage(shards: readonly string[]): void;

  /** Atomically applies `rule` to one shard of the deployment's usage. */
  updateServiceUsage<O>(shard: string, rule: LedgerRule<ServiceUsage, O>): Promise<O>;

  /** Every shard of the deployment's usage, by name (shards never written are absent). */
  readServiceUsage(): Promise<Readonly<Record<string, ServiceUsage>>>;

  /** Atomically applies `rule` to the session bucket of one network address (by its key). */
  updateAddressUsage<O>(addressKey: string, rule: LedgerRule<AddressUsage, O>): Promise<O>;

  /** The usage record stored under `userKey`, read without a change (for an export); null when there is none. */
  readUsage(userKey: string): Promise<UserUsage | null>;
}

/** What the scheduled clean-up finds and removes. */
export interface HousekeepingStore {
  /**
   * The database instances the session queries below span (each its own backlog and throughput):
   * the clean-up gives each the batches one instance alone would get.
   */
  readonly databaseInstances: number;

  /**
   * Active sessions whose `idle_since` is at or before `cutoff`, oldest first, a page after `after`
   * (from the oldest when undefined). Each of these queries pages on from where the last page
   * ended (sweep-page.ts), so a session whose change keeps failing is passed, not met again at the
   * head of every page. `stopped`, in these four queries: once it says the caller's time is up, a
   * store over several database instances asks no further one (ShardedStore), each asked up to
   * its own deadline; the page then comes back short, as the work done.
   */
  findIdleSessions(cutoff: number, after: SweepCursor | undefined, limit: number, stopped?: () => boolean): Promise<SweepPage>;

  /** Ended or expired sessions whose `ended_at` is at or before `cutoff`, oldest first, a page after `after`. */
  findClosedSessions(cutoff: number, after: SweepCursor | undefined, limit: number, stopped?: () => boolean): Promise<SweepPage>;

  /** Closed sessions whose exchanges are not all in `messages` yet (a copy that failed as they closed), a page after `after`. */
  findUnflushedSessions(after: SweepCursor | undefined, limit: number, stopped?: () => boolean): Promise<SweepPage>;

  /**
   * Sends again the copy of a session `findUnflushedSessions` found. True when this call finished
   * it: its copy landed and its transaction took the session out of that query. False when the
   * copy failed again (the session stays there for the next run), when another call finished it
   * first, or when the session is gone.
   */
  flushSession(sessionId: string): Promise<boolean>;

  /** Sessions holding a claim whose lease ended at or before `cutoff` (a request that died), oldest first, a page after `after`. */
  findLapsedClaims(cutoff: number, after: SweepCursor | undefined, limit: number, stopped?: () => boolean): Promise<SweepPage>;

  /**
   * Removes a session and its history. True when this call removed it; false when it was gone
   * already (another run's deletion, an erasure's), so that two runs at once count it once. With
   * `deletable`, only a session whose state it holds for, checked on the state before anything is
   * deleted and again by the removal of the state (false, and the session kept whole, when not);
   * one with no state left is removed whatever remains of it.
   */
  deleteSession(sessionId: string, deletable?: (state: SessionState) => boolean): Promise<boolean>;

  /**
   * Removes create keys claimed at or before `cutoff`, each only while it still is (a key claimed
   * anew since stays); returns how many this call removed, so two runs at once count each once.
   */
  deleteCreateKeys(cutoff: number, limit: number): Promise<number>;

  /**
   * Removes address buckets last refilled at or before `cutoff` (full again by then), each only
   * while it still is (one a create took from since stays, with its count and notes); returns how
   * many this call removed, so two runs at once count each once.
   */
  deleteIdleAddresses(cutoff: number, limit: number): Promise<number>;
}

/** A user's conversations as a whole: the per-user index, and everything the user holds, for an export. */
export interface ConversationStore {
  /**
   * Up to `limit` of the user's conversations from their index, newest activity first, starting
   * after `after` (exclusive): one query of the page's size, however many the user has.
   */
  listConversations(userId: string, limit: number, after?: ConversationPosition): Promise<ListedConversation[]>;

  /** The partial replies being written in a session, by key (none where no client can read them). */
  readPartialReplies(sessionId: string): Promise<Record<string, PartialReply>>;

  /**
   * Up to `limit` of the sessions whose `user_id` is `userId`, indexed or not, in session id order
   * after `after` (exclusive), each read whole: what an export writes and an erasure deletes.
   */
  readUserSessions(userId: string, after: string | undefined, limit: number): Promise<StoredConversation[]>;

  /** Up to `limit` session ids of the user's index in id order after `after`, with when each was created (entries whose session may be gone). */
  scanConversationIndex(userId: string, after: string | undefined, limit: number): Promise<{ readonly id: string; readonly createdAt: number }[]>;

  /**
   * Whether this store reaches the database instance session `sessionId` is on: false only for an
   * id naming an instance past its list (docs/sharding.md), whose session `readUserSessions` cannot
   * see, as during the rollout that appends an instance.
   */
  reaches(sessionId: string): boolean;

  /** A random secret of the deployment's, created on first use and the same for every instance (cursor signatures); readable by no client. */
  serviceSecret(name: string): Promise<string>;
}

/** What erasing a user's data reads and writes besides their sessions' own nodes. */
export interface ErasureStore {
  /** Atomically applies `rule` to the erasure record of `userKey`. */
  updateErasure<O>(userKey: string, rule: ErasureRule<O>): Promise<O>;

  /**
   * The sessions the user's erasure under way has deleted so far (its record's `sessions`), with
   * its cutoff, read together; null when no erasure is under way.
   */
  readErasedSessions(userKey: string): Promise<ErasedSessions | null>;

  /** Adds session ids to the record's `sessions`; nothing when there is no record. */
  recordErasedSessions(userKey: string, sessionIds: readonly string[]): Promise<void>;

  /** Usage keys whose erasure record is due at or before `now`, the most overdue first, a page after `after`. */
  findDueErasures(now: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage>;

  /**
   * Removes the sessions (every node under each: messages, partials, summary, keys) and their
   * entries in `userId`'s index, in one atomic update; harmless for ids already gone. The ids are
   * the user's (from their index, a query on `user_id`, or an erasure's record): the database
   * adapter deletes them without reading who owns them, since a node brought back by a late write
   * names no owner.
   */
  deleteUserSessions(userId: string, sessionIds: readonly string[]): Promise<void>;

  /**
   * Removes, as `deleteUserSessions` does, each of the sessions that was not created after
   * `cutoff`, and whatever is left under an id with no session (a late write), with its index
   * entry. Decided on the stored session and, apart, on the stored entry, each atomically with its
   * removal: a session created under one of the ids meanwhile (a keyed create's retry, whose key
   * fixes the id) stays whole and listed, whenever its write lands. What an erasure's second pass
   * deletes again, where a blind removal would take that session away.
   *
   * Returns the ids under which it removed a session created up to `cutoff`: those the caller
   * forgets in the usage record. Not an id it found nothing under, nor only a late write's
   * leftovers, nor one whose session or index entry was created after `cutoff` (the database's
   * create sends the entry first): a keyed create's retry may have counted its session there
   * already, its write still on its way.
   */
  deleteUserSessionsUpTo(userId: string, sessionIds: readonly string[], cutoff: number): Promise<ReadonlySet<string>>;

  /**
   * Up to `limit` of `userKey`'s `createSession` idempotency keys, in hash order after `after`
   * (exclusive): what both passes of their erasure look through for the keys they delete.
   */
  readUserCreateKeys(userKey: string, after: string | undefined, limit: number): Promise<StoredCreateKey[]>;

  /**
   * Removes the record under `hash` while it is still `read` (`isUnchangedCreateKey`),
   * atomically: a key the erasure found claimed up to its cutoff, or with no session and no request
   * left, which a repeat taking it over since keeps. True when it went.
   */
  deleteUnchangedCreateKey(hash: string, read: CreateKey): Promise<boolean>;
}

/** What the list leaves out while an erasure is under way (ErasureStore.readErasedSessions). */
export interface ErasedSessions {
  /** The erasure's cutoff: a session created after it is the user's to keep, though its id is below. */
  readonly requestedAt: number;
  readonly ids: ReadonlySet<string>;
}

/** Every role: what one adapter (the Realtime Database, the embedded store) implements. */
export interface SessionStore extends TemplateStore, StateStore, HistoryStore, LedgerStore, HousekeepingStore, ConversationStore, ErasureStore {}

/** The contract of `appendExchange`'s rule, checked by every adapter: one more exchange, no other count. */
export function assertNextCountsOneMore(state: SessionState, next: SessionState): void {
  if (next.message_count !== state.message_count + 1) {
    throw new Error(`an appending rule must count one more exchange (${state.message_count} -> ${next.message_count})`);
  }
}
