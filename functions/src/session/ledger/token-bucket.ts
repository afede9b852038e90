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
  const tokensAt = (at: number) => (bucket ? Math.min(capacity, bucket.tokens + Math.max(0, at - bucket.refilled_at) * rate) : capacity);
  const tokens = tokensAt(now);
  if (tokens < 1) return { admitted: false, retryAfterMs: untilToken(tokensAt, now, rate) };
  return { admitted: true, bucket: { tokens: tokens - 1, refilled_at: Math.max(now, bucket?.refilled_at ?? now) } };
}

/**
 * How long from `now` until `tokensAt` counts a whole token, as a take then will count it. The
 * quotient alone can name an instant where the sum rounds to just under 1 (a bucket of 1 an hour,
 * empty, refills to 3,600,000 x (1 / 3,600,000) = 0.9999999999999999 after exactly an hour), and
 * the caller who waited exactly that long would be refused again: a millisecond more then.
 */
function untilToken(tokensAt: (at: number) => number, now: number, rate: number): number {
  const wait = Math.ceil((1 - tokensAt(now)) / rate);
  return tokensAt(now + wait) < 1 ? wait + 1 : wait;
}

/** Gives back a token taken for something that did not happen. */
export function returnToken(bucket: Bucket, capacity: number): Bucket {
  return { ...bucket, tokens: Math.min(capacity, bucket.tokens + 1) };
}
