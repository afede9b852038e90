import { accept, appendMessage, blockOnPair, decline, end, flagMessage, FLAGGED_KEYS_REMEMBERED, followPair, KEYS_REMEMBERED, requestAgain, requestOnPair } from "../../src/connections/connection-rules";
import { connectionStateSchema, type ConnectionState, type PairRecord } from "../../src/store/connection-records";

/** The rules of connections as tables: each decision from a stored value, applied by no store. */

const T = 1_700_000_000_000;
const USERS = { a: "ann", b: "ben" };
const pending: ConnectionState = { status: "pending", message_count: 0, last_activity: T };
const accepted: ConnectionState = { status: "accepted", message_count: 2, last_activity: T + 5, accepted_at: T + 1 };
const POLICY = { messagesPerMinute: 3 };
const send = (state: ConnectionState, at = T + 10, keyHash?: string, sender: "a" | "b" = "a", text = "hi") =>
  appendMessage({ sender, senderId: sender === "a" ? "ann" : "ben", text, now: at, policy: POLICY, ...(keyHash === undefined ? {} : { key: { hash: keyHash, fingerprint: `fp-${text}` } }) })(state);

describe("a request, on the pair's record", () => {
  const candidate = { id: "new-id", createdAt: T };

  it("makes the candidate the pair's current connection when the pair has none", () => {
    const { outcome, next } = requestOnPair(USERS, "b", candidate, new Set())(null);
    expect(outcome).toEqual({ kind: "current", created: true, current: { id: "new-id", requested_by: "b", created_at: T }, blockVersion: 0 });
    expect(next).toEqual({ user_a: "ann", user_b: "ben", current: { id: "new-id", requested_by: "b", created_at: T } });
  });

  it("answers with the pair's current connection, changing nothing, unless the caller saw it closed", () => {
    const pair: PairRecord = { user_a: "ann", user_b: "ben", current: { id: "old", requested_by: "a", created_at: T - 1 } };
    expect(requestOnPair(USERS, "b", candidate, new Set())(pair)).toEqual({ outcome: { kind: "current", created: false, current: pair.current, blockVersion: 0 } });
    expect(requestOnPair(USERS, "b", candidate, new Set(["old"]))(pair).outcome).toMatchObject({ created: true, current: { id: "new-id" } });
  });

  it("names the pair's block version, a block lifted since counting, with the connection it answers or makes", () => {
    const pair: PairRecord = { user_a: "ann", user_b: "ben", current: { id: "old", requested_by: "a", created_at: T - 1 }, block_version: 2 };
    expect(requestOnPair(USERS, "b", candidate, new Set())(pair).outcome).toMatchObject({ created: false, current: { id: "old" }, blockVersion: 2 });
    expect(requestOnPair(USERS, "b", candidate, new Set(["old"]))(pair).outcome).toMatchObject({ created: true, current: { id: "new-id" }, blockVersion: 2 });
  });

  it.each([{ a: T }, { b: T }])("refuses while either user blocks the other (%j), writing nothing", (blocked) => {
    expect(requestOnPair(USERS, "a", candidate, new Set())({ user_a: "ann", user_b: "ben", blocked })).toEqual({ outcome: { kind: "blocked" } });
  });

  it("without a candidate (the requester past their limit) answers with the pair's open connection, and makes none", () => {
    const pair: PairRecord = { user_a: "ann", user_b: "ben", current: { id: "old", requested_by: "a", created_at: T - 1 } };
    expect(requestOnPair(USERS, "b", undefined, new Set())(pair)).toEqual({ outcome: { kind: "current", created: false, current: pair.current, blockVersion: 0 } });
    expect(requestOnPair(USERS, "b", undefined, new Set(["old"]))(pair)).toEqual({ outcome: { kind: "none" } });
    expect(requestOnPair(USERS, "b", undefined, new Set())(null)).toEqual({ outcome: { kind: "none" } });
    expect(requestOnPair(USERS, "b", undefined, new Set())({ ...pair, blocked: { a: T } })).toEqual({ outcome: { kind: "blocked" } });
  });
});

describe("blocks on the pair's record", () => {
  const pair: PairRecord = { user_a: "ann", user_b: "ben", current: { id: "c", requested_by: "a", created_at: T } };

  it("sets one user's block once, lifts it, each change one more version, and names the blocks and the current connection either way", () => {
    const blocked = blockOnPair(USERS, "b", T + 1)(pair);
    expect(blocked).toEqual({ outcome: { current: pair.current, blocked: { b: T + 1 }, version: 1 }, next: { ...pair, blocked: { b: T + 1 }, block_version: 1 } });
    expect(blockOnPair(USERS, "b", T + 2)(blocked.next!)).toEqual({ outcome: { current: pair.current, blocked: { b: T + 1 }, version: 1 } });
    expect(blockOnPair(USERS, "b", undefined)(blocked.next!)).toEqual({ outcome: { current: pair.current, version: 2 }, next: { ...pair, block_version: 2 } });
    expect(blockOnPair(USERS, "a", undefined)(pair)).toEqual({ outcome: { current: pair.current, version: 0 } });
  });

  it("keeps each user's block their own: one lifted leaves the other's", () => {
    const both = blockOnPair(USERS, "b", T + 2)(blockOnPair(USERS, "a", T + 1)(pair).next!).next!;
    expect(both).toEqual({ ...pair, blocked: { a: T + 1, b: T + 2 }, block_version: 2 });
    const lifted = blockOnPair(USERS, "a", undefined)(both);
    expect(lifted).toEqual({ outcome: { current: pair.current, blocked: { b: T + 2 }, version: 3 }, next: { ...pair, blocked: { b: T + 2 }, block_version: 3 } });
  });

  it.each<[string, PairRecord | null]>([
    ["no record (an erasure removed it): none is rebuilt with both ids", null],
    ["the block an erasure kept, naming neither user", { blocked: { b: T } }],
    ["a record naming only one of the two", { user_a: "ann", blocked: { b: T } }],
  ])("changes nothing on %s, blocking or unblocking, and reaches no connection", (_name, record) => {
    for (const by of ["a", "b"] as const) {
      expect(blockOnPair(USERS, by, undefined)(record)).toEqual({ outcome: undefined });
      expect(blockOnPair(USERS, by, T + 1)(record)).toEqual({ outcome: undefined });
    }
  });
});

describe("a connection following the pair's blocks", () => {
  const current = { id: "c", requested_by: "a" as const, created_at: T };

  it("takes the pair's blocks with their version, both users' (the pair is their source of truth)", () => {
    expect(followPair({ current, blocked: { a: T + 1, b: T }, version: 3 })(accepted)).toEqual({ outcome: { kind: "changed" }, next: { ...accepted, blocked: { a: T + 1, b: T }, block_version: 3 } });
    expect(followPair({ current, version: 4 })({ ...accepted, blocked: { a: T + 1 }, block_version: 3 })).toEqual({ outcome: { kind: "changed" }, next: { ...accepted, block_version: 4 } });
  });

  it("never takes an older copy over a newer one: a block and an unblock racing end as the pair's last change left them", () => {
    const lifted: ConnectionState = { ...accepted, block_version: 5 };
    expect(followPair({ current, blocked: { a: T }, version: 4 })(lifted)).toEqual({ outcome: { kind: "unchanged" } });
    expect(followPair({ current, version: 5 })(lifted)).toEqual({ outcome: { kind: "unchanged" } });
  });

  it("puts the pair's blocks back over a block an older version wrote on the connection ahead of the pair, at the same version", () => {
    const ahead: ConnectionState = { ...accepted, blocked: { a: T + 9 }, block_version: 5 };
    expect(followPair({ current, version: 5 })(ahead)).toEqual({ outcome: { kind: "changed" }, next: { ...accepted, block_version: 5 } });
  });
});

describe("a request that found the pair's connection", () => {
  it.each<[string, ConnectionState, "a" | "b", unknown, boolean]>([
    ["the requester's own pending request", pending, "a", { kind: "pending" }, false],
    ["the other user's pending request: both asked, so it is accepted", pending, "b", { kind: "accepted", now: true }, true],
    ["an accepted connection", accepted, "b", { kind: "accepted", now: false }, false],
    ["a declined one (to be passed over)", { ...pending, status: "declined", closed_at: T }, "a", { kind: "closed", status: "declined" }, false],
    ["an ended one (to be passed over)", { ...accepted, status: "ended", closed_at: T + 9 }, "b", { kind: "closed", status: "ended" }, false],
    ["a blocked pending one", { ...pending, blocked: { b: T } }, "b", { kind: "blocked" }, false],
  ])("answers %s", (_name, state, requester, outcome, changes) => {
    const result = requestAgain(requester, "a", T + 3)(state);
    expect(result.outcome).toEqual(outcome);
    expect(result.next !== undefined).toBe(changes);
    if (changes) expect(result.next).toMatchObject({ status: "accepted", accepted_at: T + 3, last_activity: T + 3 });
  });

  it.each<[string, ConnectionState, unknown, ConnectionState]>([
    [
      "a pending one whose unblock the pair took and the connection did not: lifted, then accepted (both asked)",
      { ...pending, blocked: { b: T }, block_version: 1 },
      { kind: "accepted", now: true },
      { ...pending, status: "accepted", accepted_at: T + 3, last_activity: T + 3, block_version: 2 },
    ],
    [
      "an accepted one blocked at the pair's version (an older version's block, written ahead of the pair)",
      { ...accepted, blocked: { a: T }, block_version: 2 },
      { kind: "accepted", now: false },
      { ...accepted, block_version: 2 },
    ],
    [
      "an ended one: lifted, and passed over",
      { ...accepted, status: "ended", closed_at: T + 9, blocked: { b: T }, block_version: 1 },
      { kind: "closed", status: "ended" },
      { ...accepted, status: "ended", closed_at: T + 9, block_version: 2 },
    ],
  ])("lifts the block of %s, in the same transaction, the pair holding none as of its version", (_name, state, outcome, next) => {
    expect(requestAgain("b", "a", T + 3, 2)(state)).toEqual({ outcome, next });
  });

  it("keeps a block copied from a newer version of the pair than the one the request passed (a block since), and writes nothing unblocked", () => {
    expect(requestAgain("b", "a", T + 3, 2)({ ...accepted, blocked: { a: T }, block_version: 3 })).toEqual({ outcome: { kind: "blocked" } });
    expect(requestAgain("b", "a", T + 3, 2)({ ...accepted, block_version: 1 })).toEqual({ outcome: { kind: "accepted", now: false } });
  });
});

describe("answers to a request, and ends", () => {
  it.each<[string, ReturnType<typeof accept>, ConnectionState, unknown]>([
    ["the asked user accepts a pending request", accept("b", "a", T + 3), pending, { kind: "changed" }],
    ["the requester accepts their own", accept("a", "a", T + 3), pending, { kind: "not-asked" }],
    ["accepting an accepted one", accept("b", "a", T + 3), accepted, { kind: "unchanged" }],
    ["accepting while blocked", accept("b", "a", T + 3), { ...pending, blocked: { a: T } }, { kind: "blocked" }],
    ["accepting a declined one", accept("b", "a", T + 3), { ...pending, status: "declined" }, { kind: "closed", status: "declined" }],
    ["the asked user declines", decline("b", "a", T + 3), pending, { kind: "changed" }],
    ["the requester declines their own", decline("a", "a", T + 3), pending, { kind: "not-asked" }],
    ["declining an accepted one", decline("b", "a", T + 3), accepted, { kind: "not-pending" }],
    ["declining twice", decline("b", "a", T + 3), { ...pending, status: "declined" }, { kind: "closed", status: "declined" }],
    ["the requester withdraws (ends) a pending request", end("a", T + 3), pending, { kind: "changed" }],
    ["either user ends an accepted one", end("b", T + 3), accepted, { kind: "changed" }],
    ["ending twice", end("b", T + 3), { ...accepted, status: "ended" }, { kind: "closed", status: "ended" }],
  ])("%s", (_name, rule, state, outcome) => {
    expect(rule(state).outcome).toEqual(outcome);
  });

  it("records who closed a connection and when, never moving its activity back", () => {
    expect(end("b", T + 1)(accepted).next).toEqual({ ...accepted, status: "ended", closed_at: T + 5, closed_by: "b", last_activity: T + 5 });
    expect(decline("b", "a", T + 7)(pending).next).toEqual({ ...pending, status: "declined", closed_at: T + 7, closed_by: "b", last_activity: T + 7 });
  });
});

describe("a message", () => {
  it("takes the next position, in the transaction that stores it, with the count and the sender's rate", () => {
    const { outcome, next, message } = send(accepted);
    expect(outcome).toEqual({ kind: "stored", position: 3, message: { sender_id: "ann", content: "hi", timestamp: T + 10 } });
    expect(message).toEqual({ sender_id: "ann", content: "hi", timestamp: T + 10 });
    expect(next).toMatchObject({ message_count: 3, last_activity: T + 10, rate: { a: { tokens: 2, refilled_at: T + 10 } } });
  });

  it("never timestamps a message before the last activity (an instance whose clock is behind)", () => {
    expect(send(accepted, T).message?.timestamp).toBe(T + 5);
  });

  it.each<[string, ConnectionState, unknown]>([
    ["to a pending connection", pending, { kind: "pending" }],
    ["to a declined one", { ...pending, status: "declined" }, { kind: "closed", status: "declined" }],
    ["to an ended one", { ...accepted, status: "ended" }, { kind: "closed", status: "ended" }],
    ["while the other user blocks", { ...accepted, blocked: { b: T } }, { kind: "blocked" }],
    ["while the sender blocks", { ...accepted, blocked: { a: T } }, { kind: "blocked" }],
  ])("is refused %s, storing nothing", (_name, state, outcome) => {
    expect(send(state)).toEqual({ outcome });
  });

  it("limits each sender's messages per minute, the other's on their own, with the wait", () => {
    let state = accepted;
    for (let i = 0; i < 3; i += 1) state = send(state).next!;
    expect(send(state)).toEqual({ outcome: { kind: "limited", retryAfterMs: 20_000 } });
    expect(send(state, T + 10, undefined, "b").outcome).toMatchObject({ kind: "stored", position: 6 });
    expect(send(state, T + 10 + 20_000).outcome).toMatchObject({ kind: "stored" });
  });

  it("answers a repeat of a key with its message's position, even after the end, and remembers only the last keys", () => {
    let state = accepted;
    for (let i = 0; i < KEYS_REMEMBERED + 1; i += 1) state = send(state, T + 10 + i * 60_000, `key-${i}`).next!;
    expect(Object.keys(state.recent_keys ?? {})).toHaveLength(KEYS_REMEMBERED);
    expect(send(state, T, `key-${KEYS_REMEMBERED}`)).toEqual({ outcome: { kind: "duplicate", position: 3 + KEYS_REMEMBERED } });
    expect(send({ ...state, status: "ended" }, T, "key-1")).toEqual({ outcome: { kind: "duplicate", position: 4 } });
    // The first key was forgotten: a repeat of it would be a new message.
    expect(send(state, T + 100 * 60_000, "key-0").outcome).toMatchObject({ kind: "stored" });
  });
});

describe("a keyed message moderation flagged", () => {
  const flag = (state: ConnectionState, keyHash: string, at = T + 10, text = "hi") =>
    flagMessage({ sender: "a", senderId: "ann", text, now: at, policy: POLICY, key: { hash: keyHash, fingerprint: `fp-${text}` } })(state);

  it("keeps its key as flagged, taking nothing else: a send with the key and text is refused flagged, with another text as reused, even after the end", () => {
    const { outcome, next } = flag(accepted, "k");
    expect(outcome).toEqual({ kind: "flagged" });
    expect(next).toEqual({ ...accepted, flagged_keys: { k: { fingerprint: "fp-hi", at: T + 10 } } });
    expect(send(next!, T + 20, "k")).toEqual({ outcome: { kind: "flagged" } });
    expect(send(next!, T + 20, "k", "a", "hello")).toEqual({ outcome: { kind: "reused" } });
    expect(send({ ...next!, status: "ended" }, T + 20, "k")).toEqual({ outcome: { kind: "flagged" } });
    // Another key stores as before.
    expect(send(next!, T + 20, "other").outcome).toMatchObject({ kind: "stored", position: 3 });
    // Flagged again: the same answer, nothing written.
    expect(flag(next!, "k", T + 30)).toEqual({ outcome: { kind: "flagged" } });
  });

  it("forgets the key flagged first, never one flagged since, when an instance's clock ran ahead: the database gives the keys back in their own order", () => {
    /** What the Realtime Database gives back: the keys' children in key order. */
    const roundTrip = (state: ConnectionState): ConnectionState => {
      const keys = state.flagged_keys ?? {};
      return { ...state, flagged_keys: Object.fromEntries(Object.keys(keys).sort().map((key) => [key, keys[key]!])) };
    };
    const flagged = (state: ConnectionState, keyHash: string, at: number) => roundTrip(flag(state, keyHash, at).next!);
    // One instance, its clock a minute ahead, flags a key first; the later flags come from instances on time.
    let state = flagged(accepted, "zz-flagged-first", T + 60_000);
    for (let i = 1; i < FLAGGED_KEYS_REMEMBERED - 1; i += 1) state = flagged(state, `m-${String(i).padStart(2, "0")}`, T + 10 + i);
    // The 16th: a key whose send may still be racing it (its check let through by an outage).
    state = flagged(state, "a-flagged-just-now", T + 100);
    // A 17th: the first flagged is forgotten.
    state = flagged(state, "n-next", T + 101);
    const kept = Object.keys(state.flagged_keys ?? {});
    expect({ kept: kept.length, oldestKept: kept.includes("zz-flagged-first"), justFlaggedKept: kept.includes("a-flagged-just-now") }).toEqual({ kept: FLAGGED_KEYS_REMEMBERED, oldestKept: false, justFlaggedKept: true });
    // So the racing send of the key flagged just now is refused in its own transaction.
    expect(send(state, T + 102, "a-flagged-just-now", "a", "hi").outcome).toEqual({ kind: "flagged" });
  });

  it("finds a key whose message is stored already, writing nothing", () => {
    const stored = send(accepted, T + 10, "k").next!;
    expect(flag(stored, "k", T + 20)).toEqual({ outcome: { kind: "duplicate", position: 3 } });
  });

  it.each<[string, ConnectionState, unknown]>([
    ["pending", pending, { kind: "pending" }],
    ["blocked", { ...accepted, blocked: { b: T } }, { kind: "blocked" }],
  ])("answers a %s connection's refusal, keeping the key flagged for when that changes", (_name, state, outcome) => {
    const { outcome: answered, next } = flag(state, "k");
    expect(answered).toEqual(outcome);
    expect(next?.flagged_keys).toEqual({ k: { fingerprint: "fp-hi", at: T + 10 } });
  });

  it("answers a closed connection's refusal, writing nothing: no send is ever stored there", () => {
    expect(flag({ ...accepted, status: "ended" }, "k")).toEqual({ outcome: { kind: "closed", status: "ended" } });
  });

  it("remembers only the last flagged keys, the newest kept even behind another instance's clock, just past the newest before it", () => {
    let state = accepted;
    for (let i = 0; i < FLAGGED_KEYS_REMEMBERED + 1; i += 1) state = flag(state, `key-${i}`, T + 10 + i).next!;
    expect(Object.keys(state.flagged_keys ?? {})).toHaveLength(FLAGGED_KEYS_REMEMBERED);
    expect(state.flagged_keys?.["key-0"]).toBeUndefined();
    const behind = flag(state, "late", T).next!;
    expect(behind.flagged_keys?.late).toEqual({ fingerprint: "fp-hi", at: T + 10 + FLAGGED_KEYS_REMEMBERED + 1 });
    expect(behind.flagged_keys?.["key-1"]).toBeUndefined();
    // The stored keys are their own: a flagged one never pushes one out.
    expect(send(behind, T + 100, "kept").next?.recent_keys).toEqual({ kept: 3 });
  });

  it("leaves a state an older version wrote (no flagged keys) readable, and the new one too", () => {
    const older = { status: "accepted", message_count: 2, last_activity: T + 5, recent_keys: { k: 2 } };
    expect(connectionStateSchema.parse(older)).toEqual(older);
    const flagged = flag(connectionStateSchema.parse(older), "f").next!;
    expect(connectionStateSchema.parse(flagged)).toEqual(flagged);
  });
});
