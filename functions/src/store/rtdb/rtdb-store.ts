import type { Database, DataSnapshot, Query, Reference } from "firebase-admin/database";
import { z } from "zod";
import { withDeadline } from "../deadline";
import { StoreDataError, StoreUnavailableError } from "../errors";
import { installFrameSafeJson } from "./frame-safe-json";
import { assistantMessageKey, messageKey, pendingExchangeKey, seqOfPendingKey, userMessageKey } from "../message-keys";
import { parseStored } from "../parse-stored";
import {
  chatMessageSchema,
  createKeySchema,
  DATABASE_KEY,
  generationSettingsSchema,
  keyRecordSchema,
  sessionStateSchema,
  sessionSummarySchema,
  templateSchema,
  type ChatMessage,
  type CreateKey,
  type Exchange,
  type KeyRecord,
  type PartialReply,
  type SessionMeta,
  type SessionState,
  type SessionSummary,
  type Template,
  addressUsageSchema,
  serviceUsageSchema,
  userUsageSchema,
  type AddressUsage,
  type ServiceUsage,
} from "../records";
import { ListenerHolds } from "./listener-holds";
import { assertNextCountsOneMore, type RuledWithKey, type HistoryWindow, type LedgerRule, type NewSession, type Ruled, type SessionStore, type StateRule, type UsageRule } from "../session-store";

/** A journal entry: the exchange, and the key of the partial reply it completes (removed when it is copied). */
const pendingSchema = z.record(z.string(), z.object({ user: chatMessageSchema, assistant: chatMessageSchema, partial: z.string().optional() }));
type Pending = z.infer<typeof pendingSchema>;

/** The raw `state` node: the parsed fields plus the journal of exchanges not yet copied to `messages`. */
type RawState = Record<string, unknown> & { pending?: unknown };

const SERVICE_USAGE = "serviceUsage";
const ADDRESS_USAGE = "addressUsage";
const META_FIELDS = ["user_id", "template_id", "template_name", "system_prompt", "settings", "created_at"] as const;
const CREATE_KEYS = "idempotencyKeys/createSession";

/** Nodes an instance listens to at once, and how long one is kept unused (see ListenerHolds). */
const HELD_NODES = 512;
const HOLD_IDLE_MS = 5 * 60_000;

/**
 * Realtime Database adapter (firebase-admin).
 *
 * Shape of `/userSessions/{id}`: fields fixed at creation at the top, the mutable `state`
 * node, `messages` keyed by sequence, and `keys`: the records of done `Idempotency-Key`s. Only
 * `state` is ever transacted on, and it stays small however long the history and however many
 * keys: an exchange commits atomically into `state/pending` together with the new
 * `message_count` (and its key, done, in `state/requests`); right after, without waiting, the
 * exchange is copied to `messages` and the key to its record in one multi-path update; once that
 * is acknowledged, the next transaction on the state drops both from it. Readers merge `pending`
 * and `messages`, and a claim reads `state` and the key's record, so an instance dying between
 * the steps loses nothing: whoever next transacts on the session copies what is left, and a
 * session that closes has its journal copied before the close returns.
 *
 * A message costs two round trips when the instance listens to its session's state and its
 * user's usage (ListenerHolds): the claim and the usage admission, sent together, then the commit.
 */
export class RtdbStore implements SessionStore {
  /** Clients listen to partial replies in the database. */
  readonly partialsReadable = true;
  private readonly holds: ListenerHolds;
  /** Per session: journal entries (`e…` exchanges, `k…` keys) whose copy the server acknowledged. */
  private readonly copied = new Map<string, Set<string>>();
  /** Copies sent and not yet acknowledged. */
  private readonly inFlight = new Set<Promise<void>>();

  constructor(
    private readonly db: Database,
    private readonly timeoutMs: number,
    options: { heldNodes?: number; holdIdleMs?: number } = {},
  ) {
    installFrameSafeJson();
    // The first reference creates the SDK's connection, which then opens while the instance
    // finishes starting, instead of on its first request.
    db.ref(".info/connected");
    this.holds = new ListenerHolds(db, options.heldNodes ?? HELD_NODES, options.holdIdleMs ?? HOLD_IDLE_MS, (path) => {
      const sessionId = /^userSessions\/([^/]+)\/state$/.exec(path)?.[1];
      if (sessionId !== undefined) this.copied.delete(sessionId);
    });
  }

  /** Resolves once every copy sent so far is acknowledged (or failed): for a clean shutdown, and tests. */
  async copiesSettled(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  /** Stops listening to everything this store listens to (for a clean shutdown). */
  close(): void {
    this.holds.releaseAll();
  }

  async readTemplate(templateId: string): Promise<Template | null> {
    const path = `templates/${templateId}`;
    const snapshot = await this.call("read template", read(this.db.ref(path)));
    return snapshot.exists() ? parseStored(templateSchema, snapshot.val(), path) : null;
  }

  async seedTemplates(templates: Readonly<Record<string, Template>>): Promise<string[]> {
    const results = await Promise.all(
      Object.entries(templates).map(async ([id, template]) => ((await this.createIfAbsent(`templates/${id}`, template, "seed template")) ? id : undefined)),
    );
    return results.filter((id): id is string => id !== undefined);
  }

  async createSession(session: NewSession): Promise<"created" | "exists"> {
    const state = this.stateRef(session.id);
    const node = { ...session.meta, state: stateNode(session.state, {}) };
    for (let attempt = 0; ; attempt += 1) {
      // The small `state` answers "exists?" without downloading a history; only a session that
      // looks absent is created, in a transaction that refuses to replace one created meanwhile.
      if ((await this.call("read session state", read(state))).exists()) return "exists";
      if (await this.createIfAbsent(`userSessions/${session.id}`, node, "create session")) {
        this.holdState(session.id);
        return "created";
      }
      // Refused because this instance is creating the same session in another request and it is
      // not stored yet: look again once that write has landed, so "exists" means readable.
      if (attempt >= 20) throw new StoreUnavailableError("create session");
      await new Promise((wake) => setTimeout(wake, 50));
    }
  }

  async readSessionMeta(sessionId: string): Promise<SessionMeta | null> {
    const ref = this.sessionRef(sessionId);
    // A message follows: its state's listener starts now, beside these reads, not after them.
    this.holdState(sessionId);
    // Field by field: a read of the session node itself would download the whole history.
    const snapshots = await this.call("read session", Promise.all(META_FIELDS.map((field) => read(ref.child(field)))));
    const values = Object.fromEntries(META_FIELDS.map((field, i) => [field, snapshots[i]?.val() ?? undefined]));
    if (values.user_id === undefined) return null;
    const path = `userSessions/${sessionId}`;
    return {
      user_id: parseStored(z.string(), values.user_id, `${path}/user_id`),
      template_id: parseStored(z.string(), values.template_id, `${path}/template_id`),
      template_name: parseStored(z.string(), values.template_name, `${path}/template_name`),
      system_prompt: parseStored(z.string(), values.system_prompt, `${path}/system_prompt`),
      settings: parseStored(generationSettingsSchema, values.settings, `${path}/settings`),
      created_at: parseStored(z.number(), values.created_at, `${path}/created_at`),
    };
  }

  async readSessionState(sessionId: string): Promise<SessionState | null> {
    const snapshot = await this.call("read session state", read(this.stateRef(sessionId)));
    return snapshot.exists() ? parseStored(sessionStateSchema, snapshot.val(), `userSessions/${sessionId}/state`) : null;
  }

  async readWindow(sessionId: string, limit: number): Promise<HistoryWindow> {
    if (limit <= 0) return { messages: [], through: 0 };
    const messages = this.sessionRef(sessionId).child("messages");
    const path = `userSessions/${sessionId}/messages`;
    let keys: string[] = [];
    let byKey = new Map<string, unknown>();
    for (let attempt = 0; attempt < HISTORY_READ_ATTEMPTS; attempt += 1) {
      byKey = await this.readAcrossJournal(sessionId, "read history", () => read(messages.orderByKey().limitToLast(limit)));
      keys = [...byKey.keys()].sort().slice(-limit);
      // Instances copy their exchanges to `messages` independently, so a later exchange can land
      // there before an earlier one that was committed after the journal was read: a gap. The
      // earlier one is in the journal or in `messages` by the time a later copy is seen; read again.
      if (contiguousFrom(keys) === 0) break;
    }
    const window = keys.slice(contiguousFrom(keys));
    const last = window.at(-1);
    return {
      messages: window.map((key) => parseStored(chatMessageSchema, byKey.get(key), `${path}/${key}`)),
      through: last === undefined ? 0 : Math.floor(Number(last.slice(1)) / 2),
    };
  }

  async readMessages(sessionId: string, first: number, last: number): Promise<ChatMessage[]> {
    if (last < first || last < 1) return [];
    const [from, to] = [messageKey(Math.max(1, first)), messageKey(last)];
    const messages = this.sessionRef(sessionId).child("messages");
    const byKey = await this.readAcrossJournal(sessionId, "read messages", () => read(messages.orderByKey().startAt(from).endAt(to)));
    const path = `userSessions/${sessionId}/messages`;
    return [...byKey.keys()]
      .filter((key) => key >= from && key <= to)
      .sort()
      .map((key) => parseStored(chatMessageSchema, byKey.get(key), `${path}/${key}`));
  }

  async readSummary(sessionId: string): Promise<SessionSummary | null> {
    const path = `userSessions/${sessionId}/summary`;
    // Held: a session that keeps a summary reads it with every message, then from the listener's copy.
    this.holds.hold(path);
    const snapshot = await this.call("read summary", read(this.db.ref(path)));
    return snapshot.exists() ? parseStored(sessionSummarySchema, snapshot.val(), path) : null;
  }

  async writeSummary(sessionId: string, summary: SessionSummary): Promise<boolean> {
    const path = `userSessions/${sessionId}/summary`;
    this.holds.hold(path);
    // A transaction, so that of two instances summarising at once the one that reaches further stays.
    const { decided, committed } = await this.transact(path, "write summary", (current) => {
      const stored = sessionSummarySchema.safeParse(current);
      if (stored.success && stored.data.through >= summary.through) return { decided: false, write: current };
      return { decided: true, write: { ...summary } };
    });
    return decided === true && committed;
  }

  async readExchange(sessionId: string, seq: number): Promise<Exchange | null> {
    if (!Number.isInteger(seq) || seq < 1) return null;
    const messages = this.sessionRef(sessionId).child("messages");
    const [userKey, assistantKey] = [userMessageKey(seq), assistantMessageKey(seq)];
    const byKey = await this.readAcrossJournal(sessionId, "read exchange", () => read(messages.orderByKey().startAt(userKey).endAt(assistantKey)));
    const [user, assistant] = [byKey.get(userKey), byKey.get(assistantKey)];
    if (user === undefined || assistant === undefined) return null;
    const path = `userSessions/${sessionId}/messages`;
    return { user: parseStored(chatMessageSchema, user, `${path}/${userKey}`), assistant: parseStored(chatMessageSchema, assistant, `${path}/${assistantKey}`) };
  }

  async updateState<O>(sessionId: string, rule: StateRule<O>): Promise<Ruled<O>> {
    this.holdState(sessionId);
    const result = await this.transactState(sessionId, "update session state", rule);
    await this.afterCommit(sessionId, result);
    return result.ruled;
  }

  async updateStateReadingKey<O>(sessionId: string, rule: StateRule<O>, keyHash: string | undefined): Promise<RuledWithKey<O>> {
    this.holdState(sessionId);
    const transaction = this.transactState(sessionId, "claim", rule);
    // Sent right after the transaction, on the same connection, so the server reads the record
    // after the state it commits on (see below). Not awaited yet: both take one round trip.
    const record = keyHash === undefined ? undefined : this.readKeyRecord(sessionId, keyHash);
    const [result, early] = await Promise.all([transaction, record]);
    await this.afterCommit(sessionId, result);
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
    // The partial's key rides in the journal entry, so whoever copies the exchange (this instance
    // or, after a crash, the next one to transact) removes the partial in the same update.
    const entry = partialKey === undefined ? exchange : { ...exchange, partial: partialKey };
    const result = await this.transactState(sessionId, "append exchange", rule, (raw, next, state) => {
      assertNextCountsOneMore(state, next);
      const pending = isRecord(raw.pending) ? raw.pending : {};
      return this.stateToWrite(sessionId, next, { ...pending, [pendingExchangeKey(next.message_count)]: entry });
    });
    await this.afterCommit(sessionId, result);
    return result.ruled;
  }

  async writePartial(sessionId: string, key: string, partial: PartialReply | null): Promise<void> {
    // The key becomes a path segment: anything but a plain key could address another node.
    if (!DATABASE_KEY.test(key)) throw new Error("a partial's key must be a database key");
    // A plain write beside `state`, never under it: a write there would abort this instance's transactions on it.
    await this.call("write partial reply", this.sessionRef(sessionId).child(`partials/${key}`).set(partial));
  }

  async findIdleSessions(cutoff: number, limit: number): Promise<string[]> {
    return this.keysOrderedBy("userSessions", "state/idle_since", cutoff, limit, "find idle sessions");
  }

  async findClosedSessions(cutoff: number, limit: number): Promise<string[]> {
    return this.keysOrderedBy("userSessions", "state/ended_at", cutoff, limit, "find closed sessions");
  }

  async findUnflushedSessions(limit: number): Promise<string[]> {
    return this.keysOrderedBy("userSessions", `state/${UNFLUSHED}`, Number.MAX_SAFE_INTEGER, limit, "find unflushed sessions");
  }

  async findLapsedClaims(cutoff: number, limit: number): Promise<string[]> {
    return this.keysOrderedBy("userSessions", `state/${CLAIMS_LAPSE}`, cutoff, limit, "find lapsed claims");
  }

  async deleteSession(sessionId: string): Promise<void> {
    await this.call("delete session", this.sessionRef(sessionId).remove());
  }

  async claimCreateKey(hash: string, key: CreateKey): Promise<CreateKey> {
    const path = `${CREATE_KEYS}/${hash}`;
    // A record already there is written back as it is, so the server confirms it: a first run
    // may see another request's claim that the server then refuses, and trusting that would hand
    // out a session id nobody creates, and another request would create a second session.
    const { snapshot, committed } = await this.transact(path, "claim idempotency key", (current) => ({ decided: undefined, write: current ?? key }));
    if (!committed) throw new StoreUnavailableError("claim idempotency key");
    return parseStored(createKeySchema, snapshot.val(), path);
  }

  async deleteCreateKeys(cutoff: number, limit: number): Promise<number> {
    const hashes = await this.keysOrderedBy(CREATE_KEYS, "created_at", cutoff, limit, "find idempotency keys");
    if (hashes.length === 0) return 0;
    await this.call("delete idempotency keys", this.db.ref(CREATE_KEYS).update(Object.fromEntries(hashes.map((hash) => [hash, null]))));
    return hashes.length;
  }

  prepareUsage(userKey: string): void {
    // Listening now makes the coming transaction start from the server's value, not a blind guess.
    this.holds.hold(`userUsage/${userKey}`);
  }

  async updateUsage<O>(userKey: string, rule: UsageRule<O>): Promise<O> {
    return this.updateLedger(`userUsage/${userKey}`, userUsageSchema, "update usage", rule);
  }

  prepareServiceUsage(shards: readonly string[]): void {
    for (const shard of shards) this.holds.hold(`${SERVICE_USAGE}/${shard}`);
  }

  async updateServiceUsage<O>(shard: string, rule: LedgerRule<ServiceUsage, O>): Promise<O> {
    return this.updateLedger(`${SERVICE_USAGE}/${shard}`, serviceUsageSchema, "update service usage", rule);
  }

  async readServiceUsage(): Promise<Readonly<Record<string, ServiceUsage>>> {
    const snapshot = await this.call("read service usage", read(this.db.ref(SERVICE_USAGE)));
    const shards: Record<string, ServiceUsage> = {};
    snapshot.forEach((child: DataSnapshot) => {
      if (child.key !== null) shards[child.key] = parseStored(serviceUsageSchema, child.val(), `${SERVICE_USAGE}/${child.key}`);
    });
    return shards;
  }

  async updateAddressUsage<O>(addressKey: string, rule: LedgerRule<AddressUsage, O>): Promise<O> {
    return this.updateLedger(`${ADDRESS_USAGE}/${addressKey}`, addressUsageSchema, "update address usage", rule);
  }

  async deleteIdleAddresses(cutoff: number, limit: number): Promise<number> {
    const keys = await this.keysOrderedBy(ADDRESS_USAGE, "refilled_at", cutoff, limit, "find idle addresses");
    if (keys.length === 0) return 0;
    await this.call("delete idle addresses", this.db.ref(ADDRESS_USAGE).update(Object.fromEntries(keys.map((key) => [key, null]))));
    return keys.length;
  }

  /** Applies `rule` in a transaction on the ledger record at `path`, listened to so the next one starts from the server's value. */
  private async updateLedger<R, O>(path: string, schema: z.ZodType<R>, operation: string, rule: LedgerRule<R, O>): Promise<O> {
    this.holds.hold(path);
    const { decided } = await this.transact(path, operation, (current) => {
      // Unlike a session, a missing record is a valid start: a cold instance's null guess is
      // corrected by the server (hash mismatch) before anything is written over real data.
      const record = current === null ? null : schema.safeParse(current);
      if (record !== null && !record.success) throw new StoreDataError(path, record.error.issues[0]?.message ?? "invalid");
      const { outcome, next } = rule(record === null ? null : record.data);
      // "No change" writes the record back as it is (or null for none): see `transact`.
      return { decided: outcome, write: next === undefined ? current : (JSON.parse(JSON.stringify(next)) as unknown) };
    });
    return decided as O;
  }

  /**
   * The state node to write: `next`, without what this instance knows is copied already (those
   * journal entries and done keys are in `messages` and `keys` now), and the rest of the journal.
   */
  private stateToWrite(sessionId: string, next: SessionState, pending: unknown): Record<string, unknown> {
    const copied = this.copied.get(sessionId);
    const node =
      !copied || copied.size === 0
        ? stateNode(next, pending)
        : stateNode(withoutCopiedKeys(next, copied), isRecord(pending) ? Object.fromEntries(Object.entries(pending).filter(([key]) => !copied.has(key))) : {});
    // A closed session with a journal left (its copy failed when it closed) is indexed for the
    // sweep, which finishes the copy: no message will come to do it.
    if (next.status !== "active" && isRecord(node.pending)) node[UNFLUSHED] = next.ended_at ?? next.last_activity;
    // So is the first lease of a claim: a request that dies leaves its claim and partial behind,
    // and if no later message of the session drops them, the sweep does.
    const lapse = firstLease(next);
    if (lapse !== undefined) node[CLAIMS_LAPSE] = lapse;
    return node;
  }

  /**
   * After a transaction: forgets acknowledged copies it dropped, and copies to `messages` and
   * `keys` whatever journal the committed state still holds. The copy is sent now and not
   * awaited (the next transaction drops what it acknowledged), unless the session is closed:
   * no message will follow, so the copy and the journal's removal finish before this returns.
   */
  private async afterCommit(sessionId: string, result: StateResult<unknown>): Promise<void> {
    if (!isRecord(result.value)) return;
    const raw: RawState = result.value;
    const doneKeys = Object.entries(isRecord(raw.requests) ? raw.requests : {}).filter(([, entry]) => isRecord(entry) && typeof entry.seq === "number");
    const journal = new Set([...Object.keys(isRecord(raw.pending) ? raw.pending : {}), ...doneKeys.map(([hash]) => keyEntry(hash))]);
    const known = this.copied.get(sessionId);
    if (known) {
      for (const entry of known) if (!journal.has(entry)) known.delete(entry);
    }
    const uncopied = [...journal].filter((entry) => !known?.has(entry));
    const closed = raw.status !== "active";
    // This transaction closed the session: partials left by requests that died before their commit go too.
    const closing = closed && result.wrote;
    if (uncopied.length === 0 && !(closed && journal.size > 0) && !closing && result.strayPartials.length === 0) return;
    // Parsed only now, when there is something to copy: most commits find it all copied already.
    const pending = this.parsePending(sessionId, raw.pending ?? null);
    // One multi-path update, atomic: the exchanges into `messages`, the done keys into `keys`.
    const update: Record<string, unknown> = {};
    for (const [key, message] of pendingMessages(pending)) update[`messages/${key}`] = message;
    // The partial each exchange completes leaves as the exchange arrives: a listener sees one or the other.
    if (closing) update.partials = null;
    else {
      const completed = Object.values(pending).flatMap((entry) => (entry.partial === undefined ? [] : [entry.partial]));
      for (const key of [...completed, ...result.strayPartials]) if (DATABASE_KEY.test(key)) update[`partials/${key}`] = null;
    }
    for (const [hash, entry] of doneKeys) {
      const record = keyRecordSchema.safeParse(entry);
      if (record.success) update[`keys/${hash}`] = { fingerprint: record.data.fingerprint, seq: record.data.seq };
    }
    const copy = this.sessionRef(sessionId).update(update).then(() => {
      // What is known of a session no longer held is forgotten with its hold (a late
      // acknowledgement would otherwise bring it back, for good); a closing session's is used at once.
      if (!closed && !this.holds.isHeld(`userSessions/${sessionId}/state`)) return;
      const set = this.copied.get(sessionId) ?? new Set<string>();
      for (const entry of journal) set.add(entry);
      this.copied.set(sessionId, set);
    });
    if (!closed) {
      // Deliberately not awaited: the exchange is committed in the journal, readers merge it, and
      // whoever transacts next copies it again if this is lost.
      const tracked = copy.catch(() => undefined).finally(() => this.inFlight.delete(tracked));
      this.inFlight.add(tracked);
      return;
    }
    await this.call("copy exchanges to history", copy);
    if (journal.size === 0) return;
    await this.transactState(sessionId, "clear copied exchanges", (state) => ({ outcome: undefined, next: state }));
  }

  /**
   * Runs `rule` in a transaction on the session's `state` node and returns what its last run
   * decided: the one that committed, or the outcome of one that changed nothing. `toNode` turns
   * the next state into the node to write: by default with the journal as it stands, less what
   * is copied already; an append adds its exchange to it.
   */
  private async transactState<O>(
    sessionId: string,
    operation: string,
    rule: StateRule<O>,
    toNode: (raw: RawState, next: SessionState, state: SessionState) => Record<string, unknown> | undefined = (raw, next) =>
      this.stateToWrite(sessionId, next, raw.pending),
  ): Promise<StateResult<O>> {
    const path = `userSessions/${sessionId}/state`;
    const notFound = { ruled: { found: false } as Ruled<O>, wrote: false, strayPartials: [] as readonly string[] };
    let written: unknown;
    const { decided, committed, snapshot, runs } = await this.transact(path, operation, (raw) => {
      const current = raw as RawState | null;
      written = null;
      // null is also what an instance without a copy sees first: writing null back makes
      // the server answer with the real node (hash mismatch) instead of aborting on a guess.
      if (current === null) return { decided: notFound, write: null };
      const state = sessionStateSchema.safeParse(current);
      // Malformed: abort, and report it below instead of "not found".
      if (!state.success) return { decided: notFound, write: undefined };
      const { outcome, next, strayPartials = [] } = rule(state.data);
      const node = next === undefined ? undefined : toNode(current, next, state.data);
      const ruled: Ruled<O> = { found: true, outcome, state: next !== undefined && node !== undefined ? next : state.data };
      // A decision that changes nothing still drops what is copied already, riding on the confirmation.
      written = node ?? this.stateToWrite(sessionId, state.data, current.pending);
      return { decided: { ruled, wrote: node !== undefined, strayPartials: node === undefined ? [] : strayPartials }, write: written };
    });
    // Committed, the node is what the last run wrote, parsed by it already: no second conversion.
    const value: unknown = committed ? written : snapshot.val();
    if (!committed && value !== null) parseStored(sessionStateSchema, value, path);
    const last = decided ?? notFound;
    if (last.wrote && !committed) throw new StoreUnavailableError(operation);
    return { ...last, value: value ?? null, runs };
  }

  /**
   * One database transaction at `path`. `run` decides from the current value what to write and
   * what to report; only its last run counts (the handler reruns on contention). Two things hold
   * for every transaction here:
   * - a decision that changes nothing still writes the value back unchanged, so the server
   *   confirms it: a run may have seen another in-flight transaction's result that the server has
   *   not committed (the SDK's "latest state"), and aborting would trust it;
   * - `run` may throw: the handler must not (it leaves the SDK's queue stuck), so it aborts and the
   *   error is rethrown once the transaction is over.
   */
  private async transact<D>(
    path: string,
    operation: string,
    run: (current: unknown) => { decided: D; write: unknown },
  ): Promise<{ decided: D | undefined; committed: boolean; snapshot: DataSnapshot; runs: number }> {
    const last: { decided?: D; error?: unknown; runs: number } = { runs: 0 };
    const result = await this.call(
      operation,
      this.db.ref(path).transaction(
        (current: unknown) => {
          last.runs += 1;
          last.decided = undefined;
          last.error = undefined;
          try {
            const { decided, write } = run(current);
            last.decided = decided;
            return write;
          } catch (error) {
            last.error = error;
            return undefined;
          }
        },
        undefined,
        false,
      ),
    );
    if (last.error !== undefined) throw last.error instanceof Error ? last.error : new Error(`${operation} failed`, { cause: last.error });
    return { decided: last.decided, committed: result.committed, snapshot: result.snapshot, runs: last.runs };
  }

  private async readKeyRecord(sessionId: string, keyHash: string): Promise<KeyRecord | null> {
    const path = `userSessions/${sessionId}/keys/${keyHash}`;
    const snapshot = await this.call("read idempotency key", read(this.db.ref(path)));
    return snapshot.exists() ? parseStored(keyRecordSchema, snapshot.val(), path) : null;
  }

  /**
   * Messages read with `query`, merged with the exchanges still journaled in `state/pending`.
   * Pending is read first (both requests leave together, in this order, on one connection, and
   * a listened `state` answers from what the server last sent): an exchange leaves `pending`
   * only after its copy in `messages` landed, so it is seen on one side or the other, never on neither.
   */
  private async readAcrossJournal(sessionId: string, operation: string, query: () => Promise<DataSnapshot>): Promise<Map<string, unknown>> {
    const pendingRead = read(this.stateRef(sessionId).child("pending"));
    const [pending, stored] = await this.call(operation, Promise.all([pendingRead, query()]));
    const byKey = new Map<string, unknown>();
    stored.forEach((child: DataSnapshot) => {
      if (child.key !== null) byKey.set(child.key, child.val());
    });
    for (const [key, message] of pendingMessages(this.parsePending(sessionId, pending.val()))) byKey.set(key, message);
    return byKey;
  }

  /** Children of `path` whose `child` is at most `cutoff`, oldest first (children without it are left out). */
  private async keysOrderedBy(path: string, child: string, cutoff: number, limit: number, operation: string): Promise<string[]> {
    if (limit <= 0) return [];
    const query = this.db.ref(path).orderByChild(child).startAt(0).endAt(cutoff).limitToFirst(limit);
    const snapshot = await this.call(operation, read(query));
    const keys: string[] = [];
    snapshot.forEach((entry: DataSnapshot) => {
      if (entry.key !== null) keys.push(entry.key);
    });
    return keys;
  }

  /** Writes `value` at `path` unless something is there; true when it wrote. */
  private async createIfAbsent(path: string, value: unknown, operation: string): Promise<boolean> {
    // Returning the value for an empty node writes it; `undefined` keeps an existing one.
    const result = await this.call(operation, this.db.ref(path).transaction((current: unknown) => (current === null ? value : undefined), undefined, false));
    return result.committed;
  }

  private holdState(sessionId: string): void {
    this.holds.hold(`userSessions/${sessionId}/state`);
  }

  private parsePending(sessionId: string, raw: unknown): Pending {
    return raw === null ? {} : parseStored(pendingSchema, raw, `userSessions/${sessionId}/state/pending`);
  }

  private sessionRef(sessionId: string): Reference {
    return this.db.ref(`userSessions/${sessionId}`);
  }

  private stateRef(sessionId: string): Reference {
    return this.sessionRef(sessionId).child("state");
  }

  private call<T>(operation: string, work: Promise<T>): Promise<T> {
    return withDeadline(operation, this.timeoutMs, work);
  }
}

interface StateResult<O> {
  readonly ruled: Ruled<O>;
  readonly wrote: boolean;
  /** Partial replies of dropped claims, to remove with the copy (see StateRule). */
  readonly strayPartials: readonly string[];
  /** The state node as stored now (null for none). */
  readonly value: unknown;
  /** How often the rule ran: 1 when the server took its first answer. */
  readonly runs: number;
}

/** The index of closed sessions whose journal is not copied yet (see stateToWrite). */
const UNFLUSHED = "unflushed_since";
/** The index of sessions by their first claim's lease, for the sweep of claims left by requests that died (see stateToWrite). */
const CLAIMS_LAPSE = "claims_lapse_at";

/** When the first of the state's claims lapses; undefined when it holds none. */
function firstLease(state: SessionState): number | undefined {
  let first: number | undefined;
  for (const entry of Object.values(state.requests ?? {})) {
    if (entry.seq === undefined && entry.lease_until !== undefined && (first === undefined || entry.lease_until < first)) first = entry.lease_until;
  }
  return first;
}

/** The state without the done keys this instance knows are copied to their records. */
function withoutCopiedKeys(state: SessionState, copied: ReadonlySet<string>): SessionState {
  const requests = Object.entries(state.requests ?? {}).filter(([hash, entry]) => entry.seq === undefined || !copied.has(keyEntry(hash)));
  const { requests: all, ...rest } = state;
  return requests.length > 0 ? { ...rest, requests: Object.fromEntries(requests) } : rest;
}

/** Reads of a history that showed a gap before the newest messages are given up on: see readWindow. */
const HISTORY_READ_ATTEMPTS = 3;

/**
 * Where the run of consecutive message keys ending at the last one starts: 0 when `keys` (sorted)
 * has no gap. A gap left after every attempt falls out of the window, which keeps the messages
 * after it: a shorter window, but one that is a true stretch of the conversation.
 */
function contiguousFrom(keys: readonly string[]): number {
  for (let i = keys.length - 1; i > 0; i -= 1) {
    if (Number(keys[i]?.slice(1)) !== Number(keys[i - 1]?.slice(1)) + 1) return i;
  }
  return 0;
}

/** How a done key is named among the journal entries acknowledged as copied. */
function keyEntry(hash: string): string {
  return `k:${hash}`;
}

/**
 * Reads once through a listener. `get()` is avoided on purpose: in @firebase/database 1.1.5
 * (firebase-admin 14.5), a `get()` answer is applied to the SDK's copy of the node after newer
 * data the server already pushed to a listener there, so the copy goes stale for good and every
 * transaction on the node reruns against it until it fails with "maxretry".
 * test/contract/rtdb-read-hazard.test.ts fails if reads go back to `get()`.
 */
function read(query: Query): Promise<DataSnapshot> {
  return query.once("value");
}

/** The `state` node to write: the state (undefined fields left out at any depth, as RTDB requires) and the journal. */
function stateNode(state: SessionState, pending: unknown): Record<string, unknown> {
  const journal = isRecord(pending) && Object.keys(pending).length > 0 ? { pending } : {};
  return withoutUndefined({ ...state, ...journal });
}

/** A copy without undefined fields at any depth (RTDB refuses them); cheaper than a JSON round trip on every transaction. */
function withoutUndefined(value: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(value)) {
    if (item === undefined) continue;
    out[key] = isRecord(item) ? withoutUndefined(item) : item;
  }
  return out;
}

function* pendingMessages(pending: Pending): Iterable<[string, ChatMessage]> {
  for (const [key, exchange] of Object.entries(pending)) {
    const seq = seqOfPendingKey(key);
    if (seq === undefined) throw new StoreDataError(`state/pending/${key}`, "not an exchange key");
    yield [userMessageKey(seq), exchange.user];
    yield [assistantMessageKey(seq), exchange.assistant];
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
