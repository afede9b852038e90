import { randomBytes } from "node:crypto";
import { entryOf, type ConversationPosition, type ErasureRecord, type ErasureRule, type ListedConversation, type StoredConversation } from "./conversation-records";
import { keyRecordOf, replacesSummary, type AddressUsage, type ChatMessage, type CreateKey, type Exchange, type KeyRecord, type PartialReply, type ServiceUsage, type SessionMeta, type SessionState, type SessionSummary, type Template, type UserUsage } from "./records";
import { adoptedClaim, assertNextCountsOneMore, isReleasable, isUnchangedCreateKey, refusedClaim, type RuledWithKey, type StoredCreateKey, type HistoryWindow, type LedgerRule, type NewSession, type ErasedSessions, type Ruled, type SessionStore, type StateRule, type UsageRule } from "./session-store";
import { pageOfRecords, pageOnOneInstance, type SweepCursor, type SweepPage } from "./sweep-page";

interface StoredSession {
  readonly meta: SessionMeta;
  state: SessionState;
  readonly messages: ChatMessage[];
  /** Done keys, moved out of the state as soon as their exchange is stored (here: at once). */
  readonly keys: Map<string, KeyRecord>;
  /** Replies being written, by their request's key: what a database client would see under `partials`. */
  readonly partials: Map<string, PartialReply>;
  summary?: SessionSummary;
  /** Exchange 1's title, for the listing (the database adapter keeps it in the user's index). */
  title?: string;
}

/**
 * The embedded store behind `npm start` without a database, and the reference adapter of
 * the store contract. Each method completes synchronously inside one turn of the event loop,
 * which is what makes it atomic; what it keeps is frozen (`stored`), so callers share it safely and
 * never its own objects.
 * Its queries scan every session: it is meant for one developer's sessions, not for production.
 */
export class MemoryStore implements SessionStore {
  private readonly templates = new Map<string, Template>();
  private readonly sessions = new Map<string, StoredSession>();
  private readonly createKeys = new Map<string, CreateKey>();
  private readonly usage = new Map<string, UserUsage>();
  private readonly serviceUsage = new Map<string, ServiceUsage>();
  private readonly addressUsage = new Map<string, AddressUsage>();
  private readonly erasures = new Map<string, ErasureRecord>();
  private readonly secrets = new Map<string, string>();
  /** Who waits to learn that a session is closed or gone (`onClosed`), by session id. */
  private readonly closeWatchers = new Map<string, Set<() => void>>();

  async readTemplate(templateId: string): Promise<Template | null> {
    return stored(this.templates.get(templateId) ?? null);
  }

  async seedTemplates(templates: Readonly<Record<string, Template>>): Promise<string[]> {
    const written: string[] = [];
    for (const [id, template] of Object.entries(templates)) {
      if (this.templates.has(id)) continue;
      this.templates.set(id, stored(template));
      written.push(id);
    }
    return written;
  }

  async createSession(session: NewSession): Promise<"created" | "exists"> {
    if (this.sessions.has(session.id)) return "exists";
    this.sessions.set(session.id, { meta: stored(session.meta), state: stored(session.state), messages: [], keys: new Map(), partials: new Map() });
    return "created";
  }

  async readSessionMeta(sessionId: string): Promise<SessionMeta | null> {
    return stored(this.sessions.get(sessionId)?.meta ?? null);
  }

  guessSession(): () => void {
    // Nothing to follow: the state is in memory.
    return () => undefined;
  }

  prepareSession(): void {
    // Nothing to follow: the state is in memory.
  }

  async readSessionState(sessionId: string): Promise<SessionState | null> {
    return stored(this.sessions.get(sessionId)?.state ?? null);
  }

  async readWindow(sessionId: string, limit: number): Promise<HistoryWindow> {
    const messages = this.sessions.get(sessionId)?.messages ?? [];
    return { messages: limit <= 0 ? [] : messages.slice(-limit), through: messages.length / 2 };
  }

  async readMessages(sessionId: string, first: number, last: number): Promise<ChatMessage[]> {
    const messages = this.sessions.get(sessionId)?.messages ?? [];
    return messages.slice(Math.max(0, first - 1), Math.max(0, last));
  }

  async readSummary(sessionId: string): Promise<SessionSummary | null> {
    return stored(this.sessions.get(sessionId)?.summary ?? null);
  }

  async writeSummary(sessionId: string, summary: SessionSummary): Promise<boolean> {
    const session = this.sessions.get(sessionId);
    if (!session || !replacesSummary(session.summary ?? null, summary)) return false;
    // The session under the id is the one summarised, as the database's rule cannot tell (its write touches the summary alone).
    if (summary.created_at !== undefined && session.meta.created_at !== summary.created_at) return false;
    session.summary = stored(summary);
    return true;
  }

  async dropSummary(sessionId: string, createdAt: number): Promise<void> {
    const session = this.sessions.get(sessionId);
    if (session?.summary?.created_at === createdAt) delete session.summary;
  }

  async readExchange(sessionId: string, seq: number): Promise<Exchange | null> {
    const messages = this.sessions.get(sessionId)?.messages ?? [];
    const user = messages[2 * seq - 2];
    const assistant = messages[2 * seq - 1];
    return seq >= 1 && user && assistant ? { user, assistant } : null;
  }

  async updateState<O>(sessionId: string, rule: StateRule<O>): Promise<Ruled<O>> {
    const session = this.sessions.get(sessionId);
    if (!session) return { found: false };
    const { outcome, next, strayPartials } = rule(stored(session.state));
    if (next) {
      session.state = stored(next);
      removePartials(session, strayPartials);
      this.tellIfClosed(sessionId);
    }
    return { found: true, outcome, state: stored(session.state) };
  }

  async updateStateReadingKey<O>(sessionId: string, rule: StateRule<O>, keyHash: string | undefined): Promise<RuledWithKey<O>> {
    const ruled = await this.updateState(sessionId, rule);
    if (!ruled.found) return ruled;
    const record = keyHash === undefined ? undefined : this.sessions.get(sessionId)?.keys.get(keyHash);
    return { ...ruled, record: record ? stored(record) : null };
  }

  async appendExchange<O>(sessionId: string, exchange: Exchange, rule: StateRule<O>, partialKey?: string): Promise<Ruled<O>> {
    const session = this.sessions.get(sessionId);
    if (!session) return { found: false };
    const { outcome, next, strayPartials } = rule(stored(session.state));
    if (next) {
      assertNextCountsOneMore(session.state, next);
      // The reply names the partial it completes, as the database adapter's copy does.
      session.messages.push(stored(exchange.user), stored(partialKey === undefined ? exchange.assistant : { ...exchange.assistant, partial: partialKey }));
      if (next.message_count === 1 && exchange.head !== undefined) session.title = exchange.head.title;
      session.state = stored(moveDoneKeys(stored(next), session.keys));
      // In the same step as the messages, as the database adapter's one update: never both, never neither.
      removePartials(session, partialKey === undefined ? strayPartials : [partialKey, ...(strayPartials ?? [])]);
    }
    return { found: true, outcome, state: stored(session.state) };
  }

  /** In this process's memory no client can listen to a partial reply. */
  readonly partialsReadable = false;
  /** The embedded store is one database. */
  readonly databaseInstances = 1;

  async writePartial(sessionId: string, key: string, partial: PartialReply | null): Promise<void> {
    // Only under a session that exists: a late write must not bring back a deleted one.
    const partials = this.sessions.get(sessionId)?.partials;
    if (!partials) return;
    if (partial === null) partials.delete(key);
    else partials.set(key, stored(partial));
  }

  /** Knows every session's state: tells as the state closes (or the session goes), at once if it is so already. */
  onClosed(sessionId: string, closed: () => void): () => void {
    if (this.sessions.get(sessionId)?.state.status !== "active") {
      closed();
      return () => undefined;
    }
    const watchers = this.closeWatchers.get(sessionId) ?? new Set();
    const watcher = (): void => { closed(); };
    watchers.add(watcher);
    this.closeWatchers.set(sessionId, watchers);
    return () => {
      watchers.delete(watcher);
      if (watchers.size === 0 && this.closeWatchers.get(sessionId) === watchers) this.closeWatchers.delete(sessionId);
    };
  }

  private tellIfClosed(sessionId: string): void {
    const watchers = this.closeWatchers.get(sessionId);
    if (!watchers || this.sessions.get(sessionId)?.state.status === "active") return;
    this.closeWatchers.delete(sessionId);
    for (const watcher of watchers) watcher();
  }

  /** The partial replies of a session, as a database client listening to it would see them (embedded mode has no listeners; for tests). */
  readPartials(sessionId: string): Record<string, PartialReply> {
    return Object.fromEntries([...(this.sessions.get(sessionId)?.partials ?? [])].map(([key, partial]) => [key, stored(partial)]));
  }

  async findIdleSessions(cutoff: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage> {
    return this.oldestBy((state) => (state.status === "active" ? state.idle_since : undefined), cutoff, after, limit);
  }

  async findUnflushedSessions(after: SweepCursor | undefined, limit: number): Promise<SweepPage> {
    // Every write here is whole: no session is ever left with a journal to copy.
    return pageOnOneInstance(after, limit, async () => []);
  }

  async findLapsedClaims(cutoff: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage> {
    return this.oldestBy((state) => {
      const leases = Object.values(state.requests ?? {}).flatMap((entry) => (entry.seq === undefined && entry.lease_until !== undefined ? [entry.lease_until] : []));
      return leases.length > 0 ? Math.min(...leases) : undefined;
    }, cutoff, after, limit);
  }

  async findClosedSessions(cutoff: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage> {
    return this.oldestBy((state) => state.ended_at, cutoff, after, limit);
  }

  async flushSession(): Promise<boolean> {
    // Nothing is ever left to flush (findUnflushedSessions).
    return false;
  }

  async deleteSession(sessionId: string, deletable?: (state: SessionState) => boolean): Promise<boolean> {
    const session = this.sessions.get(sessionId);
    if (session && deletable && !deletable(stored(session.state))) return false;
    const removed = this.sessions.delete(sessionId);
    this.tellIfClosed(sessionId);
    return removed;
  }

  async claimCreateKey(hash: string, key: CreateKey): Promise<CreateKey> {
    const existing = this.createKeys.get(hash);
    if (existing) {
      const adopted = stored(adoptedClaim(existing, key));
      this.createKeys.set(hash, adopted);
      return adopted;
    }
    const claimed = stored(key);
    this.createKeys.set(hash, claimed);
    return claimed;
  }

  async releaseCreateKey(hash: string, key: CreateKey): Promise<boolean> {
    return this.deleteCreateKeyWhile(hash, (stored) => isReleasable(stored, key));
  }

  async refuseCreateKey(hash: string, read: CreateKey): Promise<boolean> {
    const unchanged = isUnchangedCreateKey(this.createKeys.get(hash) ?? null, read);
    if (unchanged) this.createKeys.set(hash, stored(refusedClaim(read)));
    return unchanged;
  }

  async deleteCreateKeys(cutoff: number, limit: number): Promise<number> {
    const expired = [...this.createKeys].filter(([, key]) => key.created_at <= cutoff).slice(0, limit);
    for (const [hash] of expired) this.createKeys.delete(hash);
    return expired.length;
  }

  prepareUsage(): void {
    // Nothing to fetch: the record is in memory.
  }

  guessUsage(): () => void {
    // Nothing to fetch: the record is in memory.
    return () => undefined;
  }

  async updateUsage<O>(userKey: string, rule: UsageRule<O>): Promise<O> {
    return applyLedger(this.usage, userKey, rule);
  }

  prepareServiceUsage(): void {
    // Nothing to fetch: the records are in memory.
  }

  async updateServiceUsage<O>(shard: string, rule: LedgerRule<ServiceUsage, O>): Promise<O> {
    return applyLedger(this.serviceUsage, shard, rule);
  }

  async readServiceUsage(): Promise<Readonly<Record<string, ServiceUsage>>> {
    return Object.fromEntries([...this.serviceUsage].map(([shard, usage]) => [shard, stored(usage)]));
  }

  async updateAddressUsage<O>(addressKey: string, rule: LedgerRule<AddressUsage, O>): Promise<O> {
    return applyLedger(this.addressUsage, addressKey, rule);
  }

  async readUsage(userKey: string): Promise<UserUsage | null> {
    return stored(this.usage.get(userKey) ?? null);
  }

  async deleteIdleAddresses(cutoff: number, limit: number): Promise<number> {
    const idle = [...this.addressUsage].filter(([, usage]) => usage.refilled_at <= cutoff).slice(0, limit);
    for (const [key] of idle) this.addressUsage.delete(key);
    return idle.length;
  }

  async listConversations(userId: string, limit: number, after?: ConversationPosition): Promise<ListedConversation[]> {
    const newestFirst = (a: ListedConversation, b: ListedConversation) => b.entry.last_activity - a.entry.last_activity || (b.sessionId < a.sessionId ? -1 : b.sessionId > a.sessionId ? 1 : 0);
    const olderThan = (entry: ListedConversation) =>
      after === undefined || entry.entry.last_activity < after.lastActivity || (entry.entry.last_activity === after.lastActivity && entry.sessionId < after.sessionId);
    return [...this.sessions]
      .filter(([, session]) => session.meta.user_id === userId)
      .map(([id, session]) => ({ sessionId: id, entry: listed(session) }))
      .filter(olderThan)
      .sort(newestFirst)
      .slice(0, Math.max(0, limit));
  }

  async readPartialReplies(sessionId: string): Promise<Record<string, PartialReply>> {
    return this.readPartials(sessionId);
  }

  async readUserSessions(userId: string, after: string | undefined, limit: number): Promise<StoredConversation[]> {
    return this.userSessionIds(userId, after, limit).map((id) => {
      const session = this.sessions.get(id) as StoredSession;
      const messages = session.messages.map((message, i) => ({ position: i + 1, message }));
      return stored({ id, meta: session.meta, state: session.state, messages, summary: session.summary ?? null, partials: Object.fromEntries(session.partials) });
    });
  }

  async scanConversationIndex(userId: string, after: string | undefined, limit: number): Promise<{ id: string; createdAt: number }[]> {
    return this.userSessionIds(userId, after, limit).map((id) => ({ id, createdAt: this.sessions.get(id)?.meta.created_at ?? 0 }));
  }

  /** One store holds every session it is asked for. */
  reaches(): boolean {
    return true;
  }

  async serviceSecret(name: string): Promise<string> {
    const secret = this.secrets.get(name) ?? randomBytes(32).toString("base64url");
    this.secrets.set(name, secret);
    return secret;
  }

  async updateErasure<O>(userKey: string, rule: ErasureRule<O>): Promise<O> {
    const { outcome, next } = rule(stored(this.erasures.get(userKey) ?? null));
    if (next === null) this.erasures.delete(userKey);
    else if (next !== undefined) this.erasures.set(userKey, stored(next));
    return outcome;
  }

  async readErasedSessions(userKey: string): Promise<ErasedSessions | null> {
    const record = this.erasures.get(userKey);
    return record ? { requestedAt: record.requested_at, ids: new Set(Object.keys(record.sessions ?? {})) } : null;
  }

  async recordErasedSessions(userKey: string, sessionIds: readonly string[]): Promise<void> {
    const record = this.erasures.get(userKey);
    if (!record) return;
    this.erasures.set(userKey, stored({ ...record, sessions: { ...record.sessions, ...Object.fromEntries(sessionIds.map((id) => [id, true as const])) } }));
  }

  async findDueErasures(now: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage> {
    return pageOfRecords(this.erasures, (record) => record.due_at, now, after, limit);
  }

  async deleteUserSessions(userId: string, sessionIds: readonly string[]): Promise<void> {
    this.deleteOwnSessions(userId, sessionIds, Number.POSITIVE_INFINITY);
  }

  async deleteUserSessionsUpTo(userId: string, sessionIds: readonly string[], cutoff: number): Promise<ReadonlySet<string>> {
    return this.deleteOwnSessions(userId, sessionIds, cutoff);
  }

  /** Deletes `userId`'s sessions among `sessionIds` created up to `cutoff`; returns their ids. */
  private deleteOwnSessions(userId: string, sessionIds: readonly string[], cutoff: number): ReadonlySet<string> {
    const deleted = new Set<string>();
    // Here every session names its owner: one of another user's is never taken for the user's.
    // Nothing is left of a session once deleted, and its index entry is the session itself.
    for (const id of sessionIds) {
      const session = this.sessions.get(id);
      if (session?.meta.user_id !== userId || session.meta.created_at > cutoff) continue;
      this.sessions.delete(id);
      this.tellIfClosed(id);
      deleted.add(id);
    }
    return deleted;
  }

  async readUserCreateKeys(userKey: string, after: string | undefined, limit: number): Promise<StoredCreateKey[]> {
    return [...this.createKeys]
      .filter(([hash, key]) => key.user_key === userKey && (after === undefined || hash > after))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .slice(0, Math.max(0, limit))
      .map(([hash, key]) => ({ hash, key: stored(key) }));
  }

  async deleteUnchangedCreateKey(hash: string, read: CreateKey): Promise<boolean> {
    return this.deleteCreateKeyWhile(hash, (stored) => isUnchangedCreateKey(stored, read));
  }

  /** Removes the record under `hash` while `removable` says so of it (the database adapter decides it in a transaction). */
  private deleteCreateKeyWhile(hash: string, removable: (stored: CreateKey | null) => boolean): boolean {
    const gone = removable(this.createKeys.get(hash) ?? null);
    if (gone) this.createKeys.delete(hash);
    return gone;
  }

  /** The user's session ids after `after`, in id order: the listing's and the index's order here. */
  private userSessionIds(userId: string, after: string | undefined, limit: number): string[] {
    return [...this.sessions]
      .filter(([id, session]) => session.meta.user_id === userId && (after === undefined || id > after))
      .map(([id]) => id)
      .sort()
      .slice(0, Math.max(0, limit));
  }

  private oldestBy(field: (state: SessionState) => number | undefined, cutoff: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage> {
    return pageOfRecords(this.sessions, (session) => field(session.state), cutoff, after, limit);
  }
}

/** What the database adapter's index holds of a session, derived here from the session itself. */
function listed(session: StoredSession): ListedConversation["entry"] {
  return entryOf(session.meta, session.state, session.title);
}

/** A rule applied to a record that may not exist yet, in one step (shared with memory-connection-store.ts). */
export function applyLedger<R, O>(records: Map<string, R>, key: string, rule: LedgerRule<R, O>): O {
  const { outcome, next } = rule(stored(records.get(key) ?? null));
  if (next) records.set(key, stored(next));
  return outcome;
}

function removePartials(session: StoredSession, keys: readonly string[] | undefined): void {
  for (const key of keys ?? []) session.partials.delete(key);
}

/** The state without its done keys, which go to `records`: as the database adapter does once a copy lands. */
function moveDoneKeys(state: SessionState, records: Map<string, KeyRecord>): SessionState {
  const { requests, ...rest } = state;
  if (!requests) return state;
  const live = Object.entries(requests).filter(([hash, entry]) => {
    const record = keyRecordOf(entry, state.created_at);
    if (!record) return true;
    records.set(hash, stored(record));
    return false;
  });
  return live.length > 0 ? { ...rest, requests: Object.fromEntries(live) } : rest;
}

/** The objects `stored` made: shared as they are. */
const kept = new WeakSet<object>();

/**
 * Stored data as the store keeps it and hands it out: frozen, so that readers and rules share the
 * stored objects instead of copies (a rule builds its result by spreading what it read), and a
 * caller that tried to change one would throw instead of corrupting the store, as data read from
 * the database could not be changed under it either. Objects this function made are kept as they
 * are; any other object (JSON-shaped: plain objects, arrays, strings, numbers, booleans, null),
 * frozen by its owner or not, is copied, then frozen, so a caller's own objects are never frozen
 * or shared.
 */
export function stored<T>(value: T): T {
  if (typeof value !== "object" || value === null || kept.has(value)) return value;
  let out: object;
  if (Array.isArray(value)) out = value.map((item: unknown) => stored(item));
  else {
    const fields: Record<string, unknown> = {};
    // Object.keys, not entries: no array per property (this runs several times per message).
    for (const key of Object.keys(value)) fields[key] = stored((value as Record<string, unknown>)[key]);
    out = fields;
  }
  kept.add(Object.freeze(out));
  return out as T;
}
