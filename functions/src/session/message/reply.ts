import type { HistoryStore } from "../../store/session-store";
import type { ReplyUsage, TokenUsage } from "../../store/records";
import { StoreDataError } from "../../store/errors";

/** The answer to a message. */
export interface Reply {
  readonly sessionId: string;
  readonly text: string;
  readonly truncated: boolean;
  /** The session's exchanges with this one (the API calls it `message_count`). */
  readonly exchangeCount: number;
  /** The answer repeats the one given to an earlier request with the same `Idempotency-Key`. */
  readonly replayed: boolean;
  /** What the reply's model call used (absent on the replay of an exchange stored before usage was recorded). */
  readonly usage?: TokenUsage;
}

/** The answer an earlier request with the same key got: its stored exchange number `seq`. */
export async function replay(store: Pick<HistoryStore, "readExchange">, sessionId: string, seq: number): Promise<Reply> {
  const exchange = await store.readExchange(sessionId, seq);
  if (!exchange) throw new StoreDataError(`userSessions/${sessionId}/messages`, `exchange ${seq} named by an idempotency key is missing`);
  const usage = exchange.assistant.usage;
  return {
    sessionId,
    text: exchange.assistant.content,
    truncated: exchange.assistant.truncated === true,
    exchangeCount: seq,
    replayed: true,
    ...(usage ? { usage: replyCallUsage(usage) } : {}),
  };
}

/** The reply call's own usage, as an answer gives it, from what is stored with the exchange. */
function replyCallUsage(usage: ReplyUsage): TokenUsage {
  const { prompt_estimate, summary, window_from, ...call } = usage;
  return call;
}
