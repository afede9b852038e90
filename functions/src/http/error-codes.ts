/**
 * Every code an API error answer carries, with what a client needs of it: the one list that
 * error-response.ts answers from (a code missing here does not compile there; the status comes
 * from here) and that the chat page reads at start, served as /error-codes.json (page/page-data.ts).
 * docs/api.md says when each is answered.
 */

/**
 * What an answer's `Retry-After` means:
 * - "wait": how long until the same request may succeed, which a client shows ("try again in
 *   N"); sent with every answer of the code, or, for the model's codes, when the provider gave one.
 * - "expiry": not a wait, since no retry of the request succeeds: SESSION_EXCHANGE_LIMIT's is
 *   when the full session expires and stops counting against the user's active sessions.
 * - "none": never sent.
 */
export type RetryAfterMeaning = "wait" | "expiry" | "none";

export interface ErrorCodeFacts {
  /** The HTTP status of every answer with this code. */
  readonly status: number;
  readonly retryAfter: RetryAfterMeaning;
}

/** By status, then as docs/api.md lists them; the connections' codes in a block of their own at the end. */
export const ERROR_CODES = {
  INVALID_REQUEST: { status: 400, retryAfter: "none" },
  INVALID_JSON: { status: 400, retryAfter: "none" },
  INVALID_IDEMPOTENCY_KEY: { status: 400, retryAfter: "none" },
  MESSAGE_TOO_LONG: { status: 400, retryAfter: "none" },
  UNAUTHENTICATED: { status: 401, retryAfter: "none" },
  APP_CHECK_REQUIRED: { status: 401, retryAfter: "none" },
  APP_CHECK_INVALID: { status: 401, retryAfter: "none" },
  FORBIDDEN: { status: 403, retryAfter: "none" },
  NOT_FOUND: { status: 404, retryAfter: "none" },
  SESSION_NOT_FOUND: { status: 404, retryAfter: "none" },
  TEMPLATE_NOT_FOUND: { status: 404, retryAfter: "none" },
  METHOD_NOT_ALLOWED: { status: 405, retryAfter: "none" },
  IDEMPOTENCY_IN_PROGRESS: { status: 409, retryAfter: "wait" },
  SESSION_ENDED: { status: 410, retryAfter: "none" },
  SESSION_EXPIRED: { status: 410, retryAfter: "none" },
  PAYLOAD_TOO_LARGE: { status: 413, retryAfter: "none" },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, retryAfter: "none" },
  IDEMPOTENCY_KEY_REUSED: { status: 422, retryAfter: "none" },
  MESSAGE_FLAGGED: { status: 422, retryAfter: "none" },
  RATE_LIMITED: { status: 429, retryAfter: "wait" },
  TOO_MANY_ACTIVE_SESSIONS: { status: 429, retryAfter: "wait" },
  SESSION_EXCHANGE_LIMIT: { status: 429, retryAfter: "expiry" },
  TOKEN_LIMIT: { status: 429, retryAfter: "wait" },
  SERVICE_TOKEN_LIMIT: { status: 429, retryAfter: "wait" },
  ADDRESS_RATE_LIMITED: { status: 429, retryAfter: "wait" },
  INTERNAL: { status: 500, retryAfter: "none" },
  DATA_ERROR: { status: 500, retryAfter: "none" },
  CONFIGURATION_ERROR: { status: 500, retryAfter: "none" },
  MODEL_ERROR: { status: 502, retryAfter: "wait" },
  MODEL_UNAVAILABLE: { status: 503, retryAfter: "wait" },
  AUTH_UNAVAILABLE: { status: 503, retryAfter: "wait" },
  APP_CHECK_UNAVAILABLE: { status: 503, retryAfter: "wait" },
  MODERATION_UNAVAILABLE: { status: 503, retryAfter: "wait" },
  DATABASE_UNAVAILABLE: { status: 503, retryAfter: "wait" },
  MODEL_TIMEOUT: { status: 504, retryAfter: "wait" },
  // A user's conversations (issue 16): a cursor not issued for this request; an erasure under way.
  INVALID_CURSOR: { status: 400, retryAfter: "none" },
  ERASURE_IN_PROGRESS: { status: 409, retryAfter: "wait" },
  // Connections between users (docs/connections.md), by status.
  CONNECTION_BLOCKED: { status: 403, retryAfter: "none" },
  CONNECTION_NOT_FOUND: { status: 404, retryAfter: "none" },
  CONNECTION_PENDING: { status: 409, retryAfter: "none" },
  CONNECTION_NOT_PENDING: { status: 409, retryAfter: "none" },
  CONNECTION_ENDED: { status: 410, retryAfter: "none" },
  CONNECTION_DECLINED: { status: 410, retryAfter: "none" },
  CONNECTION_REQUEST_LIMIT: { status: 429, retryAfter: "wait" },
} as const satisfies Readonly<Record<string, ErrorCodeFacts>>;

export type ErrorCode = keyof typeof ERROR_CODES;

/** The facts of `code`, or undefined for a string that is no code of this API. */
export function errorCodeFacts(code: string): ErrorCodeFacts | undefined {
  return Object.hasOwn(ERROR_CODES, code) ? ERROR_CODES[code as ErrorCode] : undefined;
}
