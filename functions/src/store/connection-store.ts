import type { ConnectionMessage, ConnectionMeta, ConnectionState, DeviceRecord, PairRecord, TokenOwner } from "./connection-records";
import type { LedgerRule } from "./session-store";
import type { SweepCursor, SweepPage } from "./sweep-page";

/*
 * The ports through which the connections module reaches its database, by role, as the session
 * module's are (session-store.ts): every method atomic on its own, the rules in the module, the
 * adapters applying them. Both adapters (memory-connection-store.ts, rtdb/rtdb-connection-store.ts)
 * implement both roles.
 */

/**
 * A rule deciding, from a connection's current state, an outcome and, to change it, the next
 * state. Applied inside the store's atomic section (a transaction handler): synchronous, pure and
 * cheap, since it may run several times under contention and only its last run counts.
 */
export type ConnectionRule<O> = (state: ConnectionState) => { readonly outcome: O; readonly next?: ConnectionState };

/** A `ConnectionRule` that may store a message: with `next`, which must count one more message, comes `message`. */
export type MessageRule<O> = (state: ConnectionState) => { readonly outcome: O; readonly next?: ConnectionState; readonly message?: ConnectionMessage };

export type RuledConnection<O> = { readonly found: true; readonly outcome: O; readonly state: ConnectionState } | { readonly found: false };

/**
 * A connection as the store needs to know it to change it: its id, and where each participant's
 * list of connections is kept (`userKeys`, a for a and b for b), which every change keeps ordered
 * by the connection's last activity.
 */
export interface ConnectionRef {
  readonly id: string;
  readonly userKeys: { readonly a: string; readonly b: string };
}

export interface NewConnection extends ConnectionRef {
  readonly meta: ConnectionMeta;
  readonly state: ConnectionState;
}

/** A stored message and its place: the `position`-th of the connection (its key is `m` + position, 9 digits). */
export interface StoredMessage {
  readonly position: number;
  readonly message: ConnectionMessage;
}

/** One entry of a user's list of connections. */
export interface ListedConnection {
  readonly id: string;
  readonly lastActivity: number;
}

/** Where a page of a user's connections starts: after this entry, in newest-first order. */
export interface ListCursor {
  readonly lastActivity: number;
  readonly id: string;
}

/** Pairs of users, their connections and the messages between them. */
export interface ConnectionStore {
  /** Atomically applies `rule` to the pair's record (null when the pair has none yet). */
  updatePair<O>(pairKey: string, rule: LedgerRule<PairRecord, O>): Promise<O>;

  /**
   * Creates the connection unless it exists (then nothing is written), and puts it in both users'
   * lists. Writing the same connection twice is harmless: whoever finds a pair's current
   * connection missing creates it from the pair's record, which gives the very same node.
   */
  createConnection(connection: NewConnection): Promise<"created" | "exists">;

  /** The fields fixed at creation. Safe to cache: they never change. */
  readConnectionMeta(connectionId: string): Promise<ConnectionMeta | null>;

  /** The current state, always read from the database. */
  readConnectionState(connectionId: string): Promise<ConnectionState | null>;

  /** Atomically applies `rule` to the connection's state; both users' lists follow its last activity. */
  updateConnection<O>(connection: ConnectionRef, rule: ConnectionRule<O>): Promise<RuledConnection<O>>;

  /**
   * Atomically applies `rule`; when it returns a next state, that state counts one more message,
   * and the rule's message is stored under that count together with it. Concurrent appends are
   * serialised, none is lost, and every reader sees them in one order.
   */
  appendMessage<O>(connection: ConnectionRef, rule: MessageRule<O>): Promise<RuledConnection<O>>;

  /**
   * The last `limit` messages before position `before` (all when absent), oldest first: a run of
   * consecutive positions, so a reader paging back never skips one. Null when the connection has no
   * state (never created, or erased), told in the same read: an instance that knows the connection's
   * fixed fields has no other way to learn it is gone, and a message's copy landing after an erasure
   * leaves messages without a connection.
   */
  readConnectionMessages(connectionId: string, page: { readonly before?: number; readonly limit: number }): Promise<StoredMessage[] | null>;

  /** The message at `position`, or null when none is stored there. */
  readConnectionMessage(connectionId: string, position: number): Promise<ConnectionMessage | null>;

  /** A page of the user's connections, newest activity first, after `cursor` when given: `limit` at most, whatever the user's total. */
  listConnections(userKey: string, page: { readonly limit: number; readonly after?: ListCursor }): Promise<ListedConnection[]>;

  /**
   * Removes the connection from the user's list only; harmless to repeat. For an entry whose
   * connection is gone: a message's copy that lands after an erasure deleted it writes its entry back.
   */
  unlistConnection(userKey: string, connectionId: string): Promise<void>;

  /**
   * Moves the connection's entry in the user's list up to `lastActivity`, never back, and only if
   * the entry is there: for an entry a late copy set back (its copies are not ordered across instances).
   */
  relistConnection(userKey: string, connectionId: string, lastActivity: number): Promise<void>;

  /**
   * Whether each user's list holds the connection (`a` for user a's, `b` for user b's): read beside
   * a requester's repeated request, which lists it again where its creation's list update was lost.
   */
  readListed(connection: ConnectionRef): Promise<{ readonly a: boolean; readonly b: boolean }>;

  /**
   * Writes the connection's entry, at `lastActivity`, into each user's list that lacks it (an entry
   * behind it moves up; none is set back); true when this call wrote a missing one. Only for a
   * connection whose state and pair's record the caller has just found: what an erasure removed is
   * known gone by those, and must not be listed again.
   */
  listConnection(connection: ConnectionRef, lastActivity: number): Promise<boolean>;

  /** A hint that the connection's state is about to be transacted on: an adapter may start following it now. */
  prepareConnection(connectionId: string): void;

  /**
   * `prepareConnection` for a connection a request names before it is known to exist, or the
   * caller to be one of its users: the returned function withdraws the hint (call it on a 404 or a
   * 403), and a `prepareConnection` confirms it. An adapter's early follow must not make requests
   * for connections that do not exist, or that belong to others, cost the ones it serves.
   */
  guessConnection(connectionId: string): () => void;
}

/** The devices of users: their FCM registration tokens, and which user each token belongs to. */
export interface DeviceStore {
  /** A hint that the user's devices will be read: an adapter may start following them now, beside other reads. */
  prepareDevices(userKey: string): void;

  /** The user's devices, or null when they registered none. */
  readDevices(userKey: string): Promise<DeviceRecord | null>;

  /** Atomically applies `rule` to the user's devices (null for none; a next of null-like empty removes the record). */
  updateDevices<O>(userKey: string, rule: LedgerRule<DeviceRecord, O>): Promise<O>;

  /** Atomically applies `rule` to the record of which user holds a token, by the token's hash. */
  updateTokenOwner<O>(tokenHash: string, rule: LedgerRule<TokenOwner, O>): Promise<O>;

  /** Which user holds a token (null for none), as the database has it now: never an instance's copy. */
  readTokenOwner(tokenHash: string): Promise<TokenOwner | null>;

  /**
   * Users holding a token last registered at or before `cutoff` (stale), oldest first, a page after
   * `after` (sweep-page.ts): the sweep pages on from where a page ended, so a record it cannot
   * change (unreadable, or a write the database keeps failing) is passed, not met again at the head
   * of each page.
   */
  findStaleDevices(cutoff: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage>;

  /** Hashes of tokens whose owner record was last registered at or before `cutoff`, oldest first (by `updated_at`, then hash), a page after `after`. */
  findStaleTokenOwners(cutoff: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage>;

  /**
   * Removes the token's owner record while it was last registered at or before `cutoff`; true when
   * this call removed it. A registration landing between the search and the removal keeps its
   * record (without it, the token's next owner would not know whom to take it from). A record it
   * cannot read stays (StoreDataError).
   */
  deleteStaleTokenOwner(tokenHash: string, cutoff: number): Promise<boolean>;

  /** Tokens whose owner record names users it is still to leave (`released_from`), claimed at or before `upTo`, oldest first, a page after `after`. */
  findPendingReleases(upTo: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage>;
}

/** The contract of `appendMessage`'s rule, checked by every adapter: one more message, and the message with it. */
export function assertAppendsOne(state: ConnectionState, next: ConnectionState, message: ConnectionMessage | undefined): ConnectionMessage {
  if (next.message_count !== state.message_count + 1) {
    throw new Error(`an appending rule must count one more message (${state.message_count} -> ${next.message_count})`);
  }
  if (!message) throw new Error("an appending rule must give the message it stores");
  return message;
}
