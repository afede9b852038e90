import { appendRule, claimRequest, endRule, type RequestClaim } from "../../src/session/session-rules";
import { StoreDataError } from "../../src/store/errors";
import type { SessionState } from "../../src/store/records";
import { CLOSED_INDEX_ENTRY, journalEntry, markedUnflushed, nodeToWrite, parsePending, pendingMessages, planCopy, remember, type Commit, type JournalEntry } from "../../src/store/rtdb/journal";
import { exchange, POLICY } from "../support/fixtures";

/*
 * The journal's decisions on plain values, without a database: the node a transaction on `state`
 * writes, and the copy each commit sends. test/contract (rtdb-store, rtdb-adapter) checks the same
 * decisions through firebase-admin on a database.
 */

const T = 1_000_000;
const ID = "session-1";

const active = (overrides: Partial<SessionState> = {}): SessionState => ({ status: "active", message_count: 2, last_activity: T, idle_since: T, ...overrides });

/** The raw `state` node a transaction reads: the state and its journal. */
const raw = (state: SessionState, pending?: Record<string, JournalEntry>) => (pending === undefined ? { ...state } : { ...state, pending });

const committed = (value: unknown, strayPartials: readonly string[] = [], wrote = true): Commit => ({ value, wrote, strayPartials });

/** The update's entries that copy exchange `tag` to its two keys in `messages`; the reply names the partial it completed, if any. */
const copyOf = (tag: string, userKey: string, assistantKey: string, partial?: string) => ({
  [`messages/${userKey}`]: exchange(tag).user,
  [`messages/${assistantKey}`]: partial === undefined ? exchange(tag).assistant : { ...exchange(tag).assistant, partial },
});

describe("the state node a transaction writes", () => {
  const pending = { e000000001: exchange("1"), e000000002: journalEntry(exchange("2"), "owner-b") };
  const requests = { h1: { fingerprint: "f1", seq: 1 }, h2: { fingerprint: "f2", seq: 2 }, claim: { fingerprint: "f3", owner: "o", lease_until: T + 500 } };

  it("keeps the whole journal and every done key when nothing is known copied, leaving undefined fields out", () => {
    const state = active({ requests });
    const next = { ...state, last_activity: T + 1, ended_at: undefined, requests: { ...requests, claim: { ...requests.claim, seq: undefined } } };
    expect(nodeToWrite(raw(state, pending), state, next, undefined)).toStrictEqual({
      status: "active",
      message_count: 2,
      last_activity: T + 1,
      idle_since: T,
      requests,
      pending,
      claims_lapse_at: T + 500,
    });
  });

  it("drops the exchanges and done keys this instance knows are copied, never a claim", () => {
    const state = active({ requests });
    const known = new Set(["e000000001", "k:h1", "k:claim"]);
    const node = nodeToWrite(raw(state, pending), state, { ...state, last_activity: T + 1 }, known);
    expect(node.pending).toEqual({ e000000002: pending.e000000002 });
    expect(node.requests).toEqual({ h2: requests.h2, claim: requests.claim });
  });

  it("drops what is known copied when the rule changes nothing, and the journal with its last entry", () => {
    const state = active({ requests: { h1: requests.h1 } });
    const node = nodeToWrite(raw(state, { e000000001: pending.e000000001 }), state, undefined, new Set(["e000000001", "k:h1"]));
    expect(node).toEqual({ status: "active", message_count: 2, last_activity: T, idle_since: T });
  });

  it("journals an appended exchange under the number its rule counts, with the partial it completes", () => {
    const state = active({ message_count: 2 });
    const { next } = appendRule({ receivedAt: T + 1, answeredAt: T + 2, policy: POLICY })(state);
    const node = nodeToWrite(raw(state, pending), state, next, undefined, journalEntry(exchange("3"), "owner-c"));
    expect(node.message_count).toBe(3);
    expect(node.pending).toEqual({ ...pending, e000000003: { ...exchange("3"), partial: "owner-c" } });
  });

  it("writes the state back without the appended exchange when the rule declines", () => {
    const state = active();
    expect(nodeToWrite(raw(state), state, undefined, undefined, journalEntry(exchange("3"), "owner-c"))).toEqual(state);
  });

  it("refuses an appending rule that does not count exactly one more exchange", () => {
    const state = active({ message_count: 2 });
    expect(() => nodeToWrite(raw(state), state, { ...state, message_count: 4 }, undefined, exchange("3"))).toThrow(/must count one more exchange \(2 -> 4\)/);
  });
});

describe("the indexes the sweep queries", () => {
  it("indexes a closed session whose journal is left by when it closed (unflushed_since), and no other", () => {
    const state = active();
    const ended = endRule(T + 3, POLICY)(state).next;
    expect(ended?.status).toBe("ended");
    const journal = { e000000002: exchange("2") };
    expect(nodeToWrite(raw(state, journal), state, ended, undefined).unflushed_since).toBe(T + 3);
    // Its journal all copied, or none left: nothing for the sweep to finish.
    expect(nodeToWrite(raw(state, journal), state, ended, new Set(["e000000002"]))).not.toHaveProperty("unflushed_since");
    expect(nodeToWrite(raw(state), state, ended, undefined)).not.toHaveProperty("unflushed_since");
    // Active: the next message copies it.
    expect(nodeToWrite(raw(state, journal), state, { ...state, last_activity: T + 1 }, undefined)).not.toHaveProperty("unflushed_since");
    // Closed without an end time: by its last activity.
    const closed: SessionState = { status: "expired", message_count: 2, last_activity: T + 7 };
    expect(nodeToWrite(raw(closed, journal), closed, undefined, undefined).unflushed_since).toBe(T + 7);
  });

  it("keeps a closed session marked (unflushed_since) for its index entry alone until a copy of its closing fields is known landed", () => {
    const ended: SessionState = { status: "ended", message_count: 2, last_activity: T + 3, ended_at: T + 3 };
    // A closing copy that failed with nothing journaled: the mark is set by when it ended.
    const marked = markedUnflushed(nodeToWrite(raw(ended), ended, undefined, undefined));
    expect(marked.unflushed_since).toBe(T + 3);
    expect(markedUnflushed({ ...marked, unflushed_since: T + 9 }).unflushed_since).toBe(T + 9);
    expect(markedUnflushed(nodeToWrite(raw(active()), active(), undefined, undefined))).not.toHaveProperty("unflushed_since");
    // Carried by every transaction until the copy is acknowledged, whatever the instance knew of the journal.
    expect(nodeToWrite(marked, ended, undefined, undefined).unflushed_since).toBe(T + 3);
    expect(nodeToWrite(marked, ended, ended, new Set(["e000000001"])).unflushed_since).toBe(T + 3);
    expect(nodeToWrite(marked, ended, undefined, new Set([CLOSED_INDEX_ENTRY]))).not.toHaveProperty("unflushed_since");
    // A journal left still marks it, by its own rule.
    expect(nodeToWrite({ ...marked, pending: { e000000002: exchange("2") } }, ended, undefined, new Set([CLOSED_INDEX_ENTRY])).unflushed_since).toBe(T + 3);
  });

  it("indexes the first lease among the claims (claims_lapse_at), moving as claims go, none once none is held", () => {
    const claim = (owner: string): RequestClaim => ({ hash: `r-${owner}`, fingerprint: owner, owner, remember: false });
    const state = active({ requests: { done: { fingerprint: "d", seq: 1 } } });
    const late = claimRequest(claim("late"), T + 400, 100, POLICY)(state).next;
    if (late === undefined) throw new Error("claimed");
    const early = claimRequest(claim("early"), T, 100, POLICY)(late).next;
    if (early === undefined) throw new Error("claimed");
    expect(nodeToWrite(raw(state), state, early, undefined).claims_lapse_at).toBe(T + 100);
    const { "r-early": dropped, ...rest } = early.requests ?? {};
    expect(dropped).toBeDefined();
    expect(nodeToWrite(raw(early), early, { ...early, requests: rest }, undefined).claims_lapse_at).toBe(T + 500);
    // A done key holds no lease.
    expect(nodeToWrite(raw(state), state, { ...state, last_activity: T + 1 }, undefined)).not.toHaveProperty("claims_lapse_at");
  });
});

describe("the copy a commit sends", () => {
  const journal = { e000000001: journalEntry(exchange("1"), "owner-a"), e000000002: exchange("2") };

  it("copies journaled exchanges to messages and done keys to their records, removing the partials they complete and naming each on its reply", () => {
    const node = nodeToWrite(raw(active(), journal), active(), active({ requests: { h1: { fingerprint: "f1", seq: 1 }, c: { fingerprint: "f", owner: "o", lease_until: T } } }), undefined);
    const { known, copy } = planCopy(ID, committed(node), undefined);
    expect(known).toBeUndefined();
    expect(copy).toEqual({
      update: { ...copyOf("1", "m000000001", "m000000002", "owner-a"), ...copyOf("2", "m000000003", "m000000004"), "partials/owner-a": null, "keys/h1": { fingerprint: "f1", seq: 1 } },
      entries: new Set(["e000000001", "e000000002", "k:h1"]),
      closed: false,
    });
  });

  it("sends none when all is known copied, and forgets what left the journal", () => {
    const node = nodeToWrite(raw(active(), journal), active(), undefined, undefined);
    const { known, copy } = planCopy(ID, committed(node, [], false), new Set(["e000000001", "e000000002", "e000000000", "k:gone"]));
    expect(copy).toBeUndefined();
    expect(known).toEqual(new Set(["e000000001", "e000000002"]));
  });

  it("copies the whole journal again when part of it is not known copied (the same keys: idempotent)", () => {
    const { copy } = planCopy(ID, committed(raw(active(), journal)), new Set(["e000000001"]));
    expect(copy?.update).toEqual({ ...copyOf("1", "m000000001", "m000000002", "owner-a"), ...copyOf("2", "m000000003", "m000000004"), "partials/owner-a": null });
  });

  it("removes the stray partials a committed rule names, with nothing else to copy, and no key that is not a database key", () => {
    const { copy } = planCopy(ID, committed(raw(active()), ["dead-a", "../state", ""]), undefined);
    expect(copy).toEqual({ update: { "partials/dead-a": null }, entries: new Set(), closed: false });
  });

  it("removes every partial as a commit closes the session (requests that died before their commit), copying its journal", () => {
    const state = active();
    const ended = nodeToWrite(raw(state, { e000000002: exchange("2") }), state, endRule(T + 3, POLICY)(state).next, undefined);
    const { copy } = planCopy(ID, committed(ended), undefined);
    // Marked for the sweep while its journal is left: the index entry's closing fields count with it.
    expect(copy).toEqual({ update: { ...copyOf("2", "m000000003", "m000000004"), partials: null }, entries: new Set(["e000000002", CLOSED_INDEX_ENTRY]), closed: true });
  });

  it("finishes a closed session's copy even when it is known copied, without removing other partials", () => {
    const closed: SessionState = { status: "ended", message_count: 2, last_activity: T, ended_at: T };
    const { copy } = planCopy(ID, committed(raw(closed, journal), [], false), new Set(["e000000001", "e000000002"]));
    expect(copy).toEqual({ update: { ...copyOf("1", "m000000001", "m000000002", "owner-a"), ...copyOf("2", "m000000003", "m000000004"), "partials/owner-a": null }, entries: new Set(["e000000001", "e000000002"]), closed: true });
  });

  it("sends the closing index fields again for a session marked with nothing journaled, naming them among the entries", () => {
    const ended: SessionState = { status: "ended", message_count: 1, last_activity: T, ended_at: T };
    const marked = markedUnflushed({ ...raw(ended), conversation: "alice" });
    const { copy } = planCopy(ID, committed(marked, [], false), undefined);
    expect(copy).toEqual({ update: {}, index: { path: `userConversations/alice/${ID}`, fields: { last_activity: T, message_count: 1, status: "ended", closed: "ended", closed_count: 1, closed_activity: T } }, entries: new Set([CLOSED_INDEX_ENTRY]), closed: true });
  });

  it("sends none for a closed session with nothing journaled that the commit did not close, nor for a state that is gone", () => {
    const closed: SessionState = { status: "ended", message_count: 2, last_activity: T, ended_at: T };
    expect(planCopy(ID, committed(raw(closed), [], false), undefined).copy).toBeUndefined();
    expect(planCopy(ID, committed(null, [], false), new Set(["e000000001"]))).toEqual({ known: new Set(["e000000001"]) });
  });

  it("updates the owner's index entry apart, from the entry's own path: its count, activity and status, and with exchange 1 its head", () => {
    const head = { title: "first words", template_id: "tester", template_name: "Tester", created_at: T - 5 };
    const state = active({ message_count: 1 });
    const node = { ...raw(state, { e000000001: { ...journalEntry(exchange("1"), "owner-a"), head } }), conversation: "alice" };
    const { copy } = planCopy(ID, committed(node), undefined);
    expect(copy?.index).toEqual({ path: `userConversations/alice/${ID}`, fields: { ...head, last_activity: T, message_count: 1, status: "active" } });
    // The session's part names no index path: each update goes from the node it writes.
    expect(Object.keys(copy?.update ?? {}).filter((path) => path.includes("userConversations"))).toEqual([]);
    const ended: SessionState = { status: "ended", message_count: 1, last_activity: T, ended_at: T };
    expect(planCopy(ID, committed({ ...raw(ended), conversation: "alice" }), undefined).copy?.index?.fields).toEqual({ last_activity: T, message_count: 1, status: "ended", closed: "ended", closed_count: 1, closed_activity: T });
  });

  it("remembers a copy's entries beside what was known", () => {
    expect(remember(new Set(["e000000001"]), new Set(["e000000002", "k:h1"]))).toEqual(new Set(["e000000001", "e000000002", "k:h1"]));
    expect(remember(undefined, new Set(["k:h1"]))).toEqual(new Set(["k:h1"]));
  });
});

describe("the journal as read", () => {
  it("gives the journaled exchanges' messages under the keys they take in messages, a reply with the partial it completes", () => {
    const pending = parsePending(ID, { e000000002: exchange("2"), e000000010: journalEntry(exchange("10"), "p") });
    expect([...pendingMessages(ID, pending)]).toEqual([
      ["m000000003", exchange("2").user],
      ["m000000004", exchange("2").assistant],
      ["m000000019", exchange("10").user],
      ["m000000020", { ...exchange("10").assistant, partial: "p" }],
    ]);
    expect(parsePending(ID, null)).toEqual({});
  });

  it("reports a malformed journal as StoreDataError naming where it is, before anything is copied", () => {
    const broken = { ...active(), pending: { e000000001: { user: exchange("1").user, assistant: "not a message" } } };
    expect(() => planCopy(ID, committed(broken), undefined)).toThrow(StoreDataError);
    expect(() => planCopy(ID, committed(broken), undefined)).toThrow(`unexpected data at userSessions/${ID}/state/pending: e000000001.assistant`);
  });

  it("reports a journal key that is not an exchange's as StoreDataError", () => {
    const pending = parsePending(ID, { x1: exchange("1") });
    expect(() => [...pendingMessages(ID, pending)]).toThrow(new StoreDataError(`userSessions/${ID}/state/pending/x1`, "not an exchange key"));
    expect(() => planCopy(ID, committed({ ...active(), pending: { x1: exchange("1") } }), undefined)).toThrow(StoreDataError);
  });
});
