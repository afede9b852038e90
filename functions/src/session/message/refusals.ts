import { MessageFlaggedError } from "../../llm/moderation";
import { IdempotencyInProgressError, IdempotencyKeyReusedError, LimitExceededError, SessionClosedError } from "../errors";
import type { AppendOutcome, ClaimOutcome } from "../session-rules";

/** What a message's claim came to, before the model call. */
export type SlotOutcome =
  | { readonly kind: "claimed"; readonly exchangeCount: number; readonly alone: boolean }
  | { readonly kind: "done"; readonly seq: number }
  | { readonly kind: "in-progress"; readonly retryAfterMs: number }
  /**
   * The session under the id is another creation than the one the claim was for (an erased id a
   * keyed create's retry created again): nothing claimed, nothing refused; the message starts again
   * from that session's fields (slot-claim.ts claimSlot).
   */
  | { readonly kind: "renewed" }
  | Exclude<ClaimOutcome, { kind: "claimed" } | { kind: "done" } | { kind: "busy" }>;

/** A claim or a commit that the session's rules refused. */
export type Refused = Exclude<SlotOutcome | AppendOutcome, { kind: "claimed" } | { kind: "done" } | { kind: "renewed" } | { kind: "appended" } | { kind: "duplicate" } | { kind: "gone" }>;

/** The one place where a refused claim or commit becomes its error. */
export function refusal(outcome: Refused): Error {
  switch (outcome.kind) {
    case "closed":
      return new SessionClosedError(outcome.status);
    case "limit":
      // Retry-After: when the full session expires (session-rules.ts exchangeLimit).
      return new LimitExceededError("exchanges", seconds(outcome.retryAfterMs));
    case "reused":
      return new IdempotencyKeyReusedError();
    case "flagged":
      // A repeat of a keyed message moderation flagged: the first's answer, without its categories (not kept).
      return new MessageFlaggedError([]);
    case "in-progress":
      return new IdempotencyInProgressError(seconds(outcome.retryAfterMs));
    case "lost":
      // The claim lapsed before the commit: its lease is the function timeout, so the request ran
      // past it (answered by the platform meanwhile) or the instances' clocks disagree. The
      // client's retry with the key finds whichever request stored the exchange.
      return new IdempotencyInProgressError(1);
  }
}

/** Whole seconds for a Retry-After header, at least one. */
export function seconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000));
}
