import type { CallUsage } from "../ledger/call-usage";
import { addBounded, callUsage } from "../ledger/call-usage";
import type { Exchange, ReplyUsage } from "../../store/records";
import { SessionNotFoundError } from "../errors";
import type { InFlightMessage } from "./in-flight-message";
import type { MessageContext } from "./message-context";
import { refusal } from "./refusals";
import { replay, type Reply } from "./reply";
import type { Generated } from "./reply-generation";
import { SUMMARY_MAX_TOKENS, summaryCallUsage, type SummaryResult } from "../prompt/rolling-summary";
import { appendRule } from "../session-rules";
import { TOKENS_PER_MESSAGE } from "../prompt/token-estimate";
import { conversationHead } from "../conversations/title";

/**
 * Commits a generated reply: the exchange, with what its calls used, appended in one transaction
 * on the session's state (which checks that it is the claimed session's, open, and the claim still stands),
 * with the reservations' settlement and a new summary sent beside it (neither adds a round trip).
 * Only an exchange that lands updates what this instance knows of the session's history.
 */
export async function commit(context: MessageContext, message: InFlightMessage, generated: Generated, text: string, receivedAt: number): Promise<Reply> {
  const { store, clock, policy, known } = context;
  const { session, claim } = message;
  const { settings } = session.meta;
  const { window, plan, completion } = generated;
  const summarised = message.replyComplete();
  const { usage: reply, refused, carried, bound } = callUsage(completion, { promptEstimate: plan.promptEstimate, maxTokens: settings.max_tokens, model: settings.model, calibration: plan.calibration });
  logBounds(context, session.id, refused, summarised);
  const usage: ReplyUsage = {
    ...reply,
    prompt_estimate: plan.promptEstimate,
    // Where the next prompt's history may start at the earliest (reply-generation.ts planReply): only a token window or a summary's catch-up could otherwise reach back further.
    ...(plan.windowFrom === undefined ? {} : { window_from: plan.windowFrom }),
    ...(summarised.usage ? { summary: summarised.usage } : {}),
  };
  const answeredAt = Math.max(clock(), receivedAt);
  const exchange: Exchange = {
    user: { role: "user", content: text, timestamp: receivedAt },
    assistant: { role: "assistant", content: completion.text, timestamp: answeredAt, ...(completion.truncated ? { truncated: true } : {}), usage },
    // The claim saw no exchange: this one may be the first, which names the conversation in its owner's list.
    ...(message.slot.exchangeCount === 0 ? { head: conversationHead(session.meta, text) } : {}),
  };
  const replyCall = { usage: reply, bound };
  const summaryCall = summaryCallUsage(summarised);
  const calls = summaryCall ? addBounded(replyCall, summaryCall) : replyCall;
  // What the next prompt sends of this call: its prompt, and its reply as an assistant message,
  // with the framing OpenAI counts around every message (which the completion's count leaves out).
  const replyContext = reply.prompt_tokens + carried + TOKENS_PER_MESSAGE;
  const sideWrites: Promise<unknown>[] = [message.settle(calls, replyContext, Math.max(0, carried - settings.max_tokens), answeredAt)];
  const createdAt = session.meta.created_at;
  // Stamped with its session's creation: the session created again under an erased id neither reads nor keeps it (records.ts replacesSummary).
  const summary = summarised.summary && { ...summarised.summary, created_at: createdAt };
  // One that holds this exchange's own message (reply-generation.ts startSummary) names the position
  // it takes if no other exchange lands first: it is written once this one is known to have landed there.
  const holdsOwn = summary !== undefined && summary.through > 2 * window.through;
  if (summary && !holdsOwn) sideWrites.push(store.writeSummary(session.id, summary).catch(() => false));
  let result;
  try {
    result = await store.appendExchange(session.id, exchange, appendRule({ receivedAt, answeredAt, policy, claim, usage: calls.usage, createdAt }), message.partialKey);
  } catch (error) {
    message.end({ kind: "unknown" });
    throw error;
  }
  await Promise.all(sideWrites);
  if (!result.found || result.outcome.kind === "gone") {
    // The session was erased (and its id perhaps created again, a session of its own): nothing
    // stored, the calls settled as made, no slot of that session held. The summary sent beside the
    // commit is taken back, after it (same node, same connection): it holds the erased messages.
    message.end({ kind: "not-stored", release: false });
    if (summary && !holdsOwn) await store.dropSummary(session.id, createdAt).catch(() => undefined);
    throw new SessionNotFoundError(session.id);
  }
  const { outcome } = result;
  if (outcome.kind === "duplicate") {
    message.end({ kind: "not-stored", release: false });
    return replay(store, session.id, outcome.seq);
  }
  if (outcome.kind !== "appended") {
    // Refused at the commit: the slot frees at once, so a repeat waiting on this key learns.
    message.end(outcome.kind === "closed" ? { kind: "closed" } : { kind: "not-stored", release: true });
    throw refusal(outcome);
  }
  message.end({ kind: "stored" });
  // Landed elsewhere (another exchange first), it is dropped: its position holds another message.
  if (holdsOwn && outcome.seq === window.through + 1) await store.writeSummary(session.id, summary).catch(() => false);
  // The new tail is known only when no other exchange landed between the claim and the commit.
  if (outcome.seq === message.slot.exchangeCount + 1) known.rememberTail(session, outcome.seq, [...window.messages, exchange.user, exchange.assistant]);
  return {
    sessionId: session.id,
    text: exchange.assistant.content,
    truncated: exchange.assistant.truncated === true,
    exchangeCount: result.state.message_count,
    replayed: false,
    usage: reply,
  };
}

/**
 * Says when a provider's usage report was not believed, or a summary came back over its bound:
 * the figures only, never the text.
 */
function logBounds(context: MessageContext, sessionId: string, refused: CallUsage["refused"], summarised: SummaryResult): void {
  const { log } = context;
  if (refused) log.warn("provider usage out of bounds, estimated instead", { session_id: sessionId, call: "reply", ...refused });
  if (summarised.refusedUsage) log.warn("provider usage out of bounds, estimated instead", { session_id: sessionId, call: "summary", ...summarised.refusedUsage });
  if (summarised.cutFrom !== undefined) log.warn("summary over its bound, cut", { session_id: sessionId, estimated_tokens: summarised.cutFrom, bound: SUMMARY_MAX_TOKENS });
}
