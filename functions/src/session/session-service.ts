import { randomUUID } from "node:crypto";
import type { ChatModel } from "../llm/chat-model";
import type { ChatMessage, Exchange, SessionMeta, SessionState, Template } from "../store/records";
import type { SessionStore } from "../store/session-store";
import { StoreDataError } from "../store/errors";
import { buildPrompt, lastMessages } from "./context-window";
import { IdempotencyInProgressError, IdempotencyKeyReusedError, SessionClosedError, SessionNotFoundError, TemplateNotFoundError } from "./errors";
import { resolveGenerationSettings } from "./generation-settings";
import { fingerprint, keyHash } from "./idempotency";
import { appendRule, claimKey, closedAt, closeIfIdle, endRule, releaseKey, type Closed, type KeyClaim, type SessionPolicy } from "./session-rules";
import { WarmCache } from "./warm-cache";

export interface SessionServiceOptions {
  readonly store: SessionStore;
  /** Resolved on each call: the model's configuration is only known at request time. */
  readonly model: () => ChatModel;
  readonly clock: () => number;
  readonly newSessionId: () => string;
  /** History messages sent to the model when the template sets none. */
  readonly defaultContextWindow: number;
  readonly policy: SessionPolicy;
  /** How long a claimed `Idempotency-Key` holds off repeats: longer than a model call can take. */
  readonly keyLeaseMs: number;
  /** How often a repeat polls for the result of the request it waits for. */
  readonly keyPollMs?: number;
  readonly cache: {
    readonly templateTtlMs: number;
    readonly sessionTtlMs: number;
    readonly maxSessions: number;
  };
}

export interface CreatedSession {
  readonly sessionId: string;
  readonly meta: SessionMeta;
  /** The answer repeats the one given to an earlier request with the same `Idempotency-Key`. */
  readonly replayed: boolean;
}

export interface Reply {
  readonly sessionId: string;
  readonly text: string;
  readonly truncated: boolean;
  readonly messageCount: number;
  readonly replayed: boolean;
}

export interface EndedSession {
  readonly sessionId: string;
  readonly meta: SessionMeta;
  readonly state: SessionState;
}

/**
 * What an instance remembers of a session between requests: the immutable fields, and the
 * last messages as of a known `message_count`, reused only when the database still reports
 * exactly that count.
 */
interface WarmSession {
  readonly meta: SessionMeta;
  readonly tail?: { readonly messageCount: number; readonly messages: readonly ChatMessage[] };
}

/** Templates are few; this only bounds an instance's memory if ids are many. */
const MAX_CACHED_TEMPLATES = 256;

/** The session module: the rules of creating, talking in and ending a chat session. */
export class SessionService {
  private readonly templates: WarmCache<string, Template>;
  private readonly sessions: WarmCache<string, WarmSession>;

  constructor(private readonly options: SessionServiceOptions) {
    const { cache, clock } = options;
    this.templates = new WarmCache(MAX_CACHED_TEMPLATES, cache.templateTtlMs, clock);
    this.sessions = new WarmCache(cache.maxSessions, cache.sessionTtlMs, clock);
  }

  async create(input: { userId: string; templateId: string; idempotencyKey?: string }): Promise<CreatedSession> {
    const { store, clock, newSessionId, defaultContextWindow } = this.options;
    const template = await this.template(input.templateId);
    const now = clock();
    let sessionId = newSessionId();
    if (input.idempotencyKey !== undefined) {
      // The key fixes the session id: whichever request gets there first creates that session.
      const claimed = await store.claimCreateKey(keyHash(`createSession\u0000${input.userId}`, input.idempotencyKey), {
        fingerprint: fingerprint(input.templateId),
        session_id: sessionId,
        created_at: now,
      });
      if (claimed.fingerprint !== fingerprint(input.templateId)) throw new IdempotencyKeyReusedError();
      sessionId = claimed.session_id;
    }
    const meta: SessionMeta = {
      user_id: input.userId,
      template_id: input.templateId,
      template_name: template.name,
      system_prompt: template.personalityPrompt,
      settings: resolveGenerationSettings(template, defaultContextWindow),
      created_at: now,
    };
    const state: SessionState = { status: "active", message_count: 0, last_activity: now, idle_since: now };
    if ((await store.createSession({ id: sessionId, meta, state })) === "exists") {
      return { sessionId, meta: (await this.warmSession(sessionId)).meta, replayed: true };
    }
    this.sessions.set(sessionId, { meta, tail: { messageCount: 0, messages: [] } });
    return { sessionId, meta, replayed: false };
  }

  async send(input: { sessionId: string; message: string; idempotencyKey?: string }): Promise<Reply> {
    const { store, clock, policy } = this.options;
    const { sessionId } = input;
    const receivedAt = clock();
    const [warm, state] = await Promise.all([this.warmSession(sessionId), store.readSessionState(sessionId)]);
    if (!state) throw new SessionNotFoundError(sessionId);

    const claim: KeyClaim | undefined =
      input.idempotencyKey === undefined
        ? undefined
        : { hash: keyHash("sendMessage", input.idempotencyKey), fingerprint: fingerprint(input.message), owner: randomUUID() };
    if (claim) {
      const done = await this.claim(sessionId, claim, state, receivedAt);
      if (done !== undefined) return this.replay(sessionId, done);
    } else if (closedAt(state, receivedAt, policy)) {
      const closed = await this.recordClosed(sessionId, receivedAt);
      if (closed) throw new SessionClosedError(closed);
    }

    let exchange: Exchange;
    let history: readonly ChatMessage[];
    try {
      history = await this.recentMessages(sessionId, warm, state.message_count);
      exchange = await this.answer(warm.meta, history, input.message, receivedAt);
    } catch (error) {
      if (claim) await store.updateState(sessionId, releaseKey(claim)).catch(() => undefined);
      throw error;
    }

    const answeredAt = exchange.assistant.timestamp;
    const result = await store.appendExchange(sessionId, exchange, appendRule({ receivedAt, answeredAt, policy, ...(claim ? { claim } : {}) }));
    if (!result.found) throw new SessionNotFoundError(sessionId);
    const { outcome } = result;
    switch (outcome.kind) {
      case "closed":
        throw new SessionClosedError(outcome.status);
      case "reused":
        throw new IdempotencyKeyReusedError();
      case "duplicate":
        return this.replay(sessionId, outcome.seq);
      case "appended":
        break;
    }
    // The new tail is known only when no other exchange landed between our read and our commit.
    if (outcome.seq === state.message_count + 1) {
      const messages = lastMessages([...history, exchange.user, exchange.assistant], warm.meta.settings.context_window);
      this.sessions.set(sessionId, { meta: warm.meta, tail: { messageCount: outcome.seq, messages } });
    }
    return {
      sessionId,
      text: exchange.assistant.content,
      truncated: exchange.assistant.truncated === true,
      messageCount: result.state.message_count,
      replayed: false,
    };
  }

  async end(sessionId: string): Promise<EndedSession> {
    const { store, clock, policy } = this.options;
    const [warm, result] = await Promise.all([
      // A failed read here is retried below, after the outcome that decides the answer is known.
      this.warmSession(sessionId).catch(() => undefined),
      store.updateState(sessionId, endRule(clock(), policy)),
    ]);
    if (!result.found) throw new SessionNotFoundError(sessionId);
    if (result.outcome.kind === "closed") throw new SessionClosedError(result.outcome.status);
    const meta = (warm ?? (await this.warmSession(sessionId))).meta;
    return { sessionId, meta, state: result.state };
  }

  /** Calls the model with the session's prompt and window; the exchange to store. */
  private async answer(meta: SessionMeta, history: readonly ChatMessage[], message: string, receivedAt: number): Promise<Exchange> {
    const { settings, system_prompt } = meta;
    const completion = await this.options.model().complete({
      model: settings.model,
      messages: buildPrompt(system_prompt, history, settings.context_window, message),
      temperature: settings.temperature,
      max_tokens: settings.max_tokens,
      presence_penalty: settings.presence_penalty,
      frequency_penalty: settings.frequency_penalty,
    });
    const answeredAt = Math.max(this.options.clock(), receivedAt);
    return {
      user: { role: "user", content: message, timestamp: receivedAt },
      assistant: { role: "assistant", content: completion.text, timestamp: answeredAt, ...(completion.truncated ? { truncated: true } : {}) },
    };
  }

  /**
   * Claims the request's key. Returns the number of the exchange an earlier request with this
   * key stored (to replay it), or undefined once this request holds the claim. While another
   * request holds it, waits for that one's result, up to the claim's lease.
   */
  private async claim(sessionId: string, claim: KeyClaim, state: SessionState, receivedAt: number): Promise<number | undefined> {
    const { store, clock, policy, keyLeaseMs, keyPollMs = 200 } = this.options;
    const known = state.idempotency?.[claim.hash];
    if (known && known.fingerprint !== claim.fingerprint) throw new IdempotencyKeyReusedError();
    if (known?.seq !== undefined) return known.seq;
    const giveUpAt = receivedAt + keyLeaseMs;
    for (;;) {
      const result = await store.updateState(sessionId, claimKey(claim, clock(), keyLeaseMs, policy));
      if (!result.found) throw new SessionNotFoundError(sessionId);
      const { outcome } = result;
      switch (outcome.kind) {
        case "claimed":
          return undefined;
        case "done":
          return outcome.seq;
        case "reused":
          throw new IdempotencyKeyReusedError();
        case "closed":
          throw new SessionClosedError(outcome.status);
        case "busy": {
          const done = await this.awaitKey(sessionId, claim, Math.min(outcome.leaseUntil, giveUpAt), keyPollMs);
          if (done !== undefined) return done;
          if (clock() >= giveUpAt) throw new IdempotencyInProgressError(Math.max(1, Math.ceil((outcome.leaseUntil - clock()) / 1000)));
        }
      }
    }
  }

  /** Polls the session until the key has an exchange (returned) or `until` passes (undefined). */
  private async awaitKey(sessionId: string, claim: KeyClaim, until: number, pollMs: number): Promise<number | undefined> {
    const { store, clock } = this.options;
    while (clock() < until) {
      await new Promise((wake) => setTimeout(wake, Math.max(1, Math.min(pollMs, until - clock()))));
      const entry = (await store.readSessionState(sessionId))?.idempotency?.[claim.hash];
      if (entry?.seq !== undefined) return entry.seq;
      if (!entry) return undefined;
    }
    return undefined;
  }

  private async replay(sessionId: string, seq: number): Promise<Reply> {
    const exchange = await this.options.store.readExchange(sessionId, seq);
    if (!exchange) throw new StoreDataError(`userSessions/${sessionId}/messages`, `exchange ${seq} named by an idempotency key is missing`);
    return { sessionId, text: exchange.assistant.content, truncated: exchange.assistant.truncated === true, messageCount: seq, replayed: true };
  }

  /** Why the session takes no message, recording its expiry if it only now turned out expired. */
  private async recordClosed(sessionId: string, now: number): Promise<Closed | undefined> {
    const result = await this.options.store.updateState(sessionId, closeIfIdle(now, this.options.policy));
    if (!result.found) throw new SessionNotFoundError(sessionId);
    return result.outcome;
  }

  private async template(templateId: string): Promise<Template> {
    const cached = this.templates.get(templateId);
    if (cached) return cached;
    const template = await this.options.store.readTemplate(templateId);
    if (!template) throw new TemplateNotFoundError(templateId);
    this.templates.set(templateId, template);
    return template;
  }

  private async warmSession(sessionId: string): Promise<WarmSession> {
    const cached = this.sessions.get(sessionId);
    if (cached) return cached;
    const meta = await this.options.store.readSessionMeta(sessionId);
    if (!meta) throw new SessionNotFoundError(sessionId);
    const warm = { meta };
    this.sessions.set(sessionId, warm);
    return warm;
  }

  /** Reads history only when this instance does not hold the tail as of `messageCount`. */
  private async recentMessages(sessionId: string, warm: WarmSession, messageCount: number): Promise<readonly ChatMessage[]> {
    if (warm.tail?.messageCount === messageCount) return warm.tail.messages;
    return this.options.store.readRecentMessages(sessionId, warm.meta.settings.context_window);
  }
}
