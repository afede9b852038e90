import { modelFacts } from "../../llm/model-table";
import type { SessionMeta, SessionSummary } from "../../store/records";
import type { HistoryWindow } from "../../store/session-store";
import { estimateStored, lastMessages, windowMessages } from "../prompt/context-window";
import { LimitExceededError, PromptTooLargeError, SessionClosedError, SessionNotFoundError } from "../errors";
import { ErasureInProgressError } from "../erasure/erasure-errors";
import { InFlightMessage } from "./in-flight-message";
import type { KnownSession } from "../known-sessions";
import { admitMessage, type TokenNeed } from "../ledger/limits";
import type { MessageContext } from "./message-context";
import { refusal, seconds } from "./refusals";
import { SUMMARY_CALL_TOKENS, SUMMARY_INPUT_TOKENS, SUMMARY_PROMPT_TOKENS } from "../prompt/rolling-summary";
import { claimSlot, claimFor } from "./slot-claim";
import { estimatePromptTokens, estimateRecurring, MAX_TOKENS_PER_CHAR, REPLY_PRIMING_TOKENS, TOKENS_PER_MESSAGE } from "../prompt/token-estimate";

/** Reads sent beside the admission, for the steps after it. */
export interface ReadAhead {
  /** The history, on an instance that does not hold it warm. */
  readonly history?: Promise<HistoryWindow>;
  /** The rolling summary, for a template that keeps one (a listened node costs no round trip). */
  readonly summary?: Promise<SessionSummary | null>;
}

export type Admitted =
  | { readonly kind: "admitted"; readonly message: InFlightMessage; readonly readAhead: ReadAhead }
  /** An earlier request with the same Idempotency-Key stored exchange `seq`: its answer is replayed. */
  | { readonly kind: "replay"; readonly seq: number }
  /**
   * The session under the id is another creation than the one `session` was remembered from (its
   * id erased, then created again by a keyed create's retry): nothing is taken, what this instance
   * kept of it is forgotten, and the message is to be admitted again with the session's fields read.
   */
  | { readonly kind: "renewed" };

/**
 * Admits a message, in one round trip on a warm instance: its claim on a slot of the session,
 * the user's limits (which reserve the message's tokens) and the deployment's cap, sent together,
 * with the reads the next steps need sent beside them. Anything taken is given back when another
 * part refuses (or fails), a claim whose answer was lost too, and a replay takes nothing (checked
 * first: a keyed message stored before its session ended still replays); a session its claim finds
 * closed or missing stops counting as active, and one its admission finds ended is refused too. A
 * claim that finds another creation of the session under its id gives everything back (`renewed`).
 */
export async function admit(context: MessageContext, session: KnownSession, text: string, idempotencyKey: string | undefined, receivedAt: number): Promise<Admitted> {
  const { store, usage, serviceLedger } = context;
  const need = tokenNeed(session.meta, text);
  const claim = claimFor(text, idempotencyKey);
  const readAhead: ReadAhead = {
    ...(session.tail ? {} : { history: readLater(context.known.readWindow(session)) }),
    ...(session.meta.settings.summary ? { summary: readLater(store.readSummary(session.id)) } : {}),
  };
  const [claiming, admitting, capping] = await Promise.allSettled([
    claimSlot(context, session.id, session.meta.created_at, claim, receivedAt),
    store.updateUsage(session.userKey, admitMessage(session.id, receivedAt, usage, need)),
    serviceLedger.reserve(() => serviceReservation(session, need, context.maxMessageChars), receivedAt, usage),
  ]);
  const claimed = claiming.status === "fulfilled" ? claiming.value : undefined;
  const admitted = admitting.status === "fulfilled" ? admitting.value : undefined;
  const capped = capping.status === "fulfilled" ? capping.value : undefined;
  const message = new InFlightMessage(context, session, claim, {
    ...(claimed?.kind === "claimed" ? { slot: { exchangeCount: claimed.exchangeCount, alone: claimed.alone } } : {}),
    ...(claiming.status === "rejected" ? { claimUnanswered: true as const } : {}),
    ...(admitted?.admitted ? { reservation: admitted.reservation } : {}),
    ...(capped?.admitted ? { service: capped.reservation } : {}),
  });
  // A session closed or gone never takes a message again: it stops counting as active, whatever the
  // admission answered (its answer lost, it may have counted the session: in-flight-message.ts end).
  const gone = claimed?.kind === "closed" || (claiming.status === "rejected" && claiming.reason instanceof SessionNotFoundError);
  const refused = gone ? ({ kind: "refused", gone: true } as const) : ({ kind: "refused" } as const);
  // Its history and fields are another session's: forgotten whatever else befell the message.
  if (claimed?.kind === "renewed") context.known.forget(session.id);
  // One step failed (the database): what the others took goes back, then the failure.
  const failed = [claiming, admitting, capping].find((step): step is PromiseRejectedResult => step.status === "rejected");
  if (failed || !claimed || !admitted) {
    message.end(refused);
    throw failed?.reason;
  }
  if (claimed.kind === "claimed" && admitted.admitted && capped?.admitted !== false) return { kind: "admitted", message, readAhead };
  message.end(refused);
  if (claimed.kind === "done") return { kind: "replay", seq: claimed.seq };
  if (claimed.kind === "renewed") return claimed;
  if (claimed.kind !== "claimed") throw refusal(claimed);
  if (!admitted.admitted) {
    // Claimed before the end, admitted after its release: the session can never store this
    // exchange, so it gets the closed claim's answer, and no model call (limits.ts admitMessage).
    if (admitted.limit === "ended") throw new SessionClosedError("ended");
    if (admitted.limit === "erasing") throw new ErasureInProgressError(seconds(admitted.retryAfterMs));
    throw new LimitExceededError(admitted.limit, seconds(admitted.retryAfterMs));
  }
  throw new LimitExceededError("service", seconds(capped?.admitted === false ? capped.retryAfterMs : 0));
}

/** `work`, whose failure is reported only to whoever awaits it: a read sent ahead may be dropped unawaited when the message is refused. */
function readLater<T>(work: Promise<T>): Promise<T> {
  work.catch(() => undefined);
  return work;
}

/**
 * What a message may use in tokens beyond its session's last call, for the daily limit's
 * reservation (see ledger/limits.ts `admitMessage`); refuses a message that cannot fit the model's context at all.
 */
function tokenNeed(meta: SessionMeta, message: string): TokenNeed {
  const { settings } = meta;
  const system = REPLY_PRIMING_TOKENS + estimateRecurring(meta.system_prompt);
  const added = estimatePromptTokens([{ role: "user", content: message }]);
  const model = modelFacts(settings.model);
  // Every prompt of a summarised session may carry the summary, at most its bound (planPrompt never drops it).
  const least = system + added + (settings.summary ? SUMMARY_PROMPT_TOKENS : 0) + settings.max_tokens;
  if (model && least > model.contextTokens) throw new PromptTooLargeError(least, model.contextTokens);
  // A summary may join the prompt, and its call runs beside the reply's. The reply joins the next
  // prompts as a message, with the framing every message pays (as a settlement alone counts it:
  // exchange-commit.ts), which a settlement among others keeps from this need.
  const summary = settings.summary ? SUMMARY_PROMPT_TOKENS + SUMMARY_CALL_TOKENS : 0;
  return { fresh: added + settings.max_tokens + TOKENS_PER_MESSAGE + summary, firstPrompt: system };
}

/**
 * What a message reserves of the deployment's daily cap: an upper bound of its calls, with the
 * history it will send estimated from the instance's warm window (the estimate never counts low),
 * or, on a cold instance, as the window at its longest: each message a user message of
 * `maxMessageChars` at the estimate's highest price or a reply of `max_tokens`, whichever is more;
 * with a summary, plus the most a catch-up sends besides the window (context-window.ts catchUpCount).
 * The settlement, beside the commit, brings it down to what was spent; near the cap, in-flight
 * reservations are refused early, never late.
 */
function serviceReservation(session: KnownSession, need: TokenNeed, maxMessageChars: number): number {
  const { settings } = session.meta;
  const count = windowMessages(settings);
  const history = session.tail
    ? lastMessages(session.tail.messages, count).reduce((sum, message) => sum + estimateStored(message), 0)
    : count * Math.max(settings.max_tokens, MAX_TOKENS_PER_CHAR * maxMessageChars + 1 + TOKENS_PER_MESSAGE);
  const sent = history + (settings.summary ? SUMMARY_INPUT_TOKENS : 0);
  return Math.ceil(need.firstPrompt + need.fresh + Math.min(sent, settings.context_tokens ?? sent));
}
