import { HttpError } from "./http-error";
import type { HttpRequest } from "./http-types";

/** What every endpoint reads of a request and writes in an answer alike: sessions' and connections'. */

/** The request's `Idempotency-Key`: visible ASCII, at most 255 characters (as in the IETF draft and Stripe). */
export function idempotencyKeyOf(request: HttpRequest): string | undefined {
  const key = request.headers["idempotency-key"];
  if (key === undefined) return undefined;
  if (!/^[\x21-\x7e]{1,255}$/.test(key)) {
    throw new HttpError("INVALID_IDEMPOTENCY_KEY", "Idempotency-Key must be 1 to 255 visible ASCII characters");
  }
  return key;
}

/** Marks an answer that repeats an earlier one for the same `Idempotency-Key`. */
export function replayHeaders(replayed: boolean): Record<string, string> {
  return replayed ? { "Idempotent-Replayed": "true" } : {};
}

/** A stored time (epoch ms) as answers give it. */
export function iso(epochMs: number | undefined): string | null {
  return epochMs === undefined ? null : new Date(epochMs).toISOString();
}
