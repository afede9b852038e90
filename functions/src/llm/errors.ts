/**
 * Why a model call failed, in the terms a client can act on:
 * - `timeout`: no answer within the deadline (504);
 * - `unavailable`: the provider is overloaded, rate limited, unreachable or not configured (503);
 * - `bad_response`: the provider answered with an error or with something unusable (502).
 */
export type ModelFailure = "timeout" | "unavailable" | "bad_response";

/**
 * The longest wait a model failure passes on: a day, as long as a `TOKEN_LIMIT` wait (until the
 * next UTC day) can be. A provider may ask for longer (a quota reset next month) or for nonsense
 * (24 digits, read as 1e24 or Infinity, which no `Retry-After` of whole seconds can carry: RFC 9110
 * 10.2.3); past a day the client is told a day, and may ask again then.
 */
export const MAX_RETRY_AFTER_MS = 86_400_000;

export class ModelError extends Error {
  override readonly name = "ModelError";
  /** Milliseconds the provider asked us to wait, when it said: at most MAX_RETRY_AFTER_MS. */
  readonly retryAfterMs: number | undefined;
  /** Whether the same call may succeed if tried again. */
  readonly retryable: boolean;

  constructor(
    readonly failure: ModelFailure,
    message: string,
    options: { retryAfterMs?: number; retryable?: boolean; cause?: unknown } = {},
  ) {
    super(message, { cause: options.cause });
    const wait = options.retryAfterMs;
    this.retryAfterMs = wait === undefined || Number.isNaN(wait) ? undefined : Math.min(Math.max(0, wait), MAX_RETRY_AFTER_MS);
    this.retryable = options.retryable ?? failure !== "bad_response";
  }

  /** Whole seconds for a `Retry-After` header, when the provider said. */
  get retryAfterSeconds(): number | undefined {
    return this.retryAfterMs === undefined ? undefined : Math.max(1, Math.ceil(this.retryAfterMs / 1000));
  }
}

/**
 * The caller gave up on the call (its `signal` aborted). A timeout as far as a client can tell,
 * but never retried: the caller no longer waits for the answer.
 */
export function abandonedError(cause: unknown): ModelError {
  return new ModelError("timeout", "the call was abandoned", { retryable: false, cause });
}
