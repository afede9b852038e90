import { SessionNotFoundError } from "../session/errors";
import type { TokenUsage } from "../store/records";
import { isSessionId, type RouteMatch } from "./routes";

/** What every endpoint reads of a request, and writes into an answer, the same way. */

/** The session named in the path; an id this service could not have issued names nothing. */
export function sessionIdOf(route: RouteMatch): string {
  if (route.sessionId === undefined || !isSessionId(route.sessionId)) throw new SessionNotFoundError(route.sessionId ?? "");
  return route.sessionId;
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

export function iso(epochMs: number | undefined): string | null {
  return epochMs === undefined ? null : new Date(epochMs).toISOString();
}
