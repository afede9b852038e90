import type { Completion } from "../../llm/chat-model";
import { costUsd, modelFacts } from "../../llm/model-table";
import type { TokenUsage } from "../../store/records";
import { estimateTokens } from "../prompt/token-estimate";
import { addCounts, addUsage } from "./token-usage";

/**
 * How far above the service's own estimate of a prompt a reported prompt count is still believed,
 * and how far below it. The estimate never counts low on the o200k corpus (at most 2.75x the true
 * count, median 1.19x: docs/tokens.md), so a true o200k count stays between 1/2.75x and 1x; 4x
 * either way leaves room for other tokenizers (a compatible server's model with a smaller or a
 * larger vocabulary) and `PROMPT_BOUND_SLACK` for framing that a server may count and the
 * estimate does not.
 */
export const PROMPT_BOUND_FACTOR = 4;
export const PROMPT_BOUND_SLACK = 256;

/** What a call's reported usage is held against: its own request. */
export interface CallBounds {
  /** The raw estimate of the prompt sent. */
  readonly promptEstimate: number;
  /** The call's `max_tokens`: a completion cannot be longer. */
  readonly maxTokens: number;
  /** The model asked for: its context window bounds the prompt where the model table lists it. */
  readonly model: string;
  /**
   * The factor the session's estimates were calibrated with for this call (token-estimate.ts
   * `calibration`: its provider's counts over the estimate), for callBound; absent: 1.
   */
  readonly calibration?: number;
}

/** A call's usage as the ledger keeps it, and, when the provider's report was not believed, why. */
export interface CallUsage {
  readonly usage: TokenUsage;
  /**
   * What the reply can add to the prompts that carry it later: its completion tokens, or, for a
   * reply past `max_tokens` (a provider that ignores it), its text's estimate. The user is charged
   * `max_tokens` at most, but the session's context bound must hold what its next prompt sends.
   */
  readonly carried: number;
  /** What the call can have used as the service's own estimate counts it (callBound). */
  readonly bound: number;
  readonly refused?: {
    readonly prompt_tokens: number;
    readonly completion_tokens: number;
    readonly prompt_floor: number;
    readonly prompt_bound: number;
    readonly completion_floor: number;
    readonly completion_bound: number;
  };
}

/** The most prompt tokens a true count of a prompt estimated at `promptEstimate` can reach. */
export function promptTokenBound(model: string, promptEstimate: number): number {
  const spread = PROMPT_BOUND_FACTOR * promptEstimate + PROMPT_BOUND_SLACK;
  const context = modelFacts(model)?.contextTokens;
  return context === undefined ? spread : Math.min(context, spread);
}

/**
 * The most tokens a call can have used as the service's own estimate counts them: its prompt's
 * estimate, raised by the session's calibration where its provider counts more than the estimate
 * (never lowered: a true o200k count never passes the raw estimate, docs/tokens.md), and all of
 * `max_tokens`. A report past it (a tokenizer that counts more than o200k and more than the session's
 * calls did: believed up to promptTokenBound) is what the daily limits count at most at the
 * message's reservation (limits.ts countedTokens).
 */
export function callBound(bounds: CallBounds): number {
  const prompt = Math.ceil(bounds.promptEstimate * Math.max(1, bounds.calibration ?? 1));
  return addCounts(prompt, bounds.maxTokens);
}

/** Calls' usage, with what they can have used as the service's own estimate counts them (callBound, summed). */
export interface BoundedUsage {
  readonly usage: TokenUsage;
  readonly bound: number;
}

/** Two calls' usages and bounds added up. */
export function addBounded(a: BoundedUsage, b: BoundedUsage): BoundedUsage {
  return { usage: addUsage(a.usage, b.usage), bound: addCounts(a.bound, b.bound) };
}

/**
 * The fewest tokens a true count of a text estimated at `estimate` can be: none for nothing, else
 * at least one, and at least the estimate over PROMPT_BOUND_FACTOR.
 */
export function tokenFloor(estimate: number): number {
  return estimate <= 0 ? 0 : Math.max(1, Math.floor(estimate / PROMPT_BOUND_FACTOR));
}

/**
 * A model call's usage as the ledger keeps it: as the provider reported it when the report is
 * within what the call could have used (the completion within `max_tokens`, the prompt within
 * `promptTokenBound`) and what it must have used (each count at least `tokenFloor` of its
 * estimate), else, like a call that reported none, estimated from the prompt's estimate and the
 * reply's text (the completion at most `max_tokens`) and marked so. A provider's number is
 * believed only where it could be true: a broken or hostile one must not charge a user for a
 * day's tokens, nor push a stored sum out of the safe integer range, nor charge next to nothing (a
 * report of 0 tokens would let the daily limits count nothing, a tiny one would drop the session's
 * calibration to its floor). Priced where the model that answered is listed
 * (`Completion.model`: the name the provider answered with, the one asked for when it named
 * none); a model answering under a name not listed (a compatible server's own model, the offline
 * responder) gets no price: the one asked for would be a guess.
 */
export function callUsage(completion: Completion, bounds: CallBounds): CallUsage {
  const text = estimateTokens(completion.text);
  const judged = judgedUsage(completion, bounds, text);
  const completionTokens = judged.usage.completion_tokens;
  return { ...judged, carried: text > bounds.maxTokens ? Math.max(completionTokens, text) : completionTokens, bound: callBound(bounds) };
}

/** The usage callUsage keeps, and why a report was refused; `text`: the reply's estimate. */
function judgedUsage(completion: Completion, bounds: CallBounds, text: number): Omit<CallUsage, "carried" | "bound"> {
  const reported = completion.usage;
  // At most `max_tokens`, as a report is: a provider that ignores it (a reply of a megabyte) must
  // not charge the user for what the call could not have used, nor lock them out for the day.
  const estimate = (): TokenUsage => priced(withTotal(bounds.promptEstimate, Math.min(text, bounds.maxTokens), true), completion.model);
  if (!reported) return { usage: estimate() };
  const promptBound = promptTokenBound(bounds.model, bounds.promptEstimate);
  const promptFloor = tokenFloor(bounds.promptEstimate);
  // A reply estimated far past max_tokens (a provider that ignores it) would have a floor above the
  // bound, and no report could pass: held at the bound, a report of max_tokens is still believed.
  const completionFloor = Math.min(tokenFloor(text), bounds.maxTokens);
  const { prompt_tokens: prompt, completion_tokens: reply } = reported;
  if (prompt >= promptFloor && prompt <= promptBound && reply >= completionFloor && reply <= bounds.maxTokens) {
    return { usage: priced(withTotal(prompt, reply, false), completion.model) };
  }
  const refused = { ...reported, prompt_floor: promptFloor, prompt_bound: promptBound, completion_floor: completionFloor, completion_bound: bounds.maxTokens };
  return { usage: estimate(), refused };
}

/**
 * What a call given up on before its answer is counted: its bound (the prompt's estimate and all
 * of `max_tokens`), marked estimated. The provider bills the prompt and what was written before
 * the abort, or the whole reply when it finishes the call anyway, and no report comes to say which.
 */
export function abandonedUsage(bounds: CallBounds): TokenUsage {
  return priced(withTotal(bounds.promptEstimate, bounds.maxTokens, true), bounds.model);
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
