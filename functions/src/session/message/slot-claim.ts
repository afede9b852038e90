import { randomUUID } from "node:crypto";
import { isDoneKey } from "../../store/records";
import type { StateRule, StateStore } from "../../store/session-store";
import { SessionNotFoundError } from "../errors";
import { fingerprint, keyHash } from "../idempotency";
import type { SlotOutcome } from "./refusals";
import { claimRequest, flagClaim, releaseClaim, type ClaimOutcome, type RequestClaim, type SessionPolicy } from "../session-rules";

/** What claiming a slot needs of the instance. */
export interface SlotClaimContext {
  readonly store: Pick<StateStore, "updateStateReadingKey" | "updateState" | "readSessionState">;
  readonly clock: () => number;
  readonly policy: SessionPolicy;
  readonly keyLeaseMs: number;
  readonly keyWaitMs: number;
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
 */
export async function claimSlot(context: SlotClaimContext, sessionId: string, claim: RequestClaim, receivedAt: number): Promise<SlotOutcome> {
  const { store, clock, policy, keyLeaseMs, keyWaitMs } = context;
  // Bounded by the time budget, not the lease: waiting out a dead request's lease would outlive the function.
  const giveUpAt = receivedAt + keyWaitMs;
  let waited = false;
  for (;;) {
    // Once a wait ran out, what ended it is still looked at (the key's exchange stored at its last
    // poll is a replay), but the key is not claimed: a model call started at the end of the wait
    // would outlast the function's time.
    const late = waited && clock() >= giveUpAt;
    const claiming = claimRequest(claim, clock(), keyLeaseMs, policy);
    const rule: StateRule<Looked> = late ? withoutClaiming(claiming) : claiming;
    const result = await store.updateStateReadingKey(sessionId, rule, claim.remember ? claim.hash : undefined);
    if (!result.found) throw new SessionNotFoundError(sessionId);
    const { outcome, record, state } = result;
    if (record && outcome.kind !== "done" && outcome.kind !== "flagged") {
      // The key is done (its exchange stored, or its message flagged) and its record moved out of the state: a repeat.
      if (outcome.kind === "claimed") releaseQuietly(store, sessionId, claim);
      if (record.fingerprint !== claim.fingerprint) return { kind: "reused" };
      return "seq" in record ? { kind: "done", seq: record.seq } : { kind: "flagged" };
    }
    if (outcome.kind === "claimed") return { kind: "claimed", exchangeCount: state.message_count, alone: outcome.alone };
    // Free past the wait (the first request gave up, or its lease lapsed): a retry may claim it at once.
    if (outcome.kind === "free") return { kind: "in-progress", retryAfterMs: 1_000 };
    if (outcome.kind !== "busy") return outcome;
    if (late || clock() >= giveUpAt) return { kind: "in-progress", retryAfterMs: outcome.leaseUntil - clock() };
    await awaitKey(context, sessionId, claim, Math.min(outcome.leaseUntil, giveUpAt));
    waited = true;
  }
}

/** A claim's outcome, or, for a look that claims nothing, the key found free to claim. */
type Looked = ClaimOutcome | { readonly kind: "free" };

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
  const { store, clock, keyPollMs } = context;
  while (clock() < until) {
    await new Promise((wake) => setTimeout(wake, Math.max(1, Math.min(keyPollMs, until - clock()))));
    // On the database, a read of the listened state costs no round trip.
    const state = await store.readSessionState(sessionId);
    const entry = state?.requests?.[claim.hash];
    if (!entry || isDoneKey(entry) || state.status !== "active") return;
  }
}
