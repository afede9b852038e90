import { randomUUID } from "node:crypto";
import { isDoneKey, isKeyRecordOf, ofCreation, type KeyRecord, type SessionState } from "../../store/records";
import type { StateRule, StateStore } from "../../store/session-store";
import { SessionNotFoundError } from "../errors";
import { fingerprint, keyHash } from "../idempotency";
import type { SlotOutcome } from "./refusals";
import { claimRequest, flagClaim, releaseClaim, type ClaimOutcome, type ExchangeLimit, type RequestClaim, type SessionPolicy } from "../session-rules";

/** What claiming a slot needs of the instance. */
export interface SlotClaimContext {
  readonly store: Pick<StateStore, "updateStateReadingKey" | "updateState" | "readSessionState">;
  readonly clock: () => number;
  readonly policy: SessionPolicy;
  readonly keyLeaseMs: number;
  readonly keyWaitMs: number;
  /** How long a claim refused for the exchange limit by running claims alone waits for them (see claimSlot). */
  readonly claimWaitMs: number;
  readonly keyPollMs: number;
}

/** A message's claim: under its key's hash when it has an `Idempotency-Key`, else under a random id. */
export function claimFor(message: string, idempotencyKey: string | undefined): RequestClaim {
  const owner = randomUUID();
  return idempotencyKey === undefined
    ? { hash: `r-${owner}`, fingerprint: "", owner, remember: false }
    : { hash: keyHash("sendMessage", idempotencyKey), fingerprint: fingerprint(message), owner, remember: true };
}

/**
 * Claims a slot for the request: its own, or the number of the exchange an earlier request
 * with this key stored, or why not. While another request holds the key, waits for that one's
 * result as long as the time budget allows (then 409: the client retries later with the key).
 *
 * Refused for the exchange limit while fewer exchanges are stored than the limit, it waits too:
 * running claims alone fill the session, and their outcome is unknown. A keyed repeat whose key
 * is done and moved to its record claims a slot before the record read beside its claim tells it
 * is a replay, then gives the slot back a round trip later; a message that fails gives its slot
 * back. Refused at once, a new message sent meanwhile (a client retrying a lost answer while it,
 * or another tab, sends the next) would be told the session is full. So the claim waits, reading
 * the state this instance listens to, until the rule would decide otherwise (a claim gone, an
 * exchange stored, the session closed), then claims again, in the same rule: two messages racing
 * for the last slot still never both call the model. After `claimWaitMs` (within the time budget)
 * the refusal stands: the claims still running then hold the session's last exchanges for up to
 * their leases. Nothing else is counted differently (a claim that others skip until confirmed would
 * need a transaction more on every keyed message to confirm it, or would let two new keyed messages
 * both call the model for the last slot), and a claim that is not refused this way waits for nothing.
 *
 * For the session created at `createdAt` only (the fields the caller holds): a state of another
 * creation under the id (records.ts ofCreation) is claimed nothing on, and answered
 * `renewed`. Told by the claim's own transaction, the database's word, which costs nothing more.
 */
export async function claimSlot(context: SlotClaimContext, sessionId: string, createdAt: number, claim: RequestClaim, receivedAt: number): Promise<SlotOutcome> {
  const { store, clock, policy, keyLeaseMs, keyWaitMs, claimWaitMs } = context;
  // Bounded by the time budget, not the lease: waiting out a dead request's lease would outlive the function.
  const giveUpAt = receivedAt + keyWaitMs;
  let waited = false;
  /** When a wait for running claims (see above) gives up: set at the first such refusal. */
  let claimsWaitUntil: number | undefined;
  for (;;) {
    // Once a wait ran out, what ended it is still looked at (the key's exchange stored at its last
    // poll is a replay), but the key is not claimed: a model call started at the end of the wait
    // would outlast the function's time.
    const late = waited && clock() >= giveUpAt;
    const claiming = claimRequest(claim, clock(), keyLeaseMs, policy);
    const rule = onCreation(createdAt, late ? withoutClaiming(claiming) : claiming);
    const result = await store.updateStateReadingKey(sessionId, rule, claim.remember ? claim.hash : undefined);
    if (!result.found) throw new SessionNotFoundError(sessionId);
    const { outcome, state } = result;
    // Before the key's record: one of another creation is not this claim's to replay.
    if (outcome.kind === "renewed") return outcome;
    const record = ofThisCreation(result.record, state);
    if (record && outcome.kind !== "done" && outcome.kind !== "flagged") {
      // The key is done (its exchange stored, or its message flagged) and its record moved out of the state: a repeat.
      if (outcome.kind === "claimed") releaseQuietly(store, sessionId, claim);
      if (record.fingerprint !== claim.fingerprint) return { kind: "reused" };
      return "seq" in record ? { kind: "done", seq: record.seq } : { kind: "flagged" };
    }
    if (outcome.kind === "claimed") return { kind: "claimed", exchangeCount: state.message_count, alone: outcome.alone };
    // Free past the wait (the first request gave up, or its lease lapsed): a retry may claim it at once.
    if (outcome.kind === "free") return { kind: "in-progress", retryAfterMs: 1_000 };
    if (outcome.kind === "limit" && outcome.running === true) {
      claimsWaitUntil ??= Math.min(giveUpAt, clock() + claimWaitMs);
      const refused = await awaitClaims(context, sessionId, claim, claimsWaitUntil, outcome);
      if (refused) return refused;
      continue;
    }
    if (outcome.kind !== "busy") return outcome;
    if (late || clock() >= giveUpAt) return { kind: "in-progress", retryAfterMs: outcome.leaseUntil - clock() };
    await awaitKey(context, sessionId, claim, Math.min(outcome.leaseUntil, giveUpAt));
    waited = true;
  }
}

/** The key's record, unless it is another creation's (records.ts isKeyRecordOf): no replay of an erased session's exchange. */
function ofThisCreation(record: KeyRecord | null, state: SessionState): KeyRecord | null {
  return record !== null && isKeyRecordOf(record, state) ? record : null;
}

/** A claim's outcome, or, for a look that claims nothing, the key found free to claim. */
type Looked = ClaimOutcome | { readonly kind: "free" };

/** `rule` on the state of the session created at `createdAt`; on another creation's, a look that writes nothing. */
function onCreation<O>(createdAt: number, rule: StateRule<O>): StateRule<O | { readonly kind: "renewed" }> {
  return (state) => (ofCreation(state, createdAt) ? rule(state) : { outcome: { kind: "renewed" } });
}

/** `rule` as a look only: where it would claim the key, it writes nothing and finds the key free. */
function withoutClaiming(rule: StateRule<ClaimOutcome>): StateRule<Looked> {
  return (state) => {
    const ruled = rule(state);
    const { outcome } = ruled;
    return outcome.kind === "claimed" ? { outcome: { kind: "free" } } : { ...ruled, outcome };
  };
}

/**
 * Gives up a claim, off the reply's path, with the partial reply it may have written (`partial`,
 * see releaseClaim); if that is lost too, the claim lapses with its lease, and the sweep removes both.
 * `flagged`: moderation flagged the message, and a keyed claim stays as its key's answer (flagClaim).
 */
export function releaseQuietly(store: Pick<StateStore, "updateState">, sessionId: string, claim: RequestClaim, partial = false, flagged = false): void {
  void store.updateState(sessionId, (flagged ? flagClaim : releaseClaim)(claim, partial)).catch(() => undefined);
}

/** Polls the session until the key's claim is gone (done, flagged, released or lapsed) or `until` passes. */
async function awaitKey(context: SlotClaimContext, sessionId: string, claim: RequestClaim, until: number): Promise<void> {
  await pollState(context, sessionId, until, (state) => {
    const entry = state?.requests?.[claim.hash];
    return !entry || isDoneKey(entry) || state.status !== "active";
  });
}

/**
 * Polls the session while the claim's rule, run on the state this instance holds, would refuse it
 * for the exchange limit held by running claims alone: undefined once it would decide otherwise
 * (claim again: the transaction decides), else, at `until`, that refusal as of the last poll. The
 * listened state holds the refusing transaction's value by the time it answers (the server sends
 * the node's new value to this instance's listen too); were it ever older, the claim's next
 * transaction would only refuse again, and wait again within the same bound.
 */
async function awaitClaims(context: SlotClaimContext, sessionId: string, claim: RequestClaim, until: number, refusal: ExchangeLimit): Promise<ExchangeLimit | undefined> {
  const { clock, keyLeaseMs, policy } = context;
  let refused = refusal;
  const changed = await pollState(context, sessionId, until, (state) => {
    if (!state) return true;
    const { outcome } = claimRequest(claim, clock(), keyLeaseMs, policy)(state);
    if (outcome.kind !== "limit" || outcome.running !== true) return true;
    refused = outcome;
    return false;
  });
  return changed ? undefined : refused;
}

/** Polls the session's state every `keyPollMs` until `settled` says so (true) or `until` passes (false). */
async function pollState(context: SlotClaimContext, sessionId: string, until: number, settled: (state: SessionState | null) => boolean): Promise<boolean> {
  const { store, clock, keyPollMs } = context;
  while (clock() < until) {
    await new Promise((wake) => setTimeout(wake, Math.max(1, Math.min(keyPollMs, until - clock()))));
    // On the database, a read of the listened state costs no round trip.
    if (settled(await store.readSessionState(sessionId))) return true;
  }
  return false;
}
