import { randomUUID } from "node:crypto";
import type { ChatModel } from "../llm/chat-model";
import type { ChatMessage, Exchange, SessionMeta, SessionState, Template } from "../store/records";
import type { SessionStore } from "../store/session-store";
import { StoreDataError } from "../store/errors";
import { buildPrompt, lastMessages } from "./context-window";
import type { Identity } from "../auth/identity";
import {
  ForbiddenError,
  IdempotencyInProgressError,
  IdempotencyKeyReusedError,
  LimitExceededError,
  SessionClosedError,
  SessionNotFoundError,
  TemplateNotFoundError,
} from "./errors";
import { resolveGenerationSettings } from "./generation-settings";
import { fingerprint, keyHash } from "./idempotency";
import { admitMessage, admitSession, releaseSession, type UsagePolicy } from "./limits";
import {
  appendRule,
  claimRequest,
  closedAt,
  closeIfIdle,
  endRule,
  releaseClaim,
  type Closed,
  type RequestClaim,
  type SessionPolicy,
} from "./session-rules";
import { WarmCache } from "./warm-cache";

export interface SessionServiceOptions {
  readonly store: SessionStore;
  readonly model: ChatModel;
  readonly clock: () => number;
  readonly newSessionId: () => string;
  /** History messages sent to the model when the template sets none. */
  readonly defaultContextWindow: number;
  readonly policy: SessionPolicy;
  /** Per-user limits. */
  readonly usage: UsagePolicy;
  /** How long a claimed `Idempotency-Key` holds off repeats: longer than a model call can take. */
  readonly keyLeaseMs: number;
  /** How long a keyed repeat waits for the first request's result before answering 409. */
  readonly keyWaitMs: number;
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

/** A signed-in caller may act only on their own sessions. */
function assertOwner(meta: SessionMeta, caller: Identity | undefined): void {
  if (caller && caller.uid !== meta.user_id) throw new ForbiddenError("this session belongs to another user");
}

/** Where a user's usage is kept: a hash, so that any user id makes a valid database key. */
function userKey(userId: string): string {
  return keyHash("user", userId);
}

/**
 * The session holds all the exchanges it may: no wait helps, so Retry-After is the idle TTL,
 * after which the session expires and stops counting against the user's active sessions.
 */
function exchangeLimit(policy: SessionPolicy): LimitExceededError {
  return new LimitExceededError("exchanges", seconds(policy.idleTtlMs));
}

/** Whole seconds for a Retry-After header, at least one. */
function seconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000));
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

  /**
   * Creates a session for `caller` when signed in (a different `userId` is refused), else for
   * `userId`. With an `idempotencyKey`, repeats return the session the first request created.
   */
  async create(input: { userId?: string; templateId: string; idempotencyKey?: string; caller?: Identity }): Promise<CreatedSession> {
    const { store, clock, newSessionId, defaultContextWindow } = this.options;
    if (input.caller && input.userId !== undefined && input.userId !== input.caller.uid) {
      throw new ForbiddenError("user_id does not match the signed-in user");
    }
    const userId = input.caller?.uid ?? input.userId;
    if (userId === undefined) throw new Error("a session needs a user: a caller or a user_id");
    const template = await this.template(input.templateId);
    const now = clock();
    let sessionId = newSessionId();
    if (input.idempotencyKey !== undefined) {
      // The key fixes the session id: whichever request gets there first creates that session.
      const claimed = await store.claimCreateKey(keyHash(`createSession\u0000${userId}`, input.idempotencyKey), {
        fingerprint: fingerprint(input.templateId),
        session_id: sessionId,
        created_at: now,
      });
      if (claimed.fingerprint !== fingerprint(input.templateId)) throw new IdempotencyKeyReusedError();
      sessionId = claimed.session_id;
      if (await store.readSessionState(sessionId)) return { sessionId, meta: (await this.warmSession(sessionId)).meta, replayed: true };
    }
    const admission = await store.updateUsage(userKey(userId), admitSession(sessionId, now, this.options.usage));
    if (!admission.admitted) throw new LimitExceededError("sessions", seconds(admission.retryAfterMs));

    const meta: SessionMeta = {
      user_id: userId,
      template_id: input.templateId,
      template_name: template.name,
      system_prompt: template.personalityPrompt,
      settings: resolveGenerationSettings(template, defaultContextWindow),
      created_at: now,
    };
    const state: SessionState = { status: "active", message_count: 0, last_activity: now, idle_since: now };
    let created: "created" | "exists";
    try {
      created = await store.createSession({ id: sessionId, meta, state });
    } catch (error) {
      await store.updateUsage(userKey(userId), releaseSession(sessionId)).catch(() => undefined);
      throw error;
    }
    if (created === "exists") return { sessionId, meta: (await this.warmSession(sessionId)).meta, replayed: true };
    this.sessions.set(sessionId, { meta, tail: { messageCount: 0, messages: [] } });
    return { sessionId, meta, replayed: false };
  }

  async send(input: { sessionId: string; message: string; idempotencyKey?: string; caller?: Identity }): Promise<Reply> {
    const { store, clock, policy } = this.options;
    const { sessionId } = input;
    const receivedAt = clock();
    const [warm, state] = await Promise.all([this.warmSession(sessionId), store.readSessionState(sessionId)]);
    if (!state) throw new SessionNotFoundError(sessionId);
    // Ownership first: nothing else about another user's session is revealed.
    assertOwner(warm.meta, input.caller);

    const owner = randomUUID();
    const claim: RequestClaim =
      input.idempotencyKey === undefined
        ? { hash: `r-${owner}`, fingerprint: "", owner, remember: false }
        : { hash: keyHash("sendMessage", input.idempotencyKey), fingerprint: fingerprint(input.message), owner, remember: true };
    const known = state.requests?.[claim.hash];
    if (known && known.fingerprint !== claim.fingerprint) throw new IdempotencyKeyReusedError();
    // A repeat of a request that completed is answered before any limit: it costs nothing.
    if (known?.seq !== undefined) return this.replay(sessionId, known.seq);
    if (closedAt(state, receivedAt, policy)) {
      const closed = await this.recordClosed(sessionId, receivedAt);
      if (closed) throw new SessionClosedError(closed);
    }
    if (state.message_count >= policy.maxExchanges) throw exchangeLimit(policy);
    const admission = await store.updateUsage(userKey(warm.meta.user_id), admitMessage(sessionId, receivedAt, this.options.usage));
    if (!admission.admitted) throw new LimitExceededError("messages", seconds(admission.retryAfterMs));
    const done = await this.claim(sessionId, claim, receivedAt);
    if (done !== undefined) return this.replay(sessionId, done);

    let exchange: Exchange;
    let history: readonly ChatMessage[];
    try {
      history = await this.recentMessages(sessionId, warm, state.message_count);
      exchange = await this.answer(warm.meta, history, input.message, receivedAt);
    } catch (error) {
      // Free the slot now; if this is lost too, the claim lapses with its lease.
      await store.updateState(sessionId, releaseClaim(claim)).catch(() => undefined);
      throw error;
    }

    const answeredAt = exchange.assistant.timestamp;
    const result = await store.appendExchange(sessionId, exchange, appendRule({ receivedAt, answeredAt, policy, claim }));
    if (!result.found) throw new SessionNotFoundError(sessionId);
    const { outcome } = result;
    if (outcome.kind === "closed" || outcome.kind === "limit" || outcome.kind === "reused") {
      // Refused at the commit: free the slot, so a repeat waiting on this key learns at once.
      await store.updateState(sessionId, releaseClaim(claim)).catch(() => undefined);
    }
    switch (outcome.kind) {
      case "closed":
        throw new SessionClosedError(outcome.status);
      case "limit":
        throw exchangeLimit(policy);
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

  async end(sessionId: string, caller?: Identity): Promise<EndedSession> {
    const { store, clock, policy } = this.options;
    const { meta } = await this.warmSession(sessionId);
    assertOwner(meta, caller);
    const result = await store.updateState(sessionId, endRule(clock(), policy));
    if (!result.found) throw new SessionNotFoundError(sessionId);
    if (result.outcome.kind === "closed") throw new SessionClosedError(result.outcome.status);
    // A lost release only delays the slot: an unused session stops counting after the idle TTL.
    await store.updateUsage(userKey(meta.user_id), releaseSession(sessionId)).catch(() => undefined);
    return { sessionId, meta, state: result.state };
  }

  /** Calls the model with the session's prompt and window; the exchange to store. */
  private async answer(meta: SessionMeta, history: readonly ChatMessage[], message: string, receivedAt: number): Promise<Exchange> {
    const { settings, system_prompt } = meta;
    const completion = await this.options.model.complete({
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
   * Claims a slot for the request. Returns the number of the exchange an earlier request with
   * this key stored (to replay it), or undefined once this request holds the claim. While
   * another request holds the key, waits for that one's result, up to the claim's lease.
   */
  private async claim(sessionId: string, claim: RequestClaim, receivedAt: number): Promise<number | undefined> {
    const { store, clock, policy, keyLeaseMs, keyWaitMs, keyPollMs = 200 } = this.options;
    // Bounded by the time budget, not the lease: waiting out a dead request's lease would outlive the function.
    const giveUpAt = receivedAt + keyWaitMs;
    for (;;) {
      const result = await store.updateState(sessionId, claimRequest(claim, clock(), keyLeaseMs, policy));
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
        case "limit":
          throw exchangeLimit(policy);
        case "busy": {
          // Give up only on a claim found live past the wait allowed; after waiting, claim again.
          if (clock() >= giveUpAt) throw new IdempotencyInProgressError(Math.max(1, Math.ceil((outcome.leaseUntil - clock()) / 1000)));
          const done = await this.awaitKey(sessionId, claim, Math.min(outcome.leaseUntil, giveUpAt), keyPollMs);
          if (done !== undefined) return done;
        }
      }
    }
  }

  /** Polls the session until the key has an exchange (returned) or `until` passes (undefined). */
  private async awaitKey(sessionId: string, claim: RequestClaim, until: number, pollMs: number): Promise<number | undefined> {
    const { store, clock } = this.options;
    while (clock() < until) {
      await new Promise((wake) => setTimeout(wake, Math.max(1, Math.min(pollMs, until - clock()))));
      const state = await store.readSessionState(sessionId);
      const entry = state?.requests?.[claim.hash];
      if (entry?.seq !== undefined) return entry.seq;
      // Released, or the session closed: claim again, which gives the answer for either.
      if (!entry || state.status !== "active") return undefined;
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
