import type { UserUsage } from "../store/records";
import type { UsageRule } from "../store/session-store";

/**
 * Per-user limits, as pure rules over the user's usage record, which the store applies in a
 * transaction: every instance counts against the same record, so a limit holds however many
 * instances serve the user at once.
 */

export interface UsagePolicy {
  /** Messages a user may send per minute: a token bucket of this size, refilled over a minute. */
  readonly messagesPerMinute: number;
  readonly maxActiveSessions: number;
  /** A session not used for this long is expired, and no longer counts as active. */
  readonly idleTtlMs: number;
}

export type Admission = { readonly admitted: true } | { readonly admitted: false; readonly retryAfterMs: number };

const MINUTE = 60_000;

/** Takes one message token for `sessionId`, or says when the next token comes. */
export function admitMessage(sessionId: string, now: number, policy: UsagePolicy): UsageRule<Admission> {
  return (usage) => {
    const rate = policy.messagesPerMinute / MINUTE;
    const elapsed = usage ? Math.max(0, now - usage.refilled_at) : 0;
    const tokens = usage ? Math.min(policy.messagesPerMinute, usage.tokens + elapsed * rate) : policy.messagesPerMinute;
    if (tokens < 1) return { outcome: { admitted: false, retryAfterMs: Math.ceil((1 - tokens) / rate) } };
    return {
      outcome: { admitted: true },
      next: { tokens: tokens - 1, refilled_at: Math.max(now, usage?.refilled_at ?? now), sessions: { ...liveSessions(usage, now, policy), [sessionId]: now } },
    };
  };
}

/** Gives back a message token taken for a request that was then refused (it never reached the model). */
export function refundMessage(policy: UsagePolicy): UsageRule<undefined> {
  return (usage) => {
    if (!usage) return { outcome: undefined };
    return { outcome: undefined, next: { ...usage, tokens: Math.min(policy.messagesPerMinute, usage.tokens + 1) } };
  };
}

/** Counts `sessionId` as active for the user, unless that would exceed the limit (then: when a slot frees). */
export function admitSession(sessionId: string, now: number, policy: UsagePolicy): UsageRule<Admission> {
  return (usage) => {
    const live = liveSessions(usage, now, policy);
    if (sessionId in live) return { outcome: { admitted: true } };
    const active = Object.values(live);
    if (active.length >= policy.maxActiveSessions) {
      const nextExpiry = Math.min(...active) + policy.idleTtlMs;
      return { outcome: { admitted: false, retryAfterMs: Math.max(1_000, nextExpiry - now) } };
    }
    const base = usage ?? { tokens: policy.messagesPerMinute, refilled_at: now };
    return { outcome: { admitted: true }, next: { ...base, sessions: { ...live, [sessionId]: now } } };
  };
}

/** Stops counting a session that ended. */
export function releaseSession(sessionId: string): UsageRule<undefined> {
  return (usage) => {
    if (!usage?.sessions || !(sessionId in usage.sessions)) return { outcome: undefined };
    const { [sessionId]: released, ...others } = usage.sessions;
    return { outcome: undefined, next: { ...usage, sessions: others } };
  };
}

/**
 * The sessions still counted: those used within the idle TTL. A session idle longer is expired
 * by definition, whether or not the sweep has marked it yet; an end whose release was lost
 * stops counting once the TTL has passed.
 */
function liveSessions(usage: UserUsage | null, now: number, policy: UsagePolicy): Record<string, number> {
  return Object.fromEntries(Object.entries(usage?.sessions ?? {}).filter(([, lastActivity]) => now - lastActivity <= policy.idleTtlMs));
}
