/**
 * Why a model call failed, in the terms a client can act on:
 * - `timeout`: no answer within the deadline (504);
 * - `unavailable`: the provider is overloaded, rate limited, unreachable or not configured (503);
 * - `bad_response`: the provider answered with an error or with something unusable (502).
 */
export type ModelFailure = "timeout" | "unavailable" | "bad_response";

export class ModelError extends Error {
  override readonly name = "ModelError";
  /** Milliseconds the provider asked us to wait, when it said. */
  readonly retryAfterMs: number | undefined;
  /** Whether the same call may succeed if tried again. */
  readonly retryable: boolean;

  constructor(
    readonly failure: ModelFailure,
    message: string,
    options: { retryAfterMs?: number; retryable?: boolean; cause?: unknown } = {},
  ) {
    super(message, { cause: options.cause });
    this.retryAfterMs = options.retryAfterMs;
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
