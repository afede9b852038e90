import { randomUUID } from "node:crypto";
import { beginErasure, finishErasure, settleErasure } from "../../src/session/erasure/erasure-rules";
import type { ErasureRecord, ErasureRule } from "../../src/store/conversation-records";
import type { Exchange } from "../../src/store/records";
import type { SessionStore } from "../../src/store/session-store";
import { appendAt, CREATED_AT, endAt, exchange, newSession } from "../support/fixtures";
import { byInstance } from "../support/instance-order";

/** An erasure record as stored, read through the rule path (unchanged). */
const currentErasure: ErasureRule<ErasureRecord | null> = (record) => ({ outcome: record });

/** Handles on one database, as the store contract's, and a way to wait for what instances sent without awaiting. */
export interface ConversationHarness {
  instance(): SessionStore;
  /** A handle on a new, empty database. */
  empty(): SessionStore;
  /** Resolves once every copy the instances sent is acknowledged (each commit's index entry update with it). */
  settled(): Promise<void>;
  close(): Promise<void>;
  /** A store over several instances (docs/sharding.md): ids it places on each, and the instance an id names. */
  readonly sharded?: { readonly newSessionId: () => string; readonly instanceOf: (id: string) => number };
}

const T = CREATED_AT;

/** An exchange that heads its conversation, as a first exchange's commit sends it. */
const titled = (tag: string, at: number): Exchange => ({ ...exchange(tag, at), head: { title: `title ${tag}`, template_id: "tester", template_name: "Tester", created_at: CREATED_AT } });

/** The contract of a user's conversations as a whole (the ConversationStore and ErasureStore roles), run against every adapter. */
export function conversationContract(makeHarness: () => Promise<ConversationHarness>): void {
  let harness: ConversationHarness;
  let store: SessionStore;

  beforeAll(async () => {
    harness = await makeHarness();
    store = harness.instance();
  });
  afterAll(async () => harness.close());

  /** A new user's sessions, created a second apart (from `T`), each with `exchanges` exchanges. */
  async function sessionsOf(userId: string, count: number, exchanges = 0): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < count; i += 1) {
      const session = newSession({ user_id: userId, created_at: T + i * 1_000 }, harness.sharded?.newSessionId());
      await store.createSession(session);
      for (let n = 1; n <= exchanges; n += 1) await store.appendExchange(session.id, titled(`${i}.${n}`, T + i * 1_000 + n), appendAt(T + i * 1_000 + n));
      ids.push(session.id);
    }
    return ids;
  }

  const user = () => `user-${randomUUID()}`;

  describe("the conversation index", () => {
    it("lists a user's conversations newest activity first, a page at a time after a position, and no one else's", async () => {
      const alice = user();
      const ids = await sessionsOf(alice, 5);
      await sessionsOf(user(), 2);
      const all = await store.listConversations(alice, 10);
      expect(all.map((listed) => listed.sessionId)).toEqual([...ids].reverse());
      expect(all[0]?.entry).toEqual({ template_id: "tester", template_name: "Tester", created_at: T + 4_000, last_activity: T + 4_000, message_count: 0, status: "active" });
      const first = await store.listConversations(alice, 2);
      const last = first.at(-1)!;
      const second = await store.listConversations(alice, 2, { lastActivity: last.entry.last_activity, sessionId: last.sessionId });
      expect([...first, ...second].map((listed) => listed.sessionId)).toEqual([ids[4], ids[3], ids[2], ids[1]]);
      expect(await store.listConversations(alice, 0)).toEqual([]);
      expect(await store.listConversations(user(), 5)).toEqual([]);
    });

    it("orders conversations as old as each other by id, so a position never skips or repeats one", async () => {
      const bob = user();
      const ids: string[] = [];
      for (let i = 0; i < 4; i += 1) {
        const session = newSession({ user_id: bob, created_at: T }, harness.sharded?.newSessionId());
        await store.createSession(session);
        ids.push(session.id);
      }
      const seen: string[] = [];
      let after: { lastActivity: number; sessionId: string } | undefined;
      for (let page = 0; page < 4; page += 1) {
        const [listed] = await store.listConversations(bob, 1, after);
        if (!listed) break;
        seen.push(listed.sessionId);
        after = { lastActivity: listed.entry.last_activity, sessionId: listed.sessionId };
      }
      expect(seen).toEqual([...ids].sort().reverse());
    });

    it("follows each commit: the count, the activity, the title of exchange 1 only, and the close", async () => {
      const carol = user();
      const [id] = await sessionsOf(carol, 1, 2);
      await harness.settled();
      expect((await store.listConversations(carol, 1))[0]?.entry).toMatchObject({ message_count: 2, last_activity: T + 2, title: "title 0.1", status: "active" });
      await store.updateState(id!, endAt(T + 10));
      const [ended] = await store.listConversations(carol, 1);
      expect(ended?.entry).toMatchObject({ status: "ended", closed: "ended", last_activity: T + 10, message_count: 2, closed_activity: T + 10, closed_count: 2 });
    });

    it("scans a user's index by session id, with when each was created", async () => {
      const dave = user();
      const ids = await sessionsOf(dave, 3);
      const sorted = [...ids].sort();
      expect(await store.scanConversationIndex(dave, undefined, 2)).toEqual(sorted.slice(0, 2).map((id) => ({ id, createdAt: T + ids.indexOf(id) * 1_000 })));
      expect((await store.scanConversationIndex(dave, sorted[1], 5)).map((entry) => entry.id)).toEqual([sorted[2]]);
    });

    it("loses a session's entry with the session when the retention sweep deletes it", async () => {
      const erin = user();
      const [id] = await sessionsOf(erin, 1);
      await store.deleteSession(id!);
      expect(await store.listConversations(erin, 5)).toEqual([]);
    });
  });

  describe("a user's sessions read whole", () => {
    it("reads every session of the user in id order, with positioned messages (the journal's too), summary and state, a page at a time", async () => {
      const frank = user();
      const ids = byInstance((await sessionsOf(frank, 3, 2)).sort(), harness.sharded?.instanceOf);
      await sessionsOf(user(), 1, 1);
      await store.writeSummary(ids[0]!, { text: "gist", through: 2, updated_at: T });
      const first = await store.readUserSessions(frank, undefined, 2);
      const rest = await store.readUserSessions(frank, first.at(-1)?.id, 2);
      expect([...first, ...rest].map((session) => session.id)).toEqual(ids);
      const [one] = first;
      expect(one?.meta.user_id).toBe(frank);
      expect(one?.state.message_count).toBe(2);
      // Read right after the appends: whatever is still in the journal is merged in.
      expect(one?.messages.map(({ position, message }) => [position, message.role])).toEqual([[1, "user"], [2, "assistant"], [3, "user"], [4, "assistant"]]);
      expect(one?.summary).toMatchObject({ text: "gist" });
      expect(await store.readUserSessions(user(), undefined, 5)).toEqual([]);
    });
  });

  describe("erasure", () => {
    it("deletes a user's sessions with their index entries, and is harmless again", async () => {
      const gina = user();
      const ids = await sessionsOf(gina, 3, 1);
      const kept = await sessionsOf(user(), 1, 1);
      await harness.settled();
      await store.deleteUserSessions(gina, ids.slice(0, 2));
      await store.deleteUserSessions(gina, ids.slice(0, 2));
      expect((await store.listConversations(gina, 5)).map((listed) => listed.sessionId)).toEqual([ids[2]]);
      expect(await store.readSessionState(ids[0]!)).toBeNull();
      expect(await store.readMessages(ids[0]!, 1, 2)).toEqual([]);
      expect(await store.readSessionState(kept[0]!)).toMatchObject({ message_count: 1 });
    });

    it("deletes again, up to a cutoff, the sessions created up to it with their index entries, and returns them; keeps and lists one created after it; returns no id it found nothing under", async () => {
      const hana = user();
      // Created at T, T + 1 s and T + 2 s: the cutoff falls between the second and the third.
      const ids = await sessionsOf(hana, 3, 1);
      const gone = harness.sharded?.newSessionId() ?? randomUUID();
      await harness.settled();
      const deleted = await store.deleteUserSessionsUpTo(hana, [...ids, gone], T + 1_500);
      expect([...deleted].sort()).toEqual([ids[0], ids[1]].sort());
      expect([...(await store.deleteUserSessionsUpTo(hana, [...ids, gone], T + 1_500))]).toEqual([]);
      expect((await store.listConversations(hana, 5)).map((listed) => listed.sessionId)).toEqual([ids[2]]);
      expect(await store.readSessionState(ids[0]!)).toBeNull();
      expect(await store.readMessages(ids[1]!, 1, 2)).toEqual([]);
      expect(await store.readSessionState(ids[2]!)).toMatchObject({ message_count: 1 });
      expect((await store.readMessages(ids[2]!, 1, 2)).map((message) => message.role)).toEqual(["user", "assistant"]);
    });

    it("keeps an erasure's record through its phases, finds it when due, and removes it at the end", async () => {
      const key = randomUUID();
      const begun = await store.updateErasure(key, beginErasure("user-x", T, 60_000));
      expect(begun).toEqual({ user_id: "user-x", requested_at: T, phase: "erasing", due_at: T + 60_000 });
      expect(await store.readErasedSessions(key)).toEqual({ requestedAt: T, ids: new Set() });
      await store.recordErasedSessions(key, ["s1", "s2"]);
      await store.recordErasedSessions(key, ["s2", "s3"]);
      expect(await store.readErasedSessions(key)).toEqual({ requestedAt: T, ids: new Set(["s1", "s2", "s3"]) });
      expect((await harness.empty().findDueErasures(T, undefined, 5)).keys).toEqual([]);
      expect((await store.findDueErasures(T + 60_000, undefined, 100)).keys).toContain(key);
      expect(await store.updateErasure(key, settleErasure(T, T + 120_000))).toBe(true);
      expect(await store.updateErasure(key, currentErasure)).toEqual({ user_id: "user-x", requested_at: T, phase: "settling", due_at: T + 120_000, sessions: { s1: true, s2: true, s3: true } });
      expect((await store.findDueErasures(T + 60_000, undefined, 100)).keys).not.toContain(key);
      expect(await store.updateErasure(key, finishErasure(T))).toBe(true);
      expect(await store.updateErasure(key, currentErasure)).toBeNull();
      expect(await store.readErasedSessions(key)).toBeNull();
      // An id list for a record that is gone creates nothing.
      await store.recordErasedSessions(key, ["s4"]);
      expect(await store.updateErasure(key, currentErasure)).toBeNull();
    });
  });

  it("gives every instance the same service secret, made once", async () => {
    const [a, b] = [harness.instance(), harness.instance()];
    const name = `test-${randomUUID().slice(0, 8)}`;
    const [first, second] = await Promise.all([a.serviceSecret(name), b.serviceSecret(name)]);
    expect(first).toBe(second);
    expect(first.length).toBeGreaterThanOrEqual(32);
    expect(await a.serviceSecret(name)).toBe(first);
    expect(await a.serviceSecret(`${name}-other`)).not.toBe(first);
  });
}
