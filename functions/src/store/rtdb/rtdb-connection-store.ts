import type { Database, DataSnapshot, Query } from "firebase-admin/database";
import {
  connectionMessageSchema,
  connectionMetaSchema,
  connectionStateSchema,
  deviceRecordSchema,
  pairRecordSchema,
  tokenOwnerSchema,
  type ConnectionMessage,
  type ConnectionMeta,
  type ConnectionState,
  type DeviceRecord,
  type PairRecord,
  type TokenOwner,
} from "../connection-records";
import {
  assertAppendsOne,
  type ConnectionRef,
  type ConnectionRule,
  type ConnectionStore,
  type DeviceStore,
  type ListCursor,
  type ListedConnection,
  type MessageRule,
  type NewConnection,
  type RuledConnection,
  type StoredMessage,
} from "../connection-store";
import type { ConnectionErasureStore, ErasingRule, ListedForErasure } from "../connection-erasure-store";
import { StoreDataError, StoreUnavailableError } from "../errors";
import { messageKey } from "../message-keys";
import { parseStored } from "../parse-stored";
import type { LedgerRule } from "../session-store";
import { pageOnOneInstance, type SweepCursor, type SweepPage } from "../sweep-page";
import { ConnectionErasureWrites } from "./connection-erasure-writes";
import { connectionNodeToWrite, parseConnectionPending, planConnectionCopy } from "./connection-journal";
import { contiguousFrom } from "./history-reads";
import { installFrameSafeJson } from "./frame-safe-json";
import { JournalCopies } from "./journal-copies";
import { ListenerHolds } from "./listener-holds";
import {
  connectionMessagePath,
  connectionMessagesPath,
  connectionMetaPath,
  connectionOfStatePath,
  connectionPath,
  connectionStatePath,
  DEVICE_TOKENS,
  listedConnectionChild,
  listedConnectionPath,
  pairPath,
  tokenOwnerPath,
  USER_CONNECTIONS,
  USER_DEVICES,
  userConnectionsPath,
  userDevicesPath,
} from "./paths";
import { readOnce, TransactionEngine } from "./transactions";

/** Nodes an instance listens to at once for connections and devices, and how long one is kept unused (see ListenerHolds). */
const HELD_NODES = 512;
const HOLD_IDLE_MS = 5 * 60_000;
/** Reads of a page of messages that showed a gap before the newest, or a journal that trailed, are given up on: see `readConnectionMessages`. */
const PAGE_READ_ATTEMPTS = 3;
/** The field of a connection's state that tells it exists (every stored state holds it), and the journal's: see `journalAndCount`. */
const EXISTS_FIELD = "message_count";
const JOURNAL_FIELD = "pending";

/**
 * The Realtime Database adapter of connections and devices (firebase-admin): the stored shape of
 * paths.ts, the transaction engine, a connection's journal (connection-journal.ts), listener holds
 * and frame-safe JSON, as RtdbStore composes them for sessions.
 *
 * A message costs one round trip on an instance that listens to its connection's state and to
 * both users' devices: the transaction that stores it, with the devices' reads beside it answered
 * from the listeners' copies.
 */
export class RtdbConnectionStore implements ConnectionStore, DeviceStore, ConnectionErasureStore {
  private readonly engine: TransactionEngine;
  private readonly erasure: ConnectionErasureWrites;
  private readonly holds: ListenerHolds;
  private readonly copies = new JournalCopies();

  constructor(
    private readonly db: Database,
    timeoutMs: number,
    options: { heldNodes?: number; holdIdleMs?: number } = {},
  ) {
    installFrameSafeJson();
    this.engine = new TransactionEngine(db, timeoutMs);
    this.erasure = new ConnectionErasureWrites(db, this.engine);
    this.holds = new ListenerHolds(db, options.heldNodes ?? HELD_NODES, options.holdIdleMs ?? HOLD_IDLE_MS, (path) => {
      const connectionId = connectionOfStatePath(path);
      if (connectionId !== undefined) this.copies.forget(connectionId);
    });
  }

  /** Resolves once every copy sent so far is acknowledged (or failed): for a clean shutdown, and tests. */
  async copiesSettled(): Promise<void> {
    await this.copies.settled();
  }

  /** Stops listening to everything this store listens to (for a clean shutdown). */
  close(): void {
    this.holds.releaseAll();
  }

  // ConnectionStore

  async updatePair<O>(pairKey: string, rule: LedgerRule<PairRecord, O>): Promise<O> {
    return this.engine.transactRecord(pairPath(pairKey), pairRecordSchema, "update connection pair", rule);
  }

  async createConnection(connection: NewConnection): Promise<"created" | "exists"> {
    const { id, meta, state, userKeys } = connection;
    const statePath = connectionStatePath(id);
    this.holds.hold(statePath);
    // The meta is written first, on the same connection, so a state that exists always has its
    // meta: both are sent at once, one round trip. The meta is the same whoever writes it.
    const metaWritten = this.db.ref(connectionMetaPath(id)).set(meta);
    const created = this.engine.createIfAbsent(statePath, JSON.parse(JSON.stringify(state)), "create connection");
    const [, wrote] = await this.engine.call("create connection", Promise.all([metaWritten, created]));
    if (wrote) {
      // From the lists' node, not the root (see copyJournal).
      const lists = { [listedConnectionChild(userKeys.a, id)]: state.last_activity, [listedConnectionChild(userKeys.b, id)]: state.last_activity };
      await this.engine.call("list connection", this.db.ref(USER_CONNECTIONS).update(lists));
    }
    return wrote ? "created" : "exists";
  }

  async readConnectionMeta(connectionId: string): Promise<ConnectionMeta | null> {
    const path = connectionMetaPath(connectionId);
    const snapshot = await this.engine.read("read connection", this.db.ref(path));
    return snapshot.exists() ? parseStored(connectionMetaSchema, snapshot.val(), path) : null;
  }

  async readConnectionState(connectionId: string): Promise<ConnectionState | null> {
    const path = connectionStatePath(connectionId);
    const snapshot = await this.engine.read("read connection state", this.db.ref(path));
    return snapshot.exists() ? parseStored(connectionStateSchema, snapshot.val(), path) : null;
  }

  async updateConnection<O>(connection: ConnectionRef, rule: ConnectionRule<O>): Promise<RuledConnection<O>> {
    const result = await this.transact(connection, "update connection", rule);
    // Awaited: a change of status is seen in both users' lists once it is answered. A copy lost
    // after the change committed does not undo it, so the answer still says it is made: each list
    // shows a connection's status from its state and puts an entry behind it back in order
    // (ConnectionService.list), and readers merge the messages the journal still holds.
    await this.copyJournal(connection, result, true).catch(() => undefined);
    return result.ruled;
  }

  async appendMessage<O>(connection: ConnectionRef, rule: MessageRule<O>): Promise<RuledConnection<O>> {
    const result = await this.transact(connection, "append message", rule, true);
    await this.copyJournal(connection, result, false);
    return result.ruled;
  }

  async readConnectionMessages(connectionId: string, page: { readonly before?: number; readonly limit: number }): Promise<StoredMessage[] | null> {
    const limit = Math.max(0, Math.floor(page.limit));
    if (limit === 0 || (page.before !== undefined && page.before <= 1)) return (await this.connectionExists(connectionId)) ? [] : null;
    const upTo = page.before === undefined ? undefined : messageKey(page.before - 1);
    // The position the page must end at: the one just before `before`, which the caller was shown
    // (`next_before` is the first of a page), unless `before` lies past the end (see below).
    let reach = page.before === undefined ? 0 : page.before - 1;
    let trailing = false;
    let keys: string[] = [];
    let byKey = new Map<string, unknown>();
    for (let attempt = 0; attempt < PAGE_READ_ATTEMPTS; attempt += 1) {
      const read = await this.acrossJournal(connectionId, (messages) => (upTo === undefined ? messages.limitToLast(limit) : messages.endAt(upTo).limitToLast(limit)));
      if (read === null) return null;
      // An instance holding the state's listener reads the journal from its copy, which trails the
      // database as far as its link is slow, and `messages` from the server: a message committed
      // after the copy and not copied yet is in neither read. A journal short of `reach` is such a
      // copy, or a `before` past the end. Once the read of `messages` is answered, the copy holds
      // every change made before the answer (the database sends an instance's answers and pushes
      // in order, as the devices' read after a message relies on: ConnectionService.send), so the
      // count read now tells them apart: positions past it are none the caller was shown; a count
      // that reaches further means the copy trailed, and a journal read again is at least that new.
      trailing = read.count < reach;
      if (trailing) {
        const count = await this.messageCount(connectionId);
        if (count === null) return null;
        reach = Math.min(reach, count);
        trailing = read.count < reach;
        if (trailing) continue;
      }
      byKey = read.byKey;
      keys = [...byKey.keys()].filter((key) => upTo === undefined || key <= upTo).sort().slice(-limit);
      // Instances copy independently, so a later message can reach `messages` before an earlier
      // one committed after the journal was read: a gap, gone by the next read.
      if (contiguousFrom(keys) === 0) break;
    }
    // Never a page that stops short of a position the caller was shown: the reader would skip what lies between.
    if (trailing) throw new StoreUnavailableError("read messages (this instance's copy of the connection trails the database)");
    return keys.slice(contiguousFrom(keys)).map((key) => ({
      position: Number(key.slice(1)),
      message: parseStored(connectionMessageSchema, byKey.get(key), connectionMessagePath(connectionId, key)),
    }));
  }

  async readConnectionMessage(connectionId: string, position: number): Promise<ConnectionMessage | null> {
    if (!Number.isInteger(position) || position < 1) return null;
    const key = messageKey(position);
    const read = await this.acrossJournal(connectionId, (messages) => messages.startAt(key).endAt(key));
    const message = read?.byKey.get(key);
    return message === undefined ? null : parseStored(connectionMessageSchema, message, connectionMessagePath(connectionId, key));
  }

  async listConnections(userKey: string, page: { readonly limit: number; readonly after?: ListCursor }): Promise<ListedConnection[]> {
    const limit = Math.max(0, Math.floor(page.limit));
    if (limit === 0) return [];
    const { after } = page;
    const ordered = this.db.ref(userConnectionsPath(userKey)).orderByValue();
    // The cursor's own entry ends the query's range (a value and key bound includes it): one more is read, and dropped.
    const query = after === undefined ? ordered.limitToLast(limit) : ordered.endAt(after.lastActivity, after.id).limitToLast(limit + 1);
    const snapshot = await this.engine.read("list connections", query);
    const entries: ListedConnection[] = [];
    snapshot.forEach((child: DataSnapshot) => {
      const value: unknown = child.val();
      if (child.key !== null && typeof value === "number") entries.push({ id: child.key, lastActivity: value });
    });
    return entries
      .reverse()
      .filter((entry) => after === undefined || entry.lastActivity < after.lastActivity || (entry.lastActivity === after.lastActivity && entry.id < after.id))
      .slice(0, limit);
  }

  async unlistConnection(userKey: string, connectionId: string): Promise<void> {
    await this.engine.call("unlist connection", this.db.ref(listedConnectionPath(userKey, connectionId)).remove());
  }

  async relistConnection(userKey: string, connectionId: string, lastActivity: number): Promise<void> {
    // A transaction: a newer copy landing meanwhile is kept, and an entry removed meanwhile (an erasure) is not written back.
    await this.engine.transact(listedConnectionPath(userKey, connectionId), "relist connection", (current) => ({
      decided: undefined,
      write: typeof current === "number" && current < lastActivity ? lastActivity : current,
    }));
  }

  async readListed(connection: ConnectionRef): Promise<{ readonly a: boolean; readonly b: boolean }> {
    const { id, userKeys } = connection;
    const [a, b] = await this.engine.call("read listed connection", Promise.all([readOnce(this.db.ref(listedConnectionPath(userKeys.a, id))), readOnce(this.db.ref(listedConnectionPath(userKeys.b, id)))]));
    return { a: a.exists(), b: b.exists() };
  }

  async listConnection(connection: ConnectionRef, lastActivity: number): Promise<boolean> {
    const { id, userKeys } = connection;
    // A transaction per entry, both sent at once: an absent entry is filled, one behind moves up,
    // and one a newer copy wrote meanwhile is kept (an update could set it back).
    const results = await Promise.all(
      [userKeys.a, userKeys.b].map((userKey) =>
        this.engine.transact(listedConnectionPath(userKey, id), "list connection", (current) => ({
          decided: current === null,
          write: typeof current === "number" && current >= lastActivity ? current : lastActivity,
        })),
      ),
    );
    return results.some((result) => result.committed && result.decided === true);
  }

  prepareConnection(connectionId: string): void {
    this.holds.hold(connectionStatePath(connectionId));
  }

  guessConnection(connectionId: string): () => void {
    // A guess (ListenerHolds.guess): counted against HELD_NODES, and pushing out the holds of the
    // connections served, only once `prepareConnection` or a transaction confirms it.
    return this.holds.guess(connectionStatePath(connectionId));
  }

  // DeviceStore

  prepareDevices(userKey: string): void {
    this.holds.hold(userDevicesPath(userKey));
  }

  async readDevices(userKey: string): Promise<DeviceRecord | null> {
    const path = userDevicesPath(userKey);
    // Held: a user who receives messages has their devices read with each, then from the listener's copy.
    this.holds.hold(path);
    const snapshot = await this.engine.read("read devices", this.db.ref(path));
    return snapshot.exists() ? parseStored(deviceRecordSchema, snapshot.val(), path) : null;
  }

  async updateDevices<O>(userKey: string, rule: LedgerRule<DeviceRecord, O>): Promise<O> {
    const path = userDevicesPath(userKey);
    this.holds.hold(path);
    return this.engine.transactRecord(path, deviceRecordSchema, "update devices", rule);
  }

  async updateTokenOwner<O>(tokenHash: string, rule: LedgerRule<TokenOwner, O>): Promise<O> {
    return this.engine.transactRecord(tokenOwnerPath(tokenHash), tokenOwnerSchema, "update token owner", rule);
  }

  async readTokenOwner(tokenHash: string): Promise<TokenOwner | null> {
    // Never held: a read of a node nobody here listens to is answered by the server.
    const path = tokenOwnerPath(tokenHash);
    const snapshot = await this.engine.read("read token owner", this.db.ref(path));
    return snapshot.exists() ? parseStored(tokenOwnerSchema, snapshot.val(), path) : null;
  }

  async findStaleDevices(cutoff: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage> {
    return pageOnOneInstance(after, limit, (from, wanted) => this.engine.orderedBy(USER_DEVICES, "oldest_at", cutoff, wanted, "find stale devices", from));
  }

  async findStaleTokenOwners(cutoff: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage> {
    return pageOnOneInstance(after, limit, (from, wanted) => this.engine.orderedBy(DEVICE_TOKENS, "updated_at", cutoff, wanted, "find stale token owners", from));
  }

  async deleteStaleTokenOwner(tokenHash: string, cutoff: number): Promise<boolean> {
    // A transaction that checks its time again, as deleteOrderedBy's do: a registration landing
    // between the query and the delete keeps its fresh record.
    return this.erasure.rewrite(tokenOwnerPath(tokenHash), tokenOwnerSchema, "delete stale token owner", (owner: TokenOwner | null) =>
      owner !== null && owner.updated_at <= cutoff ? { outcome: true, next: null } : { outcome: false },
    );
  }

  async findPendingReleases(upTo: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage> {
    return pageOnOneInstance(after, limit, (from, wanted) => this.engine.orderedBy(DEVICE_TOKENS, "releasing_since", upTo, wanted, "find pending token releases", from));
  }

  // ConnectionErasureStore (connection-erasure-writes.ts)

  scanListedConnections(userKey: string, after: string | undefined, limit: number): Promise<ListedForErasure[]> {
    return this.erasure.scanListed(userKey, after, limit);
  }

  readUserConnections(userId: string, after: string | undefined, limit: number): Promise<{ id: string; meta: ConnectionMeta }[]> {
    return this.erasure.readUserConnections(userId, after, limit);
  }

  deleteConnections(connections: readonly ConnectionRef[]): Promise<void> {
    return this.erasure.deleteConnections(connections);
  }

  findUserPairs(userId: string, userKey: string, after: string | undefined, limit: number): Promise<string[]> {
    return this.erasure.findUserPairs(userId, userKey, after, limit);
  }

  rewritePair<O>(pairKey: string, rule: ErasingRule<PairRecord, O>): Promise<O> {
    return this.erasure.rewrite(pairPath(pairKey), pairRecordSchema, "erase from pair", rule);
  }

  rewriteDevices<O>(userKey: string, rule: ErasingRule<DeviceRecord, O>): Promise<O> {
    return this.erasure.rewrite(userDevicesPath(userKey), deviceRecordSchema, "erase devices", rule);
  }

  findTokenOwners(userKey: string, after: string | undefined, limit: number): Promise<{ hash: string; owner: TokenOwner }[]> {
    return this.erasure.findTokenOwners(userKey, after, limit);
  }

  deleteTokenOwners(userKey: string, cutoff: number, hashes: readonly string[]): Promise<number> {
    return this.erasure.deleteTokenOwners(userKey, cutoff, hashes);
  }

  // The journal's I/O

  /** A transaction on the connection's state writing what the journal decides, with the rule's message journaled. */
  private async transact<O>(connection: ConnectionRef, operation: string, rule: MessageRule<O>, appending = false) {
    this.prepareConnection(connection.id);
    const { decided, value } = await this.engine.transactParsed(connectionStatePath(connection.id), operation, connectionStateSchema, rule, (raw, state, result) => {
      const appended = appending && result.next !== undefined ? assertAppendsOne(state, result.next, result.message) : undefined;
      return connectionNodeToWrite(raw, state, result.next, this.copies.known(connection.id), appended);
    });
    const ruled: RuledConnection<O> = decided ? { found: true, outcome: decided.result.outcome, state: decided.result.next ?? decided.state } : { found: false };
    return { ruled, value, wrote: decided?.result.next !== undefined };
  }

  /**
   * After a transaction: sends the copy the journal calls for. Awaited when `wait` (a change of
   * status) or when the connection is closed (no message will follow to finish it: the copied
   * entries are dropped from the state at once); otherwise sent and not awaited, since the message
   * is committed in the journal, readers merge it, and whoever transacts next copies it again if
   * this is lost.
   */
  private async copyJournal(connection: ConnectionRef, result: { value: unknown; wrote: boolean }, wait: boolean): Promise<void> {
    const { id } = connection;
    const { known, copy } = planConnectionCopy(connection, result, this.copies.known(id));
    this.copies.keep(id, known);
    if (copy === undefined) return;
    // Each update from the node it writes, never from the root: @firebase/database 1.1.5
    // acknowledges an update sent from the root by visiting every node the instance listens to
    // (RtdbStore.copyJournal). The users' lists take a write of their own.
    const messages = Object.keys(copy.messages).length > 0 ? this.db.ref(connectionPath(id)).update(copy.messages) : undefined;
    const listed = Object.keys(copy.listed).length > 0 ? this.db.ref(USER_CONNECTIONS).update(copy.listed) : undefined;
    // What is known of a connection no longer held is forgotten with its hold; a closed one's is used at once.
    const sent = this.copies.sent(id, Promise.all([messages, listed]).then(() => undefined), copy.entries, () => copy.closed || this.holds.isHeld(connectionStatePath(id)));
    if (!wait && !copy.closed) {
      this.copies.track(sent);
      return;
    }
    await this.engine.call("copy messages", sent);
    if (!copy.closed || copy.entries.size === 0) return;
    const dropped = await this.transact(connection, "clear copied messages", () => ({ outcome: undefined }));
    if (!dropped.ruled.found) throw new StoreUnavailableError("clear copied messages");
  }

  /**
   * Messages read with `query` (ordered by key), merged with those still journaled in
   * `state/pending`, which is read first: a message leaves `pending` only after its copy in
   * `messages` landed, so it is seen on one side or the other, never on neither, up to the
   * `count` read with the journal. Null when the connection has no state: gone, whatever
   * `messages` holds (a copy that landed after an erasure).
   */
  private async acrossJournal(connectionId: string, query: (messages: Query) => Query): Promise<{ byKey: Map<string, unknown>; count: number } | null> {
    const journalRead = readOnce(this.journalAndCount(connectionId));
    const storedRead = readOnce(query(this.db.ref(connectionMessagesPath(connectionId)).orderByKey()));
    const [journal, stored] = await this.engine.call("read messages", Promise.all([journalRead, storedRead]));
    const count = this.countIn(connectionId, journal);
    if (count === null) return null;
    const pending = journal.child(JOURNAL_FIELD);
    const byKey = new Map<string, unknown>();
    stored.forEach((child: DataSnapshot) => {
      if (child.key !== null) byKey.set(child.key, child.val());
    });
    for (const [key, message] of Object.entries(parseConnectionPending(connectionId, pending.val()))) byKey.set(key, message);
    return { byKey, count };
  }

  /** Whether the connection has a state, with the read `acrossJournal` makes (for a page that asks for no message). */
  private async connectionExists(connectionId: string): Promise<boolean> {
    return (await this.messageCount(connectionId)) !== null;
  }

  /** The connection's `message_count` (null when it has no state), with the read `acrossJournal` makes. */
  private async messageCount(connectionId: string): Promise<number | null> {
    return this.countIn(connectionId, await this.engine.read("read messages", this.journalAndCount(connectionId)));
  }

  private countIn(connectionId: string, journal: DataSnapshot): number | null {
    const count: unknown = journal.child(EXISTS_FIELD).val();
    if (count === null) return null;
    if (typeof count !== "number") throw new StoreDataError(`${connectionStatePath(connectionId)}/${EXISTS_FIELD}`, "not a number");
    return count;
  }

  /**
   * The state's journal (`pending`) and its `message_count`, which every stored state holds, in one
   * query: the count tells whether the connection still exists, in the request the journal takes
   * anyway, where the whole state would bring its rate buckets and its recent keys (up to 64) besides.
   * The key range holds just these two: no field of the state sorts between them.
   */
  private journalAndCount(connectionId: string): Query {
    return this.db.ref(connectionStatePath(connectionId)).orderByKey().startAt(EXISTS_FIELD).endAt(JOURNAL_FIELD);
  }
}
