import { ConfigError } from "../config";
import { ModelError } from "../llm/errors";
import { AppCheckInvalidError, AppCheckRequiredError, AppCheckUnavailableError } from "../auth/app-check";
import { IdentityUnavailableError, InvalidTokenError } from "../auth/identity";
import { MessageFlaggedError, ModerationUnavailableError } from "../llm/moderation";
import {
  ForbiddenError,
  IdempotencyInProgressError,
  IdempotencyKeyReusedError,
  LimitExceededError,
  PromptTooLargeError,
  SessionClosedError,
  SessionNotFoundError,
  TemplateNotFoundError,
  type Limit,
} from "../session/errors";
import { StoreDataError, StoreUnavailableError } from "../store/errors";
import { HttpError, type FieldIssue } from "./http-error";
import type { HttpResponse } from "./http-types";

export interface ErrorAnswer {
  readonly status: number;
  readonly code: string;
  /** Safe to show a client: never a stack, a secret or a provider's raw message. */
  readonly message: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly details?: readonly FieldIssue[];
}

const MODEL_STATUS = { timeout: 504, unavailable: 503, bad_response: 502 } as const;
const MODEL_CODE = { timeout: "MODEL_TIMEOUT", unavailable: "MODEL_UNAVAILABLE", bad_response: "MODEL_ERROR" } as const;

const LIMIT_CODE: Record<Limit, string> = {
  messages: "RATE_LIMITED",
  sessions: "TOO_MANY_ACTIVE_SESSIONS",
  exchanges: "SESSION_EXCHANGE_LIMIT",
  tokens: "TOKEN_LIMIT",
  service: "SERVICE_TOKEN_LIMIT",
  address: "ADDRESS_RATE_LIMITED",
};
const LIMIT_MESSAGE: Record<Limit, string> = {
  messages: "Too many messages; retry after the time given in Retry-After",
  sessions: "Too many active sessions; end one, or retry after the time given in Retry-After",
  exchanges: "This session reached its maximum number of exchanges; start a new session",
  tokens: "The daily token limit is reached; retry after the time given in Retry-After (the next UTC day)",
  service: "The service's daily capacity is used up; retry after the time given in Retry-After (the next UTC day)",
  address: "Too many new sessions from this network; retry after the time given in Retry-After, or sign in",
};

/** The one place where failures become HTTP statuses. */
export function toErrorAnswer(error: unknown): ErrorAnswer {
  if (error instanceof HttpError) {
    return { status: error.status, code: error.code, message: error.message, headers: error.headers, details: error.details };
  }
  if (error instanceof InvalidTokenError) {
    return answer(401, "UNAUTHENTICATED", "A valid Firebase ID token is required (Authorization: Bearer <token>)", {
      "WWW-Authenticate": 'Bearer error="invalid_token"',
    });
  }
  if (error instanceof IdentityUnavailableError) return answer(503, "AUTH_UNAVAILABLE", "The ID token could not be verified; try again shortly", { "Retry-After": "1" });
  if (error instanceof AppCheckRequiredError) {
    return answer(401, "APP_CHECK_REQUIRED", "An App Check token is required (X-Firebase-AppCheck header, from the Firebase App Check SDK)");
  }
  if (error instanceof AppCheckInvalidError) {
    return answer(401, "APP_CHECK_INVALID", "The App Check token is not valid; get a fresh one from the Firebase App Check SDK");
  }
  if (error instanceof AppCheckUnavailableError) {
    return answer(503, "APP_CHECK_UNAVAILABLE", "The App Check token could not be verified; try again shortly", { "Retry-After": "1" });
  }
  if (error instanceof ForbiddenError) return answer(403, "FORBIDDEN", "Not allowed for the signed-in user");
  if (error instanceof LimitExceededError) {
    return answer(429, LIMIT_CODE[error.limit], LIMIT_MESSAGE[error.limit], { "Retry-After": String(error.retryAfterSeconds) });
  }
  if (error instanceof PromptTooLargeError) {
    return answer(400, "MESSAGE_TOO_LONG", `The message is too long for this model: ${error.message}`);
  }
  if (error instanceof SessionNotFoundError) return answer(404, "SESSION_NOT_FOUND", "Session not found");
  if (error instanceof TemplateNotFoundError) return answer(404, "TEMPLATE_NOT_FOUND", `Template "${error.templateId}" not found`);
  if (error instanceof SessionClosedError) {
    return error.status === "expired"
      ? answer(410, "SESSION_EXPIRED", "Session expired; start a new session")
      : answer(410, "SESSION_ENDED", "Session has ended; start a new session");
  }
  if (error instanceof IdempotencyKeyReusedError) {
    return answer(422, "IDEMPOTENCY_KEY_REUSED", "This Idempotency-Key was already used with a different request body");
  }
  if (error instanceof IdempotencyInProgressError) {
    return answer(409, "IDEMPOTENCY_IN_PROGRESS", "A request with this Idempotency-Key is still in progress; retry later", {
      "Retry-After": String(error.retryAfterSeconds),
    });
  }
  if (error instanceof MessageFlaggedError) return answer(422, "MESSAGE_FLAGGED", "The message was flagged by moderation and was not sent");
  if (error instanceof ModerationUnavailableError) {
    return answer(503, "MODERATION_UNAVAILABLE", "The message could not be checked by moderation; try again shortly", { "Retry-After": "1" });
  }
  if (error instanceof ModelError) {
    const headers: Record<string, string> = error.retryAfterSeconds === undefined ? {} : { "Retry-After": String(error.retryAfterSeconds) };
    return answer(MODEL_STATUS[error.failure], MODEL_CODE[error.failure], `Model error: ${error.message}`, headers);
  }
  if (error instanceof StoreUnavailableError) {
    return answer(503, "DATABASE_UNAVAILABLE", "The database is unavailable; try again shortly", { "Retry-After": "1" });
  }
  if (error instanceof StoreDataError) return answer(500, "DATA_ERROR", "Stored data is invalid");
  if (error instanceof ConfigError) return answer(500, "CONFIGURATION_ERROR", "The service is misconfigured");
  return answer(500, "INTERNAL", "Internal error");
}

function answer(status: number, code: string, message: string, headers: Record<string, string> = {}): ErrorAnswer {
  return { status, code, message, headers };
}

export function errorBody(answer: ErrorAnswer): Record<string, unknown> {
  const error = answer.details ? { code: answer.code, message: answer.message, details: answer.details } : { code: answer.code, message: answer.message };
  return { success: false, error };
}

/** A failure as the JSON answer every boundary gives it. */
export function errorResponse(error: unknown): HttpResponse {
  const answer = toErrorAnswer(error);
  return { status: answer.status, headers: answer.headers, body: errorBody(answer) };
}
