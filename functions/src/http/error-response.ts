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
import { ErasureInProgressError } from "../session/erasure/erasure-errors";
import { StoreDataError, StoreUnavailableError } from "../store/errors";
import {
  ConnectionBlockedError,
  ConnectionClosedError,
  ConnectionNotFoundError,
  ConnectionNotPendingError,
  ConnectionPendingError,
  ConnectionRequestLimitError,
} from "../connections/errors";
import { ERROR_CODES, type ErrorCode } from "./error-codes";
import { HttpError, type FieldIssue } from "./http-error";
import type { HttpResponse } from "./http-types";

export interface ErrorAnswer {
  readonly status: number;
  readonly code: ErrorCode;
  /** Safe to show a client: never a stack, a secret or a provider's raw message. */
  readonly message: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly details?: readonly FieldIssue[];
}

const MODEL_CODE = { timeout: "MODEL_TIMEOUT", unavailable: "MODEL_UNAVAILABLE", bad_response: "MODEL_ERROR" } as const satisfies Record<ModelError["failure"], ErrorCode>;

const LIMIT_CODE: Record<Limit, ErrorCode> = {
  messages: "RATE_LIMITED",
  sessions: "TOO_MANY_ACTIVE_SESSIONS",
  exchanges: "SESSION_EXCHANGE_LIMIT",
  tokens: "TOKEN_LIMIT",
  service: "SERVICE_TOKEN_LIMIT",
  address: "ADDRESS_RATE_LIMITED",
};
/**
 * Said as is by clients (the chat page shows it beside the wait it words from Retry-After), so
 * none names a wait of its own: the daily limits' is the next UTC day, or seconds when only
 * messages still running keep the message out (session/ledger/limits.ts untilTokensFree, service-cap.ts).
 */
const LIMIT_MESSAGE: Record<Limit, string> = {
  messages: "Too many messages; retry after the time given in Retry-After",
  sessions: "Too many active sessions; end one, or retry after the time given in Retry-After",
  exchanges: "This session reached its maximum number of exchanges; start a new session",
  tokens: "The daily token limit is reached; retry after the time given in Retry-After",
  service: "The service's daily capacity is used up; retry after the time given in Retry-After",
  address: "Too many new sessions from this network; retry after the time given in Retry-After, or sign in",
};

/** The one place where failures become codes, each with its status from the shared list (error-codes.ts). */
export function toErrorAnswer(error: unknown): ErrorAnswer {
  if (error instanceof HttpError) {
    return { ...answer(error.code, error.message, error.headers), details: error.details };
  }
  if (error instanceof InvalidTokenError) {
    return answer("UNAUTHENTICATED", "A valid Firebase ID token is required (Authorization: Bearer <token>)", {
      "WWW-Authenticate": 'Bearer error="invalid_token"',
    });
  }
  if (error instanceof IdentityUnavailableError) return answer("AUTH_UNAVAILABLE", "The ID token could not be verified; try again shortly", { "Retry-After": "1" });
  if (error instanceof AppCheckRequiredError) {
    return answer("APP_CHECK_REQUIRED", "An App Check token is required (X-Firebase-AppCheck header, from the Firebase App Check SDK)");
  }
  if (error instanceof AppCheckInvalidError) {
    return answer("APP_CHECK_INVALID", "The App Check token is not valid; get a fresh one from the Firebase App Check SDK");
  }
  if (error instanceof AppCheckUnavailableError) {
    return answer("APP_CHECK_UNAVAILABLE", "The App Check token could not be verified; try again shortly", { "Retry-After": "1" });
  }
  if (error instanceof ForbiddenError) return answer("FORBIDDEN", "Not allowed for the signed-in user");
  if (error instanceof LimitExceededError) {
    return answer(LIMIT_CODE[error.limit], LIMIT_MESSAGE[error.limit], { "Retry-After": String(error.retryAfterSeconds) });
  }
  if (error instanceof PromptTooLargeError) {
    return answer("MESSAGE_TOO_LONG", `The message is too long for this model: ${error.message}`);
  }
  if (error instanceof SessionNotFoundError) return answer("SESSION_NOT_FOUND", "Session not found");
  if (error instanceof TemplateNotFoundError) return answer("TEMPLATE_NOT_FOUND", `Template "${error.templateId}" not found`);
  if (error instanceof SessionClosedError) {
    return error.status === "expired"
      ? answer("SESSION_EXPIRED", "Session expired; start a new session")
      : answer("SESSION_ENDED", "Session has ended; start a new session");
  }
  if (error instanceof IdempotencyKeyReusedError) {
    return answer("IDEMPOTENCY_KEY_REUSED", "This Idempotency-Key was already used with a different request body");
  }
  if (error instanceof IdempotencyInProgressError) {
    return answer("IDEMPOTENCY_IN_PROGRESS", "A request with this Idempotency-Key is still in progress; retry later", {
      "Retry-After": String(error.retryAfterSeconds),
    });
  }
  if (error instanceof ConnectionNotFoundError) return answer("CONNECTION_NOT_FOUND", "Connection not found");
  if (error instanceof ConnectionBlockedError) return answer("CONNECTION_BLOCKED", "One of the two users blocks the other: no requests or messages between them");
  if (error instanceof ConnectionPendingError) return answer("CONNECTION_PENDING", "The connection is not accepted yet; messages can be sent once the other user accepts it");
  if (error instanceof ConnectionNotPendingError) return answer("CONNECTION_NOT_PENDING", "The connection is not a pending request; end it instead");
  if (error instanceof ConnectionClosedError) {
    return error.status === "declined"
      ? answer("CONNECTION_DECLINED", "The connection was declined; ask again for a new one")
      : answer("CONNECTION_ENDED", "The connection has ended; its messages stay readable; ask again for a new one");
  }
  if (error instanceof ConnectionRequestLimitError) {
    return answer("CONNECTION_REQUEST_LIMIT", "Too many connection requests; retry after the time given in Retry-After", { "Retry-After": String(error.retryAfterSeconds) });
  }
  if (error instanceof MessageFlaggedError) return answer("MESSAGE_FLAGGED", "The message was flagged by moderation and was not sent");
  if (error instanceof ModerationUnavailableError) {
    return answer("MODERATION_UNAVAILABLE", "The message could not be checked by moderation; try again shortly", { "Retry-After": "1" });
  }
  if (error instanceof ModelError) {
    const headers: Record<string, string> = error.retryAfterSeconds === undefined ? {} : { "Retry-After": String(error.retryAfterSeconds) };
    return answer(MODEL_CODE[error.failure], `Model error: ${error.message}`, headers);
  }
  if (error instanceof ErasureInProgressError) {
    return answer("ERASURE_IN_PROGRESS", "This user's data is being erased; retry after the time given in Retry-After", {
      "Retry-After": String(error.retryAfterSeconds),
    });
  }
  if (error instanceof StoreUnavailableError) {
    return answer("DATABASE_UNAVAILABLE", "The database is unavailable; try again shortly", { "Retry-After": "1" });
  }
  if (error instanceof StoreDataError) return answer("DATA_ERROR", "Stored data is invalid");
  if (error instanceof ConfigError) return answer("CONFIGURATION_ERROR", "The service is misconfigured");
  return answer("INTERNAL", "Internal error");
}

function answer(code: ErrorCode, message: string, headers: Readonly<Record<string, string>> = {}): ErrorAnswer {
  return { status: ERROR_CODES[code].status, code, message, headers };
}

export function errorBody(answer: ErrorAnswer): Record<string, unknown> {
  const error = answer.details ? { code: answer.code, message: answer.message, details: answer.details } : { code: answer.code, message: answer.message };
  return { success: false, error };
}

/**
 * A failure as a streamed answer's last `error` event carries it: the JSON body, its error with
 * `retry_after_seconds` where the answer's Retry-After gives a wait (an event has no headers of
 * its own, and the status line went out with the first delta; the callables' details name it so).
 */
export function errorEventBody(answer: ErrorAnswer): Record<string, unknown> {
  const wait = retryAfterSeconds(answer);
  if (wait === undefined) return errorBody(answer);
  const { error } = errorBody(answer) as { error: Record<string, unknown> };
  return { success: false, error: { ...error, retry_after_seconds: wait } };
}

/** The wait an answer's Retry-After gives, in seconds, where it has one: what answers without headers of their own carry (an `error` event, a callable's details). */
export function retryAfterSeconds(answer: ErrorAnswer): number | undefined {
  const retryAfter = answer.headers["Retry-After"];
  return retryAfter === undefined ? undefined : Number(retryAfter);
}

/** A failure as the JSON answer every boundary gives it. */
export function errorResponse(error: unknown): HttpResponse {
  const answer = toErrorAnswer(error);
  return { status: answer.status, headers: answer.headers, body: errorBody(answer) };
}
