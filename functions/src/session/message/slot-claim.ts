import { randomUUID } from "node:crypto";
import type { StateStore } from "../../store/session-store";
import { SessionNotFoundError } from "../errors";
import { fingerprint, keyHash } from "../idempotency";
import type { SlotOutcome } from "./refusals";
import { claimRequest, releaseClaim, type RequestClaim, type SessionPolicy } from "../session-rules";

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
  for (;;) {
    const result = await store.updateStateReadingKey(sessionId, claimRequest(claim, clock(), keyLeaseMs, policy), claim.remember ? claim.hash : undefined);
    if (!result.found) throw new SessionNotFoundError(sessionId);
    const { outcome, record, state } = result;
    if (record && outcome.kind !== "done") {
      // The key's exchange is done and its record moved out of the state: a repeat.
      if (outcome.kind === "claimed") releaseQuietly(store, sessionId, claim);
      return record.fingerprint === claim.fingerprint ? { kind: "done", seq: record.seq } : { kind: "reused" };
    }
    if (outcome.kind === "claimed") return { kind: "claimed", exchangeCount: state.message_count, alone: outcome.alone };
    if (outcome.kind !== "busy") return outcome;
    // Give up on a claim found live past the wait allowed; after waiting, claim again, but only
    // within the wait: a claim at its end would start a model call the function's time cannot hold.
    if (clock() >= giveUpAt) return { kind: "in-progress", retryAfterMs: outcome.leaseUntil - clock() };
    await awaitKey(context, sessionId, claim, Math.min(outcome.leaseUntil, giveUpAt));
    if (clock() >= giveUpAt) return { kind: "in-progress", retryAfterMs: outcome.leaseUntil - clock() };
  }
}

/**
 * Gives up a claim, off the reply's path, with the partial reply it may have written (`partial`,
 * see releaseClaim); if that is lost too, the claim lapses with its lease, and the sweep removes both.
 */
export function releaseQuietly(store: Pick<StateStore, "updateState">, sessionId: string, claim: RequestClaim, partial = false): void {
  void store.updateState(sessionId, releaseClaim(claim, partial)).catch(() => undefined);
}

/** Polls the session until the key's claim is gone (done, released or lapsed) or `until` passes. */
async function awaitKey(context: SlotClaimContext, sessionId: string, claim: RequestClaim, until: number): Promise<void> {
  const { store, clock, keyPollMs } = context;
  while (clock() < until) {
    await new Promise((wake) => setTimeout(wake, Math.max(1, Math.min(keyPollMs, until - clock()))));
    // On the database, a read of the listened state costs no round trip.
    const state = await store.readSessionState(sessionId);
    const entry = state?.requests?.[claim.hash];
    if (!entry || entry.seq !== undefined || state.status !== "active") return;
  }
}
