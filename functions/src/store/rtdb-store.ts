import type { Database, DataSnapshot, Reference } from "firebase-admin/database";
import { z } from "zod";
import { withDeadline } from "./deadline";
import { StoreDataError, StoreUnavailableError } from "./errors";
import { assistantMessageKey, pendingExchangeKey, seqOfPendingKey, userMessageKey } from "./message-keys";
import { parseStored } from "./parse-stored";
import {
  chatMessageSchema,
  generationSettingsSchema,
  sessionStateSchema,
  templateSchema,
  type ChatMessage,
  type Exchange,
  type SessionMeta,
  type SessionState,
  type Template,
} from "./records";
import type { AppendResult, NewSession, SessionStore, StateGuard, TransitionResult } from "./session-store";

const pendingSchema = z.record(z.string(), z.object({ user: chatMessageSchema, assistant: chatMessageSchema }));
type Pending = z.infer<typeof pendingSchema>;

/** The raw `state` node: the parsed fields plus the journal of exchanges not yet copied to `messages`. */
type RawState = Record<string, unknown> & { pending?: unknown };

/**
 * Realtime Database adapter (firebase-admin).
 *
 * Shape of `/userSessions/{id}`: fields fixed at creation at the top, the mutable `state`
 * node, and `messages` keyed by sequence. Only `state` is ever transacted on, so the
 * transaction payload stays small however long the history grows. An exchange commits
 * atomically into `state/pending` together with the new `message_count`; it is then copied
 * to `messages` and removed from `pending` in one multi-path update. Readers merge both, so
 * a crash between the two steps loses nothing and the next writer finishes the copy.
 */
export class RtdbStore implements SessionStore {
  constructor(
    private readonly db: Database,
    private readonly timeoutMs: number,
  ) {}

  async readTemplate(templateId: string): Promise<Template | null> {
    const path = `templates/${templateId}`;
    const snapshot = await this.call("read template", this.db.ref(path).get());
    return snapshot.exists() ? parseStored(templateSchema, snapshot.val(), path) : null;
  }

  async seedTemplates(templates: Readonly<Record<string, Template>>): Promise<string[]> {
    const results = await Promise.all(
      Object.entries(templates).map(async ([id, template]) => {
        const result = await this.call(
          "seed template",
          // Returning the template for an empty node writes it; `undefined` keeps an existing one.
          this.db.ref(`templates/${id}`).transaction((current: unknown) => (current === null ? template : undefined), undefined, false),
        );
        return result.committed ? id : undefined;
      }),
    );
    return results.filter((id): id is string => id !== undefined);
  }

  async createSession(session: NewSession): Promise<void> {
    await this.call("create session", this.sessionRef(session.id).set({ ...session.meta, state: session.state }));
  }

  async readSessionMeta(sessionId: string): Promise<SessionMeta | null> {
    const ref = this.sessionRef(sessionId);
    // Field by field: a read of the session node itself would download the whole history.
    const [userId, templateId, templateName, systemPrompt, settings, createdAt] = await this.call(
      "read session",
      Promise.all(
        ["user_id", "template_id", "template_name", "system_prompt", "settings", "created_at"].map((field) => ref.child(field).get()),
      ),
    );
    if (!userId?.exists()) return null;
    const path = `userSessions/${sessionId}`;
    return {
      user_id: parseStored(z.string(), userId.val(), `${path}/user_id`),
      template_id: parseStored(z.string(), templateId?.val(), `${path}/template_id`),
      template_name: parseStored(z.string(), templateName?.val(), `${path}/template_name`),
      system_prompt: parseStored(z.string(), systemPrompt?.val(), `${path}/system_prompt`),
      settings: parseStored(generationSettingsSchema, settings?.val(), `${path}/settings`),
      created_at: parseStored(z.number(), createdAt?.val(), `${path}/created_at`),
    };
  }

  async readSessionState(sessionId: string): Promise<SessionState | null> {
    const path = `userSessions/${sessionId}/state`;
    const snapshot = await this.call("read session state", this.db.ref(path).get());
    return snapshot.exists() ? parseStored(sessionStateSchema, snapshot.val(), path) : null;
  }

  async readRecentMessages(sessionId: string, limit: number): Promise<ChatMessage[]> {
    if (limit <= 0) return [];
    const ref = this.sessionRef(sessionId);
    // Pending first: a flush moves an exchange from `pending` to `messages` in one update, so
    // reading in this order sees it on one side or the other, never on neither.
    const pending = await this.call("read history", ref.child("state/pending").get());
    const stored = await this.call("read history", ref.child("messages").orderByKey().limitToLast(limit).get());
    const byKey = new Map<string, unknown>();
    stored.forEach((child: DataSnapshot) => {
      if (child.key !== null) byKey.set(child.key, child.val());
    });
    for (const [key, message] of pendingMessages(this.parsePending(sessionId, pending.val()))) byKey.set(key, message);
    const path = `userSessions/${sessionId}/messages`;
    return [...byKey.keys()]
      .sort()
      .slice(-limit)
      .map((key) => parseStored(chatMessageSchema, byKey.get(key), `${path}/${key}`));
  }

  async appendExchange<R>(sessionId: string, exchange: Exchange, at: number, guard: StateGuard<R>): Promise<AppendResult<R>> {
    const path = `userSessions/${sessionId}/state`;
    // Set by the handler's last run: the decision that was committed, or the reason it aborted.
    const decided: { outcome: AppendResult<R> } = { outcome: { kind: "not_found" } };
    const result = await this.call(
      "append exchange",
      this.db.ref(path).transaction(
        (current: RawState | null) => {
          // null is also what a cold instance sees first: writing null back makes the server
          // answer with the real node (hash mismatch) instead of aborting on a guess.
          if (current === null) {
            decided.outcome = { kind: "not_found" };
            return null;
          }
          const state = sessionStateSchema.safeParse(current);
          if (!state.success) return undefined;
          const refusal = guard(state.data);
          if (refusal !== undefined) {
            decided.outcome = { kind: "refused", refusal, state: state.data };
            return undefined;
          }
          const seq = state.data.message_count + 1;
          const next = { ...state.data, message_count: seq, last_activity: at };
          decided.outcome = { kind: "appended", seq, state: next };
          const pending = isRecord(current.pending) ? current.pending : {};
          return { ...current, ...next, pending: { ...pending, [pendingExchangeKey(seq)]: exchange } };
        },
        undefined,
        false,
      ),
    );
    this.assertParsed(result.snapshot, path);
    if (decided.outcome.kind === "appended") {
      if (!result.committed) throw new StoreUnavailableError("append exchange");
      await this.flushPending(sessionId, result.snapshot.child("pending").val());
    }
    return decided.outcome;
  }

  async transitionState<R>(
    sessionId: string,
    guard: StateGuard<R>,
    next: (state: SessionState) => SessionState,
  ): Promise<TransitionResult<R>> {
    const path = `userSessions/${sessionId}/state`;
    const decided: { outcome: TransitionResult<R> } = { outcome: { kind: "not_found" } };
    const result = await this.call(
      "update session state",
      this.db.ref(path).transaction(
        (current: RawState | null) => {
          if (current === null) {
            decided.outcome = { kind: "not_found" };
            return null;
          }
          const state = sessionStateSchema.safeParse(current);
          if (!state.success) return undefined;
          const refusal = guard(state.data);
          if (refusal !== undefined) {
            decided.outcome = { kind: "refused", refusal, state: state.data };
            return undefined;
          }
          const changed = next(state.data);
          decided.outcome = { kind: "changed", state: changed };
          return { ...current, ...changed };
        },
        undefined,
        false,
      ),
    );
    this.assertParsed(result.snapshot, path);
    return decided.outcome;
  }

  /**
   * Copies journaled exchanges into `messages` and clears them from `pending`, in one
   * multi-path update. Idempotent: keys derive from the sequence number, so a concurrent
   * or repeated flush writes identical data. A failure here loses nothing (the exchange is
   * committed in `pending`); the next append flushes it.
   */
  private async flushPending(sessionId: string, rawPending: unknown): Promise<void> {
    const pending = this.parsePending(sessionId, rawPending);
    const update: Record<string, unknown> = {};
    for (const [key, message] of pendingMessages(pending)) update[`messages/${key}`] = message;
    for (const key of Object.keys(pending)) update[`state/pending/${key}`] = null;
    if (Object.keys(update).length === 0) return;
    await this.call("copy exchange to history", this.sessionRef(sessionId).update(update)).catch(() => undefined);
  }

  private parsePending(sessionId: string, raw: unknown): Pending {
    return raw === null ? {} : parseStored(pendingSchema, raw, `userSessions/${sessionId}/state/pending`);
  }

  /** A transaction that aborted on a malformed node reports it instead of "not found". */
  private assertParsed(snapshot: DataSnapshot, path: string): void {
    if (snapshot.exists()) parseStored(sessionStateSchema, snapshot.val(), path);
  }

  private sessionRef(sessionId: string): Reference {
    return this.db.ref(`userSessions/${sessionId}`);
  }

  private call<T>(operation: string, work: Promise<T>): Promise<T> {
    return withDeadline(operation, this.timeoutMs, work);
  }
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
