import type { PromptMessage } from "../../llm/chat-model";
import type { ChatMessage, GenerationSettings } from "../../store/records";
import { modelFacts } from "../../llm/model-table";
import { SUMMARY_BATCH_MESSAGES, SUMMARY_INPUT_TOKENS, summaryMessage } from "./rolling-summary";
import { estimateMessageTokens, estimateRecurring, REPLY_PRIMING_TOKENS, TOKENS_PER_MESSAGE } from "./token-estimate";

/**
 * The most history messages a prompt sends. With a summary, at least the last exchange, whatever
 * the template says: a summary made beside a reply is first sent with the next message, so it
 * cannot hold the exchange just before that message.
 */
export function windowMessages(settings: GenerationSettings): number {
  return settings.summary ? Math.max(2, settings.context_window) : settings.context_window;
}

/** The last `n` messages; none for `n <= 0` (where `slice(-0)` would keep them all). */
export function lastMessages<T>(messages: readonly T[], n: number): T[] {
  return n > 0 ? messages.slice(-n) : [];
}

/** What a prompt's history is fitted to, in calibrated tokens (planPrompt's `contextTokens` and `modelTokens`). */
export interface PromptBudget {
  /** The whole prompt's: the template's `context_tokens` and the model's room, whichever is less. */
  readonly tokens: number;
  /**
   * What the last exchange kept with a summary is fitted to: the model's room alone, for the listed
   * models; for another, `context_tokens`, the only bound the operator gives of it.
   */
  readonly modelTokens?: number;
}

/**
 * The token budget of a session's prompts: the template's `context_tokens`, and for a model the
 * table lists, its whole context less the reply's `max_tokens`, whichever is less; none for an
 * unlisted model without `context_tokens`. An unlisted model's `context_tokens` bounds the kept
 * last exchange too: its context is unknown, and a kept exchange nothing bounds, sent over it,
 * would fail on every later message. The model's context is a limit, not a preference: a
 * prompt over it fails every time, and a failed message stores nothing, so the window would never
 * move on. So it is fitted with the raw estimate (an upper bound of o200k's count) when the
 * calibration is below 1, and calibrated only upwards: a report is believed down to a quarter of
 * the estimate, and one that counted this session's text low says nothing of what the provider refuses.
 */
export function promptBudget(settings: GenerationSettings, calibration: number): PromptBudget | undefined {
  const model = modelFacts(settings.model);
  if (model === undefined) return settings.context_tokens === undefined ? undefined : { tokens: settings.context_tokens, modelTokens: settings.context_tokens };
  // (estimate * max(1, c) <= room) is (estimate * c <= room * min(1, c)): one budget for fitNewest's calibration.
  const room = Math.max(0, model.contextTokens - settings.max_tokens) * Math.min(1, calibration);
  return { tokens: settings.context_tokens === undefined ? room : Math.min(settings.context_tokens, room), modelTokens: room };
}

/**
 * The estimate of a stored message, made once: a warm session hands the same message objects to
 * every prompt while they stay in its window, and they never change.
 */
const storedEstimates = new WeakMap<ChatMessage, number>();
export function estimateStored(message: ChatMessage): number {
  let tokens = storedEstimates.get(message);
  if (tokens === undefined) {
    tokens = estimateMessageTokens(message.content);
    storedEstimates.set(message, tokens);
  }
  return tokens;
}

/**
 * How many of `gap` (oldest first: the messages after the summary's end and before the count
 * window, not before where the session's last prompt began) a prompt sends besides its window:
 * the newest of them, at most one summary batch (SUMMARY_BATCH_MESSAGES messages and
 * SUMMARY_INPUT_TOKENS estimated tokens), the first that does not fit ending the run so that
 * the history sent stays a stretch of the conversation with no hole. They are what the summary
 * does not hold yet: exchanges that landed at once (each concurrent message's summary call folded
 * in what a window moved by its own exchange alone drops), or a summary call that came too late.
 * The next summary call folds in a batch of messages (cut to its input tokens when they are
 * over); a longer gap's older part is in neither until the summary catches up, and the prompt
 * stays within one batch of its window.
 */
export function catchUpCount(gap: readonly ChatMessage[]): number {
  let tokens = 0;
  let taken = 0;
  while (taken < Math.min(gap.length, SUMMARY_BATCH_MESSAGES)) {
    const message = gap[gap.length - 1 - taken];
    if (message === undefined) break;
    tokens += estimateStored(message);
    if (tokens > SUMMARY_INPUT_TOKENS) break;
    taken += 1;
  }
  return taken;
}

export interface PromptPlan {
  /** The template's prompt, the summary when there is one, the window, the new user message. */
  readonly messages: PromptMessage[];
  /** History messages sent: the last `sent` of `history`. */
  readonly sent: number;
  /** The raw (uncalibrated) `estimatePromptTokens` of `messages`, to calibrate the next call with the provider's `usage`. */
  readonly promptEstimate: number;
  /** The new message's share of `promptEstimate` (`estimateMessageTokens`). */
  readonly messageEstimate: number;
}

export interface PromptInput {
  readonly systemPrompt: string;
  /** The rolling summary of what the window no longer holds, sent as `summaryMessage` makes it; empty or absent for none. */
  readonly summary?: string;
  /** Oldest first, already at most the count window. */
  readonly history: readonly ChatMessage[];
  /** The template's `context_window`: at most this many history messages; 0 sends none. */
  readonly maxMessages: number;
  /** The token budget for the whole prompt (`promptBudget`); absent: the count window alone. */
  readonly contextTokens?: number;
  /**
   * The newest history messages sent whatever `contextTokens` says, within `modelTokens`
   * (`promptBudget`'s) only: with a summary, the last exchange, which no summary holds yet but
   * for its user message when the summary beside its reply folded that in (rolling-summary.ts backlog).
   */
  readonly keepNewest?: number;
  readonly modelTokens?: number;
  /** The factor from `calibration()`, applied to every estimate. */
  readonly calibration: number;
  readonly userMessage: string;
}

/** The product of a calibration and an estimate may exceed an exact budget by a rounding error. */
const ROUNDING = 1e-9;

/**
 * The prompt for a token budget: the newest history messages while the calibrated estimate of
 * the whole prompt (system prompt, summary, window, new message, and the chat format) stays
 * within `contextTokens`, at most `maxMessages` of them. The window is a suffix of the history:
 * the first message that does not fit ends it, so no older, shorter one is taken past a gap the
 * model would not know about. The system prompt, summary and new message are always sent, even
 * over the budget: the request is the user's, and the provider, not us, refuses what it cannot take
 * (admission refuses a message that cannot fit a listed model's context with them). So are the
 * `keepNewest` messages, within `modelTokens`.
 * The window may start with an assistant message; models take that, and cutting it would waste
 * budget the user's settings allow.
 */
export function planPrompt(input: PromptInput): PromptPlan {
  const { systemPrompt, summary, history, maxMessages, contextTokens, calibration, userMessage } = input;
  const kept = { count: input.keepNewest ?? 0, budget: input.modelTokens };
  if (!(calibration > 0) || !Number.isFinite(calibration)) throw new RangeError(`calibration must be a positive number, got ${calibration}`);
  const head: PromptMessage[] = [{ role: "system", content: systemPrompt }];
  if (summary) head.push(summaryMessage(summary));

  const messageEstimate = estimateMessageTokens(userMessage);
  let fixed = REPLY_PRIMING_TOKENS + messageEstimate;
  for (const message of head) fixed += estimateRecurring(message.content);
  const limit = Math.min(Math.max(maxMessages, 0), history.length);
  const newest = (back: number) => {
    const message = history[history.length - 1 - back];
    return message ? estimateStored(message) : 0;
  };
  const { fitted: sent, estimate } = fitNewest(limit, newest, fixed, contextTokens, calibration, kept);

  return {
    messages: [
      ...head,
      // Stored roles are parsed on read; mapping them again keeps a forged one from ever becoming "system".
      ...history.slice(history.length - sent).map((message) => ({ role: message.role === "assistant" ? "assistant" : "user", content: message.content }) as const),
      { role: "user", content: userMessage },
    ],
    sent,
    promptEstimate: estimate,
    messageEstimate,
  };
}

/**
 * Where the next prompt's token window is expected to start (a message position), so that a
 * rolling summary can fold in, ahead, what that prompt will drop: the history sent now, then this
 * message and a reply estimated at `replyEstimate`, under the budget and calibration the next
 * prompt can have at most, with room for a summary of `summaryTokens` and a next message as long
 * as this one (`messageTokens`, this one's estimate, made once by planPrompt), and the new exchange
 * kept within the model's room whatever the budget (planPrompt's `keepNewest`). Past the new
 * exchange (`firstSent + sent.length + 2`) when not even it would fit the model. An estimate: a longer next
 * message drops more, and what it drops is folded in beside its own reply.
 */
export function nextWindowStart(input: {
  readonly systemPrompt: string;
  readonly summaryTokens: number;
  readonly sent: readonly ChatMessage[];
  readonly firstSent: number;
  readonly messageTokens: number;
  /**
   * The most the coming reply can be estimated at (`estimateBound` of its `max_tokens`), not its
   * true tokens: the next window is fitted with the reply's estimate, and one priced lower than
   * it can be predicts a window that holds more than the next one will, leaving its first
   * messages in neither the summary nor the window. Priced higher, the summary folds in a little
   * early, which loses nothing.
   */
  readonly replyEstimate: number;
  /** `promptBudget` at the next prompt's most calibration. */
  readonly budget: PromptBudget;
  /**
   * The most the next prompt's calibration can be (`calibrationCeiling`), not this prompt's: the
   * next prompt is fitted with the factor this call's report sets, and a lower one here predicts
   * a window that holds more than the next one will.
   */
  readonly calibration: number;
}): number {
  const { sent, firstSent, calibration, budget, messageTokens: message } = input;
  const fixed = REPLY_PRIMING_TOKENS + estimateRecurring(input.systemPrompt) + TOKENS_PER_MESSAGE + input.summaryTokens + message;
  const costs = [...sent.map(estimateStored), message, TOKENS_PER_MESSAGE + input.replyEstimate];
  const { fitted } = fitNewest(costs.length, (back) => costs[costs.length - 1 - back] ?? 0, fixed, budget.tokens, calibration, { count: 2, budget: budget.modelTokens });
  return firstSent + costs.length - fitted;
}

/**
 * How many of `count` items, newest first (`costOf(0)` is the newest's estimate), fit beside the
 * `fixed` estimate under the calibrated budget (all of them without one), the first that does not
 * fit ending the run; and the estimate with them. The newest `kept.count` are fitted to `kept.budget`
 * alone (none: taken). Each item is estimated once, when reached.
 */
function fitNewest(count: number, costOf: (back: number) => number, fixed: number, budget: number | undefined, calibration: number, kept: { readonly count: number; readonly budget: number | undefined }): { fitted: number; estimate: number } {
  let estimate = fixed;
  let fitted = 0;
  while (fitted < count) {
    const cost = costOf(fitted);
    const limit = fitted < kept.count ? kept.budget : budget;
    if (limit !== undefined && (estimate + cost) * calibration - limit > ROUNDING) break;
    estimate += cost;
    fitted += 1;
  }
  return { fitted, estimate };
}
