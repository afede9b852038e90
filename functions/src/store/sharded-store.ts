import type { Log } from "../log/log";
import { instancePositionOf } from "../sharding/session-ids";
import type { ConversationPosition, ErasureRule, ListedConversation, StoredConversation } from "./conversation-records";
import type { AddressUsage, ChatMessage, CreateKey, Exchange, PartialReply, ServiceUsage, SessionMeta, SessionState, SessionSummary, Template, UserUsage } from "./records";
import { StoreUnavailableError } from "./errors";
import type { ErasedSessions, HistoryWindow, LedgerRule, NewSession, Ruled, RuledWithKey, SessionStore, StateRule, StoredCreateKey, UsageRule } from "./session-store";
import type { SweepCursor, SweepPage } from "./sweep-page";

/**
 * Every role of the store port over several database instances (docs/sharding.md), each one
 * store of its own: a session's own calls go to the instance its id names (no lookup); per-user
 * and deployment-wide records (usage, the conversation index, erasures, create keys, address
 * buckets, secrets, templates) to the first, the home instance, whatever the count, so that a
 * user's limits hold across every instance and adding one moves nothing; the clean-up's queries
 * (instance after instance, one batch in all; a run asks for as many batches as one instance would
 * get, times the count) and the search of a user's sessions by `user_id` to every instance. Each
 * instance's store writes a session's index entry to the home instance itself (RtdbStore's
 * `home`). A session id naming a position past the list reads as not found and is refused for
 * writes (`on`).
 */
export class ShardedStore implements SessionStore {
  readonly partialsReadable: boolean;
  /** Each instance's clean-up work comes one batch over all of them at a time (`everywhere`): a run gives each the batches one would get. */
  readonly databaseInstances: number;
  private readonly home: SessionStore;
  /** By clean-up query, the instance it asks first in its next batch (see `everywhere`); each query takes its own turns. */
  private readonly leads = new Map<string, number>();

  /**
   * `log`: where a clean-up query that failed on one instance is reported (the others go on, see
   * `everywhere`). `firstLead`: the instance each clean-up query asks first until its batches move
   * the lead on. The leads live in this process only, and the scheduled function's instance is
   * often a new one each run: the composition root gives a random start (instance-databases.ts), so
   * that runs on fresh instances do not all begin at the same one, behind the same instances out
   * of reach, and leave those after them waiting for as long as an outage lasts.
   */
  constructor(
    private readonly instances: readonly SessionStore[],
    private readonly log: Log,
    private readonly firstLead = 0,
  ) {
    const [home] = instances;
    if (home === undefined) throw new Error("a sharded store needs at least one instance");
    this.home = home;
    this.partialsReadable = instances.every((instance) => instance.partialsReadable);
    this.databaseInstances = instances.length;
  }

  /**
   * The instance to read `sessionId` from. An id naming a position past the list (forged, or
   * issued by a function instance that already has an appended entry while this one still has the
   * old list, during that deploy's rollout) is read from the home instance, which does not hold
   * it: not found, as for any unknown id.
   */
  private of(sessionId: string): SessionStore {
    return this.instances[instancePositionOf(sessionId)] ?? this.home;
  }

  /**
   * `write` on the instance holding `sessionId`. An id naming a position past the list is refused
   * as the database being unavailable (503, which the client retries), never written elsewhere:
   * during the rollout that appends an instance, such an id comes from an updated function
   * instance (a keyed create's repeat, say), and a session stored on the home instance would be
   * where no updated instance looks for it. A retry reaches an updated instance, which writes it
   * where its id says.
   */
  private on<T>(sessionId: string, operation: string, write: (instance: SessionStore) => Promise<T>): Promise<T> {
    const instance = this.instances[instancePositionOf(sessionId)];
    // Rejected, not thrown: callers settle these promises (the clean-up's allSettled, `.catch`).
    return instance === undefined ? Promise.reject(new StoreUnavailableError(`${operation} (its instance is past this list)`)) : write(instance);
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
    return this.on(session.id, "create session", (instance) => instance.createSession(session));
  }

  readSessionMeta(sessionId: string): Promise<SessionMeta | null> {
    return this.of(sessionId).readSessionMeta(sessionId);
  }

  guessSession(sessionId: string): () => void {
    // An id past the list names no session this instance can transact on: nothing to follow.
    return this.instances[instancePositionOf(sessionId)]?.guessSession(sessionId) ?? (() => undefined);
  }

  prepareSession(sessionId: string): void {
    this.instances[instancePositionOf(sessionId)]?.prepareSession(sessionId);
  }

  readSessionState(sessionId: string): Promise<SessionState | null> {
    return this.of(sessionId).readSessionState(sessionId);
  }

  updateState<O>(sessionId: string, rule: StateRule<O>): Promise<Ruled<O>> {
    return this.on(sessionId, "update session state", (instance) => instance.updateState(sessionId, rule));
  }

  updateStateReadingKey<O>(sessionId: string, rule: StateRule<O>, keyHash: string | undefined): Promise<RuledWithKey<O>> {
    return this.on(sessionId, "claim", (instance) => instance.updateStateReadingKey(sessionId, rule, keyHash));
  }

  appendExchange<O>(sessionId: string, exchange: Exchange, rule: StateRule<O>, partialKey?: string): Promise<Ruled<O>> {
    return this.on(sessionId, "commit exchange", (instance) => instance.appendExchange(sessionId, exchange, rule, partialKey));
  }

  writePartial(sessionId: string, key: string, partial: PartialReply | null): Promise<void> {
    return this.on(sessionId, "write partial", (instance) => instance.writePartial(sessionId, key, partial));
  }

  onClosed(sessionId: string, closed: () => void): () => void {
    // An id past the list names no session this instance can serve: nothing is known of it.
    return this.instances[instancePositionOf(sessionId)]?.onClosed(sessionId, closed) ?? (() => undefined);
  }

  claimCreateKey(hash: string, key: CreateKey): Promise<CreateKey> {
    return this.home.claimCreateKey(hash, key);
  }

  releaseCreateKey(hash: string, key: CreateKey): Promise<boolean> {
    return this.home.releaseCreateKey(hash, key);
  }

  refuseCreateKey(hash: string, read: CreateKey): Promise<boolean> {
    return this.home.refuseCreateKey(hash, read);
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
    return this.on(sessionId, "write summary", (instance) => instance.writeSummary(sessionId, summary));
  }

  dropSummary(sessionId: string, createdAt: number): Promise<void> {
    return this.on(sessionId, "drop summary", (instance) => instance.dropSummary(sessionId, createdAt));
  }

  // LedgerStore: the home instance.

  prepareUsage(userKey: string): void {
    this.home.prepareUsage(userKey);
  }

  guessUsage(userKey: string): () => void {
    return this.home.guessUsage(userKey);
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

  findIdleSessions(cutoff: number, after: SweepCursor | undefined, limit: number, stopped?: () => boolean): Promise<SweepPage> {
    return this.everywhere("find idle sessions", after, limit, stopped, (instance, from, wanted) => instance.findIdleSessions(cutoff, from, wanted));
  }

  findClosedSessions(cutoff: number, after: SweepCursor | undefined, limit: number, stopped?: () => boolean): Promise<SweepPage> {
    return this.everywhere("find closed sessions", after, limit, stopped, (instance, from, wanted) => instance.findClosedSessions(cutoff, from, wanted));
  }

  findUnflushedSessions(after: SweepCursor | undefined, limit: number, stopped?: () => boolean): Promise<SweepPage> {
    return this.everywhere("find unflushed sessions", after, limit, stopped, (instance, from, wanted) => instance.findUnflushedSessions(from, wanted));
  }

  findLapsedClaims(cutoff: number, after: SweepCursor | undefined, limit: number, stopped?: () => boolean): Promise<SweepPage> {
    return this.everywhere("find lapsed claims", after, limit, stopped, (instance, from, wanted) => instance.findLapsedClaims(cutoff, from, wanted));
  }

  flushSession(sessionId: string): Promise<boolean> {
    return this.on(sessionId, "flush session", (instance) => instance.flushSession(sessionId));
  }

  deleteSession(sessionId: string, deletable?: (state: SessionState) => boolean): Promise<boolean> {
    return this.on(sessionId, "delete session", (instance) => instance.deleteSession(sessionId, deletable));
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
   * An `after` past this list (an export cursor of a function instance with a longer list, during
   * the rollout that appends one) is refused as unavailable: an empty page would end the read as
   * if the sessions after it were none.
   */
  async readUserSessions(userId: string, after: string | undefined, limit: number): Promise<StoredConversation[]> {
    if (after !== undefined && !this.reaches(after)) throw new StoreUnavailableError("read user sessions (after an instance past this list)");
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

  reaches(sessionId: string): boolean {
    return instancePositionOf(sessionId) < this.instances.length;
  }

  serviceSecret(name: string): Promise<string> {
    return this.home.serviceSecret(name);
  }

  // ErasureStore: the record and create keys on the home instance; sessions where they are.

  updateErasure<O>(userKey: string, rule: ErasureRule<O>): Promise<O> {
    return this.home.updateErasure(userKey, rule);
  }

  readErasedSessions(userKey: string): Promise<ErasedSessions | null> {
    return this.home.readErasedSessions(userKey);
  }

  recordErasedSessions(userKey: string, sessionIds: readonly string[]): Promise<void> {
    return this.home.recordErasedSessions(userKey, sessionIds);
  }

  findDueErasures(now: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage> {
    return this.home.findDueErasures(now, after, limit);
  }

  /**
   * Each instance deletes its own sessions, and their index entries on the home instance. An id
   * naming an instance past this list is refused, once the others are deleted (see `on`): its
   * session and index entry stay, and the erasure, still due, finds them on a later run.
   */
  async deleteUserSessions(userId: string, sessionIds: readonly string[]): Promise<void> {
    await this.onEachInstance(sessionIds, "delete user sessions", (instance, ids) => instance.deleteUserSessions(userId, ids));
  }

  /** As deleteUserSessions, each instance deciding on its own sessions (their entries on the home instance). */
  async deleteUserSessionsUpTo(userId: string, sessionIds: readonly string[], cutoff: number): Promise<ReadonlySet<string>> {
    const deleted = await this.onEachInstance(sessionIds, "delete user sessions up to a cutoff", (instance, ids) => instance.deleteUserSessionsUpTo(userId, ids, cutoff));
    return new Set(deleted.flatMap((ids) => [...ids]));
  }

  /** `work` on each instance with its ids, at once; ids past this list refused once the others are done (see deleteUserSessions). */
  private async onEachInstance<T>(sessionIds: readonly string[], operation: string, work: (instance: SessionStore, ids: string[]) => Promise<T>): Promise<T[]> {
    const byInstance = new Map<SessionStore, string[]>();
    let beyond = 0;
    for (const id of sessionIds) {
      const instance = this.instances[instancePositionOf(id)];
      if (instance === undefined) beyond += 1;
      else byInstance.set(instance, [...(byInstance.get(instance) ?? []), id]);
    }
    const done = await Promise.all([...byInstance].map(([instance, ids]) => work(instance, ids)));
    if (beyond > 0) throw new StoreUnavailableError(`${operation} (${beyond} on an instance past this list)`);
    return done;
  }

  readUserCreateKeys(userKey: string, after: string | undefined, limit: number): Promise<StoredCreateKey[]> {
    return this.home.readUserCreateKeys(userKey, after, limit);
  }

  deleteUnchangedCreateKey(hash: string, read: CreateKey): Promise<boolean> {
    return this.home.deleteUnchangedCreateKey(hash, read);
  }

  /**
   * A clean-up query over every instance, `limit` ids at most, and no more downloaded: each answer
   * holds whole session nodes, history included, so asking every instance for `limit` and keeping
   * `limit` would download up to one batch per instance, to throw all but one away. The instances
   * are asked one after another, each for what the batch still lacks, from the one whose turn it is
   * to lead, each after where its own last page ended (`after` holds a position per instance, see
   * SweepCursor); one that answered a page short has nothing more for this pass and is not asked
   * again. The batch comes back short only when every instance answered short, which is what tells
   * the caller that the work is done, or when `stopped` said the caller's time was up before an
   * instance's turn (it is asked no more in this run). The ids go back in turns, each instance's
   * oldest first, in list order.
   *
   * Which instance leads the next batch of the same query (`leadAfter`; each query keeps its own,
   * or one query's turns would decide where another starts): after a full batch (the caller asks
   * again), the next one, so a backlog on one instance cannot fill every batch of a run and keep
   * the others' work waiting; after a batch `stopped` cut short, the first instance it did not
   * ask, so the next run begins where this one ended: begun from the same lead, a run whose step
   * has time for only the lead and one instance out of reach (a deadline each) would never reach
   * the instances behind it, for as long as the outage lasts.
   *
   * An instance whose query fails is logged and counts as having answered short (nothing found),
   * its position kept, so the next batch asks it again: thrown, one unreachable instance would
   * stop the clean-up on every instance, run after run. The others fill the batch; its own work
   * waits for a batch or a run that reaches it.
   */
  private async everywhere(
    query: string,
    after: SweepCursor | undefined,
    limit: number,
    stopped: (() => boolean) | undefined,
    find: (instance: SessionStore, from: SweepCursor, wanted: number) => Promise<SweepPage>,
  ): Promise<SweepPage> {
    const next = this.instances.map((_, position) => after?.[position]);
    if (limit <= 0) return { keys: [], next };
    const count = this.instances.length;
    const lead = (this.leads.get(query) ?? this.firstLead) % count;
    const answers: (readonly string[])[] = this.instances.map(() => []);
    const failed = new Set<number>();
    let found = 0;
    let unasked: number | undefined;
    for (let step = 0; step < count && found < limit; step += 1) {
      const position = (lead + step) % count;
      // Each instance is asked up to its own deadline: with several out of reach, a batch asking
      // them all would outlast the tail the scheduled run keeps free (time-budget.ts).
      if (step > 0 && stopped?.() === true) {
        unasked = position;
        break;
      }
      const instance = this.instances[position];
      const from = next[position];
      if (instance === undefined || from === "end") continue;
      const page = await this.answerOf(query, position, () => find(instance, [from], limit - found));
      if (page === undefined) {
        failed.add(position);
        continue;
      }
      answers[position] = page.keys;
      next[position] = page.next[0];
      found += page.keys.length;
    }
    this.leads.set(query, leadAfter(unasked ?? (found >= limit ? lead + 1 : lead), count, failed));
    const keys: string[] = [];
    for (let turn = 0; keys.length < found; turn += 1) {
      for (const answer of answers) {
        const key = answer[turn];
        if (key !== undefined) keys.push(key);
      }
    }
    return { keys, next };
  }

  /** What the instance at `position` answered to `query`; undefined, logged, when it failed (see `everywhere`). */
  private async answerOf(query: string, position: number, ask: () => Promise<SweepPage>): Promise<SweepPage | undefined> {
    try {
      return await ask();
    } catch (error) {
      this.log.warn("clean-up query failed on one database instance; the others go on", {
        query,
        instance: position,
        error: error instanceof Error ? error.name : typeof error,
        detail: error instanceof Error ? error.message : undefined,
      });
      return undefined;
    }
  }
}

/**
 * The lead of a query's next batch: `from`, or the first instance after it that did not fail in
 * this batch. One that answered only at its deadline, asked first, would take that deadline of
 * the next batch's time before any instance that answers, and, in a step with time for no more
 * (a run's shorter steps: about 12 s beside a 15 s deadline), all of it. It is still asked in its
 * turn, after the lead. Every instance failing: `from`.
 */
function leadAfter(from: number, count: number, failed: ReadonlySet<number>): number {
  for (let step = 0; step < count; step += 1) {
    const position = (from + step) % count;
    if (!failed.has(position)) return position;
  }
  return from % count;
}
