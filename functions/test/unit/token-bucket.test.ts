import { takeToken } from "../../src/session/ledger/token-bucket";

const T = Date.parse("2026-03-01T00:00:00Z");
const MINUTE = 60_000;
const HOUR = 3_600_000;

describe("a token bucket's wait", () => {
  it("reaches past the instant an empty bucket of one an hour refills to 0.9999999999999999", () => {
    const empty = { tokens: 0, refilled_at: T };
    const refused = takeToken(empty, T + 1_000, 1, HOUR);
    expect(refused).toEqual({ admitted: false, retryAfterMs: 3_599_001 });
    expect(takeToken(empty, T + HOUR, 1, HOUR).admitted).toBe(false);
    expect(takeToken(empty, T + 1_000 + 3_599_001, 1, HOUR).admitted).toBe(true);
  });

  it.each([
    ["1 an hour", 1, HOUR],
    ["3 an hour", 3, HOUR],
    ["60 an hour", 60, HOUR],
    ["1 a minute", 1, MINUTE],
    ["20 a minute", 20, MINUTE],
  ])("admits a take that waits exactly the wait it was told, at every second of a refill (%s)", (_name, capacity, periodMs) => {
    const empty = { tokens: 0, refilled_at: T };
    const refusedAgain: number[] = [];
    for (let at = T; at < T + periodMs / capacity; at += 1_000) {
      const took = takeToken(empty, at, capacity, periodMs);
      if (took.admitted) throw new Error(`admitted at ${at - T} ms, before a token was there`);
      // As Retry-After says it: whole seconds, rounded up.
      const wait = Math.ceil(took.retryAfterMs / 1_000) * 1_000;
      if (!takeToken(empty, at + took.retryAfterMs, capacity, periodMs).admitted || !takeToken(empty, at + wait, capacity, periodMs).admitted) refusedAgain.push(at - T);
    }
    expect(refusedAgain).toEqual([]);
  });
});
