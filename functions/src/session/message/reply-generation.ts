import type { Completion, CompletionRequest, ReplySink } from "../../llm/chat-model";
import type { ChatMessage, SessionMeta, SessionSummary } from "../../store/records";
import type { HistoryWindow } from "../../store/session-store";
import { nextWindowStart, planPrompt, windowMessages, type PromptPlan } from "../prompt/context-window";
import type { InFlightMessage } from "./in-flight-message";
import type { ReadAhead } from "./message-admission";
import type { MessageContext } from "./message-context";
import { moderatedReply, type ModelCall } from "./moderated-reply";
import { backlog, SUMMARY_PROMPT_TOKENS, SummaryCall } from "../prompt/rolling-summary";
import { calibration } from "../prompt/token-estimate";

/** A prompt as planned, with what the rolling summary needs of it. */
export interface Planned extends PromptPlan {
  /** The history messages sent, oldest first, and the position of the first of them (of the new message when none). */
  readonly sentMessages: readonly ChatMessage[];
  readonly firstSent: number;
  readonly calibration: number;
}

/** The reply as the model wrote it, and what its commit needs: the window it was written from, and the prompt. */
export interface Generated {
  readonly window: HistoryWindow;
  readonly plan: Planned;
  readonly completion: Completion;
}

/**
 * Generates the reply of an admitted message: the history as of the count its claim saw, the
 * prompt planned from it (with the summary read ahead: one that cannot be read is left out of
 * this prompt, it never holds a message up), the summary call started beside the reply's, and
 * the model call, writing to `sink` as it goes, with the message moderated beside it when
 * moderation is on (nothing reaches `sink` before the verdict).
 */
export async function generate(context: MessageContext, message: InFlightMessage, text: string, readAhead: ReadAhead, caller: ReplySink | undefined): Promise<Generated> {
  const { session } = message;
  const window = await context.known.windowAsOf(session, message.slot.exchangeCount, readAhead.history);
  const summary = readAhead.summary ? await readAhead.summary.catch(() => null) : null;
  const plan = planReply(session.meta, window, summary, text);
  message.besides(startSummary(context, session.id, session.meta, window, plan, summary, text));
  const request = completionRequest(session.meta, plan);
  const call: ModelCall = (signal, sink) => context.model.complete(signal ? { ...request, signal } : request, sink);
  const completion = await moderatedReply(context.moderation, text, { session_id: session.id }, call, message.sink(caller));
  return { window, plan, completion };
}

/**
 * The prompt: the template's, the summary (messages it covers are not sent again), the window
 * that fits the session's token budget, and the new message. A token window never reaches back
 * past where the session's last prompt began: so each prompt holds at most the last one, its
 * reply and what landed since, which is what the daily limit's reservation counts on.
 */
function planReply(meta: SessionMeta, window: HistoryWindow, summary: SessionSummary | null, message: string): Planned {
  const { settings } = meta;
  const first = firstPosition(window);
  const lastFrom = settings.context_tokens === undefined ? undefined : window.messages.at(-1)?.usage?.window_from;
  const skip = Math.max(0, Math.max(summary?.through ?? 0, (lastFrom ?? 0) - 1) - first + 1);
  const history = window.messages.slice(skip);
  const factor = calibration(lastReported(window.messages));
  const plan = planPrompt({
    systemPrompt: meta.system_prompt,
    ...(summary ? { summary: summary.text } : {}),
    history,
    maxMessages: windowMessages(settings),
    ...(settings.context_tokens === undefined ? {} : { contextTokens: settings.context_tokens }),
    calibration: factor,
    userMessage: message,
  });
  return { ...plan, sentMessages: history.slice(history.length - plan.sent), firstSent: 2 * window.through - plan.sent + 1, calibration: factor };
}

/**
 * Starts the summary call when messages leave the window, now or with the next message, that
 * the summary does not hold yet: those still in hand are taken from the window, older ones
 * read, beside the reply's call.
 */
function startSummary(context: MessageContext, sessionId: string, meta: SessionMeta, window: HistoryWindow, plan: Planned, summary: SessionSummary | null, message: string): SummaryCall | undefined {
  const { settings } = meta;
  if (!settings.summary) return undefined;
  const nextTokenStart = settings.context_tokens === undefined
    ? 0
    : nextWindowStart({
        systemPrompt: meta.system_prompt,
        summaryTokens: SUMMARY_PROMPT_TOKENS,
        sent: plan.sentMessages,
        firstSent: plan.firstSent,
        userMessage: message,
        replyTokens: settings.max_tokens,
        contextTokens: settings.context_tokens,
        calibration: plan.calibration,
      });
  const due = backlog(summary?.through ?? 0, { through: window.through, firstSent: Math.max(plan.firstSent, nextTokenStart), maxMessages: windowMessages(settings) });
  if (!due) return undefined;
  const first = firstPosition(window);
  const messages = due.first >= first
    ? Promise.resolve(window.messages.slice(due.first - first, due.last - first + 1))
    : context.store.readMessages(sessionId, due.first, due.last).then((read) => {
        // A gap (a copy not landed yet) would summarise around a hole: the next message tries again.
        if (read.length !== due.last - due.first + 1) throw new Error("the backlog is not all stored yet");
        return read;
      });
  return new SummaryCall(context.model, settings, summary, messages, due.first, context.clock);
}

/** The reply's model call: the session's settings and the planned prompt. */
function completionRequest(meta: SessionMeta, plan: PromptPlan): CompletionRequest {
  const { settings } = meta;
  return {
    model: settings.model,
    messages: plan.messages,
    temperature: settings.temperature,
    max_tokens: settings.max_tokens,
    presence_penalty: settings.presence_penalty,
    frequency_penalty: settings.frequency_penalty,
  };
}

/** The position of a window's first message (exchange n's messages are 2n-1 and 2n). */
function firstPosition(window: HistoryWindow): number {
  return 2 * window.through - window.messages.length + 1;
}

/** The session's last call whose usage the provider reported, with the estimate made of its prompt: what calibrates the next estimate. */
function lastReported(messages: readonly ChatMessage[]): { prompt_tokens: number; prompt_estimate: number } | undefined {
  for (let i = messages.length - 1; i >= 0; i -= 1) {
    const usage = messages[i]?.usage;
    if (usage && !usage.estimated && usage.prompt_estimate !== undefined && usage.prompt_estimate > 0) {
      return { prompt_tokens: usage.prompt_tokens, prompt_estimate: usage.prompt_estimate };
    }
  }
  return undefined;
}
