import type { SessionStatus } from "../store/records";

export class SessionNotFoundError extends Error {
  override readonly name = "SessionNotFoundError";
  constructor(readonly sessionId: string) {
    super("session not found");
  }
}

export class TemplateNotFoundError extends Error {
  override readonly name = "TemplateNotFoundError";
  constructor(readonly templateId: string) {
    super(`template "${templateId}" not found`);
  }
}

/** The session no longer accepts changes: it was ended or it expired. */
export class SessionClosedError extends Error {
  override readonly name = "SessionClosedError";
  constructor(readonly status: Exclude<SessionStatus, "active">) {
    super(`session has ${status}`);
  }
}

/** An `Idempotency-Key` reused with a different request body. */
export class IdempotencyKeyReusedError extends Error {
  override readonly name = "IdempotencyKeyReusedError";
  constructor() {
    super("this Idempotency-Key was used with a different request");
  }
}

/** The first request with this `Idempotency-Key` is still running after the wait allowed. */
export class IdempotencyInProgressError extends Error {
  override readonly name = "IdempotencyInProgressError";
  constructor(readonly retryAfterSeconds: number) {
    super("a request with this Idempotency-Key is still in progress");
  }
}

/** The caller is signed in as someone else than the user this request acts for. */
export class ForbiddenError extends Error {
  override readonly name = "ForbiddenError";
}

/** `service`: the deployment-wide daily cap; `address`: sessions one network address may create per hour. */
export type Limit = "messages" | "sessions" | "exchanges" | "tokens" | "service" | "address";

/** A usage limit is reached; nothing was stored and the model was not called. */
export class LimitExceededError extends Error {
  override readonly name = "LimitExceededError";
  constructor(
    readonly limit: Limit,
    readonly retryAfterSeconds: number,
  ) {
    super(`${limit} limit reached`);
  }
}

/** The message, with the system prompt, room for the reply and for a summary (if the session keeps one), does not fit the model's whole context. */
export class PromptTooLargeError extends Error {
  override readonly name = "PromptTooLargeError";
  constructor(
    readonly estimatedTokens: number,
    readonly contextTokens: number,
  ) {
    super(`the message needs about ${estimatedTokens} tokens with the system prompt, a summary (if the session keeps one) and the reply; the model takes ${contextTokens}`);
  }
}
