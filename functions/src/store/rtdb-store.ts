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
    const { outcome, snapshot } = await this.transactState<AppendResult<R>>(sessionId, "append exchange", { kind: "not_found" }, (raw, state) => {
      const refusal = guard(state);
      if (refusal !== undefined) return { outcome: { kind: "refused", refusal, state } };
      const seq = state.message_count + 1;
      const next = { ...state, message_count: seq, last_activity: Math.max(state.last_activity, at) };
      const pending = isRecord(raw.pending) ? raw.pending : {};
      return { outcome: { kind: "appended", seq, state: next }, write: { ...raw, ...next, pending: { ...pending, [pendingExchangeKey(seq)]: exchange } } };
    });
    if (outcome.kind === "appended") await this.flushPending(sessionId, snapshot.child("pending").val());
    return outcome;
  }

  async transitionState<R>(
    sessionId: string,
    guard: StateGuard<R>,
    next: (state: SessionState) => SessionState,
  ): Promise<TransitionResult<R>> {
    const { outcome } = await this.transactState<TransitionResult<R>>(sessionId, "update session state", { kind: "not_found" }, (raw, state) => {
      const refusal = guard(state);
      if (refusal !== undefined) return { outcome: { kind: "refused", refusal, state } };
      const changed = next(state);
      return { outcome: { kind: "changed", state: changed }, write: { ...raw, ...changed } };
    });
    return outcome;
  }

  /**
   * Runs `decide` in a transaction on the session's `state` node and returns the outcome of
   * its last run: the one that committed, or the reason it aborted (no `write`). `decide`
   * must be pure: it reruns on contention.
   */
  private async transactState<O>(
    sessionId: string,
    operation: string,
    absent: O,
    decide: (raw: RawState, state: SessionState) => { readonly outcome: O; readonly write?: RawState },
  ): Promise<{ outcome: O; snapshot: DataSnapshot }> {
    const path = `userSessions/${sessionId}/state`;
    // What the handler's last run decided; it reruns on contention, so each run starts afresh.
    const last: { outcome: O; wrote: boolean } = { outcome: absent, wrote: false };
    const result = await this.call(
      operation,
      this.db.ref(path).transaction(
        (current: RawState | null) => {
          last.outcome = absent;
          last.wrote = false;
          // null is also what an instance without a copy sees first: writing null back makes
          // the server answer with the real node (hash mismatch) instead of aborting on a guess.
          if (current === null) return null;
          const state = sessionStateSchema.safeParse(current);
          if (!state.success) return undefined;
          const decision = decide(current, state.data);
          last.outcome = decision.outcome;
          last.wrote = decision.write !== undefined;
          return decision.write;
        },
        undefined,
        false,
      ),
    );
    // A transaction that aborted on a malformed node reports it instead of "not found".
    if (result.snapshot.exists()) parseStored(sessionStateSchema, result.snapshot.val(), path);
    if (last.wrote && !result.committed) throw new StoreUnavailableError(operation);
    return { outcome: last.outcome, snapshot: result.snapshot };
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
    const copy: Record<string, unknown> = {};
    for (const [key, message] of pendingMessages(pending)) copy[key] = message;
    try {
      await this.call("copy exchange to history", this.sessionRef(sessionId).child("messages").update(copy));
      await this.transactState(sessionId, "clear copied exchanges", undefined, (raw) => {
        if (!isRecord(raw.pending)) return { outcome: undefined };
        const remaining = Object.fromEntries(Object.entries(raw.pending).filter(([key]) => !keys.includes(key)));
        const changed = Object.keys(remaining).length !== Object.keys(raw.pending).length;
        return changed ? { outcome: undefined, write: { ...raw, pending: remaining } } : { outcome: undefined };
      });
    } catch {
      // Deliberately swallowed: see above.
    }
  }

  private parsePending(sessionId: string, raw: unknown): Pending {
    return raw === null ? {} : parseStored(pendingSchema, raw, `userSessions/${sessionId}/state/pending`);
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
