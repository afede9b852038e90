import { performance } from "node:perf_hooks";
import type { ConversationPosition, ErasureRule, ListedConversation, StoredConversation } from "../../src/store/conversation-records";
import type { AddressUsage, ChatMessage, CreateKey, Exchange, PartialReply, ServiceUsage, SessionMeta, SessionState, SessionSummary, Template, UserUsage } from "../../src/store/records";
import type { ErasedSessions, RuledWithKey, HistoryWindow, LedgerRule, NewSession, Ruled, SessionStore, StateRule, StoredCreateKey, UsageRule } from "../../src/store/session-store";
import type { SweepCursor, SweepPage } from "../../src/store/sweep-page";

/** The store calls the session module makes, by name. */
export type StoreCall = keyof SessionStore;

/** What a store has been asked so far: calls per kind, their time, and history messages handed back. */
export interface StoreCounts {
  readonly calls: Readonly<Partial<Record<StoreCall, number>>>;
  /** Wall time of the calls per kind, from call to settlement, in milliseconds. */
  readonly ms: Readonly<Partial<Record<StoreCall, number>>>;
  /** History messages handed back: by `readWindow`, `readMessages` and `readExchange` (two per exchange). */
  readonly messagesRead: number;
}

/** A SessionStore that delegates every call and counts it: the data a request reads, seen from the session module. */
export class CountingStore implements SessionStore {
  private readonly calls: Partial<Record<StoreCall, number>> = {};
  private readonly ms: Partial<Record<StoreCall, number>> = {};
  private messagesRead = 0;

  get partialsReadable(): boolean {
    return this.inner.partialsReadable;
  }

  get databaseInstances(): number {
    return this.inner.databaseInstances;
  }

  constructor(private readonly inner: SessionStore) {}

  /** A copy of the counts so far; subtract two with `countsSince`. */
  counts(): StoreCounts {
    return { calls: { ...this.calls }, ms: { ...this.ms }, messagesRead: this.messagesRead };
  }

  readTemplate(templateId: string): Promise<Template | null> {
    return this.count("readTemplate", this.inner.readTemplate(templateId));
  }

  seedTemplates(templates: Readonly<Record<string, Template>>): Promise<string[]> {
    return this.count("seedTemplates", this.inner.seedTemplates(templates));
  }

  createSession(session: NewSession): Promise<"created" | "exists"> {
    return this.count("createSession", this.inner.createSession(session));
  }

  readSessionMeta(sessionId: string): Promise<SessionMeta | null> {
    return this.count("readSessionMeta", this.inner.readSessionMeta(sessionId));
  }

  guessSession(sessionId: string): () => void {
    return this.inner.guessSession(sessionId);
  }

  prepareSession(sessionId: string): void {
    this.inner.prepareSession(sessionId);
  }

  readSessionState(sessionId: string): Promise<SessionState | null> {
    return this.count("readSessionState", this.inner.readSessionState(sessionId));
  }

  async readWindow(sessionId: string, limit: number): Promise<HistoryWindow> {
    const window = await this.count("readWindow", this.inner.readWindow(sessionId, limit));
    this.messagesRead += window.messages.length;
    return window;
  }

  async readMessages(sessionId: string, first: number, last: number): Promise<ChatMessage[]> {
    const messages = await this.count("readMessages", this.inner.readMessages(sessionId, first, last));
    this.messagesRead += messages.length;
    return messages;
  }

  readSummary(sessionId: string): Promise<SessionSummary | null> {
    return this.count("readSummary", this.inner.readSummary(sessionId));
  }

  writeSummary(sessionId: string, summary: SessionSummary): Promise<boolean> {
    return this.count("writeSummary", this.inner.writeSummary(sessionId, summary));
  }

  dropSummary(sessionId: string, createdAt: number): Promise<void> {
    return this.count("dropSummary", this.inner.dropSummary(sessionId, createdAt));
  }

  async readExchange(sessionId: string, seq: number): Promise<Exchange | null> {
    const exchange = await this.count("readExchange", this.inner.readExchange(sessionId, seq));
    if (exchange) this.messagesRead += 2;
    return exchange;
  }

  updateState<O>(sessionId: string, rule: StateRule<O>): Promise<Ruled<O>> {
    return this.count("updateState", this.inner.updateState(sessionId, rule));
  }

  prepareUsage(userKey: string): void {
    this.inner.prepareUsage(userKey);
  }

  guessUsage(userKey: string): () => void {
    return this.inner.guessUsage(userKey);
  }

  updateStateReadingKey<O>(sessionId: string, rule: StateRule<O>, keyHash: string | undefined): Promise<RuledWithKey<O>> {
    return this.count("updateStateReadingKey", this.inner.updateStateReadingKey(sessionId, rule, keyHash));
  }

  appendExchange<O>(sessionId: string, exchange: Exchange, rule: StateRule<O>, partialKey?: string): Promise<Ruled<O>> {
    return this.count("appendExchange", this.inner.appendExchange(sessionId, exchange, rule, partialKey));
  }

  writePartial(sessionId: string, key: string, partial: PartialReply | null): Promise<void> {
    return this.count("writePartial", this.inner.writePartial(sessionId, key, partial));
  }

  /** Not counted: it sends nothing (the store answers from what it listens to). */
  onClosed(sessionId: string, closed: () => void): () => void {
    return this.inner.onClosed(sessionId, closed);
  }

  findIdleSessions(cutoff: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage> {
    return this.count("findIdleSessions", this.inner.findIdleSessions(cutoff, after, limit));
  }

  findUnflushedSessions(after: SweepCursor | undefined, limit: number): Promise<SweepPage> {
    return this.count("findUnflushedSessions", this.inner.findUnflushedSessions(after, limit));
  }

  findLapsedClaims(cutoff: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage> {
    return this.count("findLapsedClaims", this.inner.findLapsedClaims(cutoff, after, limit));
  }

  findClosedSessions(cutoff: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage> {
    return this.count("findClosedSessions", this.inner.findClosedSessions(cutoff, after, limit));
  }

  flushSession(sessionId: string): Promise<boolean> {
    return this.count("flushSession", this.inner.flushSession(sessionId));
  }

  deleteSession(sessionId: string, deletable?: (state: SessionState) => boolean): Promise<boolean> {
    return this.count("deleteSession", this.inner.deleteSession(sessionId, deletable));
  }

  claimCreateKey(hash: string, key: CreateKey): Promise<CreateKey> {
    return this.count("claimCreateKey", this.inner.claimCreateKey(hash, key));
  }

  releaseCreateKey(hash: string, key: CreateKey): Promise<boolean> {
    return this.count("releaseCreateKey", this.inner.releaseCreateKey(hash, key));
  }

  refuseCreateKey(hash: string, read: CreateKey): Promise<boolean> {
    return this.count("refuseCreateKey", this.inner.refuseCreateKey(hash, read));
  }

  deleteCreateKeys(cutoff: number, limit: number): Promise<number> {
    return this.count("deleteCreateKeys", this.inner.deleteCreateKeys(cutoff, limit));
  }

  updateUsage<O>(userKey: string, rule: UsageRule<O>): Promise<O> {
    return this.count("updateUsage", this.inner.updateUsage(userKey, rule));
  }

  prepareServiceUsage(shards: readonly string[]): void {
    this.inner.prepareServiceUsage(shards);
  }

  updateServiceUsage<O>(shard: string, rule: LedgerRule<ServiceUsage, O>): Promise<O> {
    return this.count("updateServiceUsage", this.inner.updateServiceUsage(shard, rule));
  }

  readServiceUsage(): Promise<Readonly<Record<string, ServiceUsage>>> {
    return this.count("readServiceUsage", this.inner.readServiceUsage());
  }

  updateAddressUsage<O>(addressKey: string, rule: LedgerRule<AddressUsage, O>): Promise<O> {
    return this.count("updateAddressUsage", this.inner.updateAddressUsage(addressKey, rule));
  }

  deleteIdleAddresses(cutoff: number, limit: number): Promise<number> {
    return this.count("deleteIdleAddresses", this.inner.deleteIdleAddresses(cutoff, limit));
  }

  readUsage(userKey: string): Promise<UserUsage | null> {
    return this.count("readUsage", this.inner.readUsage(userKey));
  }

  listConversations(userId: string, limit: number, after?: ConversationPosition): Promise<ListedConversation[]> {
    return this.count("listConversations", this.inner.listConversations(userId, limit, after));
  }

  readPartialReplies(sessionId: string): Promise<Record<string, PartialReply>> {
    return this.count("readPartialReplies", this.inner.readPartialReplies(sessionId));
  }

  readUserSessions(userId: string, after: string | undefined, limit: number): Promise<StoredConversation[]> {
    return this.count("readUserSessions", this.inner.readUserSessions(userId, after, limit));
  }

  scanConversationIndex(userId: string, after: string | undefined, limit: number): Promise<{ id: string; createdAt: number }[]> {
    return this.count("scanConversationIndex", this.inner.scanConversationIndex(userId, after, limit));
  }

  reaches(sessionId: string): boolean {
    return this.inner.reaches(sessionId);
  }

  serviceSecret(name: string): Promise<string> {
    return this.count("serviceSecret", this.inner.serviceSecret(name));
  }

  updateErasure<O>(userKey: string, rule: ErasureRule<O>): Promise<O> {
    return this.count("updateErasure", this.inner.updateErasure(userKey, rule));
  }

  readErasedSessions(userKey: string): Promise<ErasedSessions | null> {
    return this.count("readErasedSessions", this.inner.readErasedSessions(userKey));
  }

  recordErasedSessions(userKey: string, sessionIds: readonly string[]): Promise<void> {
    return this.count("recordErasedSessions", this.inner.recordErasedSessions(userKey, sessionIds));
  }

  findDueErasures(now: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage> {
    return this.count("findDueErasures", this.inner.findDueErasures(now, after, limit));
  }

  deleteUserSessions(userId: string, sessionIds: readonly string[]): Promise<void> {
    return this.count("deleteUserSessions", this.inner.deleteUserSessions(userId, sessionIds));
  }

  deleteUserSessionsUpTo(userId: string, sessionIds: readonly string[], cutoff: number): Promise<ReadonlySet<string>> {
    return this.count("deleteUserSessionsUpTo", this.inner.deleteUserSessionsUpTo(userId, sessionIds, cutoff));
  }

  readUserCreateKeys(userKey: string, after: string | undefined, limit: number): Promise<StoredCreateKey[]> {
    return this.count("readUserCreateKeys", this.inner.readUserCreateKeys(userKey, after, limit));
  }

  deleteUnchangedCreateKey(hash: string, read: CreateKey): Promise<boolean> {
    return this.count("deleteUnchangedCreateKey", this.inner.deleteUnchangedCreateKey(hash, read));
  }

  /** Counted when made, whether or not it succeeds; timed until it settles. */
  private async count<T>(call: StoreCall, work: Promise<T>): Promise<T> {
    this.calls[call] = (this.calls[call] ?? 0) + 1;
    const started = performance.now();
    try {
      return await work;
    } finally {
      this.ms[call] = (this.ms[call] ?? 0) + performance.now() - started;
    }
  }
}

/** What was asked between `before` and `after`. */
export function countsSince(before: StoreCounts, after: StoreCounts): StoreCounts {
  return { calls: since(before.calls, after.calls), ms: since(before.ms, after.ms), messagesRead: after.messagesRead - before.messagesRead };
}

function since(before: Readonly<Partial<Record<StoreCall, number>>>, after: Readonly<Partial<Record<StoreCall, number>>>): Partial<Record<StoreCall, number>> {
  const delta: Partial<Record<StoreCall, number>> = {};
  for (const [call, n] of Object.entries(after) as [StoreCall, number][]) {
    const change = n - (before[call] ?? 0);
    if (change !== 0) delta[call] = change;
  }
  return delta;
}

/** Calls of every kind together. */
export function totalCalls(counts: StoreCounts): number {
  return Object.values(counts.calls).reduce((sum, n) => sum + n, 0);
}
