import { randomUUID } from "node:crypto";
import { admitMessage, admitSession, refundMessage, releaseEnded, releaseSession, requestLifetimeMs, settleTokens, utcDay, type MessageAdmission, type Reservation, type TokenNeed, type UsagePolicy } from "../../src/session/ledger/limits";
import { expiredIfIdle } from "../../src/session/session-rules";
import { estimateMessageTokens, estimatePromptTokens, TOKENS_PER_MESSAGE } from "../../src/session/prompt/token-estimate";
import { SUMMARY_CALL_TOKENS, SUMMARY_PROMPT_TOKENS } from "../../src/session/prompt/rolling-summary";
import { isSummary } from "../support/summary-in";
import { MemoryStore } from "../../src/store/memory-store";
import { userUsageSchema, type Template, type UserUsage } from "../../src/store/records";
import type { UsageRule } from "../../src/store/session-store";
import { lastUser } from "../support/fake-openai-server";
import { POLICY as SESSION_POLICY } from "../support/fixtures";
import { SCRIPT_MESSAGES } from "../support/o200k-scripts";
import { tokenSuite, unlimitedUsage, usageOf } from "../support/token-service";

const POLICY: UsagePolicy = { messagesPerMinute: 1_000, maxActiveSessions: 10, idleTtlMs: 3_600_000, tokensPerDay: 1_000 };
const NEED: TokenNeed = { fresh: 100, firstPrompt: 50 };
const NOON = Date.parse("2026-11-26T12:00:00Z");

/** Applies rules in order to one record, as the store's transactions would. */
function apply(usage: UserUsage | null, ...rules: ((usage: UserUsage | null) => { next?: UserUsage })[]): UserUsage | null {
  let current = usage;
  for (const rule of rules) current = rule(current).next ?? current;
  return current;
}

function admitted(outcome: MessageAdmission) {
  if (!outcome.admitted) throw new Error(`refused: ${outcome.limit}`);
  return outcome.reservation;
}

describe("daily token ledger rules", () => {
  /** What a settlement says of an exchange whose commit was sent: its call's size, the count its claim saw, whether it ran alone, when it was answered. */
  const landed = (context: number, claimedCount: number, alone = true, answeredAt = NOON) => ({ tokens: context, claimedCount, exchange: { context, alone, answeredAt } });

  it("reserves a first message's system prompt and need, counted on the UTC day", () => {
    const { outcome, next } = admitMessage("s1", NOON, POLICY, NEED)(null);
    expect(admitted(outcome)).toEqual({ day: "2026-11-26", tokens: 150, fresh: 100, countedAt: NOON, unanchored: true });
    expect(next?.daily).toEqual({ day: "2026-11-26", tokens: 150 });
  });

  it("bounds a sequential message's prompt by the session's last call, from the record", () => {
    const first = admitted(admitMessage("s1", NOON, POLICY, NEED)(null).outcome);
    const after = apply(null, admitMessage("s1", NOON, POLICY, NEED), settleTokens("s1", first, landed(90, 0)));
    expect(after?.daily).toEqual({ day: "2026-11-26", tokens: 90 });
    expect(after?.contexts?.s1).toMatchObject({ tokens: 90, open: 0, landed: 1 });
    expect(admitted(admitMessage("s1", NOON + 1, POLICY, NEED)(after).outcome).tokens).toBe(190);
    // Another session of the same user starts from its own first prompt.
    expect(admitted(admitMessage("s2", NOON + 1, POLICY, NEED)(after).outcome).tokens).toBe(150);
  });

  it("keeps the bound of concurrent messages: each admission adds its need, and no settlement lowers it while others may have landed", () => {
    const a = admitMessage("s1", NOON, POLICY, NEED);
    const b = admitMessage("s1", NOON, POLICY, NEED);
    let usage = apply(null, a);
    const ra = admitted(a(null).outcome);
    const rb = admitted(b(usage).outcome);
    usage = apply(usage, b);
    // B may hold A's exchange: its reservation counts A's need on top of the first prompt.
    expect(rb.tokens).toBe(250);
    // Both claimed at count 0, A alone, B beside it. A settles first (B still open), then B (not alone):
    // neither may bring the bound down to its own call, which misses the other's exchange.
    usage = apply(usage, settleTokens("s1", ra, landed(60, 0, true)), settleTokens("s1", rb, landed(70, 0, false)));
    expect(usage?.contexts?.s1).toMatchObject({ tokens: 250, open: 0, landed: 1 });
    // The next message, alone at count 2, reserves from that bound and then brings it down to its real size.
    const rc = admitted(admitMessage("s1", NOON + 1, POLICY, NEED)(usage).outcome);
    expect(rc.tokens).toBe(350);
    usage = apply(usage, admitMessage("s1", NOON + 1, POLICY, NEED), settleTokens("s1", rc, landed(200, 2)));
    expect(usage?.contexts?.s1).toMatchObject({ tokens: 200, open: 0, landed: 3 });
  });

  it("adds to the bound of concurrent messages what a reply carries past max_tokens, which their needs counted at max_tokens", () => {
    const a = admitMessage("s1", NOON, POLICY, NEED);
    let usage = apply(null, a);
    const ra = admitted(a(null).outcome);
    const rb = admitted(admitMessage("s1", NOON, POLICY, NEED)(usage).outcome);
    usage = apply(usage, admitMessage("s1", NOON, POLICY, NEED));
    // A's reply ignored max_tokens and carries 400 tokens more; B settles beside it, not alone.
    usage = apply(usage, settleTokens("s1", ra, { tokens: 60, claimedCount: 0, exchange: { context: 60, alone: true, overrun: 400, answeredAt: NOON } }), settleTokens("s1", rb, landed(70, 0, false)));
    expect(usage?.contexts?.s1).toMatchObject({ tokens: 650, open: 0, landed: 1 });
  });

  it("does not lower the bound for a call whose claim saw fewer exchanges than a message already settled", () => {
    // X claimed alone at count 1, then Y claimed beside it, ran and settled before X was even admitted.
    const base = apply(null, admitMessage("s1", NOON, POLICY, NEED), settleTokens("s1", admitted(admitMessage("s1", NOON, POLICY, NEED)(null).outcome), landed(90, 0)));
    const ry = admitted(admitMessage("s1", NOON, POLICY, NEED)(base).outcome);
    let usage = apply(base, admitMessage("s1", NOON, POLICY, NEED), settleTokens("s1", ry, landed(400, 1, false)));
    const rx = admitted(admitMessage("s1", NOON, POLICY, NEED)(usage).outcome);
    usage = apply(usage, admitMessage("s1", NOON, POLICY, NEED), settleTokens("s1", rx, landed(95, 1, true)));
    // Y's exchange (seq 2) is in no prompt X sent: the bound stays.
    expect(usage?.contexts?.s1?.tokens).toBe(rx.tokens);
  });

  it("takes a message's need back off the bound when its exchange cannot have landed", () => {
    const base = apply(null, admitMessage("s1", NOON, POLICY, NEED), settleTokens("s1", admitted(admitMessage("s1", NOON, POLICY, NEED)(null).outcome), landed(90, 0)));
    let usage = base;
    for (let i = 0; i < 5; i += 1) {
      const r = admitted(admitMessage("s1", NOON, POLICY, NEED)(usage).outcome);
      usage = apply(usage, admitMessage("s1", NOON, POLICY, NEED), refundMessage(POLICY, "s1", r, false));
    }
    expect(usage?.contexts?.s1).toMatchObject({ tokens: 90, open: 0 });
    const failed = admitted(admitMessage("s1", NOON, POLICY, NEED)(usage).outcome);
    usage = apply(usage, admitMessage("s1", NOON, POLICY, NEED), settleTokens("s1", failed, { tokens: 30 }));
    expect(usage?.contexts?.s1?.tokens).toBe(90);
  });

  it("forgets reservations left open by a request that died, after longer than a request can run", () => {
    const stuck = apply(null, admitMessage("s1", NOON, POLICY, NEED));
    expect(apply(stuck, admitMessage("s1", NOON + 1_000, POLICY, NEED))?.contexts?.s1?.open).toBe(2);
    expect(apply(stuck, admitMessage("s1", NOON + 121_000, POLICY, NEED))?.contexts?.s1?.open).toBe(1);
  });

  it("counts a reservation open as long as a request may run, when the function's timeout is longer than the default", () => {
    const long = { ...POLICY, requestTimeoutMs: 600_000 };
    const stuck = apply(null, admitMessage("s1", NOON, long, NEED));
    expect(apply(stuck, admitMessage("s1", NOON + 300_000, long, NEED))?.contexts?.s1?.open).toBe(2);
    expect(apply(stuck, admitMessage("s1", NOON + 601_000, long, NEED))?.contexts?.s1?.open).toBe(1);
    // A shorter timeout never shortens the default window.
    expect(apply(stuck, admitMessage("s1", NOON + 100_000, { ...POLICY, requestTimeoutMs: 60_000 }, NEED))?.contexts?.s1?.open).toBe(2);
  });

  it("forgets a reservation left open by a request that died two minutes after its own admission, though the session's messages keep coming", () => {
    const unlimited = { ...POLICY, tokensPerDay: 0 };
    // A dead request's reservation at NOON, then a message every 30 s, each settled alone.
    let usage = apply(null, admitMessage("s1", NOON, unlimited, NEED));
    const bounds: number[] = [];
    for (let i = 1; i <= 5; i += 1) {
      const rule = admitMessage("s1", NOON + i * 30_000, unlimited, NEED);
      const reservation = admitted(rule(usage).outcome);
      usage = apply(usage, rule, settleTokens("s1", reservation, landed(90, i, true, NOON + i * 30_000)));
      bounds.push(usage?.contexts?.s1?.tokens ?? -1);
    }
    // Within two minutes of it, no settlement is alone and the bound keeps each need; the first
    // admission from its lapse on (two minutes after it, to the millisecond) forgets it, and its
    // settlement brings the bound down to its call.
    expect(bounds).toEqual([250, 350, 450, 90, 90]);
    expect(usage?.contexts?.s1).toMatchObject({ open: 0, tokens: 90 });
  });

  it("reads a context an older version wrote (open reservations counted, not listed) as admitted at its last admission, each lapsing from there", () => {
    const unlimited = { ...POLICY, tokensPerDay: 0 };
    const older = userUsageSchema.parse({ tokens: 1_000, refilled_at: NOON, sessions: { s1: NOON }, contexts: { s1: { tokens: 90, open: 1, landed: 1, at: NOON } } });
    const rule = admitMessage("s1", NOON + 60_000, unlimited, NEED);
    const reservation = admitted(rule(older).outcome);
    let usage = apply(older, rule);
    expect(usage?.contexts?.s1?.open).toBe(2);
    usage = apply(usage, settleTokens("s1", reservation, landed(120, 1, false, NOON + 60_000)));
    expect(usage?.contexts?.s1?.open).toBe(1);
    // Two minutes after the older version's last admission its reservation has lapsed, though the session took one since.
    expect(apply(usage, admitMessage("s1", NOON + 121_000, unlimited, NEED))?.contexts?.s1?.open).toBe(1);
  });

  it("refuses a message that only the user's open reservations keep out until they settle or lapse at the latest, not until midnight", () => {
    const large = { fresh: 800, firstPrompt: 50 };
    const rule = admitMessage("s1", NOON, POLICY, large);
    const open = admitted(rule(null).outcome);
    const usage = apply(null, rule);
    const need = { fresh: 200, firstPrompt: 50 };
    expect(admitMessage("s2", NOON + 10_000, POLICY, need)(usage).outcome).toEqual({ admitted: false, limit: "tokens", retryAfterMs: 110_000 });
    // A retry at that instant, to the millisecond, finds the reservation lapsed: the day's own answer.
    expect(admitMessage("s2", NOON + 120_000, POLICY, need)(usage).outcome).toMatchObject({ retryAfterMs: 12 * 3_600_000 - 120_000 });
    // Settled, the same message fits.
    const settled = apply(usage, settleTokens("s1", open, landed(100, 0, true, NOON + 10_000)));
    expect(admitMessage("s2", NOON + 10_000, POLICY, need)(settled).outcome.admitted).toBe(true);
    // One that would not fit without them either waits for the next day.
    expect(admitMessage("s2", NOON + 10_000, POLICY, { fresh: 1_000, firstPrompt: 50 })(usage).outcome).toMatchObject({ retryAfterMs: 12 * 3_600_000 - 10_000 });
    // Lapsed (its request died), a reservation no longer shortens the wait: what it held counts as spent.
    expect(admitMessage("s2", NOON + 121_000, POLICY, need)(usage).outcome).toMatchObject({ retryAfterMs: 12 * 3_600_000 - 121_000 });
  });

  it("keeps the open reservations of a session ended while its message runs, so that a message they alone keep out waits for them, not for midnight; the settlement finds them", () => {
    const large = { fresh: 800, firstPrompt: 50 };
    const rule = admitMessage("s1", NOON, POLICY, large);
    const open = admitted(rule(null).outcome);
    const ended = apply(null, rule, releaseEnded("s1", NOON + 5_000, POLICY));
    // The session's count and context go; its running message's reservation stays in the day's count, kept apart, naming no session.
    expect({ sessions: ended?.sessions, contexts: ended?.contexts, daily: ended?.daily, apart: ended?.released_held }).toEqual({
      sessions: {},
      contexts: undefined,
      daily: { day: "2026-11-26", tokens: 850 },
      apart: { [NOON.toString(36)]: { at: NOON, tokens: 850, day: "2026-11-26" } },
    });
    // As the database stores it: the schema keeps it.
    expect(userUsageSchema.parse(ended)).toEqual(ended);
    const need = { fresh: 200, firstPrompt: 50 };
    expect(admitMessage("s2", NOON + 10_000, POLICY, need)(ended).outcome).toEqual({ admitted: false, limit: "tokens", retryAfterMs: 110_000 });
    // Settled (its commit finding the session ended), the same message fits, and nothing is left apart.
    const settled = apply(ended, settleTokens("s1", open, landed(100, 0, true, NOON + 10_000)));
    expect({ daily: settled?.daily, apart: settled?.released_held }).toEqual({ daily: { day: "2026-11-26", tokens: 100 }, apart: undefined });
    expect(admitMessage("s2", NOON + 10_000, POLICY, need)(settled).outcome.admitted).toBe(true);
    // Its request died: two minutes after its admission the reservation no longer shortens the wait, and the next admission forgets it.
    expect(admitMessage("s2", NOON + 120_000, POLICY, need)(ended).outcome).toMatchObject({ retryAfterMs: 12 * 3_600_000 - 120_000 });
    expect(apply(ended, admitMessage("s2", NOON + 120_000, POLICY, { fresh: 50, firstPrompt: 50 }))?.released_held).toBeUndefined();
  });

  it("reads a record of an older version, with no reservations kept apart, as having none: its settlement and a session's end work as before", () => {
    const reservation = admitted(admitMessage("s1", NOON, POLICY, NEED)(null).outcome);
    const older = userUsageSchema.parse({ tokens: 1_000, refilled_at: NOON, sessions: { s1: NOON }, daily: { day: "2026-11-26", tokens: 150 } });
    expect(apply(older, settleTokens("s1", reservation, { tokens: 10 }))).toEqual({ ...older, daily: { day: "2026-11-26", tokens: 10 } });
    expect(apply(older, releaseEnded("s1", NOON + 1_000, POLICY))).toEqual({ ...older, sessions: {}, ended: { s1: NOON + 1_000 } });
  });

  it("counts a settlement against the limit at most what the message reserved, and its cost in full", () => {
    const rule = admitMessage("s1", NOON, POLICY, NEED);
    const reservation = admitted(rule(null).outcome);
    const usage = apply(null, rule, settleTokens("s1", reservation, { tokens: 900, costUsd: 0.5 }));
    expect(usage?.daily).toEqual({ day: "2026-11-26", tokens: 150, cost_usd: 0.5 });
  });

  it("counts what a reservation missed up to the service's estimate of the calls made, and only a report above both at the larger", () => {
    // No bound kept for the session (dropped while it lived): reserved from its first prompt, while its claim saw exchanges.
    const rule = admitMessage("s1", NOON, POLICY, NEED);
    const reservation = admitted(rule(null).outcome);
    const countedOf = (spent: { tokens: number; bound?: number }) => apply(null, rule, settleTokens("s1", reservation, { ...spent, claimedCount: 3 }))?.daily?.tokens;
    // The calls sent history the reservation (150) did not hold: within their estimate, counted in full.
    expect(countedOf({ tokens: 900, bound: 1_000 })).toBe(900);
    // A report above the estimate too (another tokenizer): counted at the estimate.
    expect(countedOf({ tokens: 900, bound: 600 })).toBe(600);
    // Above a reservation that held the estimate: at the reservation.
    expect(countedOf({ tokens: 900, bound: 120 })).toBe(150);
    expect(countedOf({ tokens: 100, bound: 120 })).toBe(100);
    // The session's first message (its claim saw no exchange): nothing of its history can be missed.
    expect(apply(null, rule, settleTokens("s1", reservation, { tokens: 900, bound: 1_000, claimedCount: 0 }))?.daily?.tokens).toBe(150);
  });

  it("counts a message reserved on a bound a settled call set at most at its reservation, whatever the estimate of its calls", () => {
    const first = admitted(admitMessage("s1", NOON, POLICY, NEED)(null).outcome);
    const anchored = apply(null, admitMessage("s1", NOON, POLICY, NEED), settleTokens("s1", first, landed(120, 0)));
    expect(anchored?.contexts?.s1?.unanchored).toBeUndefined();
    const rule = admitMessage("s1", NOON + 1, POLICY, NEED);
    const reservation = admitted(rule(anchored).outcome);
    expect(reservation).toMatchObject({ tokens: 220 });
    expect(reservation.unanchored).toBeUndefined();
    // A believed report above the raw estimate of the new message, within its calibrated one: the reservation holds the day.
    expect(apply(anchored, rule, settleTokens("s1", reservation, { tokens: 290, bound: 320, claimedCount: 1 }))?.daily?.tokens).toBe(120 + 220);
  });

  it("keeps a bound started from the first prompt unanchored until a settlement alone sets it to a real call's", () => {
    const a = admitMessage("s1", NOON, POLICY, NEED);
    const ra = admitted(a(null).outcome);
    let usage = apply(null, a);
    // A second message of the session beside it: its reservation builds on the unanchored bound.
    const b = admitMessage("s1", NOON + 1, POLICY, NEED);
    const rb = admitted(b(usage).outcome);
    expect(rb).toMatchObject({ tokens: 250, unanchored: true });
    usage = apply(usage, b, settleTokens("s1", ra, landed(90, 3)));
    expect(usage?.contexts?.s1?.unanchored).toBe(true);
    usage = apply(usage, settleTokens("s1", rb, landed(120, 4)));
    expect(usage?.contexts?.s1).toMatchObject({ tokens: 120 });
    expect(usage?.contexts?.s1?.unanchored).toBeUndefined();
  });

  it("refuses a message whose reservation would pass the limit, until the next UTC day, and takes nothing", () => {
    const large = { fresh: 900, firstPrompt: 50 };
    const first = admitted(admitMessage("s1", NOON, POLICY, large)(null).outcome);
    const nearly = apply(null, admitMessage("s1", NOON, POLICY, large), settleTokens("s1", first, landed(860, 0)));
    expect(nearly?.daily?.tokens).toBe(860);
    const { outcome, next } = admitMessage("s2", NOON, POLICY, NEED)(nearly);
    expect(outcome).toEqual({ admitted: false, limit: "tokens", retryAfterMs: 12 * 3_600_000 });
    expect(next).toBeUndefined();
    // Exactly at the limit is allowed.
    expect(admitMessage("s2", NOON, POLICY, { fresh: 90, firstPrompt: 50 })(nearly).outcome.admitted).toBe(true);
    // The next day starts from zero.
    const tomorrow = Date.parse("2026-11-27T00:00:00Z");
    expect(admitted(admitMessage("s2", tomorrow, POLICY, NEED)(nearly).outcome)).toMatchObject({ day: "2026-11-27", tokens: 150 });
  });

  it("counts but never refuses with a limit of 0", () => {
    const unlimited = { ...POLICY, tokensPerDay: 0 };
    const heavy = { fresh: 10_000_000, firstPrompt: 0 };
    const { outcome, next } = admitMessage("s1", NOON, unlimited, heavy)(null);
    expect(outcome.admitted).toBe(true);
    expect(next?.daily?.tokens).toBe(10_000_000);
  });

  it("concurrent admissions never reserve past the limit together", () => {
    let usage: UserUsage | null = null;
    const outcomes: MessageAdmission[] = [];
    for (let i = 0; i < 10; i += 1) {
      const { outcome, next } = admitMessage(`s${i}`, NOON, POLICY, NEED)(usage);
      outcomes.push(outcome);
      usage = next ?? usage;
    }
    expect(outcomes.filter((outcome) => outcome.admitted)).toHaveLength(6);
    expect(usage?.daily?.tokens).toBe(900);
  });

  it("a refund gives back the reservation, and the message token only when asked", () => {
    const usage = apply(null, admitMessage("s1", NOON, POLICY, NEED));
    const reservation = admitted(admitMessage("s1", NOON, POLICY, NEED)(null).outcome);
    expect(apply(usage, refundMessage(POLICY, "s1", reservation, false))).toMatchObject({ tokens: 999, daily: { tokens: 0 } });
    expect(apply(usage, refundMessage(POLICY, "s1", reservation, true))).toMatchObject({ tokens: 1_000, daily: { tokens: 0 } });
  });

  it("a refused or failed message leaves the session counted as active as it was before its admission", () => {
    const counted = apply(null, admitSession("s1", NOON - 60_000, POLICY), admitSession("s2", NOON - 30_000, POLICY));
    // Its session counted since its creation: counted since then again, not since the refused message.
    const onActive = admitted(admitMessage("s1", NOON, POLICY, NEED)(counted).outcome);
    expect(onActive).toMatchObject({ countedAt: NOON, countedBefore: NOON - 60_000 });
    expect(apply(counted, admitMessage("s1", NOON, POLICY, NEED), refundMessage(POLICY, "s1", onActive, true))?.sessions).toEqual({ s1: NOON - 60_000, s2: NOON - 30_000 });
    // Its session ended (released): not counted again, and no context bound left for it.
    const ended = apply(counted, releaseSession("s1"));
    const onEnded = admitted(admitMessage("s1", NOON, POLICY, NEED)(ended).outcome);
    expect(onEnded.countedBefore).toBeUndefined();
    const refunded = apply(ended, admitMessage("s1", NOON, POLICY, NEED), refundMessage(POLICY, "s1", onEnded, true));
    expect(refunded?.sessions).toEqual({ s2: NOON - 30_000 });
    expect(refunded?.contexts?.s1).toBeUndefined();
    expect(refunded).toMatchObject({ tokens: 1_000, daily: { tokens: 0 } });
    // A later admission of the session since: its count stays.
    const later = apply(ended, admitMessage("s1", NOON, POLICY, NEED), admitMessage("s1", NOON + 5_000, POLICY, NEED), refundMessage(POLICY, "s1", onEnded, true));
    expect(later?.sessions?.s1).toBe(NOON + 5_000);
    // A failed model call stored nothing either: the session's idle TTL still runs from its last
    // exchange, and so does its count (its message token stays spent).
    expect(apply(counted, admitMessage("s1", NOON, POLICY, NEED), refundMessage(POLICY, "s1", onActive, false))).toMatchObject({ sessions: { s1: NOON - 60_000, s2: NOON - 30_000 }, tokens: 999 });
    expect(apply(ended, admitMessage("s1", NOON, POLICY, NEED), refundMessage(POLICY, "s1", onEnded, false))?.sessions).toEqual({ s2: NOON - 30_000 });
  });

  it("a refused or failed message puts its session's count back to no earlier than an answer settled after its admission", () => {
    const created = apply(null, admitSession("s1", NOON - 60_000, POLICY));
    // A arrives, is answered a minute later; B is admitted before A's settlement lands.
    const ra = admitted(admitMessage("s1", NOON, POLICY, NEED)(created).outcome);
    const afterA = apply(created, admitMessage("s1", NOON, POLICY, NEED));
    const rb = admitted(admitMessage("s1", NOON + 61_000, POLICY, NEED)(afterA).outcome);
    expect(rb).toMatchObject({ countedAt: NOON + 61_000, countedBefore: NOON });
    const settled = apply(afterA, admitMessage("s1", NOON + 61_000, POLICY, NEED), settleTokens("s1", ra, landed(90, 0, true, NOON + 60_000)));
    // A's answer leaves B's newer count in place, and is kept.
    expect(settled?.sessions?.s1).toBe(NOON + 61_000);
    expect(settled?.contexts?.s1?.answered).toBe(NOON + 60_000);
    // B fails (nothing billed), is refused by moderation once billed, or before its model call: the count goes back to A's answer, not its arrival.
    expect(apply(settled, refundMessage(POLICY, "s1", rb, false))?.sessions?.s1).toBe(NOON + 60_000);
    expect(apply(settled, refundMessage(POLICY, "s1", rb, false, { tokens: 40, bound: 300, claimedCount: 1 }))?.sessions?.s1).toBe(NOON + 60_000);
    expect(apply(settled, refundMessage(POLICY, "s1", rb, true))?.sessions?.s1).toBe(NOON + 60_000);
    // An answer older than what B's admission read moves nothing back.
    const early = apply(afterA, admitMessage("s1", NOON + 61_000, POLICY, NEED), settleTokens("s1", ra, landed(90, 0, true, NOON - 1_000)));
    expect(apply(early, refundMessage(POLICY, "s1", rb, false))?.sessions?.s1).toBe(NOON);
  });

  it("messages of one session admitted together and given back put its count back to its last activity, whatever the order their refunds and settlements land in", () => {
    const created = apply(null, admitSession("s1", NOON - 60_000, POLICY));
    const a = admitMessage("s1", NOON, POLICY, NEED);
    const ra = admitted(a(created).outcome);
    const afterA = apply(created, a);
    // B arrives a second after A, before A fails.
    const b = admitMessage("s1", NOON + 1_000, POLICY, NEED);
    const rb = admitted(b(afterA).outcome);
    const both = apply(afterA, b);
    // Both fail (or are refused: an exchange limit, a replay, moderation), in either order: counted from the creation again, not from either arrival.
    expect(apply(both, refundMessage(POLICY, "s1", ra, false), refundMessage(POLICY, "s1", rb, false))?.sessions?.s1).toBe(NOON - 60_000);
    expect(apply(both, refundMessage(POLICY, "s1", rb, false), refundMessage(POLICY, "s1", ra, false))?.sessions?.s1).toBe(NOON - 60_000);
    expect(apply(both, refundMessage(POLICY, "s1", rb, true), refundMessage(POLICY, "s1", ra, true))?.sessions?.s1).toBe(NOON - 60_000);
    // One given back, the other still running: counted from the arrival of the one running.
    expect(apply(both, refundMessage(POLICY, "s1", rb, false))?.sessions?.s1).toBe(NOON);
    expect(apply(both, refundMessage(POLICY, "s1", ra, false))?.sessions?.s1).toBe(NOON + 1_000);
    // One answered, the other given back, in either order: counted from the answer.
    const settleA = settleTokens("s1", ra, landed(90, 0, false, NOON + 20_000));
    const settleB = settleTokens("s1", rb, landed(90, 0, false, NOON + 21_000));
    expect(apply(both, settleA, refundMessage(POLICY, "s1", rb, false))?.sessions?.s1).toBe(NOON + 20_000);
    expect(apply(both, refundMessage(POLICY, "s1", rb, false), settleA)?.sessions?.s1).toBe(NOON + 20_000);
    expect(apply(both, settleB, refundMessage(POLICY, "s1", ra, false))?.sessions?.s1).toBe(NOON + 21_000);
    expect(apply(both, refundMessage(POLICY, "s1", ra, false), settleB)?.sessions?.s1).toBe(NOON + 21_000);
  });

  it("a refund puts the session's count back no earlier than the arrival of an admission forgotten unsettled, whose exchange may have landed", () => {
    const created = apply(null, admitSession("s1", NOON - 60_000, POLICY));
    // A's request died: neither its settlement nor its refund ever lands. C is admitted while A is open, B once A has lapsed.
    const withA = apply(created, admitMessage("s1", NOON, POLICY, NEED));
    const c = admitMessage("s1", NOON + 100_000, POLICY, NEED);
    const rc = admitted(c(withA).outcome);
    const withC = apply(withA, c);
    const b = admitMessage("s1", NOON + 121_000, POLICY, NEED);
    const rb = admitted(b(withC).outcome);
    const withB = apply(withC, b);
    expect(Object.values(withB?.contexts?.s1?.held ?? {}).map((entry) => entry.at)).toEqual([NOON + 100_000, NOON + 121_000]);
    expect(apply(withB, refundMessage(POLICY, "s1", rb, false), refundMessage(POLICY, "s1", rc, false))?.sessions?.s1).toBe(NOON);
    expect(apply(withB, refundMessage(POLICY, "s1", rc, false), refundMessage(POLICY, "s1", rb, false))?.sessions?.s1).toBe(NOON);
    // Admitted with nothing else open, B reads the same from the count it found.
    const alone = admitMessage("s1", NOON + 121_000, POLICY, NEED);
    expect(apply(withA, alone, refundMessage(POLICY, "s1", admitted(alone(withA).outcome), false))?.sessions?.s1).toBe(NOON);
  });

  it("an admission landing after another message's settlement keeps the count at that answer, and a give-back of its message leaves it there, whatever order they land in", () => {
    const created = apply(null, admitSession("s1", NOON - 60_000, POLICY));
    const a = admitMessage("s1", NOON, POLICY, NEED);
    const ra = admitted(a(created).outcome);
    const afterA = apply(created, a);
    const settleA = settleTokens("s1", ra, landed(40, 0, true, NOON + 24_000));
    const settled = apply(afterA, settleA);
    expect(settled?.sessions?.s1).toBe(NOON + 24_000);
    // B arrived a second before A's answer, and its admission lands after A's settlement (a second
    // tab; its instance cold, its transaction rerun on contention, or its clock behind A's).
    const b = admitMessage("s1", NOON + 23_000, POLICY, NEED);
    const rb = admitted(b(settled).outcome);
    expect(rb).toMatchObject({ countedAt: NOON + 23_000, countedBefore: NOON + 24_000 });
    const late = apply(settled, b);
    // Running, or its request dead with nothing more landing: still counted from A's answer, the session's last activity.
    expect(late?.sessions?.s1).toBe(NOON + 24_000);
    // B's model call fails, or it is refused: counted from A's answer, as when B's admission lands before A's settlement.
    expect(apply(late, refundMessage(POLICY, "s1", rb, false))?.sessions?.s1).toBe(NOON + 24_000);
    expect(apply(late, refundMessage(POLICY, "s1", rb, true))?.sessions?.s1).toBe(NOON + 24_000);
    expect(apply(afterA, b, settleA, refundMessage(POLICY, "s1", rb, false))?.sessions?.s1).toBe(NOON + 24_000);
    expect(apply(afterA, b, refundMessage(POLICY, "s1", rb, false), settleA)?.sessions?.s1).toBe(NOON + 24_000);
  });

  it("gives no other session the slot of a session still active after a message given back whose admission landed behind another message's settlement", () => {
    const one = { ...POLICY, maxActiveSessions: 1 };
    const created = apply(null, admitSession("s1", NOON - 60_000, one));
    const a = admitMessage("s1", NOON, one, NEED);
    const answeredAt = NOON + 24_000;
    const settled = apply(created, a, settleTokens("s1", admitted(a(created).outcome), landed(40, 0, true, answeredAt)));
    const b = admitMessage("s1", NOON + 23_000, one, NEED);
    const refunded = apply(settled, b, refundMessage(one, "s1", admitted(b(settled).outcome), false));
    // Half a second before the TTL runs out from A's answer, the session is still active: idle less than the TTL since its last exchange.
    const at = answeredAt + one.idleTtlMs - 500;
    const state = { status: "active" as const, message_count: 1, last_activity: answeredAt, idle_since: answeredAt };
    expect(expiredIfIdle(state, at, { ...SESSION_POLICY, idleTtlMs: one.idleTtlMs }).status).toBe("active");
    expect(admitSession("s2", at, one)(refunded).outcome).toEqual({ admitted: false, retryAfterMs: 1_000 });
    expect(admitSession("s2", answeredAt + one.idleTtlMs + 1, one)(refunded).outcome).toEqual({ admitted: true });
  });

  it("a refund on a context an older version wrote (no record of the session's activity before its admissions) puts back the count its admission read", () => {
    const created = apply(null, admitSession("s1", NOON - 60_000, POLICY));
    const a = admitMessage("s1", NOON, POLICY, NEED);
    const ra = admitted(a(created).outcome);
    const written = apply(created, a) as UserUsage;
    const { since: _none, ...context } = written.contexts!.s1!;
    const older = userUsageSchema.parse({ ...written, contexts: { s1: context } });
    expect(apply(older, refundMessage(POLICY, "s1", ra, false))?.sessions?.s1).toBe(NOON - 60_000);
  });

  it("refuses a message to a session ended while it was being admitted, taking nothing, and never counts that session again", () => {
    const one = { ...POLICY, maxActiveSessions: 1 };
    const ended = apply(null, admitSession("s1", NOON - 60_000, one), releaseEnded("s1", NOON + 1_000, one), admitSession("s2", NOON + 2_000, one));
    // Sent before the end, landed after its release (which dropped the session's context bound): refused, and the record is left as it is.
    const late = admitMessage("s1", NOON, one, NEED)(ended);
    expect(late).toEqual({ outcome: { admitted: false, limit: "ended" } });
    // A keyed create's repeat admitted after the session it replays was ended: counted already, it counts nothing.
    expect(admitSession("s1", NOON + 3_000, one)(ended)).toEqual({ outcome: { admitted: true, already: true } });
    // The mark lasts as long as a request may run: 2 minutes here.
    expect(apply(ended, admitMessage("s2", NOON + 121_000, one, NEED))?.ended).toEqual({ s1: NOON + 1_000 });
    expect(apply(ended, admitMessage("s2", NOON + 121_001, one, NEED))?.ended).toBeUndefined();
  });

  it("counts a session from its message's answer once settled, as long as the session stays active: no create takes its slot, and its context bound stays", () => {
    const one = { ...POLICY, maxActiveSessions: 1, idleTtlMs: 30 * 60_000 };
    const created = apply(null, admitSession("a", NOON - 60_000, one));
    const reservation = admitted(admitMessage("a", NOON, one, NEED)(created).outcome);
    // The model answered 20 s after the message arrived: the session is active until 30 min after that.
    const settled = apply(created, admitMessage("a", NOON, one, NEED), settleTokens("a", reservation, landed(90, 0, true, NOON + 20_000)));
    expect(settled?.sessions).toEqual({ a: NOON + 20_000 });
    const later = NOON + 30 * 60_000 + 1_000;
    // Until a millisecond past the TTL: idle exactly the TTL, the session still counts.
    expect(admitSession("b", later, one)(settled).outcome).toEqual({ admitted: false, retryAfterMs: 19_001 });
    expect(admitSession("b", later + 19_000, one)(settled).outcome).toMatchObject({ admitted: false });
    expect(admitSession("b", later + 19_001, one)(settled).outcome).toEqual({ admitted: true });
    expect(apply(settled, admitMessage("b", later, one, NEED))?.contexts?.a).toMatchObject({ tokens: 90 });
    // A settlement moves the count only forwards, and never counts a session released meanwhile.
    expect(apply(settled, settleTokens("a", reservation, landed(90, 0, true, NOON + 5_000)))?.sessions).toEqual({ a: NOON + 20_000 });
    expect(apply(created, admitMessage("a", NOON, one, NEED), releaseSession("a"), settleTokens("a", reservation, landed(90, 0, true, NOON + 20_000)))?.sessions).toEqual({});
  });

  it("counts a session no longer counted again only within the user's limit of active sessions", () => {
    const one = { ...POLICY, maxActiveSessions: 1, idleTtlMs: 30 * 60_000 };
    // Session a's count lapsed (its settlement was lost) and b was created in its slot.
    const lapsed = apply(null, admitSession("a", NOON - 32 * 60_000, one), admitSession("b", NOON - 60_000, one));
    const { outcome, next } = admitMessage("a", NOON, one, NEED)(lapsed);
    expect(outcome).toEqual({ admitted: false, limit: "sessions", retryAfterMs: 29 * 60_000 + 1 });
    expect(next).toBeUndefined();
    // A session still counted, or one re-counted within the limit, is admitted.
    expect(admitMessage("b", NOON, one, NEED)(lapsed).outcome.admitted).toBe(true);
    expect(admitMessage("a", NOON, { ...one, maxActiveSessions: 2 }, NEED)(lapsed).outcome.admitted).toBe(true);
  });

  it("a settlement after midnight leaves the reservation on its day and counts the spent tokens on the day the record holds", () => {
    const reservation = admitted(admitMessage("s1", NOON, POLICY, NEED)(null).outcome);
    const yesterday = apply(null, admitMessage("s1", NOON, POLICY, NEED));
    const today = apply(yesterday, admitMessage("s2", Date.parse("2026-11-27T00:00:01Z"), POLICY, NEED));
    expect(today?.daily).toEqual({ day: "2026-11-27", tokens: 150 });
    const settled = apply(today, settleTokens("s1", reservation, { tokens: 40 }));
    expect(settled?.daily).toEqual({ day: "2026-11-27", tokens: 190 });
  });

  it("adds up the day's cost, and forgets the contexts of released sessions", () => {
    const first = admitted(admitMessage("s1", NOON, POLICY, NEED)(null).outcome);
    const once = apply(null, admitMessage("s1", NOON, POLICY, NEED), settleTokens("s1", first, { ...landed(100, 0), costUsd: 0.000123 }));
    const second = admitted(admitMessage("s1", NOON, POLICY, NEED)(once).outcome);
    const usage = apply(once, admitMessage("s1", NOON, POLICY, NEED), settleTokens("s1", second, { ...landed(100, 1), costUsd: 0.000001 }));
    expect(usage?.daily).toEqual({ day: "2026-11-26", tokens: 200, cost_usd: 0.000124 });
    expect(usage?.contexts?.s1).toMatchObject({ tokens: 100 });
    expect(apply(usage, releaseSession("s1"))?.contexts).toBeUndefined();
  });

  it("utcDay is the calendar day in UTC", () => {
    expect(utcDay(Date.parse("2026-11-26T23:59:59.999Z"))).toBe("2026-11-26");
    expect(utcDay(Date.parse("2026-11-27T00:00:00Z"))).toBe("2026-11-27");
  });

  it("utcDay answers each instant on its own, whatever day it worked out last (it keeps the last one)", () => {
    const instants = ["2026-11-27T12:00:00Z", "2026-11-27T23:59:59.999Z", "2026-11-28T00:00:00Z", "2026-11-27T00:00:00Z", "2026-11-26T23:59:59.999Z", "2025-03-01T00:00:00Z", "2026-11-27T06:00:00Z"];
    for (const instant of instants) expect(utcDay(Date.parse(instant))).toBe(instant.slice(0, 10));
    expect(() => utcDay(Number.NaN)).toThrow(RangeError);
  });
});

describe("a session's count, whatever order its messages' admissions, settlements and give-backs land in", () => {
  const policy: UsagePolicy = { messagesPerMinute: 1_000, maxActiveSessions: 10, idleTtlMs: 3_600_000, tokensPerDay: 0 };
  const CREATED = NOON - 60_000;
  type Fate = "answered" | "failed" | "refused" | "lost";
  const FATES: readonly Fate[] = ["answered", "failed", "refused", "lost"];
  interface Message {
    readonly arrival: number;
    /** lost: its request died once its admission landed (nothing more lands), whether or not its exchange was stored. */
    readonly fate: Fate;
    /** By the clock of the instance that answered: up to 2 s before the arrival another instance timed. */
    readonly answeredAt: number;
  }
  type Landing = { readonly kind: "admission" | "outcome"; readonly message: number } | { readonly kind: "end"; readonly at: number };

  /** mulberry32: a small seeded generator, so that each case is the same at every run. */
  function generator(seed: number): () => number {
    let state = seed >>> 0;
    return () => {
      state = (state + 0x6d2b79f5) >>> 0;
      let t = Math.imul(state ^ (state >>> 15), state | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
    };
  }

  /**
   * Two or three messages, arriving within a minute (none lapses: a request's lifetime is 2
   * minutes) or within five (some lapse), and the order their transactions land in: each message's
   * admission before its outcome, anything else in any order; in a quarter of the cases, an end.
   */
  function scenario(random: () => number): { messages: Message[]; landings: Landing[] } {
    const span = random() < 0.5 ? 60_000 : 300_000;
    const messages = Array.from({ length: 2 + Math.floor(random() * 2) }, () => {
      const arrival = NOON + Math.floor(random() * span);
      return { arrival, fate: FATES[Math.floor(random() * FATES.length)]!, answeredAt: arrival - 2_000 + Math.floor(random() * 32_000) };
    });
    const queues: Landing[][] = messages.map((message, i) => [{ kind: "admission", message: i }, ...(message.fate === "lost" ? [] : [{ kind: "outcome" as const, message: i }])]);
    if (random() < 0.25) queues.push([{ kind: "end", at: Math.max(...messages.map((message) => message.arrival)) + 1_000 }]);
    const landings: Landing[] = [];
    for (let left = queues.filter((queue) => queue.length > 0); left.length > 0; left = queues.filter((queue) => queue.length > 0)) {
      landings.push(left[Math.floor(random() * left.length)]!.shift()!);
    }
    return { messages, landings };
  }

  /**
   * Lands them one by one, checking the count after each: from no earlier than the session's last
   * activity (its creation, each settled answer, never before its own arrival) and the arrival of
   * each message admitted and neither settled nor given back (running, or its request dead: it
   * may have stored its exchange), and no later, but for the arrival of a message given back after
   * a later admission had forgotten its reservation (lapsed: counted high). Once ended, never
   * counted again. What went wrong, or undefined.
   */
  function violation(messages: readonly Message[], landings: readonly Landing[]): string | undefined {
    let usage = apply(null, admitSession("s1", CREATED, policy));
    const reservations = new Map<number, Reservation>();
    const settled = new Set<number>();
    const givenBack = new Set<number>();
    let latestAdmission = CREATED;
    let ended = false;
    for (const [step, landing] of landings.entries()) {
      if (landing.kind === "end") {
        usage = apply(usage, releaseEnded("s1", landing.at, policy));
        ended = true;
      } else {
        const message = messages[landing.message]!;
        if (landing.kind === "admission") {
          const rule = admitMessage("s1", message.arrival, policy, NEED);
          const { outcome } = rule(usage);
          if (!outcome.admitted && !ended) return `step ${step}: admission refused (${outcome.limit})`;
          usage = apply(usage, rule);
          if (outcome.admitted) reservations.set(landing.message, outcome.reservation);
          latestAdmission = Math.max(latestAdmission, message.arrival);
        } else {
          const reservation = reservations.get(landing.message);
          if (reservation === undefined) continue;
          if (message.fate === "answered") {
            const exchange = { context: 90, alone: false, answeredAt: message.answeredAt };
            usage = apply(usage, settleTokens("s1", reservation, { tokens: 90, claimedCount: 0, exchange }));
            settled.add(landing.message);
          } else {
            usage = apply(usage, refundMessage(policy, "s1", reservation, message.fate === "refused"));
            givenBack.add(landing.message);
          }
        }
      }
      const count = usage?.sessions?.s1;
      if (ended) {
        if (count !== undefined) return `step ${step}: counted after its end, from ${count - NOON}`;
        continue;
      }
      const activity = [...settled].map((i) => Math.max(messages[i]!.answeredAt, messages[i]!.arrival));
      const running = [...reservations.keys()].filter((i) => !settled.has(i) && !givenBack.has(i)).map((i) => messages[i]!.arrival);
      const least = Math.max(CREATED, ...activity, ...running);
      const lapsed = [...givenBack].map((i) => messages[i]!.arrival).filter((arrival) => latestAdmission - arrival >= requestLifetimeMs(policy));
      const most = Math.max(least, ...lapsed);
      if (count === undefined || count < least || count > most) return `step ${step}: counted from ${count === undefined ? "nothing" : count - NOON}, not within [${least - NOON}, ${most - NOON}]`;
    }
    return undefined;
  }

  it("never counts the session from before its last activity nor from later than what may still be running, and never again once ended: 3,000 cases", () => {
    const failures: string[] = [];
    for (let seed = 1; seed <= 3_000 && failures.length < 3; seed += 1) {
      const { messages, landings } = scenario(generator(seed));
      const found = violation(messages, landings);
      if (found !== undefined) failures.push(`seed ${seed}: ${found}; messages (from noon) ${JSON.stringify(messages.map((m) => ({ ...m, arrival: m.arrival - NOON, answeredAt: m.answeredAt - NOON })))}; landings ${JSON.stringify(landings)}`);
    }
    expect(failures).toEqual([]);
  });
});

describe("daily token ledger in a store", () => {
  it("holds across concurrent admissions applied by the store", async () => {
    const store = new MemoryStore();
    const outcomes = await Promise.all(Array.from({ length: 10 }, (_, i) => store.updateUsage("u", admitMessage(`s${i}`, NOON, POLICY, NEED))));
    expect(outcomes.filter((outcome) => outcome.admitted)).toHaveLength(6);
  });
});

/**
 * A store whose next usage transaction waits for `release()`, once `hold()` is called; `hold()`
 * resolves when that transaction arrives (its message's claim, sent just before it, has landed).
 */
class GatedStore extends MemoryStore {
  private gate: Promise<void> | undefined;
  private open: (() => void) | undefined;
  private arrived: (() => void) | undefined;
  hold(): Promise<void> {
    this.gate = new Promise((resolve) => { this.open = resolve; });
    return new Promise((resolve) => { this.arrived = resolve; });
  }
  release(): void {
    this.open?.();
  }
  override async updateUsage<O>(userKey: string, rule: UsageRule<O>): Promise<O> {
    const gate = this.gate;
    this.gate = undefined;
    if (gate) {
      this.arrived?.();
      await gate;
    }
    return super.updateUsage(userKey, rule);
  }
}

/**
 * The ledger's bounds through the session service and a fake provider, under concurrent messages,
 * slow admissions, a calibration that falls and a provider outage: the day's count never passes
 * the limit, and no session is locked out by what failed messages reserved.
 */
describe("the daily token ledger through the session service", () => {
  const suite = tokenSuite();

  /** A session of `template` with one exchange, its user's limits open but counted (`usage` may be changed). */
  async function sessionAfterHello(template: Template) {
    const store = new MemoryStore();
    await store.seedTemplates({ t: template });
    const usage = { messagesPerMinute: 1_000_000, maxActiveSessions: 100, idleTtlMs: SESSION_POLICY.idleTtlMs, tokensPerDay: 0 };
    const chat = suite.service(store, usage);
    const userId = `user-${randomUUID()}`;
    const { sessionId } = await chat.create({ userId, templateId: "t" });
    await chat.send({ sessionId, message: "hello" });
    return { store, usage, chat, userId, sessionId };
  }

  describe("with a template that allows long replies", () => {
    /** Room for the long reply below: a provider's reply never passes max_tokens, though the fake's would. */
    const MAX_TOKENS = 1_000;
    const WIDE: Template = { name: "Wide", personalityPrompt: "You are wide.", context_window: 10, max_tokens: MAX_TOKENS };

    it("a message after two concurrent messages of one session reserves at least what it spends: the day's count never passes the limit", async () => {
      // Its usage is mutable on purpose: the limit is set, before the last message, to exactly what its reservation needs.
      const { store, usage, chat, userId, sessionId } = await sessionAfterHello(WIDE);

      // A and B, concurrent, both claim at message_count 1. A answers first with a long reply, B later:
      // the session's remembered context becomes B's call, which holds neither A's message nor A's reply.
      const longA = "Tell me everything about owls, their habits, their habitats and their diets. ".repeat(20);
      suite.fake.chaos = (request, reply) => {
        const message = lastUser(request);
        if (message === longA) return { kind: "reply", text: "Owls are nocturnal birds of prey. ".repeat(60), delayMs: 20 };
        if (message === "B") return { kind: "reply", text: "short", delayMs: 300 };
        return reply();
      };
      await Promise.all([chat.send({ sessionId, message: longA }), chat.send({ sessionId, message: "B" })]);

      const before = (await usageOf(store, userId))!;
      const context = before.contexts?.[sessionId]?.tokens ?? 0;
      const need = estimatePromptTokens([{ role: "user", content: "C" }]) + MAX_TOKENS + TOKENS_PER_MESSAGE;
      // Exactly the reservation C makes: C is admitted, and the limit must hold after it settles.
      usage.tokensPerDay = before.daily!.tokens + context + need;
      const answer = await chat.send({ sessionId, message: "C" });
      const spentByC = answer.usage!.total_tokens;
      const after = (await usageOf(store, userId))!;

      expect(suite.fake.requests.at(-1)?.body.messages.map((message) => message.content)).toContain(longA);
      expect(after.daily!.tokens).toBeLessThanOrEqual(usage.tokensPerDay);
      // Why: the reservation (the session's remembered context + the new need) was meant to bound the call.
      expect(spentByC).toBeLessThanOrEqual(context + need);
    });
  });

  it("the context bound holds when a message's admission lands after another message's whole life", async () => {
    const store = new GatedStore();
    const MAX_TOKENS = 20;
    await store.seedTemplates({ t: { name: "T", personalityPrompt: "You are brief.", context_window: 10, max_tokens: MAX_TOKENS } });
    // Mutable on purpose: the limit is set, before the last message, to exactly what its reservation needs.
    const usage: { -readonly [K in keyof UsagePolicy]: UsagePolicy[K] } = unlimitedUsage();
    const chat = suite.service(store, usage);
    const userId = `user-${randomUUID()}`;
    const { sessionId } = await chat.create({ userId, templateId: "t" });
    // A provider that counts as the estimate does: what is left to test is the race, not the estimate's error.
    suite.fake.chaos = (request) => ({ kind: "reply", text: "ok", usage: { prompt_tokens: estimatePromptTokens(request.body.messages), completion_tokens: 1 } });
    await chat.send({ sessionId, message: "hello" });

    // X claims its slot (alone: nothing else runs), its admission is slow (a retried transaction, a far instance).
    const held = store.hold();
    const x = chat.send({ sessionId, message: "X" });
    await held;
    expect((await store.readSessionState(sessionId))?.requests).toBeDefined();
    // Y, a long message, runs its whole course meanwhile: claim (not alone), admission, model, commit, settlement.
    const longY = "Please remember this long paragraph about owls and their nocturnal habits. ".repeat(50);
    await chat.send({ sessionId, message: longY });
    store.release();
    // X's admission finds nothing open and none after it; its claim ran alone; but Y, settled, claimed at X's count.
    await x;

    const before = (await usageOf(store, userId))!;
    const bound = before.contexts![sessionId]!.tokens;
    const need = estimatePromptTokens([{ role: "user", content: "Z" }]) + MAX_TOKENS + TOKENS_PER_MESSAGE;
    usage.tokensPerDay = before.daily!.tokens + bound + need;
    const answer = await chat.send({ sessionId, message: "Z" });
    expect(suite.fake.requests.at(-1)?.body.messages.map((m) => m.content)).toContain(longY);
    // The reservation (bound + need) was meant to hold Z's call; the day's count must stay within the limit.
    expect(answer.usage!.total_tokens).toBeLessThanOrEqual(bound + need);
    expect((await usageOf(store, userId))!.daily!.tokens).toBeLessThanOrEqual(usage.tokensPerDay);
  });
  it("the context bound holds with context_tokens when the calibration falls: the window never reaches back past the last prompt", async () => {
    // A provider whose counts differ from the estimate by content, within the calibration's range
    // (docs/tokens.md: the estimate is 0.3x - 2.75x off by kind of text): "p:" texts count 1.5x the estimate, "d:" 0.5x.
    const weight = (content: string) => (content.startsWith("p:") ? 1.5 : content.startsWith("d:") ? 0.5 : 1);
    suite.fake.chaos = (request) => ({
      kind: "reply",
      text: "ok",
      usage: { prompt_tokens: 3 + request.body.messages.reduce((sum, m) => sum + Math.ceil(estimateMessageTokens(m.content) * weight(m.content)), 0), completion_tokens: 1 },
    });
    const store = new MemoryStore();
    const MAX_TOKENS = 30;
    await store.seedTemplates({ t: { name: "T", personalityPrompt: "You are brief.", context_window: 20, context_tokens: 2_600, max_tokens: MAX_TOKENS } });
    const usage = unlimitedUsage();
    const chat = suite.service(store, usage);
    const userId = `user-${randomUUID()}`;
    const { sessionId } = await chat.create({ userId, templateId: "t" });
    const text = (kind: string, reps: number) => `${kind}:${"lorem ipsum dolor sit amet ".repeat(reps)}`;
    for (let i = 1; i <= 4; i += 1) await chat.send({ sessionId, message: text(`f${i}`, 10) });
    await chat.send({ sessionId, message: text("p", 60) }); // a prompt counted high: the next calibration is high
    await chat.send({ sessionId, message: text("d", 300) }); // sent with little history; its prompt counted low
    const sixth = suite.fake.requests.at(-1)!.body.messages.length;

    const before = (await usageOf(store, userId))!;
    const bound = before.contexts![sessionId]!.tokens;
    const need = estimatePromptTokens([{ role: "user", content: "q" }]) + MAX_TOKENS + TOKENS_PER_MESSAGE;
    const answer = await chat.send({ sessionId, message: "q" });
    // The low calibration would let this window take the fillers the last prompt left out; it never
    // reaches back past where the last prompt began: the last history, its exchange, the new message.
    expect(suite.fake.requests.at(-1)!.body.messages.length).toBeLessThanOrEqual(sixth + 2);
    // The bound was meant to hold the next prompt less its message: the reservation, its whole call.
    expect(answer.usage!.total_tokens).toBeLessThanOrEqual(bound + need);
  });
  it("failed messages take their need back off the context bound: a provider outage locks no session out of the daily limit", async () => {
    const store = new MemoryStore();
    await store.seedTemplates({ t: { name: "T", personalityPrompt: "You are brief.", context_window: 10, max_tokens: 1_000 } });
    const usage = { ...unlimitedUsage(), tokensPerDay: 5_000 };
    const chat = suite.service(store, usage);
    const userId = `user-${randomUUID()}`;
    const { sessionId } = await chat.create({ userId, templateId: "t" });
    // A provider outage: each message fails (the model is called, nothing is charged, the reservation is refunded).
    suite.fake.chaos = () => ({ kind: "status", status: 400, body: { error: { message: "bad request" } } });
    // Each refund is sent off the reply's path; on the embedded store it is applied as it is sent.
    for (let i = 0; i < 5; i += 1) await expect(chat.send({ sessionId, message: `try ${i}` })).rejects.toThrow();
    const record = (await usageOf(store, userId))!;
    expect(record.daily?.tokens ?? 0).toBe(0); // everything was given back...
    // ...but each refund left its need in the session's bound (refundMessage settles with no context).
    // Not even tomorrow: Retry-After says midnight, but the bound is not the day's.
    const tomorrow = Date.parse(`${record.daily!.day}T00:00:00Z`) + 86_400_000 + 1;
    const need = { fresh: estimatePromptTokens([{ role: "user", content: "hello again" }]) + 1_000, firstPrompt: 50 };
    expect(admitMessage(sessionId, tomorrow, usage, need)(record).outcome.admitted).toBe(true);
    suite.fake.chaos = () => ({ kind: "reply", text: "ok" });
    // The provider is back, the user has spent nothing today, the message needs ~1,000 tokens of 5,000:
    await expect(chat.send({ sessionId, message: "hello again" })).resolves.toMatchObject({ text: "ok" });
  });

  it("the message after two concurrent ones, one of whose replies ignored max_tokens, reserves what its prompt carries", async () => {
    const MAX_TOKENS = 50;
    const { store, usage, chat, userId, sessionId } = await sessionAfterHello({ name: "T", personalityPrompt: "You are brief.", context_window: 10, max_tokens: MAX_TOKENS });

    // A and B at once; A's reply ignores max_tokens (about 20 KB), B answers later.
    const long = "Owls are nocturnal birds of prey. ".repeat(600);
    suite.fake.chaos = (request, reply) => {
      const message = lastUser(request);
      if (message === "A") return { kind: "reply", text: long, delayMs: 20 };
      if (message === "B") return { kind: "reply", text: "short", delayMs: 300 };
      return reply();
    };
    await Promise.all([chat.send({ sessionId, message: "A" }), chat.send({ sessionId, message: "B" })]);

    const before = (await usageOf(store, userId))!;
    const bound = before.contexts?.[sessionId]?.tokens ?? 0;
    const need = estimatePromptTokens([{ role: "user", content: "C" }]) + MAX_TOKENS + TOKENS_PER_MESSAGE;
    // Exactly C's reservation: C is admitted; the limit must hold once it settles.
    usage.tokensPerDay = before.daily!.tokens + bound + need;
    suite.fake.chaos = () => ({ kind: "reply", text: "ok" });
    const answer = await chat.send({ sessionId, message: "C" });
    const after = (await usageOf(store, userId))!;

    expect(suite.fake.requests.at(-1)?.body.messages.map((m) => m.content)).toContain(long);
    expect({ spentByC: answer.usage!.total_tokens, estimated: answer.usage!.estimated ?? false }).toEqual({ spentByC: expect.any(Number), estimated: false });
    expect(answer.usage!.total_tokens).toBeLessThanOrEqual(bound + need);
    expect(after.daily!.tokens).toBeLessThanOrEqual(usage.tokensPerDay);
  });

  describe("with a rolling summary whose prompts catch up with it", () => {
    const MAX_TOKENS = 40;
    const SUMMARISED: Template = { name: "S", personalityPrompt: "You remember the gist.", context_window: 2, summary: true, max_tokens: MAX_TOKENS };
    /** About 300 estimated tokens: a prompt that sent one more than its bound holds would show. */
    const long = (id: string) => `${id}: ${"Please remember this paragraph about owls. ".repeat(40)}`;

    /** Sends `message` with the daily limit at exactly its reservation; returns its reply call's prompt tokens and the bound's share of the prompt. */
    async function sendAtTheLimit(store: MemoryStore, usage: { tokensPerDay: number }, chat: ReturnType<typeof suite.service>, userId: string, sessionId: string, message: string) {
      const before = (await usageOf(store, userId))!;
      const bound = before.contexts![sessionId]!.tokens;
      const added = estimatePromptTokens([{ role: "user", content: message }]);
      usage.tokensPerDay = before.daily!.tokens + bound + added + MAX_TOKENS + TOKENS_PER_MESSAGE + SUMMARY_PROMPT_TOKENS + SUMMARY_CALL_TOKENS;
      const answer = await chat.send({ sessionId, message });
      expect((await usageOf(store, userId))!.daily!.tokens).toBeLessThanOrEqual(usage.tokensPerDay);
      // The bound was meant to hold the prompt less its message and the summary it may quote.
      return { prompt: answer.usage!.prompt_tokens, room: bound + added + SUMMARY_PROMPT_TOKENS };
    }

    it("the context bound holds the exchanges a prompt sends besides its window, after three messages at once", async () => {
      const store = new MemoryStore();
      await store.seedTemplates({ t: SUMMARISED });
      const usage = unlimitedUsage();
      const chat = suite.service(store, usage);
      const userId = `user-${randomUUID()}`;
      const { sessionId } = await chat.create({ userId, templateId: "t" });
      // A provider that counts as the estimate does; summaries at once, replies after 100 ms so the three overlap.
      suite.fake.chaos = (request) => ({
        kind: "reply",
        text: isSummary(request) ? "the gist" : "ok",
        usage: { prompt_tokens: estimatePromptTokens(request.body.messages), completion_tokens: 2 },
        ...(isSummary(request) ? {} : { delayMs: 100 }),
      });
      await chat.send({ sessionId, message: long("A") });
      await Promise.all(["B", "C", "D"].map((id) => chat.send({ sessionId, message: long(id) })));
      const { prompt, room } = await sendAtTheLimit(store, usage, chat, userId, sessionId, "E");
      const sent = suite.fake.requests.filter((request) => !isSummary(request)).at(-1)!.body.messages.map((m) => m.content);
      expect(["B", "C", "D"].every((id) => sent.includes(long(id)))).toBe(true);
      expect(prompt).toBeLessThanOrEqual(room);
    });

    it("the context bound holds the exchanges a prompt sends besides its window, while every summary call fails", async () => {
      const store = new MemoryStore();
      await store.seedTemplates({ t: SUMMARISED });
      const usage = unlimitedUsage();
      const chat = suite.service(store, usage);
      const userId = `user-${randomUUID()}`;
      const { sessionId } = await chat.create({ userId, templateId: "t" });
      suite.fake.chaos = (request) => (isSummary(request)
        ? { kind: "status", status: 500 }
        : { kind: "reply", text: "ok", usage: { prompt_tokens: estimatePromptTokens(request.body.messages), completion_tokens: 2 } });
      await chat.send({ sessionId, message: long("A") });
      // Each message runs alone: each settlement brings the bound down to its call's real prompt and reply.
      for (const id of ["B", "C", "D", "E"]) {
        const { prompt, room } = await sendAtTheLimit(store, usage, chat, userId, sessionId, long(id));
        expect(prompt).toBeLessThanOrEqual(room);
      }
      // The last prompt sent every earlier exchange: four, where the window holds one.
      expect(suite.fake.requests.filter((request) => !isSummary(request)).at(-1)!.body.messages).toHaveLength(1 + 8 + 1);
    });
  });
});

/**
 * With OpenAI's reports (o200k counts, which the estimate does not pass), the day counts what was
 * spent: a message's reservation holds it, and the report is within the bounds it is believed in.
 */
describe("the daily token ledger with OpenAI's reports, on messages in scripts and of emoji o200k splits into bytes", () => {
  const suite = tokenSuite();

  it.each(SCRIPT_MESSAGES)("counts against USER_TOKENS_PER_DAY what OpenAI billed for a message in $script, its report believed", async ({ text, promptTokens }) => {
    const store = new MemoryStore();
    await store.seedTemplates({ t: { name: "Brief", personalityPrompt: "You are brief.", context_window: 10, max_tokens: 50 } });
    // A limit far away, so that it is the count, not a refusal, that is under test.
    const chat = suite.service(store, { ...unlimitedUsage(), tokensPerDay: 1_000_000 });
    const userId = `user-${randomUUID()}`;
    const { sessionId } = await chat.create({ userId, templateId: "t" });
    // What OpenAI reports for this prompt: its o200k count, and a 1-token reply.
    suite.fake.chaos = () => ({ kind: "reply", text: "ok", usage: { prompt_tokens: promptTokens, completion_tokens: 1 } });
    const answer = await chat.send({ sessionId, message: text });
    expect(answer.usage).toMatchObject({ prompt_tokens: promptTokens, completion_tokens: 1 });
    expect(answer.usage?.estimated).toBeUndefined();
    expect((await usageOf(store, userId))?.daily?.tokens).toBe(promptTokens + 1);
  });
});

describe("the day's count across midnight, an admission received before it landing after one of the new day", () => {
  // B arrives just before 00:00 UTC, A just after, and A's admission lands first (B's instance was
  // cold, or its transaction reran on contention with B's arrival time).
  const MIDNIGHT = Date.parse("2026-12-07T00:00:00Z");
  const policy: UsagePolicy = { messagesPerMinute: 1_000, maxActiveSessions: 10, idleTtlMs: 3_600_000, tokensPerDay: 1_000 };
  /** One message reserves 750 of the 1,000 a day: two never fit the same day. */
  const need: TokenNeed = { fresh: 700, firstPrompt: 50 };

  it("counts the late admission into the new day, never starting its count over, and settles it there", () => {
    const a = admitMessage("a", MIDNIGHT + 100, policy, need)(null);
    expect(a.next?.daily).toEqual({ day: utcDay(MIDNIGHT + 100), tokens: 750 });
    const b = admitMessage("b", MIDNIGHT - 100, policy, need)(a.next as UserUsage);
    // B fits no day with A's 750 in it: refused, and the new day's count stays.
    expect(b.outcome).toMatchObject({ admitted: false, limit: "tokens" });
    const c = admitMessage("c", MIDNIGHT + 200, policy, need)((b.next ?? a.next) as UserUsage);
    expect(c.outcome).toMatchObject({ admitted: false, limit: "tokens" });
    // With room for both, B is counted, and its reservation names the day it was counted in.
    const roomy = { ...policy, tokensPerDay: 2_000 };
    const late = admitMessage("b", MIDNIGHT - 100, roomy, need)(a.next as UserUsage);
    expect(late.next?.daily).toEqual({ day: utcDay(MIDNIGHT + 100), tokens: 1_500 });
    expect(late.outcome).toMatchObject({ admitted: true, reservation: { day: utcDay(MIDNIGHT + 100) } });
    const reservation = (late.outcome as Extract<MessageAdmission, { admitted: true }>).reservation;
    const settled = settleTokens("b", reservation, { tokens: 100 })(late.next as UserUsage);
    expect(settled.next?.daily).toEqual({ day: utcDay(MIDNIGHT + 100), tokens: 850 });
  });

  it("tells a message refused for the late admission's open reservation alone to retry once it has settled or lapsed, not at the end of the new day", () => {
    const small: TokenNeed = { fresh: 100, firstPrompt: 50 };
    const large: TokenNeed = { fresh: 750, firstPrompt: 50 };
    // A arrives just after midnight, is admitted (150) and settles (100 spent): the record holds the new day.
    const a = admitMessage("a", MIDNIGHT + 100, policy, small)(null);
    const afterA = settleTokens("a", admitted(a.outcome), { tokens: 100 })(a.next as UserUsage).next as UserUsage;
    // B's admission (800), received before midnight, lands now, counted into the new day, and is still running.
    const b = admitMessage("b", MIDNIGHT - 100, policy, large)(afterA);
    const withB = b.next as UserUsage;
    expect(withB.daily).toEqual({ day: utcDay(MIDNIGHT + 100), tokens: 900 });
    // Ten seconds after midnight C (150) does not fit, only because of B (900 - 800 + 150 <= 1,000):
    // B lapses two minutes after its admission at the latest, 109.9 s from now.
    const c = admitMessage("c", MIDNIGHT + 10_000, policy, small);
    expect(c(withB).outcome).toEqual({ admitted: false, limit: "tokens", retryAfterMs: 109_900 });
    // Once B has settled as spending little, C fits.
    expect(c(settleTokens("b", admitted(b.outcome), { tokens: 100 })(withB).next as UserUsage).outcome.admitted).toBe(true);
    // A record an older version wrote names no day for B: read as the day of its arrival, the old day, as it was.
    const { held, ...context } = withB.contexts!.b!;
    const undated = Object.fromEntries(Object.entries(held!).map(([key, { day: _day, ...entry }]) => [key, entry]));
    const older = userUsageSchema.parse({ ...withB, contexts: { ...withB.contexts, b: { ...context, held: undated } } });
    expect(c(older).outcome).toEqual({ admitted: false, limit: "tokens", retryAfterMs: 86_400_000 - 10_000 });
  });
});
