import { recentMessages } from "../support/recent-messages";
import type { SessionState } from "../../src/store/records";
import type { SessionStore, StateRule } from "../../src/store/session-store";
import { appendRule } from "../../src/session/session-rules";
import { admitAddress } from "../../src/session/ledger/address-limit";
import { appendAt, CREATED_AT, endAt, exchange, newSession, POLICY, TEMPLATE } from "../support/fixtures";
import { inTurns } from "../support/instance-order";

/**
 * Several handles on one database. For the embedded store they are the store itself; for
 * the Realtime Database each is a separate firebase-admin app, as separate function
 * instances would be, with caches of their own.
 */
export interface StoreHarness {
  instance(): SessionStore;
  /** A handle on a new, empty database, for queries that must not see other tests' data. */
  empty(): SessionStore;
  /** The session's partial replies as a client listening to it would see them, once the instances' writes landed. */
  partials(sessionId: string): Promise<Record<string, unknown>>;
  close(): Promise<void>;
  /** A store over several instances (docs/sharding.md): ids it places on each, and the instance an id names. */
  readonly sharded?: { readonly newSessionId: () => string; readonly instanceOf: (id: string) => number };
}

const T = CREATED_AT;

/** One contract, run against every store adapter. */
export function storeContract(makeHarness: () => Promise<StoreHarness>): void {
  let harness: StoreHarness;
  let store: SessionStore;

  beforeAll(async () => {
    harness = await makeHarness();
    store = harness.instance();
  });
  afterAll(async () => harness.close());

  /** A new session, placed on every instance in turn by a store over several. */
  const fresh = (overrides: Parameters<typeof newSession>[0] = {}) => newSession(overrides, harness.sharded?.newSessionId());
  const order = (expected: string[], limit?: number) => inTurns(expected, harness.sharded?.instanceOf, limit);

  async function seededSession(exchanges = 0) {
    const session = fresh();
    await store.createSession(session);
    for (let i = 1; i <= exchanges; i += 1) await store.appendExchange(session.id, exchange(String(i), T + i), appendAt(T + i));
    return session;
  }

  describe("templates", () => {
    it("seeds absent templates and leaves stored ones untouched", async () => {
      const id = `tpl-${Date.now()}`;
      expect(await store.seedTemplates({ [id]: TEMPLATE })).toEqual([id]);
      expect(await store.seedTemplates({ [id]: { ...TEMPLATE, name: "Changed" } })).toEqual([]);
      expect(await store.readTemplate(id)).toEqual(TEMPLATE);
    });

    it("reads an unknown template as null", async () => {
      expect(await store.readTemplate("no-such-template")).toBeNull();
    });
  });

  describe("sessions", () => {
    it("stores and reads back what creation wrote, and never creates twice", async () => {
      const session = fresh();
      expect(await store.createSession(session)).toBe("created");
      expect(await store.readSessionMeta(session.id)).toEqual(session.meta);
      expect(await store.readSessionState(session.id)).toEqual(session.state);
      expect(await recentMessages(store, session.id, 10)).toEqual([]);

      await store.appendExchange(session.id, exchange("1"), appendAt(T + 1));
      expect(await store.createSession({ ...session, meta: { ...session.meta, user_id: "other" } })).toBe("exists");
      expect(await store.readSessionMeta(session.id)).toEqual(session.meta);
      expect((await store.readSessionState(session.id))?.message_count).toBe(1);
    });

    it("answers unknown ids with null, an empty history and not found", async () => {
      const id = fresh().id;
      expect(await store.readSessionMeta(id)).toBeNull();
      expect(await store.readSessionState(id)).toBeNull();
      expect(await recentMessages(store, id, 10)).toEqual([]);
      expect(await store.readExchange(id, 1)).toBeNull();
      expect(await store.appendExchange(id, exchange("x"), appendAt(T))).toEqual({ found: false });
      expect(await store.updateState(id, endAt(T))).toEqual({ found: false });
      // Acting on an unknown id must not create it.
      expect(await store.readSessionState(id)).toBeNull();
    });

    it("appends exchanges in order, counts them and reads each back", async () => {
      const session = await seededSession();
      const first = await store.appendExchange(session.id, exchange("1", T + 10), appendAt(T + 11));
      const second = await store.appendExchange(session.id, exchange("2", T + 20), appendAt(T + 21));
      expect(first).toEqual({ found: true, outcome: { kind: "appended", seq: 1 }, state: expect.objectContaining({ message_count: 1, last_activity: T + 11 }) });
      expect(second).toMatchObject({ found: true, outcome: { kind: "appended", seq: 2 }, state: { message_count: 2, last_activity: T + 21 } });
      expect(await store.readSessionState(session.id)).toEqual({ status: "active", message_count: 2, last_activity: T + 21, idle_since: T + 21 });
      // A writer whose clock lags never moves last_activity back.
      await store.appendExchange(session.id, exchange("3", T + 30), appendAt(T + 5));
      expect((await store.readSessionState(session.id))?.last_activity).toBe(T + 21);
      expect(await recentMessages(store, session.id, 10)).toEqual([
        exchange("1", T + 10).user,
        exchange("1", T + 10).assistant,
        exchange("2", T + 20).user,
        exchange("2", T + 20).assistant,
        exchange("3", T + 30).user,
        exchange("3", T + 30).assistant,
      ]);
      expect(await store.readExchange(session.id, 2)).toEqual(exchange("2", T + 20));
      expect(await store.readExchange(session.id, 4)).toBeNull();
      expect(await store.readExchange(session.id, 0)).toBeNull();
    });

    it("keeps the flag of a truncated reply", async () => {
      const session = await seededSession();
      const cut = { ...exchange("cut"), assistant: { ...exchange("cut").assistant, truncated: true as const } };
      await store.appendExchange(session.id, cut, appendAt(T + 2));
      expect(await store.readExchange(session.id, 1)).toEqual(cut);
      expect((await recentMessages(store, session.id, 1))[0]).toEqual(cut.assistant);
    });

    it("reads only the last messages of a long history, oldest first", async () => {
      const session = await seededSession(120);
      const recent = await recentMessages(store, session.id, 5);
      expect(recent.map((message) => message.content)).toEqual(["answer 118", "question 119", "answer 119", "question 120", "answer 120"]);
      expect(await recentMessages(store, session.id, 0)).toEqual([]);
      expect((await store.readSessionState(session.id))?.message_count).toBe(120);
      expect((await store.readExchange(session.id, 61))?.user.content).toBe("question 61");
    });

    it("stores nothing when the rule declines, and returns its outcome", async () => {
      const session = await seededSession();
      const decline: StateRule<string> = () => ({ outcome: "no" });
      expect(await store.appendExchange(session.id, exchange("x"), decline)).toEqual({ found: true, outcome: "no", state: session.state });
      expect(await store.updateState(session.id, decline)).toEqual({ found: true, outcome: "no", state: session.state });
      expect(await recentMessages(store, session.id, 10)).toEqual([]);
      expect(await store.readSessionState(session.id)).toEqual(session.state);
    });

    it("refuses a rule that appends without counting exactly one more exchange", async () => {
      const session = await seededSession();
      const skip: StateRule<string> = (state) => ({ outcome: "skip", next: { ...state, message_count: state.message_count + 2 } });
      await expect(store.appendExchange(session.id, exchange("x"), skip)).rejects.toThrow(/one more exchange/);
      expect(await store.readSessionState(session.id)).toEqual(session.state);
    });

    it("ends a session once, then refuses messages and a second end, keeping the history", async () => {
      const session = await seededSession(1);
      const ended = await store.updateState(session.id, endAt(T + 9));
      expect(ended).toEqual({ found: true, outcome: { kind: "ended" }, state: { status: "ended", message_count: 1, last_activity: T + 9, ended_at: T + 9 } });
      expect(await store.updateState(session.id, endAt(T + 10))).toMatchObject({ outcome: { kind: "closed", status: "ended" } });
      expect(await store.appendExchange(session.id, exchange("2"), appendAt(T + 10))).toMatchObject({ outcome: { kind: "closed", status: "ended" } });
      expect(await recentMessages(store, session.id, 10)).toHaveLength(2);
      expect(await store.readSessionMeta(session.id)).toEqual(session.meta);
    });

    it("deletes a session with its history", async () => {
      const session = await seededSession(2);
      await store.deleteSession(session.id);
      expect(await store.readSessionState(session.id)).toBeNull();
      expect(await store.readSessionMeta(session.id)).toBeNull();
      expect(await recentMessages(store, session.id, 10)).toEqual([]);
    });

    it("says whether a deletion removed the session: of two at once one only, and none once it is gone", async () => {
      const session = await seededSession(2);
      const removed = await Promise.all([store.deleteSession(session.id), harness.instance().deleteSession(session.id)]);
      expect(removed.sort()).toEqual([false, true]);
      expect(await store.readSessionState(session.id)).toBeNull();
      expect(await store.deleteSession(session.id)).toBe(false);
    });

    it("deletes a session only when the condition holds on its state, keeping it whole otherwise", async () => {
      const session = await seededSession(2);
      await store.updateState(session.id, endAt(T + 9));
      const seen: SessionState[] = [];
      const refused = await store.deleteSession(session.id, (state) => {
        seen.push(state);
        return false;
      });
      expect({ refused, seen }).toEqual({ refused: false, seen: [{ status: "ended", message_count: 2, last_activity: T + 9, ended_at: T + 9 }] });
      expect(await store.readSessionMeta(session.id)).toEqual(session.meta);
      expect(await recentMessages(store, session.id, 10)).toHaveLength(4);

      expect(await store.deleteSession(session.id, (state) => state.status === "ended")).toBe(true);
      expect(await store.readSessionState(session.id)).toBeNull();
      expect(await recentMessages(store, session.id, 10)).toEqual([]);
    });
  });

  describe("partial replies", () => {
    const partial = (text: string, seqAfter = 0) => ({ text, seq_after: seqAfter, updated_at: T + text.length });

    it("keeps each request's partial beside the session, replaced as it grows, removed with null", async () => {
      const session = await seededSession();
      await store.writePartial(session.id, "owner-a", partial("Hel"));
      await store.writePartial(session.id, "owner-b", partial("Other"));
      await store.writePartial(session.id, "owner-a", partial("Hello"));
      expect(await harness.partials(session.id)).toEqual({ "owner-a": partial("Hello"), "owner-b": partial("Other") });
      await store.writePartial(session.id, "owner-b", null);
      expect(await harness.partials(session.id)).toEqual({ "owner-a": partial("Hello") });
      // Never in the state, which only transactions change.
      expect(await store.readSessionState(session.id)).toEqual(session.state);
    });

    it("removes the partial an appended exchange completes, and only that one", async () => {
      const session = await seededSession(1);
      await store.writePartial(session.id, "owner-a", partial("answer", 1));
      await store.writePartial(session.id, "owner-b", partial("still writing", 1));
      expect(await store.appendExchange(session.id, exchange("2"), appendAt(T + 2), "owner-a")).toMatchObject({ outcome: { kind: "appended", seq: 2 } });
      expect(await harness.partials(session.id)).toEqual({ "owner-b": partial("still writing", 1) });
      expect((await recentMessages(store, session.id, 10)).map((message) => message.content)).toEqual(["question 1", "answer 1", "question 2", "answer 2"]);
    });

    it("stores with a reply the key of the partial it completes, read wherever the reply is, and none for an exchange that completed none", async () => {
      const session = await seededSession(1);
      await store.writePartial(session.id, "owner-a", partial("answer", 1));
      await store.appendExchange(session.id, exchange("2"), appendAt(T + 2), "owner-a");
      // Read at once (on the database, from the journal) and once copied.
      const reads = async () => [
        (await store.readExchange(session.id, 2))?.assistant,
        (await store.readMessages(session.id, 4, 4))[0],
        (await store.readWindow(session.id, 2)).messages[1],
      ];
      for (const reply of await reads()) expect(reply).toEqual({ ...exchange("2").assistant, partial: "owner-a" });
      await harness.partials(session.id);
      for (const reply of await reads()) expect(reply).toEqual({ ...exchange("2").assistant, partial: "owner-a" });
      expect((await store.readExchange(session.id, 1))?.assistant).toEqual(exchange("1", T + 1).assistant);
      expect((await store.readExchange(session.id, 2))?.user).toEqual(exchange("2").user);
    });

    it("removes the partials a committed rule names as stray, and none when the rule changes nothing", async () => {
      const session = await seededSession(1);
      await store.writePartial(session.id, "dead-a", partial("left behind", 1));
      await store.writePartial(session.id, "alive-b", partial("still writing", 1));
      const unchanged: StateRule<string> = () => ({ outcome: "no", strayPartials: ["dead-a"] });
      await store.updateState(session.id, unchanged);
      expect(Object.keys(await harness.partials(session.id)).sort()).toEqual(["alive-b", "dead-a"]);
      const touch: StateRule<string> = (state) => ({ outcome: "yes", next: { ...state, last_activity: state.last_activity + 1 }, strayPartials: ["dead-a"] });
      await store.updateState(session.id, touch);
      expect(await harness.partials(session.id)).toEqual({ "alive-b": partial("still writing", 1) });
      const appendDropping: StateRule<string> = (state) => ({ outcome: "ok", next: { ...state, message_count: state.message_count + 1 }, strayPartials: ["alive-b"] });
      await store.appendExchange(session.id, exchange("2"), appendDropping);
      expect(await harness.partials(session.id)).toEqual({});
    });

    it("finds sessions holding a claim whose lease lapsed, by the first lease", async () => {
      const [early, late, none] = await Promise.all([seededSession(), seededSession(), seededSession()]);
      const claimUntil = (leaseUntil: number, owner: string): StateRule<undefined> => (state) => ({
        outcome: undefined,
        next: { ...state, requests: { ...state.requests, [`r-${owner}`]: { fingerprint: "", owner, lease_until: leaseUntil } } },
      });
      await store.updateState(early.id, claimUntil(T + 100, "a"));
      await store.updateState(early.id, claimUntil(T + 500, "b"));
      await store.updateState(late.id, claimUntil(T + 300, "c"));
      const ours = (ids: readonly string[]) => ids.filter((id) => [early.id, late.id, none.id].includes(id));
      expect(ours((await store.findLapsedClaims(T + 99, undefined, 100)).keys)).toEqual([]);
      expect(ours((await store.findLapsedClaims(T + 300, undefined, 100)).keys)).toEqual(order([early.id, late.id]));
      // A commit that drops the early claim moves the session's index to its next lease.
      const dropA: StateRule<undefined> = (state) => {
        const { "r-a": dropped, ...rest } = state.requests ?? {};
        return { outcome: undefined, next: { ...state, requests: rest } };
      };
      await store.updateState(early.id, dropA);
      expect(ours((await store.findLapsedClaims(T + 300, undefined, 100)).keys)).toEqual([late.id]);
    });

    it("keeps the partial when the append is refused", async () => {
      const session = await seededSession();
      await store.writePartial(session.id, "owner-a", partial("text"));
      const decline: StateRule<string> = () => ({ outcome: "no" });
      await store.appendExchange(session.id, exchange("x"), decline, "owner-a");
      expect(await harness.partials(session.id)).toEqual({ "owner-a": partial("text") });
    });
  });

  describe("message ranges, summaries and usage", () => {
    it("reads messages by position, across the journal, leaving out those past the session's end", async () => {
      const session = await seededSession(3);
      expect((await store.readMessages(session.id, 2, 5)).map((message) => message.content)).toEqual(["answer 1", "question 2", "answer 2", "question 3"]);
      expect((await store.readMessages(session.id, 5, 9)).map((message) => message.content)).toEqual(["question 3", "answer 3"]);
      expect(await store.readMessages(session.id, 4, 3)).toEqual([]);
      expect(await store.readMessages("no-such-session", 1, 2)).toEqual([]);
    });

    it("keeps the summary that reaches furthest, beside the session, never touching its state or history", async () => {
      const session = await seededSession(2);
      expect(await store.readSummary(session.id)).toBeNull();
      const summary = (text: string, through: number) => ({ text, through, updated_at: T + through });
      expect(await store.writeSummary(session.id, summary("first two", 2))).toBe(true);
      expect(await store.writeSummary(session.id, summary("older", 1))).toBe(false);
      expect(await store.writeSummary(session.id, summary("same reach", 2))).toBe(false);
      expect(await store.readSummary(session.id)).toEqual(summary("first two", 2));
      expect(await store.writeSummary(session.id, summary("first three", 3))).toBe(true);
      expect(await harness.instance().readSummary(session.id)).toEqual(summary("first three", 3));
      expect((await store.readSessionState(session.id))?.message_count).toBe(2);
      expect(await recentMessages(store, session.id, 10)).toHaveLength(4);
    });

    it("keeps a summary of the session's creation over one of an earlier creation of its id, and drops a summary only of the creation named", async () => {
      const session = await seededSession(2);
      const createdAt = session.meta.created_at;
      const summary = (text: string, through: number, created: number) => ({ text, through, updated_at: T + through, created_at: created });
      expect(await store.writeSummary(session.id, summary("this session's", 2, createdAt))).toBe(true);
      // An erased session's, of the same id, reaching further: it neither replaces it nor is dropped for it.
      expect(await store.writeSummary(session.id, summary("an erased session's", 4, createdAt - 1))).toBe(false);
      await store.dropSummary(session.id, createdAt - 1);
      expect(await harness.instance().readSummary(session.id)).toEqual(summary("this session's", 2, createdAt));
      await store.dropSummary(session.id, createdAt);
      expect(await harness.instance().readSummary(session.id)).toBeNull();
    });

    it("stores a reply's usage with the exchange, and the session's totals in its state", async () => {
      const session = await seededSession();
      const usage = { prompt_tokens: 30, completion_tokens: 5, total_tokens: 35, cost_usd: 0.000008, prompt_estimate: 34 };
      const withUsage = exchange("priced");
      const priced = { ...withUsage, assistant: { ...withUsage.assistant, usage } };
      const rule = appendRule({ receivedAt: T + 1, answeredAt: T + 1, policy: POLICY, usage: { prompt_tokens: 30, completion_tokens: 5, total_tokens: 35, cost_usd: 0.000008 } });
      await store.appendExchange(session.id, priced, rule);
      await store.appendExchange(session.id, exchange("estimated"), appendRule({ receivedAt: T + 2, answeredAt: T + 2, policy: POLICY, usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5, estimated: true } }));
      expect((await harness.instance().readExchange(session.id, 1))?.assistant.usage).toEqual(usage);
      expect((await harness.instance().readSessionState(session.id))?.usage).toEqual({ prompt_tokens: 33, completion_tokens: 7, total_tokens: 40, cost_usd: 0.000008, estimated: true });
    });
  });

  describe("maintenance queries", () => {
    let db: SessionStore;
    beforeEach(() => {
      db = harness.empty();
    });

    async function sessionAt(createdAt: number) {
      const session = fresh({ created_at: createdAt });
      await db.createSession(session);
      return session;
    }

    it("finds active sessions idle since a cutoff, oldest first, and never closed ones", async () => {
      const [a, b, c, d] = [await sessionAt(T + 30), await sessionAt(T + 10), await sessionAt(T + 20), await sessionAt(T + 40)];
      await db.updateState(c.id, endAt(T + 25));
      await db.appendExchange(d.id, exchange("1"), appendAt(T + 50));
      const idle = async (cutoff: number, limit: number) => (await db.findIdleSessions(cutoff, undefined, limit)).keys;
      expect(await idle(T + 30, 10)).toEqual(order([b.id, a.id]));
      expect(await idle(T + 50, 1)).toEqual(order([b.id, a.id, d.id], 1));
      expect(await idle(T + 50, 10)).toEqual(order([b.id, a.id, d.id]));
      expect(await idle(T + 9, 10)).toEqual([]);
      expect(await idle(T + 30, 0)).toEqual([]);
    });

    it("pages on from where a page ended, never from the oldest again, whether what the page held changed or stayed", async () => {
      const ids = [];
      for (let i = 1; i <= 5; i += 1) ids.push((await sessionAt(T + 10 * i)).id);
      const first = await db.findIdleSessions(T + 50, undefined, 2);
      // The sweep expired the first session the page held; its change of the second failed, which stays idle.
      await db.updateState(first.keys[0] ?? "", endAt(T + 60));
      const second = await db.findIdleSessions(T + 50, first.next, 2);
      const third = await db.findIdleSessions(T + 50, second.next, 2);
      expect([first, second, third].map((page) => page.keys.length)).toEqual([2, 2, 1]);
      expect([...first.keys, ...second.keys, ...third.keys].sort()).toEqual(ids.sort());
    });

    it("finds closed sessions by the time they closed", async () => {
      const [a, b] = [await sessionAt(T), await sessionAt(T)];
      await sessionAt(T);
      await db.updateState(b.id, endAt(T + 5));
      await db.updateState(a.id, endAt(T + 7));
      expect((await db.findClosedSessions(T + 7, undefined, 100)).keys).toEqual(order([b.id, a.id]));
      expect((await db.findClosedSessions(T + 6, undefined, 100)).keys).toEqual([b.id]);
    });

    it("claims a create key once and forgets old keys", async () => {
      const first = { fingerprint: "f1", session_id: "s1", created_at: T };
      expect(await db.claimCreateKey("h1", first)).toEqual(first);
      expect(await db.claimCreateKey("h1", { fingerprint: "f2", session_id: "s2", created_at: T + 1 })).toEqual(first);
      await db.claimCreateKey("h2", { ...first, created_at: T + 10 });
      expect(await db.deleteCreateKeys(T - 1, 10)).toBe(0);
      expect(await db.deleteCreateKeys(T, 10)).toBe(1);
      const fresh = { fingerprint: "f4", session_id: "s4", created_at: T + 2 };
      expect(await db.claimCreateKey("h1", fresh)).toEqual(fresh);
      expect(await db.claimCreateKey("h2", fresh)).toEqual({ ...first, created_at: T + 10 });
    });

    it("gives a create key back only while it is still the claim that asks", async () => {
      const mine = { fingerprint: "f1", session_id: "s-mine", created_at: T };
      await db.claimCreateKey("h-release", mine);
      // Another claim's id or time: not this one, kept.
      expect(await db.releaseCreateKey("h-release", { ...mine, session_id: "s-other" })).toBe(false);
      expect(await db.releaseCreateKey("h-release", { ...mine, created_at: T + 1 })).toBe(false);
      expect(await db.releaseCreateKey("h-release", mine)).toBe(true);
      expect(await db.releaseCreateKey("h-release", mine)).toBe(false);
      // Claimed again since by another request: that claim stays.
      const theirs = { fingerprint: "f1", session_id: "s-theirs", created_at: T + 2 };
      expect(await db.claimCreateKey("h-release", theirs)).toEqual(theirs);
      expect(await db.releaseCreateKey("h-release", mine)).toBe(false);
      // A repeat of theirs (the same fingerprint) takes it over.
      expect(await db.claimCreateKey("h-release", mine)).toEqual({ ...theirs, adopted: true, adopted_at: T });
    });

    it("keeps a create key a repeat took over, which its first request then cannot give back", async () => {
      const first = { fingerprint: "f1", session_id: "s-first", created_at: T, user_key: "u1" };
      expect(await db.claimCreateKey("h-adopt", first)).toEqual(first);
      // The same claim again, and a reused key (another fingerprint), take nothing over.
      expect(await db.claimCreateKey("h-adopt", first)).toEqual(first);
      expect(await db.claimCreateKey("h-adopt", { fingerprint: "f2", session_id: "s-reused", created_at: T + 1 })).toEqual(first);
      // A repeat (the same fingerprint, its own id and time) finds it and takes it over, at its time.
      const repeat = { fingerprint: "f1", session_id: "s-repeat", created_at: T + 2, user_key: "u1" };
      const taken = { ...first, adopted: true, adopted_at: T + 2 };
      expect(await db.claimCreateKey("h-adopt", repeat)).toEqual(taken);
      expect(await db.claimCreateKey("h-adopt", repeat)).toEqual(taken);
      expect(await db.releaseCreateKey("h-adopt", first)).toBe(false);
      expect(await db.claimCreateKey("h-adopt", { fingerprint: "f3", session_id: "s-late", created_at: T + 3 })).toEqual(taken);
      // Each later repeat takes it over again, at its own time.
      expect(await db.claimCreateKey("h-adopt", { ...repeat, session_id: "s-again", created_at: T + 4 })).toEqual({ ...taken, adopted_at: T + 4 });
      // Taken over, it still goes with its TTL.
      expect(await db.deleteCreateKeys(T, 10)).toBeGreaterThanOrEqual(1);
      expect(await db.claimCreateKey("h-adopt", repeat)).toEqual(repeat);
    });

    it("reads a user's create keys page by page in hash order, and deletes one only while it is still the record read", async () => {
      const user = "u-keys";
      const key = (session: string) => ({ fingerprint: "f", session_id: session, created_at: T, user_key: user });
      for (const hash of ["k3", "k1", "k2"]) await db.claimCreateKey(hash, key(`s-${hash}`));
      await db.claimCreateKey("k0", { ...key("s-theirs"), user_key: "u-other" });
      await db.claimCreateKey("k4", { fingerprint: "f", session_id: "s-unowned", created_at: T });
      expect(await db.readUserCreateKeys(user, undefined, 2)).toEqual([{ hash: "k1", key: key("s-k1") }, { hash: "k2", key: key("s-k2") }]);
      expect(await db.readUserCreateKeys(user, "k2", 2)).toEqual([{ hash: "k3", key: key("s-k3") }]);
      expect(await db.readUserCreateKeys(user, "k3", 2)).toEqual([]);

      // Taken over by a repeat since it was read (its session id and claim time as they were): it stays.
      const read = key("s-k1");
      const taken = await db.claimCreateKey("k1", key("s-repeat"));
      expect(taken).toEqual({ ...read, adopted: true, adopted_at: T });
      expect(await db.deleteUnchangedCreateKey("k1", read)).toBe(false);
      // Taken over again, by a repeat as old: the record is no longer the one read.
      await db.claimCreateKey("k1", { ...key("s-later"), created_at: T + 1 });
      expect(await db.deleteUnchangedCreateKey("k1", taken)).toBe(false);
      // As read, it goes, once.
      const again = { ...read, adopted: true as const, adopted_at: T + 1 };
      expect(await db.deleteUnchangedCreateKey("k1", again)).toBe(true);
      expect(await db.deleteUnchangedCreateKey("k1", again)).toBe(false);
      // Claimed anew once gone: another record, kept.
      await db.claimCreateKey("k1", key("s-new"));
      expect(await db.deleteUnchangedCreateKey("k1", again)).toBe(false);
      expect((await db.readUserCreateKeys(user, undefined, 10)).map(({ hash, key: stored }) => [hash, stored.session_id])).toEqual([["k1", "s-new"], ["k2", "s-k2"], ["k3", "s-k3"]]);
      expect(await db.readUserCreateKeys("u-other", undefined, 10)).toEqual([{ hash: "k0", key: { ...key("s-theirs"), user_key: "u-other" } }]);
    });

    it("marks a create key refused at its last claim's time only while it is still the record read, and a take-over keeps that mark behind its own time", async () => {
      const first = { fingerprint: "f", session_id: "s-first", created_at: T, user_key: "u-refuse" };
      await db.claimCreateKey("h-refuse", first);
      const taken = await db.claimCreateKey("h-refuse", { ...first, session_id: "s-repeat", created_at: T + 1 });
      expect(taken).toEqual({ ...first, adopted: true, adopted_at: T + 1 });
      // The claim as it was before the take-over is no longer the record.
      expect(await db.refuseCreateKey("h-refuse", first)).toBe(false);
      expect(await db.refuseCreateKey("h-refuse", taken)).toBe(true);
      const marked = { ...taken, refused_at: T + 1 };
      expect(await db.readUserCreateKeys("u-refuse", undefined, 10)).toEqual([{ hash: "h-refuse", key: marked }]);
      // Nor is the take-over as read before its mark.
      expect(await db.refuseCreateKey("h-refuse", taken)).toBe(false);
      // A later take-over keeps the mark as it is, its own time past it; the delete of the record as marked then leaves it.
      const again = await db.claimCreateKey("h-refuse", { ...first, session_id: "s-again", created_at: T + 2 });
      expect(again).toEqual({ ...marked, adopted_at: T + 2 });
      expect(await db.deleteUnchangedCreateKey("h-refuse", marked)).toBe(false);
      expect(await db.refuseCreateKey("h-refuse", again)).toBe(true);
      expect(await db.deleteUnchangedCreateKey("h-refuse", { ...again, refused_at: T + 2 })).toBe(true);
      // Gone: nothing to mark, and nothing written.
      expect(await db.refuseCreateKey("h-refuse", again)).toBe(false);
      expect(await db.readUserCreateKeys("u-refuse", undefined, 10)).toEqual([]);
    });

    it("forgets the address buckets last refilled at or before the cutoff, counting those it removed, and a forgotten address starts full", async () => {
      const take = (key: string, at: number) => db.updateAddressUsage(key, admitAddress(at, 1));
      await expect(take("a-old", T)).resolves.toEqual({ admitted: true });
      await expect(take("a-edge", T + 5)).resolves.toEqual({ admitted: true });
      await expect(take("a-new", T + 6)).resolves.toEqual({ admitted: true });
      expect(await db.deleteIdleAddresses(T - 1, 10)).toBe(0);
      expect(await db.deleteIdleAddresses(T + 5, 10)).toBe(2);
      expect(await db.deleteIdleAddresses(T + 5, 10)).toBe(0);
      // Forgotten: full again. Kept: its one token an hour is still taken.
      await expect(take("a-old", T + 7)).resolves.toEqual({ admitted: true });
      await expect(take("a-new", T + 7)).resolves.toMatchObject({ admitted: false });
    });
  });

  describe("several instances", () => {
    it("lets a cold instance act on a session another instance wrote", async () => {
      const session = await seededSession(1);
      const cold = harness.instance();
      expect(await cold.readSessionMeta(session.id)).toEqual(session.meta);
      expect(await cold.appendExchange(session.id, exchange("2"), appendAt(T + 3))).toMatchObject({ outcome: { kind: "appended", seq: 2 } });
      expect(await harness.instance().updateState(session.id, endAt(T + 4))).toMatchObject({ outcome: { kind: "ended" } });
      // The first instance has seen the session active; it must still be refused now.
      expect(await store.appendExchange(session.id, exchange("3"), appendAt(T + 5))).toMatchObject({ outcome: { kind: "closed" } });
      expect(await cold.appendExchange(session.id, exchange("3"), appendAt(T + 5))).toMatchObject({ outcome: { kind: "closed" } });
      expect((await recentMessages(harness.instance(), session.id, 10)).map((message) => message.content)).toEqual([
        "question 1",
        "answer 1",
        "question 2",
        "answer 2",
      ]);
    });

    it("loses no exchange when instances append concurrently", async () => {
      const session = await seededSession();
      const instances = [store, harness.instance(), harness.instance()];
      const perInstance = 8;
      const results = await Promise.all(
        instances.flatMap((instance, i) =>
          Array.from({ length: perInstance }, (_, j) => instance.appendExchange(session.id, exchange(`${i}-${j}`), appendAt(T + 100 + j))),
        ),
      );
      const total = instances.length * perInstance;
      const seqs = results.map((result) => (result.found && result.outcome.kind === "appended" ? result.outcome.seq : -1)).sort((a, b) => a - b);
      expect(seqs).toEqual(Array.from({ length: total }, (_, i) => i + 1));

      const reader = harness.instance();
      expect((await reader.readSessionState(session.id))?.message_count).toBe(total);
      const history = await recentMessages(reader, session.id, 2 * total + 10);
      expect(history).toHaveLength(2 * total);
      for (let i = 0; i < history.length; i += 2) {
        // Each exchange is stored whole: a question directly followed by its own answer.
        expect(history[i]?.role).toBe("user");
        expect(history[i + 1]?.content).toBe(history[i]?.content.replace("question", "answer"));
      }
      expect(new Set(history.map((message) => message.content)).size).toBe(2 * total);
    });

    it("applies each rule to the state it changes, however often it reruns", async () => {
      const session = await seededSession();
      const bump: StateRule<number> = (state: SessionState) => ({
        outcome: state.last_activity,
        next: { ...state, last_activity: state.last_activity + 1 },
      });
      const instances = [store, harness.instance(), harness.instance()];
      const results = await Promise.all(instances.flatMap((instance) => Array.from({ length: 5 }, () => instance.updateState(session.id, bump))));
      const seen = results.map((result) => (result.found ? result.outcome : -1)).sort((a, b) => a - b);
      // Each committed run saw a different state: 15 increments, none lost, none doubled.
      expect(seen).toEqual(Array.from({ length: 15 }, (_, i) => session.state.last_activity + i));
      expect((await harness.instance().readSessionState(session.id))?.last_activity).toBe(session.state.last_activity + 15);
    });

    it("ends a session exactly once when instances race to end it", async () => {
      const session = await seededSession();
      const results = await Promise.all([store, harness.instance(), harness.instance()].map((instance, i) => instance.updateState(session.id, endAt(T + 100 + i))));
      expect(results.filter((result) => result.found && result.outcome.kind === "ended")).toHaveLength(1);
      expect(results.filter((result) => result.found && result.outcome.kind === "closed")).toHaveLength(2);
    });

    it("tells an instance serving a session once another instance closed it, at once when it knows already, and nothing once it stopped asking", async () => {
      const [session, other] = [await seededSession(), await seededSession()];
      // This instance serves both: it transacted on their state, as a message's claim does.
      const touch: StateRule<undefined> = (state) => ({ outcome: undefined, next: { ...state, last_activity: state.last_activity + 1 } });
      for (const { id } of [session, other]) await store.updateState(id, touch);
      const told: string[] = [];
      const stop = store.onClosed(other.id, () => told.push(other.id));
      const closed = toldClosed(session.id, told);
      expect(told).toEqual([]);
      stop();
      // Ended elsewhere, the one it stopped asking about first: its news would come first, too.
      const elsewhere = harness.instance();
      await elsewhere.updateState(other.id, endAt(T + 10));
      await elsewhere.updateState(session.id, endAt(T + 10));
      await closed;
      expect(told).toEqual([session.id]);
      await toldClosed(session.id, told);
      expect(told).toEqual([session.id, session.id]);
    });

    /** Resolves once `store` tells that `sessionId` is closed, noting it in `told`; rejects after 5 s. */
    function toldClosed(sessionId: string, told: string[]): Promise<void> {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => { reject(new Error(`never told that ${sessionId} closed`)); }, 5_000);
        store.onClosed(sessionId, () => { clearTimeout(timer); told.push(sessionId); resolve(); });
      });
    }

    it("keeps count and history equal when an end races with messages", async () => {
      const session = await seededSession();
      const other = harness.instance();
      const appends = Array.from({ length: 10 }, (_, i) => (i % 2 ? store : other).appendExchange(session.id, exchange(String(i)), appendAt(T + i)));
      const end = harness.instance().updateState(session.id, endAt(T + 50));
      const results = await Promise.all([...appends, end]);
      const appended = results.filter((result) => result.found && result.outcome.kind === "appended").length;
      const state = await harness.instance().readSessionState(session.id);
      expect(state).toMatchObject({ status: "ended", message_count: appended });
      expect(await recentMessages(harness.instance(), session.id, 100)).toHaveLength(2 * appended);
    });
  });
}
