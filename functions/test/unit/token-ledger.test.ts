import { admitMessage, refundMessage, releaseSession, settleTokens, utcDay, type MessageAdmission, type TokenNeed, type UsagePolicy } from "../../src/session/limits";
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
  it("reserves a first message's system prompt and need, counted on the UTC day", () => {
    const { outcome, next } = admitMessage("s1", NOON, POLICY, NEED)(null);
    expect(admitted(outcome)).toEqual({ day: "2026-11-26", tokens: 150 });
    expect(next?.daily).toEqual({ day: "2026-11-26", tokens: 150 });
  });

  it("bounds a later message's prompt by the session's last call, from the record", () => {
    const after = apply(null, admitMessage("s1", NOON, POLICY, NEED), settleTokens("s1", { day: "2026-11-26", tokens: 150 }, { tokens: 90, context: 90 }));
    expect(after?.daily).toEqual({ day: "2026-11-26", tokens: 90 });
    expect(after?.contexts).toEqual({ s1: 90 });
    const { outcome } = admitMessage("s1", NOON + 1, POLICY, NEED)(after);
    expect(admitted(outcome).tokens).toBe(190);
    // Another session of the same user starts from its own first prompt.
    expect(admitted(admitMessage("s2", NOON + 1, POLICY, NEED)(after).outcome).tokens).toBe(150);
  });

  it("refuses a message whose reservation would pass the limit, until the next UTC day, and takes nothing", () => {
    const nearly = apply(null, admitMessage("s1", NOON, POLICY, NEED), settleTokens("s1", { day: "2026-11-26", tokens: 150 }, { tokens: 860 }));
    expect(nearly?.daily?.tokens).toBe(860);
    const { outcome, next } = admitMessage("s2", NOON, POLICY, NEED)(nearly);
    expect(outcome).toEqual({ admitted: false, limit: "tokens", retryAfterMs: 12 * 3_600_000 });
    expect(next).toBeUndefined();
    // Exactly at the limit is allowed.
    expect(admitMessage("s2", NOON, POLICY, { fresh: 90, firstPrompt: 50 })(nearly).outcome.admitted).toBe(true);
    // The next day starts from zero.
    const tomorrow = Date.parse("2026-11-27T00:00:00Z");
    expect(admitted(admitMessage("s2", tomorrow, POLICY, NEED)(nearly).outcome)).toEqual({ day: "2026-11-27", tokens: 150 });
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
    const reservation = { day: "2026-11-26", tokens: 150 };
    expect(apply(usage, refundMessage(POLICY, reservation, false))).toMatchObject({ tokens: 999, daily: { tokens: 0 } });
    expect(apply(usage, refundMessage(POLICY, reservation, true))).toMatchObject({ tokens: 1_000, daily: { tokens: 0 } });
  });

  it("a settlement after midnight leaves the reservation on its day and counts the spent tokens on the new one", () => {
    const yesterday = apply(null, admitMessage("s1", NOON, POLICY, NEED));
    const today = apply(yesterday, admitMessage("s2", Date.parse("2026-11-27T00:00:01Z"), POLICY, NEED));
    expect(today?.daily).toEqual({ day: "2026-11-27", tokens: 150 });
    const settled = apply(today, settleTokens("s1", { day: "2026-11-26", tokens: 150 }, { tokens: 40 }));
    expect(settled?.daily).toEqual({ day: "2026-11-27", tokens: 190 });
  });

  it("adds up the day's cost, and forgets the contexts of released sessions", () => {
    const reservation = { day: "2026-11-26", tokens: 150 };
    const usage = apply(
      null,
      admitMessage("s1", NOON, POLICY, NEED),
      settleTokens("s1", reservation, { tokens: 100, costUsd: 0.000123, context: 100 }),
      admitMessage("s1", NOON, POLICY, NEED),
      settleTokens("s1", { ...reservation, tokens: 200 }, { tokens: 100, costUsd: 0.000001, context: 100 }),
    );
    expect(usage?.daily).toEqual({ day: "2026-11-26", tokens: 200, cost_usd: 0.000124 });
    expect(usage?.contexts).toEqual({ s1: 100 });
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
