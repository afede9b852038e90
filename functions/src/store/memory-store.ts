import type { ChatMessage, Exchange, SessionMeta, SessionState, Template } from "./records";
import type { AppendResult, NewSession, SessionStore, StateGuard, TransitionResult } from "./session-store";

interface StoredSession {
  readonly meta: SessionMeta;
  state: SessionState;
  readonly messages: ChatMessage[];
}

/**
 * The embedded store behind `npm start` without a database, and the reference adapter of
 * the store contract. Each method completes synchronously inside one turn of the event loop,
 * which is what makes it atomic; values are copied in and out so callers never share state.
 */
export class MemoryStore implements SessionStore {
  private readonly templates = new Map<string, Template>();
  private readonly sessions = new Map<string, StoredSession>();

  async readTemplate(templateId: string): Promise<Template | null> {
    return copy(this.templates.get(templateId) ?? null);
  }

  async seedTemplates(templates: Readonly<Record<string, Template>>): Promise<string[]> {
    const written: string[] = [];
    for (const [id, template] of Object.entries(templates)) {
      if (this.templates.has(id)) continue;
      this.templates.set(id, copy(template));
      written.push(id);
    }
    return written;
  }

  async createSession(session: NewSession): Promise<void> {
    if (this.sessions.has(session.id)) throw new Error(`session ${session.id} already exists`);
    this.sessions.set(session.id, { meta: copy(session.meta), state: copy(session.state), messages: [] });
  }

  async readSessionMeta(sessionId: string): Promise<SessionMeta | null> {
    return copy(this.sessions.get(sessionId)?.meta ?? null);
  }

  async readSessionState(sessionId: string): Promise<SessionState | null> {
    return copy(this.sessions.get(sessionId)?.state ?? null);
  }

  async readRecentMessages(sessionId: string, limit: number): Promise<ChatMessage[]> {
    const messages = this.sessions.get(sessionId)?.messages ?? [];
    return limit <= 0 ? [] : copy(messages.slice(-limit));
  }

  async appendExchange<R>(sessionId: string, exchange: Exchange, at: number, guard: StateGuard<R>): Promise<AppendResult<R>> {
    const session = this.sessions.get(sessionId);
    if (!session) return { kind: "not_found" };
    const refusal = guard(session.state);
    if (refusal !== undefined) return { kind: "refused", refusal, state: copy(session.state) };
    session.messages.push(copy(exchange.user), copy(exchange.assistant));
    session.state = {
      ...session.state,
      message_count: session.state.message_count + 1,
      last_activity: Math.max(session.state.last_activity, at),
    };
    return { kind: "appended", seq: session.state.message_count, state: copy(session.state) };
  }

  async transitionState<R>(
    sessionId: string,
    guard: StateGuard<R>,
    next: (state: SessionState) => SessionState,
  ): Promise<TransitionResult<R>> {
    const session = this.sessions.get(sessionId);
    if (!session) return { kind: "not_found" };
    const refusal = guard(session.state);
    if (refusal !== undefined) return { kind: "refused", refusal, state: copy(session.state) };
    session.state = copy(next(session.state));
    return { kind: "changed", state: copy(session.state) };
  }
}

function copy<T>(value: T): T {
  return structuredClone(value);
}
