import type { ChatModel } from "../llm/chat-model";
import type { ChatMessage, SessionMeta, SessionState, SessionStatus, Template } from "../store/records";
import type { SessionStore, StateGuard } from "../store/session-store";
import { buildPrompt, lastMessages } from "./context-window";
import { SessionClosedError, SessionNotFoundError, TemplateNotFoundError } from "./errors";
import { resolveGenerationSettings } from "./generation-settings";
import { WarmCache } from "./warm-cache";

export interface SessionServiceOptions {
  readonly store: SessionStore;
  /** Resolved on each call: the model's configuration is only known at request time. */
  readonly model: () => ChatModel;
  readonly clock: () => number;
  readonly newSessionId: () => string;
  /** History messages sent to the model when the template sets none. */
  readonly defaultContextWindow: number;
  readonly cache: {
    readonly templateTtlMs: number;
    readonly sessionTtlMs: number;
    readonly maxSessions: number;
  };
}

export interface CreatedSession {
  readonly sessionId: string;
  readonly meta: SessionMeta;
}

export interface Reply {
  readonly sessionId: string;
  readonly text: string;
  readonly truncated: boolean;
  readonly messageCount: number;
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

type Closed = Exclude<SessionStatus, "active">;

/** Templates are few; this only bounds an instance's memory if ids are many. */
const MAX_CACHED_TEMPLATES = 256;

/** A session takes messages and can be ended only while active; the refusal names why not. */
const whileActive: StateGuard<Closed> = (state) => (state.status === "active" ? undefined : state.status);

/** The session module: the rules of creating, talking in and ending a chat session. */
export class SessionService {
  private readonly templates: WarmCache<string, Template>;
  private readonly sessions: WarmCache<string, WarmSession>;

  constructor(private readonly options: SessionServiceOptions) {
    const { cache, clock } = options;
    this.templates = new WarmCache(MAX_CACHED_TEMPLATES, cache.templateTtlMs, clock);
    this.sessions = new WarmCache(cache.maxSessions, cache.sessionTtlMs, clock);
  }

  async create(input: { userId: string; templateId: string }): Promise<CreatedSession> {
    const { store, clock, newSessionId, defaultContextWindow } = this.options;
    const template = await this.template(input.templateId);
    const now = clock();
    const sessionId = newSessionId();
    const meta: SessionMeta = {
      user_id: input.userId,
      template_id: input.templateId,
      template_name: template.name,
      system_prompt: template.personalityPrompt,
      settings: resolveGenerationSettings(template, defaultContextWindow),
      created_at: now,
    };
    await store.createSession({ id: sessionId, meta, state: { status: "active", message_count: 0, last_activity: now } });
    this.sessions.set(sessionId, { meta, tail: { messageCount: 0, messages: [] } });
    return { sessionId, meta };
  }

  async send(input: { sessionId: string; message: string }): Promise<Reply> {
    const { store, clock } = this.options;
    const receivedAt = clock();
    const [warm, state] = await Promise.all([this.warmSession(input.sessionId), store.readSessionState(input.sessionId)]);
    if (!state) throw new SessionNotFoundError(input.sessionId);
    const closed = whileActive(state);
    if (closed) throw new SessionClosedError(closed);

    const { settings, system_prompt } = warm.meta;
    const history = await this.recentMessages(input.sessionId, warm, state.message_count);
    const completion = await this.options.model().complete({
      model: settings.model,
      messages: buildPrompt(system_prompt, history, settings.context_window, input.message),
      temperature: settings.temperature,
      max_tokens: settings.max_tokens,
      presence_penalty: settings.presence_penalty,
      frequency_penalty: settings.frequency_penalty,
    });

    const answeredAt = clock();
    const exchange = {
      user: { role: "user", content: input.message, timestamp: receivedAt },
      assistant: { role: "assistant", content: completion.text, timestamp: answeredAt },
    } as const;
    const result = await store.appendExchange(input.sessionId, exchange, answeredAt, whileActive);
    if (result.kind === "not_found") throw new SessionNotFoundError(input.sessionId);
    if (result.kind === "refused") throw new SessionClosedError(result.refusal);

    // The new tail is known only when no other exchange landed between our read and our commit.
    if (result.seq === state.message_count + 1) {
      const messages = lastMessages([...history, exchange.user, exchange.assistant], settings.context_window);
      this.sessions.set(input.sessionId, { meta: warm.meta, tail: { messageCount: result.seq, messages } });
    }
    return { sessionId: input.sessionId, text: completion.text, truncated: completion.truncated, messageCount: result.state.message_count };
  }

  async end(sessionId: string): Promise<EndedSession> {
    const { store, clock } = this.options;
    const [warm, result] = await Promise.all([
      // A failed read here is retried below, after the outcome that decides the answer is known.
      this.warmSession(sessionId).catch(() => undefined),
      store.transitionState(sessionId, whileActive, (state) => {
        const now = clock();
        return { ...state, status: "ended", ended_at: now, last_activity: now };
      }),
    ]);
    if (result.kind === "not_found") throw new SessionNotFoundError(sessionId);
    if (result.kind === "refused") throw new SessionClosedError(result.refusal);
    const meta = (warm ?? (await this.warmSession(sessionId))).meta;
    return { sessionId, meta, state: result.state };
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
