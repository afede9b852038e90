import { instancePositionOf } from "../sharding/session-ids";
import type { ConversationPosition, ErasureRule, ListedConversation, StoredConversation } from "./conversation-records";
import type { AddressUsage, ChatMessage, CreateKey, Exchange, PartialReply, ServiceUsage, SessionMeta, SessionState, SessionSummary, Template, UserUsage } from "./records";
import type { HistoryWindow, LedgerRule, NewSession, Ruled, RuledWithKey, SessionStore, StateRule, UsageRule } from "./session-store";

/**
 * Every role of the store port over several database instances (docs/sharding.md), each one
 * store of its own: a session's own calls go to the instance its id names (no lookup); per-user
 * and deployment-wide records (usage, the conversation index, erasures, create keys, address
 * buckets, secrets, templates) to the first, the home instance, whatever the count, so that a
 * user's limits hold across every instance and adding one moves nothing; the clean-up's queries
 * (instance after instance, one batch in all) and the search of a user's sessions by `user_id`
 * to every instance. Each instance's store writes a session's index entry to the home instance
 * itself (RtdbStore's `home`).
 */
export class ShardedStore implements SessionStore {
  readonly partialsReadable: boolean;
  private readonly home: SessionStore;
  /** The instance asked first for the next clean-up batch (see `everywhere`). */
  private lead = 0;

  constructor(private readonly instances: readonly SessionStore[]) {
    const [home] = instances;
    if (home === undefined) throw new Error("a sharded store needs at least one instance");
    this.home = home;
    this.partialsReadable = instances.every((instance) => instance.partialsReadable);
  }

  /**
   * The instance holding `sessionId`. An id naming a position past the list (forged, or from a
   * list that lost an entry, which it must not) goes to the home instance, which does not hold it.
   */
  private of(sessionId: string): SessionStore {
    return this.instances[instancePositionOf(sessionId)] ?? this.home;
  }

  // TemplateStore: on the home instance.

  readTemplate(templateId: string): Promise<Template | null> {
    return this.home.readTemplate(templateId);
  }

  seedTemplates(templates: Readonly<Record<string, Template>>): Promise<string[]> {
    return this.home.seedTemplates(templates);
  }

  // StateStore: the session's instance, but create keys on the home instance.

  createSession(session: NewSession): Promise<"created" | "exists"> {
    return this.of(session.id).createSession(session);
  }

  readSessionMeta(sessionId: string): Promise<SessionMeta | null> {
    return this.of(sessionId).readSessionMeta(sessionId);
  }

  readSessionState(sessionId: string): Promise<SessionState | null> {
    return this.of(sessionId).readSessionState(sessionId);
  }

  updateState<O>(sessionId: string, rule: StateRule<O>): Promise<Ruled<O>> {
    return this.of(sessionId).updateState(sessionId, rule);
  }

  updateStateReadingKey<O>(sessionId: string, rule: StateRule<O>, keyHash: string | undefined): Promise<RuledWithKey<O>> {
    return this.of(sessionId).updateStateReadingKey(sessionId, rule, keyHash);
  }

  appendExchange<O>(sessionId: string, exchange: Exchange, rule: StateRule<O>, partialKey?: string): Promise<Ruled<O>> {
    return this.of(sessionId).appendExchange(sessionId, exchange, rule, partialKey);
  }

  writePartial(sessionId: string, key: string, partial: PartialReply | null): Promise<void> {
    return this.of(sessionId).writePartial(sessionId, key, partial);
  }

  claimCreateKey(hash: string, key: CreateKey): Promise<CreateKey> {
    return this.home.claimCreateKey(hash, key);
  }

  // HistoryStore: the session's instance.

  readWindow(sessionId: string, limit: number): Promise<HistoryWindow> {
    return this.of(sessionId).readWindow(sessionId, limit);
  }

  readMessages(sessionId: string, first: number, last: number): Promise<ChatMessage[]> {
    return this.of(sessionId).readMessages(sessionId, first, last);
  }

  readExchange(sessionId: string, seq: number): Promise<Exchange | null> {
    return this.of(sessionId).readExchange(sessionId, seq);
  }

  readSummary(sessionId: string): Promise<SessionSummary | null> {
    return this.of(sessionId).readSummary(sessionId);
  }

  writeSummary(sessionId: string, summary: SessionSummary): Promise<boolean> {
    return this.of(sessionId).writeSummary(sessionId, summary);
  }

  // LedgerStore: the home instance.

  prepareUsage(userKey: string): void {
    this.home.prepareUsage(userKey);
  }

  updateUsage<O>(userKey: string, rule: UsageRule<O>): Promise<O> {
    return this.home.updateUsage(userKey, rule);
  }

  prepareServiceUsage(shards: readonly string[]): void {
    this.home.prepareServiceUsage(shards);
  }

  updateServiceUsage<O>(shard: string, rule: LedgerRule<ServiceUsage, O>): Promise<O> {
    return this.home.updateServiceUsage(shard, rule);
  }

  readServiceUsage(): Promise<Readonly<Record<string, ServiceUsage>>> {
    return this.home.readServiceUsage();
  }

  updateAddressUsage<O>(addressKey: string, rule: LedgerRule<AddressUsage, O>): Promise<O> {
    return this.home.updateAddressUsage(addressKey, rule);
  }

  readUsage(userKey: string): Promise<UserUsage | null> {
    return this.home.readUsage(userKey);
  }

  // HousekeepingStore: sessions on every instance; create keys and address buckets on the home instance.

  findIdleSessions(cutoff: number, limit: number): Promise<string[]> {
    return this.everywhere(limit, (instance, wanted) => instance.findIdleSessions(cutoff, wanted));
  }

  findClosedSessions(cutoff: number, limit: number): Promise<string[]> {
    return this.everywhere(limit, (instance, wanted) => instance.findClosedSessions(cutoff, wanted));
  }

  findUnflushedSessions(limit: number): Promise<string[]> {
    return this.everywhere(limit, (instance, wanted) => instance.findUnflushedSessions(wanted));
  }

  findLapsedClaims(cutoff: number, limit: number): Promise<string[]> {
    return this.everywhere(limit, (instance, wanted) => instance.findLapsedClaims(cutoff, wanted));
  }

  deleteSession(sessionId: string): Promise<void> {
    return this.of(sessionId).deleteSession(sessionId);
  }

  deleteCreateKeys(cutoff: number, limit: number): Promise<number> {
    return this.home.deleteCreateKeys(cutoff, limit);
  }

  deleteIdleAddresses(cutoff: number, limit: number): Promise<number> {
    return this.home.deleteIdleAddresses(cutoff, limit);
  }

  // ConversationStore: the index and secrets on the home instance; sessions where they are.

  listConversations(userId: string, limit: number, after?: ConversationPosition): Promise<ListedConversation[]> {
    return this.home.listConversations(userId, limit, after);
  }

  readPartialReplies(sessionId: string): Promise<Record<string, PartialReply>> {
    return this.of(sessionId).readPartialReplies(sessionId);
  }

  /**
   * The user's sessions instance by instance, in list order, each instance's in id order: `after`
   * names its own instance, so the page goes on from there, and no session is read twice or read
   * and dropped (a merge by id across instances would read up to a page from each, for one page).
   */
  async readUserSessions(userId: string, after: string | undefined, limit: number): Promise<StoredConversation[]> {
    const page: StoredConversation[] = [];
    const from = after === undefined ? 0 : instancePositionOf(after);
    for (let position = from; position < this.instances.length && page.length < limit; position += 1) {
      const instance = this.instances[position];
      if (instance === undefined) break;
      page.push(...(await instance.readUserSessions(userId, position === from ? after : undefined, limit - page.length)));
    }
    return page;
  }

  scanConversationIndex(userId: string, after: string | undefined, limit: number): Promise<{ readonly id: string; readonly createdAt: number }[]> {
    return this.home.scanConversationIndex(userId, after, limit);
  }

  serviceSecret(name: string): Promise<string> {
    return this.home.serviceSecret(name);
  }

  // ErasureStore: the record and create keys on the home instance; sessions where they are.

  updateErasure<O>(userKey: string, rule: ErasureRule<O>): Promise<O> {
    return this.home.updateErasure(userKey, rule);
  }

  recordErasedSessions(userKey: string, sessionIds: readonly string[]): Promise<void> {
    return this.home.recordErasedSessions(userKey, sessionIds);
  }

  findDueErasures(now: number, limit: number): Promise<string[]> {
    return this.home.findDueErasures(now, limit);
  }

  /** Each instance deletes its own sessions, and their index entries on the home instance. */
  async deleteUserSessions(userId: string, sessionIds: readonly string[]): Promise<void> {
    const byInstance = new Map<SessionStore, string[]>();
    for (const id of sessionIds) {
      const instance = this.of(id);
      byInstance.set(instance, [...(byInstance.get(instance) ?? []), id]);
    }
    await Promise.all([...byInstance].map(([instance, ids]) => instance.deleteUserSessions(userId, ids)));
  }

  deleteUserCreateKeys(userKey: string, cutoff: number): Promise<number> {
    return this.home.deleteUserCreateKeys(userKey, cutoff);
  }

  /**
   * A clean-up query over every instance, `limit` ids at most, and no more downloaded: each answer
   * holds whole session nodes, history included, so asking every instance for `limit` and keeping
   * `limit` would download up to one batch per instance, to throw all but one away (and download
   * them again for the next batch). The instances are asked one after another, each for what the
   * batch still lacks, from the one whose turn it is to lead. The batch comes back short only when
   * every instance answered short, which is what tells the caller that the work is done. A full
   * batch (the caller asks again) hands the lead to the next instance, so work that stays on one
   * instance (sessions whose change keeps failing) cannot fill every batch of a run and keep the
   * others' work waiting. The ids go back in turns, each instance's oldest first, in list order.
   */
  private async everywhere(limit: number, find: (instance: SessionStore, wanted: number) => Promise<string[]>): Promise<string[]> {
    if (limit <= 0) return [];
    const count = this.instances.length;
    const lead = this.lead % count;
    const answers: string[][] = this.instances.map(() => []);
    let found = 0;
    for (let step = 0; step < count && found < limit; step += 1) {
      const position = (lead + step) % count;
      const instance = this.instances[position];
      if (instance === undefined) continue;
      const answer = (await find(instance, limit - found)).slice(0, limit - found);
      answers[position] = answer;
      found += answer.length;
    }
    if (found === limit) this.lead = (lead + 1) % count;
    const ids: string[] = [];
    for (let turn = 0; ids.length < found; turn += 1) {
      for (const answer of answers) {
        const id = answer[turn];
        if (id !== undefined) ids.push(id);
      }
    }
    return ids;
  }
}
