import type { UsageRule } from "../store/session-store";
import { ERASING_RETRY_MS } from "../session/ledger/limits";
import { returnToken, takeToken } from "../session/ledger/token-bucket";

/**
 * A user's requests for connections, per hour (CONNECTION_REQUESTS_PER_HOUR): each request
 * notifies a stranger's phone, so nobody may send many. A token bucket in the user's usage record,
 * the one the AI side's limits are kept in (`userUsage/{userKey}`), beside its buckets.
 */

const HOUR = 3_600_000;

export type RequestAdmission = { readonly admitted: true } | { readonly admitted: false; readonly retryAfterMs: number; readonly erasing?: true };

/**
 * Takes one request from the user's bucket, or says when to retry. A record made here starts with
 * the AI side's message bucket full (`messagesPerMinute`), as one made by a session's admission does.
 * Refused while the user's data is being erased, as their new sessions are (session/erasure/).
 */
export function takeRequest(now: number, perHour: number, messagesPerMinute: number): UsageRule<RequestAdmission> {
  return (usage) => {
    if (usage?.erasing !== undefined) return { outcome: { admitted: false, retryAfterMs: ERASING_RETRY_MS, erasing: true } };
    const took = takeToken(usage?.connection_requests, now, perHour, HOUR);
    if (!took.admitted) return { outcome: took };
    const base = usage ?? { tokens: messagesPerMinute, refilled_at: now };
    return { outcome: { admitted: true }, next: { ...base, connection_requests: took.bucket } };
  };
}

/** Gives back the request of one that asked for nothing new (the pair's connection answered it). */
export function returnRequest(perHour: number): UsageRule<undefined> {
  return (usage) => {
    const bucket = usage?.connection_requests;
    return usage && bucket ? { outcome: undefined, next: { ...usage, connection_requests: returnToken(bucket, perHour) } } : { outcome: undefined };
  };
}
