import { beginErasure, clearErasing, finishErasure, forgetSessions, markErasing, pauseErasure, settleErasure, takeOverErasure } from "../../src/session/erasure/erasure-rules";
import { admitMessage, admitSession, settleTokens, type MessageAdmission, type UsagePolicy } from "../../src/session/ledger/limits";
import type { ErasureRecord } from "../../src/store/conversation-records";
import type { UserUsage } from "../../src/store/records";

const T = 1_700_000_000_000;
const USAGE: UserUsage = {
  tokens: 3,
  refilled_at: T - 10,
  sessions: { a: T - 5, b: T - 4 },
  daily: { day: "2023-11-14", tokens: 900, cost_usd: 0.01 },
  contexts: { a: { tokens: 100, open: 0, landed: 2, at: T - 5 }, c: { tokens: 5, open: 0, landed: 1, at: T - 9 } },
};
const POLICY: UsagePolicy = { messagesPerMinute: 20, maxActiveSessions: 5, idleTtlMs: 3_600_000, tokensPerDay: 0 };

describe("an erasure's record", () => {
  it("is begun for the request, and begun again from a later one, keeping the sessions recorded so far", () => {
    const first = beginErasure("u", T, 60_000)(null);
    expect(first).toEqual({ outcome: { user_id: "u", requested_at: T, phase: "erasing", due_at: T + 60_000 }, next: first.next });
    const settling: ErasureRecord = { user_id: "u", requested_at: T, phase: "settling", due_at: T + 5, sessions: { s1: true } };
    expect(beginErasure("u", T + 100, 60_000)(settling).next).toEqual({ user_id: "u", requested_at: T + 100, phase: "erasing", due_at: T + 60_100, sessions: { s1: true } });
  });

  it("is settled and finished only for the request it belongs to: a later request keeps it", () => {
    const record: ErasureRecord = { user_id: "u", requested_at: T, phase: "erasing", due_at: T + 60_000 };
    expect(settleErasure(T, T + 70_000)(record)).toEqual({ outcome: true, next: { ...record, phase: "settling", due_at: T + 70_000 } });
    expect(settleErasure(T - 1, T + 70_000)(record)).toEqual({ outcome: false });
    expect(settleErasure(T, T + 1)(null)).toEqual({ outcome: false });
    expect(finishErasure(T)({ ...record, phase: "settling" })).toEqual({ outcome: true, next: null });
    expect(finishErasure(T)(record)).toEqual({ outcome: false });
    expect(finishErasure(T)({ ...record, phase: "settling", requested_at: T + 1 })).toEqual({ outcome: false });
  });

  it("is taken over by the sweep once due, first pass or second, without moving its request time", () => {
    const record: ErasureRecord = { user_id: "u", requested_at: T, phase: "erasing", due_at: T + 60_000 };
    expect(takeOverErasure(T + 90_000, 60_000)(record).next).toEqual({ ...record, due_at: T + 150_000 });
    expect(takeOverErasure(T + 60_000, 60_000)({ ...record, phase: "settling" })).toEqual({ outcome: { ...record, phase: "settling", due_at: T + 120_000 }, next: { ...record, phase: "settling", due_at: T + 120_000 } });
    expect(takeOverErasure(T, 1)(null)).toEqual({ outcome: null });
  });

  it("is left alone by the sweep when no longer due: a request began it again, or another sweep took it over", () => {
    const record: ErasureRecord = { user_id: "u", requested_at: T, phase: "erasing", due_at: T + 60_000 };
    expect(takeOverErasure(T + 59_999, 60_000)(record)).toEqual({ outcome: null });
  });

  it("is due again when the pass the sweep took over stopped, without what a second pass deleted again; left alone once no longer that pass's", () => {
    const taken: ErasureRecord = { user_id: "u", requested_at: T, phase: "settling", due_at: T + 3_600_000, sessions: { s1: true, s2: true }, connections: { c1: "k1", c2: "k2" } };
    expect(pauseErasure(taken, T + 240_000, { sessions: ["s1"], connections: ["c1", "c2"] })(taken)).toEqual({
      outcome: true,
      next: { user_id: "u", requested_at: T, phase: "settling", due_at: T + 240_000, sessions: { s2: true } },
    });
    // A first pass keeps all it deleted, for the second.
    const first: ErasureRecord = { ...taken, phase: "erasing" };
    expect(pauseErasure(first, T + 240_000)(first).next).toEqual({ ...first, due_at: T + 240_000 });
    // A request began it again, or another sweep took it over: theirs now.
    expect(pauseErasure(taken, T + 240_000)({ ...taken, phase: "erasing", requested_at: T + 5, due_at: T + 3_600_005 })).toEqual({ outcome: false });
    expect(pauseErasure(taken, T + 240_000)({ ...taken, due_at: T + 3_900_000 })).toEqual({ outcome: false });
    expect(pauseErasure(taken, T + 240_000)(null)).toEqual({ outcome: false });
  });
});

describe("an erasure in the user's usage record", () => {
  it("refuses new sessions and messages while marked, and changes no counter", () => {
    const marked = markErasing(T, 20)(USAGE).next!;
    expect(marked).toEqual({ ...USAGE, erasing: T });
    expect(admitSession("new", T, POLICY)(marked)).toEqual({ outcome: { admitted: false, retryAfterMs: 5_000, erasing: true } });
    expect(admitMessage("a", T, POLICY, { fresh: 10, firstPrompt: 10 })(marked)).toEqual({ outcome: { admitted: false, limit: "erasing", retryAfterMs: 5_000 } });
    expect(markErasing(T, 20)(null).next).toEqual({ tokens: 20, refilled_at: T, erasing: T });
  });

  it("is cleared by the erasure that marked it, or by a later one, never by an earlier one", () => {
    const marked = { ...USAGE, erasing: T };
    expect(clearErasing(T)(marked).next).toEqual(USAGE);
    expect(clearErasing(T - 1)(marked)).toEqual({ outcome: undefined });
    expect(admitSession("new", T, POLICY)(clearErasing(T)(marked).next!).outcome).toEqual({ admitted: true });
    // An earlier request's mark that landed late: the later request's passes clear it.
    expect(clearErasing(T + 1)(marked).next).toEqual(USAGE);
    expect(clearErasing(T)(USAGE)).toEqual({ outcome: undefined });
  });

  it("keeps a later request's mark when an earlier request's mark lands after it", () => {
    expect(markErasing(T - 1, 20)({ ...USAGE, erasing: T }).next).toEqual({ ...USAGE, erasing: T });
    expect(markErasing(T + 1, 20)({ ...USAGE, erasing: T }).next).toEqual({ ...USAGE, erasing: T + 1 });
  });

  it("forgets with the mark the sessions an earlier attempt of the pass deleted, which no scan finds again", () => {
    expect(markErasing(T, 20, forgetSessions(["a"], T, POLICY))(USAGE).next).toEqual({ ...USAGE, sessions: { b: T - 4 }, contexts: { c: USAGE.contexts?.c }, erasing: T });
    expect(markErasing(T, 20, forgetSessions(["gone"], T, POLICY))(USAGE).next).toEqual({ ...USAGE, erasing: T });
  });

  it("forgets the erased sessions, their context bounds and end marks, keeping the bucket and the day's tokens", () => {
    expect(forgetSessions(["a", "c"], T, POLICY)(USAGE).next).toEqual({
      tokens: 3,
      refilled_at: T - 10,
      sessions: { b: T - 4 },
      daily: USAGE.daily,
      contexts: {},
    });
    expect(forgetSessions(["d"], T, POLICY)({ ...USAGE, ended: { d: T, e: T } }).next).toEqual({ ...USAGE, ended: { e: T } });
    expect(forgetSessions(["zzz"], T, POLICY)(USAGE)).toEqual({ outcome: undefined });
    expect(forgetSessions(["a"], T, POLICY)(null)).toEqual({ outcome: undefined });
  });

  /**
   * A message still running in a conversation the erasure deletes (DELETE /me from another tab
   * while a reply streams) holds the day's count until it settles: its reservation is kept apart,
   * as a session's end keeps it (token-ledger.test.ts), so that the user's next message, in a new
   * conversation once the first pass has cleared the mark, is told to wait for it, not for midnight.
   */
  it("keeps apart the open reservations of a session it forgets while its message runs, naming no session: a message they alone keep out waits for them, not for midnight; the settlement finds them, and lapsed ones go", () => {
    const NOON = Date.parse("2026-11-26T12:00:00Z");
    const tokens: UsagePolicy = { messagesPerMinute: 1_000, maxActiveSessions: 10, idleTtlMs: 3_600_000, tokensPerDay: 1_000 };
    const apply = (usage: UserUsage | null, ...rules: ((usage: UserUsage | null) => { next?: UserUsage })[]) => rules.reduce((current, rule) => rule(current).next ?? current, usage);
    const admitted = (outcome: MessageAdmission) => {
      if (!outcome.admitted) throw new Error(`refused: ${outcome.limit}`);
      return outcome.reservation;
    };
    const rule = admitMessage("s1", NOON, tokens, { fresh: 800, firstPrompt: 50 });
    const open = admitted(rule(null).outcome);
    // The first pass at NOON + 2 s: the mark, the session deleted and forgotten, the mark cleared.
    const erased = apply(null, rule, markErasing(NOON + 2_000, 1_000), forgetSessions(["s1"], NOON + 2_000, tokens), clearErasing(NOON + 2_000));
    expect({ sessions: erased?.sessions, contexts: erased?.contexts, daily: erased?.daily, apart: erased?.released_held }).toEqual({
      sessions: {},
      contexts: {},
      daily: { day: "2026-11-26", tokens: 850 },
      apart: { [NOON.toString(36)]: { at: NOON, tokens: 850, day: "2026-11-26" } },
    });
    const need = { fresh: 200, firstPrompt: 50 };
    // Until that reservation settles or lapses: 110 s, not 12 h.
    expect(admitMessage("s2", NOON + 10_000, tokens, need)(erased).outcome).toEqual({ admitted: false, limit: "tokens", retryAfterMs: 110_000 });
    // Settled (its commit finding the session gone), the same message fits, and nothing is left apart.
    const settled = apply(erased, settleTokens("s1", open, { tokens: 100 }));
    expect({ daily: settled?.daily, apart: settled?.released_held }).toEqual({ daily: { day: "2026-11-26", tokens: 100 }, apart: undefined });
    expect(admitMessage("s2", NOON + 10_000, tokens, need)(settled).outcome.admitted).toBe(true);
    // Forgotten once its request can no longer run (2 minutes after its admission), it is not kept.
    const late = apply(null, rule, forgetSessions(["s1"], NOON + 120_000, tokens));
    expect({ daily: late?.daily, apart: late?.released_held }).toEqual({ daily: { day: "2026-11-26", tokens: 850 }, apart: undefined });
    // Forgotten with the mark (an earlier attempt of the pass deleted it), likewise.
    expect(apply(null, rule, markErasing(NOON + 2_000, 1_000, forgetSessions(["s1"], NOON + 2_000, tokens)))?.released_held).toEqual(erased?.released_held);
  });
});
