import type { ChatModel } from "../../llm/chat-model";
import type { Log } from "../../log/log";
import type { MessageModeration } from "../../moderation/message-moderation";
import type { HistoryStore, LedgerStore, StateStore } from "../../store/session-store";
import type { KnownSessions } from "../known-sessions";
import type { UsagePolicy } from "../ledger/limits";
import type { ServiceLedger } from "../ledger/service-cap";
import type { SessionPolicy } from "../session-rules";

/** What the steps of a message (admission, generation, commit) share: built once per instance. */
export interface MessageContext {
  readonly store: StateStore & HistoryStore & LedgerStore;
  readonly model: ChatModel;
  readonly clock: () => number;
  /** Structured figures only: never a message's text. */
  readonly log: Log;
  readonly policy: SessionPolicy;
  /** Per-user limits, the deployment's cap and the per-address limit. */
  readonly usage: UsagePolicy;
  readonly serviceLedger: ServiceLedger;
  /** What this instance knows of sessions: their fixed fields and recent history. */
  readonly known: KnownSessions;
  /** How long a claimed slot holds off repeats: longer than a model call can take. */
  readonly keyLeaseMs: number;
  /** How long a keyed repeat waits for the first request's result before answering 409. */
  readonly keyWaitMs: number;
  /** How long a message kept out of the session's last exchanges by running claims alone waits for them. */
  readonly claimWaitMs: number;
  /** How often a repeat polls for the result of the request it waits for. */
  readonly keyPollMs: number;
  /** Write replies' text so far as partials (where the store has readers for them). */
  readonly livePartials: boolean;
  /** The longest wait between two writes of a partial: the budget of its writes. */
  readonly partialMaxIntervalMs: number;
  /** MAX_MESSAGE_CHARS: what a cold instance reserves of the deployment's cap per unseen history message. */
  readonly maxMessageChars: number;
  /** With MODERATION on: what checks the user's message beside the model call. */
  readonly moderation?: MessageModeration;
}
