/**
 * Why a model call failed, in the terms a client can act on:
 * - `timeout`: no answer within the deadline (504);
 * - `unavailable`: the provider is overloaded, rate limited, unreachable or not configured (503);
 * - `bad_response`: the provider answered with an error or with something unusable (502).
 */
export type ModelFailure = "timeout" | "unavailable" | "bad_response";

export class ModelError extends Error {
  override readonly name = "ModelError";
  constructor(
    readonly failure: ModelFailure,
    message: string,
    /** Seconds the provider asked us to wait, when it said. */
    readonly retryAfterSeconds?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
