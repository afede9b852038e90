import type { Completion } from "../llm/chat-model";
import { costUsd } from "../llm/model-table";
import type { TokenUsage } from "../store/records";
import { estimateTokens } from "./token-estimate";

/**
 * A model call's usage as the ledger keeps it: as the provider reported it, or, when it reported
 * none, estimated from the prompt's estimate and the reply's text and marked so; with its list
 * price where the model that answered is listed (`Completion.model`: the name the provider
 * answered with, the one asked for when it named none). A model answering under a name not
 * listed (a compatible server's own model, the offline responder) gets no price: the one asked
 * for would be a guess.
 */
export function callUsage(completion: Completion, promptEstimate: number): TokenUsage {
  const reported = completion.usage;
  const usage = reported
    ? withTotal(reported.prompt_tokens, reported.completion_tokens, false)
    : withTotal(promptEstimate, estimateTokens(completion.text), true);
  return priced(usage, completion.model);
}

/** A usage of `prompt` and `completion` tokens, marked as an estimate when it is one. */
export function withTotal(prompt: number, completion: number, estimated: boolean): TokenUsage {
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion, ...(estimated ? { estimated: true } : {}) };
}

/** `usage` with its cost, priced as `model` (none when it is not listed). */
export function priced(usage: TokenUsage, model: string): TokenUsage {
  const cost = costUsd(model, usage.prompt_tokens, usage.completion_tokens);
  return cost === undefined ? usage : { ...usage, cost_usd: cost };
}
