import type { ReplySink } from "../../llm/chat-model";
import type { TokenUsage } from "../../store/records";
import type { KnownSession } from "../known-sessions";
import { countedTokens, refundMessage, releaseSession, settleTokens, type Reservation, type Spent } from "../ledger/limits";
import { addBounded, type BoundedUsage } from "../ledger/call-usage";
import type { MessageContext } from "./message-context";
import { PartialWriter } from "./partial-writer";
import { summaryCallUsage, type SummaryCall, type SummaryResult } from "../prompt/rolling-summary";
import type { ServiceReservation } from "../ledger/service-cap";
import type { RequestClaim } from "../session-rules";
import { releaseQuietly } from "./slot-claim";

/** What a message took at its admission: each part present when it was granted. */
export interface Taken {
  /** The slot its claim holds: the exchange count the claim saw, and whether no other message of the session was running. */
  readonly slot?: { readonly exchangeCount: number; readonly alone: boolean };
  /**
   * The claim's transaction failed without an answer (a database deadline): it may have landed, and
   * kept it would hold its key "in progress" and a slot of the exchange limit for its whole lease
   * with nothing running, so `end` releases it as it would a slot it knows of (releaseClaim removes
   * only this owner's unfinished entry: nothing, if the claim never landed). Not awaited by the 503
   * either: the SDK runs an instance's transactions on a node in order, so a retry on this instance
   * claims after the release, and a keyed retry elsewhere that comes first waits for the key.
   */
  readonly claimUnanswered?: true;
  /** The user's message token and token reservation. */
  readonly reservation?: Reservation;
  /** Its share of the deployment's daily cap, when there is one. */
  readonly service?: ServiceReservation;
}

/** How a message ended, which decides what it gives back. */
export type MessageEnd =
  /**
   * Before the model: refused at its admission, a replay, or failed before its model calls (the
   * history read, the cap's top-up: reply-generation.ts), which spent nothing. `gone`: its claim found the session
   * closed (ended or expired) or missing, so it counts as active no more, whatever the admission
   * answered (see `end`).
   */
  | { readonly kind: "refused"; readonly gone?: true }
  /**
   * The model call failed, or moderation refused the message. `reply`: what
   * the reply's call counts when the provider bills it all the same (refused by moderation once the
   * call had started), with its bound as the service estimates it; absent, a failed call counts as nothing.
   * `flagged`: moderation flagged the message, an answer for good: a keyed claim is kept as its
   * key's flagged record instead of released (session-rules.ts flagClaim), for a repeat to get it.
   */
  | { readonly kind: "failed"; readonly reply?: BoundedUsage; readonly flagged?: true }
  /**
   * The commit was sent and its fate is unknown: it may have landed. Its claim is released all the
   * same: kept, it would hold its key "in progress" and a slot of the exchange limit for its whole
   * lease with nothing running. releaseClaim removes only this owner's unfinished entry, and a
   * commit that lands leaves none (a keyed one's has its seq, an unkeyed one's is gone), so it
   * does nothing once the commit landed; nor can it overtake a commit still on its way: the
   * memory store applies each call as it is made, and the SDK runs an instance's transactions on
   * a node in order, each from the state the earlier ones leave (see `claimUnanswered`). The
   * reservations were settled beside the commit, and stay so.
   */
  | { readonly kind: "unknown" }
  /** The commit answered without storing the exchange; `release`: free the slot at once (a repeat waiting on the key learns). */
  | { readonly kind: "not-stored"; readonly release: boolean }
  /** The commit found the session closed (ended or expired): nothing stored, the slot freed, and the session counts no more. */
  | { readonly kind: "closed" }
  /** The exchange is stored. */
  | { readonly kind: "stored" };

/**
 * One message while it is in flight: it owns what the message holds (its claim on a slot, the
 * user's reservation, the deployment's, the partial reply being written, the summary call beside
 * the reply) and gives it all back in one place, `end`, whatever the way the message ends.
 */
export class InFlightMessage {
  private partial: PartialWriter | undefined;
  private summaryCall: SummaryCall | undefined;
  /** The deployment's reservation: what the admission took, and what `holdServiceTokens` added. */
  private service: ServiceReservation | undefined;
  /** The reservations are settled with what the calls spent (sent beside the commit). */
  private settled = false;
  private ended = false;
  /** Stops watching for the session's close, once the reply is complete (its commit or its end removes the partial then). */
  private stopWatching: (() => void) | undefined;

  constructor(
    private readonly context: MessageContext,
    readonly session: KnownSession,
    readonly claim: RequestClaim,
    private readonly taken: Taken,
  ) {
    this.service = taken.service;
  }

  /** The slot the claim holds (an admitted message always has one). */
  get slot(): { readonly exchangeCount: number; readonly alone: boolean } {
    if (!this.taken.slot) throw new Error("a message without a slot was not admitted");
    return this.taken.slot;
  }

  /**
   * Where the model writes the reply: the caller's stream, and, where clients read them, a partial
   * reply in the database keyed by the claim's random owner (concurrent messages never collide, and
   * the key reveals nothing of an Idempotency-Key). Undefined when nobody reads the text as it is
   * written: the model is then called without streaming. Text sent to the caller cannot be taken
   * back; a partial alone can (a retried call overwrites it).
   */
  sink(caller: ReplySink | undefined): ReplySink | undefined {
    const { store, livePartials, clock, partialMaxIntervalMs } = this.context;
    if (!livePartials || !store.partialsReadable) return caller;
    const { id } = this.session;
    const partial = new PartialWriter((value) => void store.writePartial(id, this.claim.owner, value).catch(() => undefined), this.slot.exchangeCount, clock, partialMaxIntervalMs);
    this.partial = partial;
    // Another instance may close the session while the reply is still being written: its close
    // removes the partials once, and each write after it would bring this one back, in a
    // conversation that takes no reply, until the message ends. Once the session is known closed
    // the writer stops, and removes what it wrote as a failure does: the removal goes after any
    // write still on its way (one connection, in order), so a write landing after the close goes too.
    this.stopWatching = store.onClosed(id, () => { partial.discard(); });
    if (!caller) return partial;
    return {
      write: (text) => {
        partial.write(text);
        caller.write(text);
      },
    };
  }

  /**
   * Makes the deployment's reservation hold `tokens` (the planned calls' bound) before the model
   * is called: the admission estimated the history from the window this instance held, and when
   * another instance has added exchanges since, the prompt carries more than it reserved, and the
   * settlement would carry the deployment past its cap. Reserves the rest (one more transaction,
   * only then); undefined when it holds them, else when to retry (the cap cannot). Parts reserved
   * after midnight stay counted on their day, the settlement leaving them as reserved: never low.
   * The refusal's Retry-After counts on all `tokens`, what the message holds given back with the
   * refusal (not an open reservation that will settle), so a retry then fits; else 00:00 UTC.
   */
  async holdServiceTokens(tokens: number, now: number): Promise<number | undefined> {
    const service = this.service;
    if (!service) return undefined;
    const held = service.parts.reduce((sum, part) => sum + part.tokens, 0);
    if (tokens <= held) return undefined;
    const more = await this.context.serviceLedger.reserve(() => Math.ceil(tokens - held), now, this.context.usage, service);
    if (!more) return undefined;
    if (!more.admitted) return more.retryAfterMs;
    this.service = { day: service.day, parts: [...service.parts, ...more.reservation.parts] };
    return undefined;
  }

  /** The summary call that runs beside the reply's, kept or abandoned when the reply is ready. */
  besides(summaryCall: SummaryCall | undefined): void {
    this.summaryCall = summaryCall;
  }

  /**
   * The reply is complete: no more partial writes (one after the commit that removes the partial
   * would leave it behind), and the summary call kept if it has finished by now, else abandoned.
   */
  replyComplete(): SummaryResult {
    this.partial?.stop();
    this.stopWatching?.();
    return this.summaryCall?.finish() ?? {};
  }

  /** The partial reply the exchange completes, for its commit to remove: its key, when one may be stored. */
  get partialKey(): string | undefined {
    return this.partial?.written ? this.claim.owner : undefined;
  }

  /**
   * Settles both reservations with what the calls spent, sent beside the commit (neither adds a
   * round trip), whatever the commit's fate: the provider charged the calls either way. A lost
   * settlement leaves the reservation counted: never too low.
   */
  settle(calls: BoundedUsage, replyContext: number, overrun: number, answeredAt: number): Promise<unknown> {
    this.settled = true;
    const { exchangeCount, alone } = this.slot;
    this.noteUncounted(calls);
    return Promise.all([
      this.settleUser(calls, exchangeCount, { context: replyContext, alone, overrun, answeredAt }),
      this.context.serviceLedger.settle(this.service, spentOf(calls.usage)),
    ]);
  }

  /**
   * Logs calls that spent more than the limits count: a reservation holds a message's calls as the
   * service estimates them (the deployment's always, topped up before the call: holdServiceTokens;
   * the user's with the session's last reported call and raw estimates of the rest, unless it
   * missed history), and a report above it (a tokenizer that counts more than o200k) is counted at
   * most at the reservation, or for one that missed history at the service's estimate of the calls
   * (limits.ts countedTokens, service-cap.ts splitSpent): the rest is in the session's usage and
   * the day's cost, not in the limits' counts.
   */
  private noteUncounted(calls: BoundedUsage): void {
    const spent = calls.usage.total_tokens;
    const { reservation } = this.taken;
    const user = reservation?.tokens;
    const service = this.service?.parts.reduce((sum, part) => sum + part.tokens, 0);
    const userShort = reservation !== undefined && countedTokens(reservation, { tokens: spent, bound: calls.bound, ...this.claimed() }) < spent;
    if (!userShort && (service === undefined || spent <= service)) return;
    this.context.log.warn("usage above its reservation, counted at the reservation", {
      session_id: this.session.id,
      spent_tokens: spent,
      estimate_bound: calls.bound,
      user_reserved: user,
      service_reserved: service,
    });
  }

  /** Gives back whatever the message still holds, as the way it ended requires. Off the reply's path; once. */
  end(how: MessageEnd): void {
    if (this.ended) return;
    this.ended = true;
    this.stopWatching?.();
    const { store } = this.context;
    // The exchange's copy removes a stored one's partial, in the update that adds it to `messages`.
    // Otherwise discard's removal, sent on its own, may be lost (the instance going away): the
    // claim's release names the partial too, for its own copy to remove.
    const partial = this.partial?.written === true;
    if (how.kind !== "stored") this.partial?.discard();
    // Every end but a stored exchange frees the claim's slot; a commit that stored nothing, only when asked.
    // A flagged message frees it too, its key kept as flagged; if that write is lost, the claim
    // lapses with its lease and a repeat after it runs again (as after a lost release).
    const releases = how.kind === "not-stored" ? how.release : how.kind !== "stored";
    const flagged = how.kind === "failed" && how.flagged === true;
    if (releases && (this.taken.slot || this.taken.claimUnanswered)) releaseQuietly(store, this.session.id, this.claim, partial, flagged);
    // Its admission counted the session as active (one landing after the end's release refuses the
    // message instead: limits.ts admitMessage); an end whose release was lost left it counted. A
    // closed session never takes a message again, so no later count of it is lost; a lost release
    // here lapses with the TTL too. Refused at its claim as closed or missing, the admission's answer
    // may have been lost (no reservation known) and it counted the session all the same: released
    // whatever it answered, in a transaction sent after the admission's on the same record (the
    // memory store applies each call as it is made, the SDK an instance's transactions on a node
    // in order), and before the refund below, which then finds no count of its own to put back.
    const gone = how.kind === "closed" ? this.taken.reservation !== undefined : how.kind === "refused" && how.gone === true;
    if (gone) void store.updateUsage(this.session.userKey, releaseSession(this.session.id)).catch(() => undefined);
    if (this.settled) return;
    if (how.kind === "refused") {
      // A replay, a refusal or a failure before the model costs the user nothing: the message token and the reservations go back.
      this.refundUser(true);
      void this.context.serviceLedger.settle(this.service, { tokens: 0 });
      return;
    }
    // The model call failed, or was refused: of the reservations, only what the reply's call was
    // billed (a refused one) and what a summary call may have used stay counted.
    const finished = this.summaryCall?.finish();
    const summary = finished && summaryCallUsage(finished);
    const reply = how.kind === "failed" ? how.reply : undefined;
    const spent = reply && summary ? addBounded(reply, summary) : (reply ?? summary);
    if (spent) this.noteUncounted(spent);
    // Nothing stored: the session's count goes back as it was, whatever the calls were billed.
    this.refundUser(false, spent);
    void this.context.serviceLedger.settle(this.service, spentOf(spent?.usage));
  }

  /**
   * Gives back the user's reservation, less what `spent` calls were billed (and for a `refused`
   * message its token), and the session's count as it was before (see refundMessage); if that is
   * lost, the bucket refills anyway, the day's count keeps the reservation, and the count lapses
   * with the idle TTL.
   */
  private refundUser(refused: boolean, spent?: BoundedUsage): void {
    const { reservation } = this.taken;
    if (!reservation) return;
    const { store, usage } = this.context;
    const billed = spent === undefined ? undefined : { ...spentOf(spent.usage), bound: spent.bound, ...this.claimed() };
    void store.updateUsage(this.session.userKey, refundMessage(usage, this.session.id, reservation, refused, billed)).catch(() => undefined);
  }

  private settleUser(calls: BoundedUsage, claimedCount: number, exchange: Spent["exchange"]): Promise<void> {
    const { reservation } = this.taken;
    if (!reservation) return Promise.resolve();
    const rule = settleTokens(this.session.id, reservation, { ...spentOf(calls.usage), bound: calls.bound, claimedCount, ...(exchange === undefined ? {} : { exchange }) });
    return this.context.store.updateUsage(this.session.userKey, rule).catch(() => undefined);
  }

  /** The exchange count the claim saw, when it is known: what the calls' prompts held (limits.ts countedTokens). */
  private claimed(): { claimedCount?: number } {
    return this.taken.slot ? { claimedCount: this.taken.slot.exchangeCount } : {};
  }
}

/** What the ledgers settle a reservation with: the calls' tokens and cost (nothing when no call was made). */
function spentOf(usage: TokenUsage | undefined): { tokens: number; costUsd?: number } {
  if (!usage) return { tokens: 0 };
  return usage.cost_usd === undefined ? { tokens: usage.total_tokens } : { tokens: usage.total_tokens, costUsd: usage.cost_usd };
}
