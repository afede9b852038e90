import type { Database, DataSnapshot, Query, Reference } from "firebase-admin/database";
import { z } from "zod";
import { withDeadline } from "./deadline";
import { StoreDataError, StoreUnavailableError } from "./errors";
import { assistantMessageKey, pendingExchangeKey, seqOfPendingKey, userMessageKey } from "./message-keys";
import { parseStored } from "./parse-stored";
import {
  chatMessageSchema,
  createKeySchema,
  generationSettingsSchema,
  sessionStateSchema,
  templateSchema,
  type ChatMessage,
  type CreateKey,
  type Exchange,
  type SessionMeta,
  type SessionState,
  type Template,
  userUsageSchema,
} from "./records";
import { assertNextCountsOneMore, type NewSession, type Ruled, type SessionStore, type StateRule, type UsageRule } from "./session-store";

const pendingSchema = z.record(z.string(), z.object({ user: chatMessageSchema, assistant: chatMessageSchema }));
type Pending = z.infer<typeof pendingSchema>;

/** The raw `state` node: the parsed fields plus the journal of exchanges not yet copied to `messages`. */
type RawState = Record<string, unknown> & { pending?: unknown };

const META_FIELDS = ["user_id", "template_id", "template_name", "system_prompt", "settings", "created_at"] as const;
const CREATE_KEYS = "idempotencyKeys/createSession";

/**
 * Realtime Database adapter (firebase-admin).
 *
 * Shape of `/userSessions/{id}`: fields fixed at creation at the top, the mutable `state`
 * node, and `messages` keyed by sequence. Only `state` is ever transacted on, so the
 * transaction payload stays small however long the history grows. An exchange commits
 * atomically into `state/pending` together with the new `message_count`; it is then copied
 * to `messages` and removed from `pending`. Readers merge both, so a crash between the two
 * steps loses nothing and the next writer finishes the copy.
 */
export class RtdbStore implements SessionStore {
  constructor(
    private readonly db: Database,
    private readonly timeoutMs: number,
  ) {}

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
      if (await this.createIfAbsent(`userSessions/${session.id}`, node, "create session")) return "created";
      // Refused because this instance is creating the same session in another request and it is
      // not stored yet: look again once that write has landed, so "exists" means readable.
      if (attempt >= 20) throw new StoreUnavailableError("create session");
      await new Promise((wake) => setTimeout(wake, 50));
    }
  }

  async readSessionMeta(sessionId: string): Promise<SessionMeta | null> {
    const ref = this.sessionRef(sessionId);
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

  async readRecentMessages(sessionId: string, limit: number): Promise<ChatMessage[]> {
    if (limit <= 0) return [];
    const messages = this.sessionRef(sessionId).child("messages");
    const byKey = await this.readAcrossJournal(sessionId, "read history", () => read(messages.orderByKey().limitToLast(limit)));
    const path = `userSessions/${sessionId}/messages`;
    return [...byKey.keys()]
      .sort()
      .slice(-limit)
      .map((key) => parseStored(chatMessageSchema, byKey.get(key), `${path}/${key}`));
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
    return (await this.transactState(sessionId, "update session state", rule, (raw, next) => stateNode(next, raw.pending))).ruled;
  }

  async appendExchange<O>(sessionId: string, exchange: Exchange, rule: StateRule<O>): Promise<Ruled<O>> {
    const { ruled, wrote, snapshot } = await this.transactState(sessionId, "append exchange", rule, (raw, next, state) => {
      assertNextCountsOneMore(state, next);
      const pending = isRecord(raw.pending) ? raw.pending : {};
      return stateNode(next, { ...pending, [pendingExchangeKey(next.message_count)]: exchange });
    });
    if (wrote) await this.flushPending(sessionId, snapshot.child("pending").val());
    return ruled;
  }

  async findIdleSessions(cutoff: number, limit: number): Promise<string[]> {
    return this.keysOrderedBy("userSessions", "state/idle_since", cutoff, limit, "find idle sessions");
  }

  async findClosedSessions(cutoff: number, limit: number): Promise<string[]> {
    return this.keysOrderedBy("userSessions", "state/ended_at", cutoff, limit, "find closed sessions");
  }

  async deleteSession(sessionId: string): Promise<void> {
    await this.call("delete session", this.sessionRef(sessionId).remove());
  }

  async claimCreateKey(hash: string, key: CreateKey): Promise<CreateKey> {
    const path = `${CREATE_KEYS}/${hash}`;
    // Committed or not, the transaction's snapshot is what is stored now: ours, or the one that made it abort.
    const { snapshot } = await this.transactCreate(path, key, "claim idempotency key");
    return parseStored(createKeySchema, snapshot.val(), path);
  }

  async deleteCreateKeys(cutoff: number, limit: number): Promise<number> {
    const hashes = await this.keysOrderedBy(CREATE_KEYS, "created_at", cutoff, limit, "find idempotency keys");
    if (hashes.length === 0) return 0;
    await this.call("delete idempotency keys", this.db.ref(CREATE_KEYS).update(Object.fromEntries(hashes.map((hash) => [hash, null]))));
    return hashes.length;
  }

  async updateUsage<O>(userKey: string, rule: UsageRule<O>): Promise<O> {
    const path = `userUsage/${userKey}`;
    const { decided } = await this.transact(path, "update usage", (current) => {
      // Unlike a session, a missing record is a valid start: a cold instance's null guess is
      // corrected by the server (hash mismatch) before anything is written over real data.
      const usage = current === null ? null : userUsageSchema.safeParse(current);
      if (usage !== null && !usage.success) throw new StoreDataError(path, usage.error.issues[0]?.message ?? "invalid");
      const { outcome, next } = rule(usage === null ? null : usage.data);
      // "No change" writes the record back as it is (or null for none): see `transact`.
      return { decided: outcome, write: next === undefined ? current : (JSON.parse(JSON.stringify(next)) as unknown) };
    });
    return decided as O;
  }

  /**
   * Runs `rule` in a transaction on the session's `state` node and returns what its last run
   * decided: the one that committed, or the outcome of one that changed nothing. `toNode` turns
   * the next state into the node to write (it may add the journal).
   */
  private async transactState<O>(
    sessionId: string,
    operation: string,
    rule: StateRule<O>,
    toNode: (raw: RawState, next: SessionState, state: SessionState) => Record<string, unknown> | undefined,
  ): Promise<{ ruled: Ruled<O>; wrote: boolean; snapshot: DataSnapshot }> {
    const path = `userSessions/${sessionId}/state`;
    const notFound = { ruled: { found: false } as Ruled<O>, wrote: false };
    const { decided, committed, snapshot } = await this.transact(path, operation, (raw) => {
      const current = raw as RawState | null;
      // null is also what an instance without a copy sees first: writing null back makes
      // the server answer with the real node (hash mismatch) instead of aborting on a guess.
      if (current === null) return { decided: notFound, write: null };
      const state = sessionStateSchema.safeParse(current);
      // Malformed: abort, and report it below instead of "not found".
      if (!state.success) return { decided: notFound, write: undefined };
      const { outcome, next } = rule(state.data);
      const node = next === undefined ? undefined : toNode(current, next, state.data);
      const ruled: Ruled<O> = { found: true, outcome, state: next !== undefined && node !== undefined ? next : state.data };
      return { decided: { ruled, wrote: node !== undefined }, write: node ?? current };
    });
    if (snapshot.exists()) parseStored(sessionStateSchema, snapshot.val(), path);
    const last = decided ?? notFound;
    if (last.wrote && !committed) throw new StoreUnavailableError(operation);
    return { ...last, snapshot };
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
  ): Promise<{ decided: D | undefined; committed: boolean; snapshot: DataSnapshot }> {
    const last: { decided?: D; error?: unknown } = {};
    const result = await this.call(
      operation,
      this.db.ref(path).transaction(
        (current: unknown) => {
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
    return { decided: last.decided, committed: result.committed, snapshot: result.snapshot };
  }

  /**
   * Copies journaled exchanges into `messages`, then removes them from `pending`. Idempotent:
   * keys derive from the sequence number, so a concurrent or repeated copy writes identical
   * data. The removal is a transaction too: a plain write under `state` would abort this
   * instance's other transactions on it. A failure here loses nothing (the exchange is
   * committed in `pending`, and readers merge it); the next append copies it again.
   */
  private async flushPending(sessionId: string, rawPending: unknown): Promise<void> {
    const pending = this.parsePending(sessionId, rawPending);
    const keys = Object.keys(pending);
    if (keys.length === 0) return;
    try {
      await this.call("copy exchange to history", this.sessionRef(sessionId).child("messages").update(Object.fromEntries(pendingMessages(pending))));
      await this.transactState(
        sessionId,
        "clear copied exchanges",
        (state) => ({ outcome: undefined, next: state }),
        (raw, next) => {
          const pendingNow = isRecord(raw.pending) ? raw.pending : {};
          const remaining = Object.fromEntries(Object.entries(pendingNow).filter(([key]) => !keys.includes(key)));
          return Object.keys(remaining).length === Object.keys(pendingNow).length ? undefined : stateNode(next, remaining);
        },
      );
    } catch {
      // Deliberately swallowed: see above.
    }
  }

  /**
   * Messages read with `query`, merged with the exchanges still journaled in `state/pending`.
   * Pending is read first: a flush moves an exchange from `pending` to `messages` in one step,
   * so reading in this order sees it on one side or the other, never on neither.
   */
  private async readAcrossJournal(sessionId: string, operation: string, query: () => Promise<DataSnapshot>): Promise<Map<string, unknown>> {
    const pending = await this.call(operation, read(this.stateRef(sessionId).child("pending")));
    const stored = await this.call(operation, query());
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
    return (await this.transactCreate(path, value, operation)).committed;
  }

  private transactCreate(path: string, value: unknown, operation: string): Promise<{ committed: boolean; snapshot: DataSnapshot }> {
    // Returning the value for an empty node writes it; `undefined` keeps an existing one.
    return this.call(operation, this.db.ref(path).transaction((current: unknown) => (current === null ? value : undefined), undefined, false));
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

/**
 * Reads once through a listener. `get()` is avoided on purpose: in the SDK, a `get()` that
 * overlaps a transaction on the same path can leave the transaction without its server
 * listen, so it reruns on stale data until it fails with "maxretry".
 */
function read(query: Query): Promise<DataSnapshot> {
  return query.once("value");
}

/** The `state` node to write: the state (undefined fields left out at any depth, as RTDB requires) and the journal. */
function stateNode(state: SessionState, pending: unknown): Record<string, unknown> {
  const journal = isRecord(pending) && Object.keys(pending).length > 0 ? { pending } : {};
  return JSON.parse(JSON.stringify({ ...state, ...journal })) as Record<string, unknown>;
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
