import type { FunctionsErrorCode } from "firebase-functions/v2/https";
import type { ErrorCode } from "../http/error-codes";
import { retryAfterSeconds, type ErrorAnswer } from "../http/error-response";

/**
 * The callable code of each status the API answers: the one that means the same to a Functions
 * client (and to gRPC, whose codes they are), unless CODE_OF_ERROR names one for the error's own
 * code. 409 is a concurrent request with the same key (try again later: aborted); 410 a session
 * over (failed-precondition); 422 a request understood and refused as it stands
 * (invalid-argument); 502 and 503 the provider or a dependency down (unavailable); 504 the model
 * too slow (deadline-exceeded).
 */
export const CODE_OF_STATUS: Readonly<Record<number, FunctionsErrorCode>> = {
  400: "invalid-argument",
  401: "unauthenticated",
  403: "permission-denied",
  404: "not-found",
  405: "invalid-argument",
  409: "aborted",
  410: "failed-precondition",
  413: "invalid-argument",
  415: "invalid-argument",
  422: "invalid-argument",
  429: "resource-exhausted",
  500: "internal",
  502: "unavailable",
  503: "unavailable",
  504: "deadline-exceeded",
};

/**
 * The codes whose status says something else than CODE_OF_STATUS reads in it, each with the
 * callable code it means. A connection not in the state an operation needs answers 409 over HTTP
 * (a conflict with the connection's state), but no retry passes until someone changes that state:
 * failed-precondition, as gRPC reads it ("do not retry until the system state has been fixed")
 * and as 410's session and connection states get; aborted says "retry with the same key".
 */
export const CODE_OF_ERROR: Readonly<Partial<Record<ErrorCode, FunctionsErrorCode>>> = {
  CONNECTION_PENDING: "failed-precondition",
  CONNECTION_NOT_PENDING: "failed-precondition",
};

/** What a callable error's `details` carry: the API's own code, its Retry-After in seconds, and which fields were wrong. */
export interface CallableErrorDetails {
  readonly code: string;
  readonly retry_after_seconds?: number;
  readonly fields?: ErrorAnswer["details"];
}

/**
 * A refusal or failure as a callable answers it, before it becomes the platform's HttpsError
 * (cloud-callable.ts): the code matching its status (or its own code, CODE_OF_ERROR), the message the HTTP answer gives, and in
 * `details` the project's error code (error-codes.ts says what its Retry-After means), the wait
 * the HTTP answer's Retry-After gives, and the field issues.
 */
export class CallableFailure extends Error {
  override readonly name = "CallableFailure";

  constructor(
    readonly code: FunctionsErrorCode,
    message: string,
    readonly details: CallableErrorDetails,
  ) {
    super(message);
  }
}

export function callableFailure(answer: ErrorAnswer): CallableFailure {
  const wait = retryAfterSeconds(answer);
  const details: CallableErrorDetails = {
    code: answer.code,
    ...(wait === undefined ? {} : { retry_after_seconds: wait }),
    ...(answer.details ? { fields: answer.details } : {}),
  };
  const code = CODE_OF_ERROR[answer.code] ?? CODE_OF_STATUS[answer.status] ?? (answer.status >= 500 ? "internal" : "invalid-argument");
  return new CallableFailure(code, answer.message, details);
}
