import { SessionNotFoundError } from "../session/errors";
import type { TokenUsage } from "../store/records";
import { HttpError } from "./http-error";
import type { HttpRequest } from "./http-types";
import { IDEMPOTENCY_KEY_MAX_CHARS } from "./message-body";
import { isSessionId, type RouteMatch } from "./routes";

/** What every endpoint (sessions', conversations', connections') reads of a request, and writes into an answer, the same way. */

/** The session named in the path; an id this service could not have issued names nothing. */
export function sessionIdOf(route: RouteMatch): string {
  if (route.sessionId === undefined || !isSessionId(route.sessionId)) throw new SessionNotFoundError(route.sessionId ?? "");
  return route.sessionId;
}

const IDEMPOTENCY_KEY = new RegExp(`^[\\x21-\\x7e]{1,${IDEMPOTENCY_KEY_MAX_CHARS}}$`);

/** The request's `Idempotency-Key`: visible ASCII, at most 255 characters (as in the IETF draft and Stripe). */
export function idempotencyKeyOf(request: HttpRequest): string | undefined {
  const key = request.headers["idempotency-key"];
  if (key === undefined) return undefined;
  if (!IDEMPOTENCY_KEY.test(key)) {
    throw new HttpError("INVALID_IDEMPOTENCY_KEY", `Idempotency-Key must be 1 to ${IDEMPOTENCY_KEY_MAX_CHARS} visible ASCII characters`);
  }
  return key;
}

/** Marks an answer that repeats an earlier one for the same `Idempotency-Key`. */
export function replayHeaders(replayed: boolean): Record<string, string> {
  return replayed ? { "Idempotent-Replayed": "true" } : {};
}

/** Token usage as answers give it: the three counts, `estimated` when the provider reported none, and the cost where known. */
export function usageBody(usage: TokenUsage): Record<string, unknown> {
  return {
    prompt_tokens: usage.prompt_tokens,
    completion_tokens: usage.completion_tokens,
    total_tokens: usage.total_tokens,
    ...(usage.estimated ? { estimated: true } : {}),
    ...(usage.cost_usd === undefined ? {} : { cost_usd: usage.cost_usd }),
  };
}

/** A stored time (epoch ms) as answers give it. */
export function iso(epochMs: number | undefined): string | null {
  return epochMs === undefined ? null : new Date(epochMs).toISOString();
}
