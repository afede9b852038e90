import type { Completion, CompletionRequest, ReplySink } from "../../llm/chat-model";
import { ofCreation, type ChatMessage, type SessionMeta, type SessionSummary } from "../../store/records";
import type { HistoryWindow } from "../../store/session-store";
import { catchUpCount, nextWindowStart, planPrompt, promptBudget, windowMessages, type PromptPlan } from "../prompt/context-window";
import type { KnownSession } from "../known-sessions";
import type { InFlightMessage } from "./in-flight-message";
import type { ReadAhead } from "./message-admission";
import type { MessageContext } from "./message-context";
import { moderatedReply, RefusedReply, type ModelCall } from "./moderated-reply";
import { abandonedUsage, callBound, callUsage, type BoundedUsage } from "../ledger/call-usage";
import { backlog, SUMMARY_BATCH_MESSAGES, SUMMARY_CALL_TOKENS, SUMMARY_PROMPT_TOKENS, SummaryCall } from "../prompt/rolling-summary";
import { LimitExceededError } from "../errors";
import { MessageFlaggedError } from "../../llm/moderation";
import { seconds } from "./refusals";
import { calibration, calibrationCeiling, estimateBound } from "../prompt/token-estimate";

/** A prompt as planned, with what the rolling summary needs of it. */
export interface Planned extends PromptPlan {
  /** The history messages sent, oldest first, and the position of the first of them (of the new message when none). */
  readonly sentMessages: readonly ChatMessage[];
  readonly firstSent: number;
  readonly calibration: number;
  /** The most a reply of the session's `max_tokens` is estimated at (`estimateBound`), with the same calibration. */
  readonly replyEstimate: number;
  /** The most the next prompt's calibration can be, once this call's report sets it (`calibrationCeiling`). */
  readonly nextCalibration: number;
  /**
   * Where the next prompt's history may start at the earliest, stored with the exchange as
   * `window_from`: with a token budget or a summary's catch-up, or a window the model's context
   * cut; absent where the count window alone bounds the next prompt.
   */
  readonly windowFrom?: number;
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
 * moderation is on (nothing reaches `sink` before the verdict). A message that fails before its
 * model calls, or that moderation refuses, ends here: the first as refused before the model
 * (nothing was spent), the second with its model call counted as the provider bills it.
 */
export async function generate(context: MessageContext, message: InFlightMessage, text: string, readAhead: ReadAhead, caller: ReplySink | undefined): Promise<Generated> {
  const { session } = message;
  const { window, summary, plan } = await prepare(context, message, text, readAhead).catch((error: unknown) => {
    // The history read on a cold instance or the deployment cap's top-up failed (the database):
    // no model was called, so the message gives back all it took, its per-minute token too, as
    // one whose claim failed so does (message-admission.ts), and the retry its 503 asks for a
    // second later is not refused RATE_LIMITED. Only a model call that failed keeps the token.
    message.end({ kind: "refused" });
    throw error;
  });
  message.besides(startSummary(context, session.id, session.meta, window, plan, summary, text));
  const request = completionRequest(session.meta, plan);
  const call: ModelCall = (signal, sink) => context.model.complete(signal ? { ...request, signal } : request, sink);
  let completion: Completion;
  try {
    completion = await moderatedReply(context.moderation, text, { session_id: session.id }, call, message.sink(caller));
  } catch (error) {
    if (!(error instanceof RefusedReply)) throw error;
    // Refused, yet the provider bills the call it started: counted as a settled call is, never given back.
    // Flagged is an answer for good (a keyed repeat gets it too); an outage refused may pass on a retry.
    const flagged = error.refusal instanceof MessageFlaggedError ? { flagged: true as const } : {};
    message.end({ kind: "failed", reply: refusedCallUsage(context, session, plan, error.call), ...flagged });
    throw error.refusal;
  }
  return { window, plan, completion };
}

/**
 * What the model calls need, before any is made: the history as of the claim's count (a read on a
 * cold instance), the summary, the prompt planned, and the deployment cap holding the planned calls
 * (a top-up, or the message refused).
 */
async function prepare(context: MessageContext, message: InFlightMessage, text: string, readAhead: ReadAhead): Promise<{ window: HistoryWindow; summary: SessionSummary | null; plan: Planned }> {
  const { session } = message;
  const held = await context.known.windowAsOf(session, message.slot.exchangeCount, readAhead.history);
  const read = readAhead.summary ? await readAhead.summary.catch(() => null) : null;
  // One of another creation under the id (an erased session's, landed late) is none of this session's.
  const summary = read && ofCreation(read, session.meta.created_at) ? read : null;
  const window = await withCatchUp(context, session, held, summary);
  const plan = planReply(session.meta, window, summary, text);
  await holdPlannedCalls(context, message, plan);
  return { window, summary, plan };
}

/**
 * What a reply call that moderation refused counts: a finished one as its commit would count it
 * (callUsage), one abandoned mid-call at its bound, as an abandoned summary call is.
 */
function refusedCallUsage(context: MessageContext, session: KnownSession, plan: Planned, call: RefusedReply["call"]): BoundedUsage {
  const { settings } = session.meta;
  const bounds = { promptEstimate: plan.promptEstimate, maxTokens: settings.max_tokens, model: settings.model, calibration: plan.calibration };
  if (call === "abandoned") return { usage: abandonedUsage(bounds), bound: callBound(bounds) };
  const { usage, refused, bound } = callUsage(call.completion, bounds);
  if (refused) context.log.warn("provider usage out of bounds, estimated instead", { session_id: session.id, call: "reply", ...refused });
  return { usage, bound };
}

/**
 * Refuses the message, before its model call, when the deployment's cap cannot hold what its calls
 * may use as planned (the prompt, the reply's max_tokens, a summary call): the admission's
 * reservation, made from this instance's window, may fall short of a prompt that another
 * instance's exchanges made longer (InFlightMessage.holdServiceTokens).
 */
async function holdPlannedCalls(context: MessageContext, message: InFlightMessage, plan: Planned): Promise<void> {
  const { settings } = message.session.meta;
  const calls = plan.promptEstimate + settings.max_tokens + (settings.summary ? SUMMARY_CALL_TOKENS : 0);
  const retryAfterMs = await message.holdServiceTokens(calls, context.clock());
  if (retryAfterMs === undefined) return;
  message.end({ kind: "refused" });
  throw new LimitExceededError("service", seconds(retryAfterMs));
}

/**
 * The prompt: the template's, the summary (messages it covers are not sent again), the window
 * that fits the session's token budget, and the new message; with a summary, also the messages
 * between the summary's end and the window, when it lags (catchUpCount). The history never
 * reaches back past where the session's last prompt began (`window_from`, stored with token
 * windows and with a summary): so each prompt holds at most the last one, its reply and what
 * landed since, which is what the daily limit's reservation counts on (ledger/limits.ts).
 */
function planReply(meta: SessionMeta, window: HistoryWindow, summary: SessionSummary | null, message: string): Planned {
  const { settings } = meta;
  const first = firstPosition(window);
  const bounds = historyBounds(meta, window, summary);
  const from = Math.max(first, bounds.earliest);
  const history = window.messages.slice(from - first);
  // Without where the last prompt began (an exchange stored before it was kept for a count
  // window), the catch-up could reach past what the reservation bounds: the count window alone.
  const gap = bounds.countFrom - from;
  const catchUp = settings.summary && bounds.lastFrom !== undefined && gap > 0 ? catchUpCount(history.slice(0, gap)) : 0;
  const previous = lastReported(window.messages);
  const factor = calibration(previous);
  const budget = promptBudget(settings, factor);
  const plan = planPrompt({
    systemPrompt: meta.system_prompt,
    ...(summary ? { summary: summary.text } : {}),
    history,
    maxMessages: windowMessages(settings) + catchUp,
    ...(budget === undefined ? {} : { contextTokens: budget.tokens }),
    // A summary made beside a reply is first sent with the next message: the last exchange is in no summary yet.
    ...(settings.summary ? { keepNewest: 2, ...(budget?.modelTokens === undefined ? {} : { modelTokens: budget.modelTokens }) } : {}),
    calibration: factor,
    userMessage: message,
  });
  const firstSent = 2 * window.through - plan.sent + 1;
  // A prompt that starts later than its count window would (the model's context cut it) lets the
  // next one, with a shorter message, reach back past it: where it began bounds the next (the
  // reservation counts on a prompt holding at most the last one, its reply and what landed since).
  const bounded = settings.context_tokens !== undefined || settings.summary === true || firstSent > Math.max(1, bounds.countFrom);
  return {
    ...plan,
    sentMessages: history.slice(history.length - plan.sent),
    firstSent,
    calibration: factor,
    replyEstimate: estimateBound(settings.max_tokens, previous),
    nextCalibration: calibrationCeiling(previous),
    ...(bounded ? { windowFrom: firstSent } : {}),
  };
}

/**
 * The window with the older messages a catch-up may send (see planReply) when they reach past
 * those held (the window and one exchange before it): read before the reply's call, which only
 * happens when the summary lags by more than one exchange (three or more messages of the session
 * at once, or summary calls late twice running). Messages that cannot be read, or read with a
 * hole (a copy not landed yet), are left out of this one prompt, as a summary that cannot be read is.
 */
async function withCatchUp(context: MessageContext, session: KnownSession, window: HistoryWindow, summary: SessionSummary | null): Promise<HistoryWindow> {
  const bounds = historyBounds(session.meta, window, summary);
  if (!session.meta.settings.summary || bounds.lastFrom === undefined) return window;
  const first = firstPosition(window);
  const start = Math.max(bounds.earliest, bounds.countFrom - SUMMARY_BATCH_MESSAGES);
  if (start >= first) return window;
  const read = await context.store.readMessages(session.id, start, first - 1).catch(() => []);
  if (read.length !== first - start) return window;
  return { messages: [...read, ...window.messages], through: window.through };
}

/**
 * Starts the summary call when messages leave the window, now or with the next message, that
 * the summary does not hold yet: those still in hand are taken from the window, older ones
 * read, beside the reply's call; `text`, this prompt's own message, when the next prompt is
 * predicted not to hold it (a next message as long as this one, and this one, over the model's room).
 */
function startSummary(context: MessageContext, sessionId: string, meta: SessionMeta, window: HistoryWindow, plan: Planned, summary: SessionSummary | null, text: string): SummaryCall | undefined {
  const { settings } = meta;
  if (!settings.summary) return undefined;
  // The next prompt's budget and calibration at their most: this call's report may raise both.
  const nextBudget = promptBudget(settings, plan.nextCalibration);
  const nextTokenStart = nextBudget === undefined
    ? 0
    : nextWindowStart({
        systemPrompt: meta.system_prompt,
        summaryTokens: SUMMARY_PROMPT_TOKENS,
        sent: plan.sentMessages,
        firstSent: plan.firstSent,
        messageTokens: plan.messageEstimate,
        replyEstimate: plan.replyEstimate,
        budget: nextBudget,
        calibration: plan.nextCalibration,
      });
  const due = backlog(summary?.through ?? 0, { through: window.through, firstSent: Math.max(plan.firstSent, nextTokenStart), maxMessages: windowMessages(settings) });
  if (!due) return undefined;
  const first = firstPosition(window);
  // Past the stored history, the backlog holds this prompt's own message (the next prompt cannot
  // hold it): such a summary is written once its exchange lands there (exchange-commit.ts).
  const stored = Math.min(due.last, 2 * window.through);
  const own: ChatMessage[] = due.last > stored ? [{ role: "user", content: text, timestamp: context.clock() }] : [];
  const messages = due.first >= first
    ? Promise.resolve([...window.messages.slice(due.first - first, stored - first + 1), ...own])
    : context.store.readMessages(sessionId, due.first, stored).then((read) => {
        // A gap (a copy not landed yet) would summarise around a hole: the next message tries again.
        if (read.length !== stored - due.first + 1) throw new Error("the backlog is not all stored yet");
        return [...read, ...own];
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

/**
 * Where the next prompt's history may start (planReply): not before the last prompt began
 * (`lastFrom`, its `window_from`, when stored) nor inside the summary (`earliest`); and where the
 * count window alone would start (`countFrom`).
 */
function historyBounds(meta: SessionMeta, window: HistoryWindow, summary: SessionSummary | null): { readonly lastFrom: number | undefined; readonly earliest: number; readonly countFrom: number } {
  const lastFrom = window.messages.at(-1)?.usage?.window_from;
  return { lastFrom, earliest: Math.max(1, lastFrom ?? 1, (summary?.through ?? 0) + 1), countFrom: 2 * window.through - windowMessages(meta.settings) + 1 };
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
