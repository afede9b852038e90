import type { Database, DataSnapshot } from "firebase-admin/database";
import { z } from "zod";
import { entryOf, type ConversationPosition, type ErasureRule, type ListedConversation, type StoredConversation } from "../conversation-records";
import { StoreUnavailableError } from "../errors";
import { parseStored } from "../parse-stored";
import {
  addressUsageSchema,
  createKeySchema,
  DATABASE_KEY,
  keyRecordSchema,
  replacesSummary,
  serviceUsageSchema,
  sessionStateSchema,
  sessionSummarySchema,
  templateSchema,
  userUsageSchema,
  type AddressUsage,
  type ChatMessage,
  type CreateKey,
  type Exchange,
  type KeyRecord,
  type PartialReply,
  type ServiceUsage,
  type SessionMeta,
  type SessionState,
  type SessionSummary,
  type Template,
  type UserUsage,
} from "../records";
import type { ErasedSessions, HistoryWindow, LedgerRule, NewSession, Ruled, RuledWithKey, SessionStore, StateRule, StoredCreateKey, UsageRule } from "../session-store";
import { adoptedClaim, isReleasable } from "../session-store";
import { pageOnOneInstance, type SweepCursor, type SweepPage } from "../sweep-page";
import { installFrameSafeJson } from "./frame-safe-json";
import { HistoryReads } from "./history-reads";
import { ConversationReads } from "./conversation-reads";
import { ErasureWrites } from "./erasure-writes";
import { CLAIMS_LAPSE, CONVERSATION, creationOf, isMarkedUnflushed, isRecord, journalEntry, markedUnflushed, nodeToWrite, planCopy, stateNode, UNFLUSHED, type JournalEntry } from "./journal";
import { JournalCopies } from "./journal-copies";
import { deleteAcross } from "./home-writes";
import { ListenerHolds } from "./listener-holds";
import { ServiceSecrets } from "./service-secrets";
import { fromJsonLeaf, type RecordForm } from "./json-leaf";
import { sessionMetaOf } from "./session-meta";
import {
  ADDRESS_USAGE,
  addressPath,
  CONNECTED,
  conversationOwnerKey,
  conversationPath,
  CREATE_KEYS,
  createKeyPath,
  ERASURES,
  isOwnerKey,
  keyRecordPath,
  partialPath,
  SERVICE_USAGE,
  serviceShardPath,
  SESSION_FIELDS,
  sessionFieldPath,
  sessionOfStatePath,
  SESSION_CHILDREN,
  sessionPath,
  SESSIONS,
  stateField,
  statePath,
  summaryPath,
  templatePath,
  userUsagePath,
} from "./paths";
import { readOnce, TransactionEngine, type StateResult } from "./transactions";

/**
 * Nodes a function instance listens to at once, over every database instance (instanceStores
 * gives each its share), and how long one is kept unused (see ListenerHolds).
 */
export const HELD_NODES = 512;
const HOLD_IDLE_MS = 5 * 60_000;

/**
 * Realtime Database adapter (firebase-admin): every role of the store port, composed from the
 * stored shape (paths.ts), the transaction engine (transactions.ts), the journal that keeps a
 * session's `state` small (journal.ts), the reads that merge it (history-reads.ts), the listener
 * holds (listener-holds.ts) and frame-safe JSON (frame-safe-json.ts). The parts decide; this class
 * does the I/O.
 *
 * A message costs two round trips when the instance listens to its session's state and its
 * user's usage (ListenerHolds): the claim and the usage admission, sent together, then the commit.
 */
export class RtdbStore implements SessionStore {
  /** Clients listen to partial replies in the database. */
  readonly partialsReadable = true;
  /** One: a sharded deployment has an RtdbStore per instance, under a ShardedStore. */
  readonly databaseInstances = 1;
  private readonly engine: TransactionEngine;
  private readonly history: HistoryReads;
  private readonly conversations: ConversationReads;
  private readonly erasures: ErasureWrites;
  private readonly holds: ListenerHolds;
  private readonly copies = new JournalCopies();
  /** The deployment's secrets, kept current by a listener (service-secrets.ts). */
  private readonly secrets: ServiceSecrets;
  /** Where the conversation index is: this database, or with sharding the home instance (docs/sharding.md). */
  private readonly home: Database;
  /** Transactions on the home instance: this database's engine when there is one instance. */
  private readonly homeEngine: TransactionEngine;

  constructor(
    private readonly db: Database,
    timeoutMs: number,
    options: { heldNodes?: number; holdIdleMs?: number; home?: Database } = {},
  ) {
    installFrameSafeJson();
    // The first reference creates the SDK's connection, which then opens while the instance
    // finishes starting, instead of on its first request.
    db.ref(CONNECTED);
    this.home = options.home ?? db;
    this.engine = new TransactionEngine(db, timeoutMs);
    this.history = new HistoryReads(db, this.engine);
    this.conversations = new ConversationReads(db, this.engine);
    this.homeEngine = this.home === db ? this.engine : new TransactionEngine(this.home, timeoutMs);
    this.erasures = new ErasureWrites(db, this.engine, this.home, this.homeEngine);
    this.secrets = new ServiceSecrets(db, this.engine);
    // What is known copied of a session goes with its hold, and as its state is seen gone: a session
    // created again under the id (an erased one, by a keyed create's retry) journals entries of the
    // same names. The state's `created_at` tells the two apart (JournalCopies); in a state an older
    // version wrote there is none, and the earlier one's state seen gone is all that tells.
    const forgetCopies = (path: string) => {
      const sessionId = sessionOfStatePath(path);
      if (sessionId !== undefined) this.copies.forget(sessionId);
    };
    this.holds = new ListenerHolds(db, options.heldNodes ?? HELD_NODES, options.holdIdleMs ?? HOLD_IDLE_MS, forgetCopies, Date.now, forgetCopies);
  }

  /** Resolves once every copy sent so far is acknowledged (or failed): for a clean shutdown, and tests. */
  async copiesSettled(): Promise<void> {
    await this.copies.settled();
  }

  /** Stops listening to everything this store listens to (for a clean shutdown). */
  close(): void {
    this.holds.releaseAll();
    this.secrets.close();
  }

  // TemplateStore

  async readTemplate(templateId: string): Promise<Template | null> {
    const path = templatePath(templateId);
    const snapshot = await this.engine.read("read template", this.db.ref(path));
    return snapshot.exists() ? parseStored(templateSchema, snapshot.val(), path) : null;
  }

  async seedTemplates(templates: Readonly<Record<string, Template>>): Promise<string[]> {
    const results = await Promise.all(
      Object.entries(templates).map(async ([id, template]) => ((await this.engine.createIfAbsent(templatePath(id), template, "seed template")) ? id : undefined)),
    );
    return results.filter((id): id is string => id !== undefined);
  }

  // StateStore

  async createSession(session: NewSession): Promise<"created" | "exists"> {
    const state = this.db.ref(statePath(session.id));
    const owner = conversationOwnerKey(session.meta.user_id);
    const node = { ...session.meta, state: { ...stateNode(session.state, {}), [CONVERSATION]: owner } };
    for (let attempt = 0; ; attempt += 1) {
      // The small `state` answers "exists?" without downloading a history; only a session that
      // looks absent is created, in a transaction that refuses to replace one created meanwhile.
      // A node with no session in it (no `state`, no fields) holds only what late writes left: an
      // erased session's copy landing after the erasure's first pass, under the id a keyed
      // create's retry creates again. It is replaced whole, its leftovers with it.
      if ((await this.engine.read("read session state", state)).exists()) return "exists";
      // Its index entry beside it, no round trip later. Field by field, so that it never takes
      // back what a copy wrote (when another request created the session first); if it is lost,
      // the copy of the session's first exchange writes the whole entry (the exchange carries its head).
      const entry = this.home.ref(conversationPath(owner, session.id));
      const listed = entry.update(entryOf(session.meta, session.state)).catch(() => undefined);
      let created: false | "created" | "replaced";
      try {
        [created] = await Promise.all([this.engine.createIfAbsent(sessionPath(session.id), node, "create session", holdsSession), listed]);
      } catch (error) {
        // The entry may have landed without its session (with sharding, the session's instance can
        // be out of reach while the home instance takes the entry): listed for good, it would answer
        // 404, since the sweep finds sessions, not entries. It is taken back before the error is
        // answered, unless the session is found after all (its transaction committed, the answer
        // lost). Not found in time counts as absent: a session whose late commit lands after the
        // removal is unlisted, not broken (the client was told nothing was made; the sweep expires
        // and deletes it). The removal follows the entry's update on the same connection, so it
        // lands after it, whenever that lands.
        const found = await this.engine.read("read session state", state).then((snapshot) => snapshot.exists(), () => false);
        if (!found) await this.engine.call("unlist session not created", entry.remove()).catch(() => undefined);
        throw error;
      }
      if (created) {
        this.holdState(session.id);
        if (created === "replaced") await this.clearLateHead(conversationPath(owner, session.id), session.meta.created_at);
        return "created";
      }
      // Refused because this instance is creating the same session in another request and it is
      // not stored yet: look again once that write has landed, so "exists" means readable.
      if (attempt >= 20) throw new StoreUnavailableError("create session");
      await new Promise((wake) => setTimeout(wake, 50));
    }
  }

  /**
   * Takes away the title and the close a late copy of an erased session wrote into the index entry
   * of the one just created again under its id (see createSession), once the create replaced that
   * copy's leftovers in the node: only then can its head be in the entry, this session having no
   * exchange yet. A create that found the node empty sends nothing more; one racing another create
   * of the same session finds a session there, never leftovers, and takes back nothing of its
   * copies. Without sharding the copy's entry update follows its node update on one connection:
   * a node found empty means no late head in the entry yet (one landing later carries the erased
   * `created_at`, which the list and the second pass tell apart). With sharding it may land before
   * the create's entry update and the node update after the create: not taken away
   * (docs/conversations.md, the limits). In a transaction, only while the entry is as this create
   * wrote it (its `created_at`, no exchange counted): another request's answer (a retry finding the
   * session) may let the client's exchange 1 and an end be copied before this lands, on a slow link,
   * and their title and close are the session's own. Its failure is not the create's, which
   * committed: the late title then stays, as in that limit.
   */
  private async clearLateHead(entryPath: string, createdAt: number): Promise<void> {
    await this.homeEngine
      .transact(entryPath, "clear erased session's index head", (current) => {
        if (!isRecord(current) || current.created_at !== createdAt || current.message_count !== 0) return { decided: undefined, write: current };
        const { title: _title, closed: _closed, closed_count: _count, closed_activity: _activity, ...rest } = current;
        return { decided: undefined, write: rest };
      })
      .catch(() => undefined);
  }

  async readSessionMeta(sessionId: string): Promise<SessionMeta | null> {
    // Field by field: a read of the session node itself would download the whole history.
    const snapshots = await this.engine.call("read session", Promise.all(SESSION_FIELDS.map((field) => readOnce(this.db.ref(sessionFieldPath(sessionId, field))))));
    const values: Record<string, unknown> = Object.fromEntries(SESSION_FIELDS.map((field, i) => [field, snapshots[i]?.val() ?? undefined]));
    if (values.user_id === undefined) return null;
    return sessionMetaOf(sessionId, (name) => values[name]);
  }

  guessSession(sessionId: string): () => void {
    // A guess (ListenerHolds.guess): counted against HELD_NODES, and pushing out the holds of the
    // sessions served, only once `prepareSession` or a transaction confirms it.
    return this.holds.guess(statePath(sessionId));
  }

  prepareSession(sessionId: string): void {
    this.holdState(sessionId);
  }

  async readSessionState(sessionId: string): Promise<SessionState | null> {
    const path = statePath(sessionId);
    const snapshot = await this.engine.read("read session state", this.db.ref(path));
    return snapshot.exists() ? parseStored(sessionStateSchema, snapshot.val(), path) : null;
  }

  async updateState<O>(sessionId: string, rule: StateRule<O>): Promise<Ruled<O>> {
    this.holdState(sessionId);
    const result = await this.transactState(sessionId, "update session state", rule);
    await this.copyJournal(sessionId, result);
    return result.ruled;
  }

  async updateStateReadingKey<O>(sessionId: string, rule: StateRule<O>, keyHash: string | undefined): Promise<RuledWithKey<O>> {
    this.holdState(sessionId);
    const transaction = this.transactState(sessionId, "claim", rule);
    // Sent right after the transaction, on the same connection, so the server reads the record
    // after the state it commits on (see below). Not awaited yet: both take one round trip.
    const record = keyHash === undefined ? undefined : this.readKeyRecord(sessionId, keyHash);
    const [result, early] = await Promise.all([transaction, record]);
    await this.copyJournal(sessionId, result);
    if (!result.ruled.found) return result.ruled;
    if (keyHash === undefined) return { ...result.ruled, record: null };
    // A key leaves the state only after its record is written. With one run, the rule's input was
    // the state the server committed on, which it reached before it read the record: a key not in
    // that state was in its record by then. More runs mean the state moved meanwhile: read again.
    const settled = result.runs === 1 ? (early ?? null) : await this.readKeyRecord(sessionId, keyHash);
    return { ...result.ruled, record: settled };
  }

  async appendExchange<O>(sessionId: string, exchange: Exchange, rule: StateRule<O>, partialKey?: string): Promise<Ruled<O>> {
    this.holdState(sessionId);
    const result = await this.transactState(sessionId, "append exchange", rule, journalEntry(exchange, partialKey));
    await this.copyJournal(sessionId, result);
    return result.ruled;
  }

  async writePartial(sessionId: string, key: string, partial: PartialReply | null): Promise<void> {
    // The key becomes a path segment: anything but a plain key could address another node.
    if (!DATABASE_KEY.test(key)) throw new Error("a partial's key must be a database key");
    // A plain write beside `state`, never under it: a write there would abort this instance's transactions on it.
    await this.engine.call("write partial reply", this.db.ref(partialPath(sessionId, key)).set(partial));
  }

  onClosed(sessionId: string, closed: () => void): () => void {
    // From the state's listener alone (the instance holds those of the sessions it serves): a
    // transaction here never applies locally, so each value is the server's. `status` only, not the whole state parsed.
    return this.holds.whenValue(statePath(sessionId), (state) => state.child("status").val() !== "active", closed);
  }

  async claimCreateKey(hash: string, key: CreateKey): Promise<CreateKey> {
    const path = createKeyPath(hash);
    // A record already there is written back (taken over, when this is a repeat), so the server
    // confirms it: a first run may see another request's claim that the server then refuses, and
    // trusting that would hand out a session id nobody creates, and another request would create a
    // second session.
    const { snapshot, committed } = await this.engine.transact(path, "claim idempotency key", (current) => {
      if (current === null) return { decided: undefined, write: key };
      const stored = parseStored(createKeySchema, current, path);
      // Only the mark is added: the record is written back as stored, fields this version does not know included.
      const taken = adoptedClaim(stored, key);
      return { decided: undefined, write: taken === stored ? current : { ...(current as Record<string, unknown>), adopted: true, adopted_at: taken.adopted_at } };
    });
    if (!committed) throw new StoreUnavailableError("claim idempotency key");
    return parseStored(createKeySchema, snapshot.val(), path);
  }

  releaseCreateKey(hash: string, key: CreateKey): Promise<boolean> {
    // Once this claim went, another request may claim the key again: it stays.
    return this.erasures.deleteCreateKeyWhile(hash, "release idempotency key", (stored) => isReleasable(stored, key));
  }

  refuseCreateKey(hash: string, read: CreateKey): Promise<boolean> {
    return this.erasures.refuseCreateKey(hash, read);
  }

  // HistoryStore

  readWindow(sessionId: string, limit: number): Promise<HistoryWindow> {
    return this.history.window(sessionId, limit);
  }

  readMessages(sessionId: string, first: number, last: number): Promise<ChatMessage[]> {
    return this.history.messages(sessionId, first, last);
  }

  readExchange(sessionId: string, seq: number): Promise<Exchange | null> {
    return this.history.exchange(sessionId, seq);
  }

  async readSummary(sessionId: string): Promise<SessionSummary | null> {
    const path = summaryPath(sessionId);
    // Held: a session that keeps a summary reads it with every message, then from the listener's copy.
    this.holds.hold(path);
    const snapshot = await this.engine.read("read summary", this.db.ref(path));
    return snapshot.exists() ? parseStored(sessionSummarySchema, snapshot.val(), path) : null;
  }

  async writeSummary(sessionId: string, summary: SessionSummary): Promise<boolean> {
    const path = summaryPath(sessionId);
    this.holds.hold(path);
    // A transaction, so that of two instances summarising at once the one that reaches further stays.
    const { decided, committed } = await this.engine.transact(path, "write summary", (current) => {
      const stored = sessionSummarySchema.safeParse(current);
      if (stored.success && !replacesSummary(stored.data, summary)) return { decided: false, write: current };
      return { decided: true, write: { ...summary } };
    });
    return decided === true && committed;
  }

  async dropSummary(sessionId: string, createdAt: number): Promise<void> {
    const path = summaryPath(sessionId);
    // A transaction: a summary the session created again under the id wrote since stays.
    await this.engine.transact(path, "drop summary", (current) => {
      const stored = sessionSummarySchema.safeParse(current);
      return stored.success && stored.data.created_at === createdAt ? { decided: true, write: null } : { decided: false, write: current };
    });
  }

  // LedgerStore

  prepareUsage(userKey: string): void {
    // Listening now makes the coming transaction start from the server's value, not a blind guess.
    this.holds.hold(userUsagePath(userKey));
  }

  guessUsage(userKey: string): () => void {
    // A guess, as guessSession's: a hold only once `prepareUsage` or a transaction confirms it.
    return this.holds.guess(userUsagePath(userKey));
  }

  async updateUsage<O>(userKey: string, rule: UsageRule<O>): Promise<O> {
    // One JSON string leaf: transacted twice per message, the record is cheaper to send and hash whole (json-leaf.ts).
    return this.updateLedger(userUsagePath(userKey), userUsageSchema, "update usage", rule, "json");
  }

  prepareServiceUsage(shards: readonly string[]): void {
    for (const shard of shards) this.holds.hold(serviceShardPath(shard));
  }

  async updateServiceUsage<O>(shard: string, rule: LedgerRule<ServiceUsage, O>): Promise<O> {
    return this.updateLedger(serviceShardPath(shard), serviceUsageSchema, "update service usage", rule);
  }

  async readServiceUsage(): Promise<Readonly<Record<string, ServiceUsage>>> {
    const snapshot = await this.engine.read("read service usage", this.db.ref(SERVICE_USAGE));
    const shards: Record<string, ServiceUsage> = {};
    snapshot.forEach((child: DataSnapshot) => {
      if (child.key !== null) shards[child.key] = parseStored(serviceUsageSchema, child.val(), serviceShardPath(child.key));
    });
    return shards;
  }

  async updateAddressUsage<O>(addressKey: string, rule: LedgerRule<AddressUsage, O>): Promise<O> {
    return this.updateLedger(addressPath(addressKey), addressUsageSchema, "update address usage", rule);
  }

  async readUsage(userKey: string): Promise<UserUsage | null> {
    const path = userUsagePath(userKey);
    const snapshot = await this.engine.read("read usage", this.db.ref(path));
    return snapshot.exists() ? parseStored(userUsageSchema, fromJsonLeaf(snapshot.val()), path) : null;
  }

  // HousekeepingStore

  async findIdleSessions(cutoff: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage> {
    return this.sessionsBy(stateField("idle_since"), cutoff, after, limit, "find idle sessions");
  }

  async findClosedSessions(cutoff: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage> {
    return this.sessionsBy(stateField("ended_at"), cutoff, after, limit, "find closed sessions");
  }

  async findUnflushedSessions(after: SweepCursor | undefined, limit: number): Promise<SweepPage> {
    return this.sessionsBy(stateField(UNFLUSHED), Number.MAX_SAFE_INTEGER, after, limit, "find unflushed sessions");
  }

  async findLapsedClaims(cutoff: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage> {
    return this.sessionsBy(stateField(CLAIMS_LAPSE), cutoff, after, limit, "find lapsed claims");
  }

  /** The page after `after` of the sessions whose `field` is at most `cutoff`. */
  private sessionsBy(field: string, cutoff: number, after: SweepCursor | undefined, limit: number, operation: string): Promise<SweepPage> {
    return pageOnOneInstance(after, limit, (from, wanted) => this.engine.orderedBy(SESSIONS, field, cutoff, wanted, operation, from));
  }

  async flushSession(sessionId: string): Promise<boolean> {
    this.holdState(sessionId);
    // A transaction that changes nothing still makes copyJournal send a closed session's copy
    // again; it drops the mark itself when this instance already knows the copy landed.
    const { result, unmarked } = await this.transactUnmarking(sessionId, "flush session", () => ({ outcome: undefined }));
    return (await this.copyJournal(sessionId, result)) || unmarked;
  }

  async deleteSession(sessionId: string, deletable?: (state: SessionState) => boolean): Promise<boolean> {
    // The state first (small): `deletable` is checked on it before anything goes, so a session it
    // keeps stays whole. What it checks (the close) never changes once recorded.
    const path = statePath(sessionId);
    const state: unknown = (await this.engine.read("read session state", this.db.ref(path))).val();
    const holds = (stored: unknown) => deletable === undefined || deletable(parseStored(sessionStateSchema, stored, path));
    if (state !== null && !holds(state)) return false;
    // Everything but the state, with its index entry (the block in its state says where that
    // is): one update on one instance; with sharding the entry first (deleteAcross). The state
    // goes last, so a failure before leaves it for the next run's query (retention's, by
    // `state/ended_at`), never an entry or a history that nothing finds again.
    const owner: unknown = isRecord(state) ? state[CONVERSATION] : undefined;
    const update: Record<string, null> = Object.fromEntries(SESSION_CHILDREN.map((child) => [`${sessionPath(sessionId)}/${child}`, null]));
    if (typeof owner === "string" && isOwnerKey(owner)) update[conversationPath(owner, sessionId)] = null;
    await deleteAcross(this.db, this.home, this.engine, "delete session", update);
    // Then the node, in a transaction that checks `deletable` again: only one of two runs at once
    // finds the state there, and only that one says it removed the session. The history is gone by
    // now, so the node read is small: the state, and whatever else is left (a child older versions
    // wrote, a late copy).
    const { decided, committed } = await this.engine.transact(sessionPath(sessionId), "delete session node", (current) => {
      const found = isRecord(current) && current.state !== undefined;
      return found && !holds(current.state) ? { decided: false, write: current } : { decided: found, write: null };
    });
    return decided === true && committed;
  }

  async deleteCreateKeys(cutoff: number, limit: number): Promise<number> {
    return this.engine.deleteOrderedBy(CREATE_KEYS, "created_at", cutoff, limit, "idempotency keys");
  }

  async deleteIdleAddresses(cutoff: number, limit: number): Promise<number> {
    return this.engine.deleteOrderedBy(ADDRESS_USAGE, "refilled_at", cutoff, limit, "idle addresses");
  }

  // ConversationStore

  listConversations(userId: string, limit: number, after?: ConversationPosition): Promise<ListedConversation[]> {
    return this.conversations.list(userId, limit, after);
  }

  readPartialReplies(sessionId: string): Promise<Record<string, PartialReply>> {
    return this.conversations.partials(sessionId);
  }

  readUserSessions(userId: string, after: string | undefined, limit: number): Promise<StoredConversation[]> {
    return this.conversations.userSessions(userId, after, limit);
  }

  scanConversationIndex(userId: string, after: string | undefined, limit: number): Promise<{ id: string; createdAt: number }[]> {
    return this.conversations.indexKeys(userId, after, limit);
  }

  /** One instance's store, asked only for its own sessions (ShardedStore knows which). */
  reaches(): boolean {
    return true;
  }

  serviceSecret(name: string): Promise<string> {
    return this.secrets.get(name);
  }

  // ErasureStore

  updateErasure<O>(userKey: string, rule: ErasureRule<O>): Promise<O> {
    return this.erasures.update(userKey, rule);
  }

  readErasedSessions(userKey: string): Promise<ErasedSessions | null> {
    return this.erasures.readSessions(userKey);
  }

  recordErasedSessions(userKey: string, sessionIds: readonly string[]): Promise<void> {
    return this.erasures.recordSessions(userKey, sessionIds);
  }

  findDueErasures(now: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage> {
    return pageOnOneInstance(after, limit, (from, wanted) => this.engine.orderedBy(ERASURES, "due_at", now, wanted, "find due erasures", from));
  }

  deleteUserSessions(userId: string, sessionIds: readonly string[]): Promise<void> {
    return this.erasures.deleteSessions(userId, sessionIds);
  }

  deleteUserSessionsUpTo(userId: string, sessionIds: readonly string[], cutoff: number): Promise<ReadonlySet<string>> {
    return this.erasures.deleteSessionsUpTo(userId, sessionIds, cutoff);
  }

  readUserCreateKeys(userKey: string, after: string | undefined, limit: number): Promise<StoredCreateKey[]> {
    return this.erasures.readCreateKeys(userKey, after, limit);
  }

  deleteUnchangedCreateKey(hash: string, read: CreateKey): Promise<boolean> {
    return this.erasures.deleteUnchangedCreateKey(hash, read);
  }

  // The journal's I/O

  /** A transaction on the session's state that writes what the journal decides, with `appended` journaled. */
  private transactState<O>(sessionId: string, operation: string, rule: StateRule<O>, appended?: JournalEntry): Promise<StateResult<O>> {
    return this.engine.transactState(statePath(sessionId), operation, rule, (raw, state, next) => nodeToWrite(raw, state, next, this.copies.known(sessionId, creationOf(raw)), appended));
  }

  /**
   * After a transaction: sends the copy the journal calls for (planCopy). Not awaited unless the
   * session is closed: then no message will follow, so the copy and the journal's removal finish
   * before this returns; a copy that fails then is left to the sweep, never the change's error.
   * True when this call took the session out of the sweep's flush (see transactUnmarking): its
   * copy landed and the transaction after it dropped the mark. Nothing more is sent for that.
   */
  private async copyJournal(sessionId: string, result: StateResult<unknown>): Promise<boolean> {
    if (!isRecord(result.value)) {
      // No state: what is known copied was of a session gone (the journal of one created again
      // under the id would be taken for it).
      this.copies.forget(sessionId);
      return false;
    }
    const creation = creationOf(result.value);
    const { known, copy } = planCopy(sessionId, result, this.copies.known(sessionId, creation));
    this.copies.keep(sessionId, known, creation);
    if (copy === undefined) return false;
    // Two updates, each sent from the node it writes, never one from the root: @firebase/database
    // 1.1.5 acknowledges an update sent from the root by visiting every node the instance listens
    // to (AckUserWrite.operationForChild descends where the update wrote nothing), which cost
    // about 2.5 ms more CPU a message at 250 held sessions (the cost bench's section f). The index
    // entry takes a write of its own; field by field, a late one sets back no more than a count
    // or an activity until the next copy (indexUpdate). With sharding it is on the home instance.
    const here = this.db.ref(sessionPath(sessionId)).update(copy.update);
    const index = copy.index ? this.home.ref(copy.index.path).update(copy.index.fields) : undefined;
    // The entries count as copied once both landed: exchange 1's head reaches the index only from
    // the journal, so a lost index update is sent again with the next copy. What is known of a
    // session no longer held is forgotten with its hold (a late acknowledgement would otherwise
    // bring it back, for good); a closing session's is used at once.
    const landed = Promise.all([here, index]).then(() => undefined);
    const sent = this.copies.sent(sessionId, landed, copy.entries, () => copy.closed || this.holds.isHeld(statePath(sessionId)), creation);
    if (!copy.closed) {
      // Deliberately not awaited: the exchange is committed in the journal, readers merge it, and
      // whoever transacts next copies it again if this is lost.
      this.copies.track(sent);
      return false;
    }
    try {
      await this.engine.call("copy exchanges to history", sent);
    } catch {
      // The change committed (an end, an expiry): it is answered as done, whatever befell its copy.
      // What did not land (the history, the index entry's closing fields) is the sweep's to send
      // again (findUnflushedSessions): a journal left in the state marks the session already; an
      // empty one is marked now, best effort (a repeated end sends the copy again too).
      if (!isMarkedUnflushed(result.value)) {
        await this.engine
          .transactState(statePath(sessionId), "mark unflushed", () => ({ outcome: undefined }), (raw, state, next) => markedUnflushed(nodeToWrite(raw, state, next, this.copies.known(sessionId, creationOf(raw)))))
          .catch(() => undefined);
      }
      return false;
    }
    // No entries: the session was not marked (a marked one's index entry counts as one: planCopy).
    if (copy.entries.size === 0) return false;
    // Lost, it leaves the mark for the sweep, which drops it: the copy itself landed.
    return this.transactUnmarking(sessionId, "clear copied exchanges", (state) => ({ outcome: undefined, next: state })).then(
      ({ unmarked }) => unmarked,
      () => false,
    );
  }

  /**
   * A transaction on the session's state, and whether it took the session out of the flush's
   * query: the run that committed found the node marked (UNFLUSHED) and left it unmarked. The
   * server commits the transactions on a node one after another, so of several calls (two sweeps
   * at once, a close and a sweep) one only can say so.
   */
  private async transactUnmarking<O>(sessionId: string, operation: string, rule: StateRule<O>): Promise<{ result: StateResult<O>; unmarked: boolean }> {
    // Set by each run of the handler: the last one is the run that committed.
    const run = { marked: false };
    const result = await this.engine.transactState(statePath(sessionId), operation, rule, (raw, state, next) => {
      run.marked = isMarkedUnflushed(raw);
      return nodeToWrite(raw, state, next, this.copies.known(sessionId, creationOf(raw)));
    });
    return { result, unmarked: result.ruled.found && run.marked && !isMarkedUnflushed(result.value) };
  }

  // Shared by the roles

  private holdState(sessionId: string): void {
    this.holds.hold(statePath(sessionId));
  }

  private async readKeyRecord(sessionId: string, keyHash: string): Promise<KeyRecord | null> {
    const path = keyRecordPath(sessionId, keyHash);
    const snapshot = await this.engine.read("read idempotency key", this.db.ref(path));
    return snapshot.exists() ? parseStored(keyRecordSchema, snapshot.val(), path) : null;
  }

  /** Applies `rule` in a transaction on the ledger record at `path`, listened to so the next one starts from the server's value. */
  private async updateLedger<R extends object, O>(path: string, schema: z.ZodType<R>, operation: string, rule: LedgerRule<R, O>, form: RecordForm = "tree"): Promise<O> {
    this.holds.hold(path);
    return this.engine.transactRecord(path, schema, operation, rule, form);
  }
}

/** Whether a session node holds a session: its `state` or its fields (see createSession). */
function holdsSession(node: unknown): boolean {
  return !isRecord(node) || node.state !== undefined || node.user_id !== undefined;
}
