import { admitMessage, refundMessage, releaseSession, settleTokens, utcDay, type MessageAdmission, type TokenNeed, type UsagePolicy } from "../../src/session/ledger/limits";
import { MemoryStore } from "../../src/store/memory-store";
import type { UserUsage } from "../../src/store/records";

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
  /** What a settlement says of an exchange whose commit was sent: its call's size, the count its claim saw, whether it ran alone. */
  const landed = (context: number, claimedCount: number, alone = true) => ({ tokens: context, exchange: { context, claimedCount, alone } });

  it("reserves a first message's system prompt and need, counted on the UTC day", () => {
    const { outcome, next } = admitMessage("s1", NOON, POLICY, NEED)(null);
    expect(admitted(outcome)).toEqual({ day: "2026-11-26", tokens: 150, fresh: 100 });
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

  it("refuses a message whose reservation would pass the limit, until the next UTC day, and takes nothing", () => {
    const first = admitted(admitMessage("s1", NOON, POLICY, NEED)(null).outcome);
    const nearly = apply(null, admitMessage("s1", NOON, POLICY, NEED), settleTokens("s1", first, landed(860, 0)));
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
    expect(apply(usage, refundMessage(POLICY, "s1", reservation, false))).toMatchObject({ tokens: 999, daily: { tokens: 0 }, contexts: { s1: { open: 0 } } });
    expect(apply(usage, refundMessage(POLICY, "s1", reservation, true))).toMatchObject({ tokens: 1_000, daily: { tokens: 0 } });
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
});

describe("daily token ledger in a store", () => {
  it("holds across concurrent admissions applied by the store", async () => {
    const store = new MemoryStore();
    const outcomes = await Promise.all(Array.from({ length: 10 }, (_, i) => store.updateUsage("u", admitMessage(`s${i}`, NOON, POLICY, NEED))));
    expect(outcomes.filter((outcome) => outcome.admitted)).toHaveLength(6);
  });
});
