import type { HistoryStore, StateStore } from "../../store/session-store";
import type { ReplyUsage, TokenUsage } from "../../store/records";
import { StoreDataError } from "../../store/errors";
import { SessionNotFoundError } from "../errors";

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
export async function replay(store: Pick<HistoryStore, "readExchange"> & Pick<StateStore, "readSessionMeta">, sessionId: string, seq: number): Promise<Reply> {
  const exchange = await store.readExchange(sessionId, seq);
  if (!exchange) {
    // None either when the session went after its key was found (an erasure, the retention
    // clean-up): that is the session gone, as any later request finds, not an exchange missing.
    // Its fields, not its state, tell: the retention deletes them with the history, in one
    // update, and the state after, in a write of its own (RtdbStore.deleteSession), so a read
    // between the two, or after a second write that failed, finds the state still there.
    if (!(await store.readSessionMeta(sessionId))) throw new SessionNotFoundError(sessionId);
    throw new StoreDataError(`userSessions/${sessionId}/messages`, `exchange ${seq} named by an idempotency key is missing`);
  }
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
