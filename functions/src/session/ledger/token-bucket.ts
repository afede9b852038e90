/**
 * A token bucket as a pure function of its stored value: `capacity` tokens, refilled evenly over
 * `periodMs`. The per-address session limit, a connection's messages per minute and a user's
 * connection requests per hour are each one, kept in the database so that they hold across instances.
 */
export interface Bucket {
  readonly tokens: number;
  readonly refilled_at: number;
}

export type Took = { readonly admitted: true; readonly bucket: Bucket } | { readonly admitted: false; readonly retryAfterMs: number };

/** Takes one token from `bucket` (full when absent) as of `now`, or says how long until one is there. */
export function takeToken(bucket: Bucket | null | undefined, now: number, capacity: number, periodMs: number): Took {
  const rate = capacity / periodMs;
  const elapsed = bucket ? Math.max(0, now - bucket.refilled_at) : 0;
  const tokens = bucket ? Math.min(capacity, bucket.tokens + elapsed * rate) : capacity;
  if (tokens < 1) return { admitted: false, retryAfterMs: Math.ceil((1 - tokens) / rate) };
  return { admitted: true, bucket: { tokens: tokens - 1, refilled_at: Math.max(now, bucket?.refilled_at ?? now) } };
}

/** Gives back a token taken for something that did not happen. */
export function returnToken(bucket: Bucket, capacity: number): Bucket {
  return { ...bucket, tokens: Math.min(capacity, bucket.tokens + 1) };
}
