import type { ChatMessage, Exchange, SessionMeta, SessionState, Template } from "./records";

/**
 * Decides, from the current stored state, whether a change may happen. It runs inside the
 * store's atomic section (a database transaction handler), so it must be synchronous, pure
 * and cheap: it can run several times under contention. Returns a refusal to abort.
 */
export type StateGuard<R> = (state: SessionState) => R | undefined;

export type AppendResult<R> =
  | { readonly kind: "appended"; readonly seq: number; readonly state: SessionState }
  | { readonly kind: "refused"; readonly refusal: R; readonly state: SessionState }
  | { readonly kind: "not_found" };

export type TransitionResult<R> =
  | { readonly kind: "changed"; readonly state: SessionState }
  | { readonly kind: "refused"; readonly refusal: R; readonly state: SessionState }
  | { readonly kind: "not_found" };

export interface NewSession {
  readonly id: string;
  readonly meta: SessionMeta;
  readonly state: SessionState;
}

/**
 * The port through which the session module reaches its database. Every method is
 * atomic on its own; none leaves a half-written session behind when it fails.
 */
export interface SessionStore {
  readTemplate(templateId: string): Promise<Template | null>;

  /** Writes `templates` that are not stored yet; existing ones are left untouched. */
  seedTemplates(templates: Readonly<Record<string, Template>>): Promise<string[]>;

  createSession(session: NewSession): Promise<void>;

  /** The fields fixed at creation. Safe to cache: they never change. */
  readSessionMeta(sessionId: string): Promise<SessionMeta | null>;

  /** The current mutable state, always read from the database. */
  readSessionState(sessionId: string): Promise<SessionState | null>;

  /** The last `limit` stored messages, oldest first. Reads at most `limit` messages. */
  readRecentMessages(sessionId: string, limit: number): Promise<ChatMessage[]>;

  /**
   * Atomically: if the session exists and `guard` accepts its state, stores both messages
   * of the exchange under the next sequence number, increments `message_count` and sets
   * `last_activity` to `at`. Concurrent appends are serialised, none is lost.
   */
  appendExchange<R>(sessionId: string, exchange: Exchange, at: number, guard: StateGuard<R>): Promise<AppendResult<R>>;

  /** Atomically: if `guard` accepts the current state, replaces it with `next(state)`. */
  transitionState<R>(
    sessionId: string,
    guard: StateGuard<R>,
    next: (state: SessionState) => SessionState,
  ): Promise<TransitionResult<R>>;
}
