import { roundUsd } from "../../llm/model-table";
import type { TokenUsage } from "../../store/records";

/** No tokens yet: the start of a session's totals. */
export const NO_USAGE: TokenUsage = { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 };

/**
 * Two usages added up: an estimate anywhere makes the sum an estimate, and a cost is summed
 * where either has one (a call of an unlisted model adds tokens and no cost).
 */
export function addUsage(a: TokenUsage, b: TokenUsage): TokenUsage {
  const cost = a.cost_usd === undefined && b.cost_usd === undefined ? undefined : roundUsd((a.cost_usd ?? 0) + (b.cost_usd ?? 0));
  return {
    prompt_tokens: addCounts(a.prompt_tokens, b.prompt_tokens),
    completion_tokens: addCounts(a.completion_tokens, b.completion_tokens),
    total_tokens: addCounts(a.total_tokens, b.total_tokens),
    ...(a.estimated || b.estimated ? { estimated: true } : {}),
    ...(cost === undefined ? {} : { cost_usd: cost }),
  };
}

/**
 * A count the ledger stores, summed: never past the safe integer range, where a stored count no
 * longer parses as one (a session whose totals did would fail every later request).
 */
export function addCounts(a: number, b: number): number {
  return Math.min(Number.MAX_SAFE_INTEGER, a + b);
}
