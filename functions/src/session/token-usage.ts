import { roundUsd } from "../llm/model-table";
import type { TokenUsage } from "../store/records";

/** No tokens yet: the start of a session's totals. */
export const NO_USAGE: TokenUsage = { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 };

/**
 * Two usages added up: an estimate anywhere makes the sum an estimate, and a cost is summed
 * where either has one (a call of an unlisted model adds tokens and no cost).
 */
export function addUsage(a: TokenUsage, b: TokenUsage): TokenUsage {
  const cost = a.cost_usd === undefined && b.cost_usd === undefined ? undefined : roundUsd((a.cost_usd ?? 0) + (b.cost_usd ?? 0));
  return {
    prompt_tokens: a.prompt_tokens + b.prompt_tokens,
    completion_tokens: a.completion_tokens + b.completion_tokens,
    total_tokens: a.total_tokens + b.total_tokens,
    ...(a.estimated || b.estimated ? { estimated: true } : {}),
    ...(cost === undefined ? {} : { cost_usd: cost }),
  };
}
