import { recentMessages } from "../support/recent-messages";
import { randomUUID } from "node:crypto";
import { deleteApp, initializeApp } from "firebase-admin/app";
import { getDatabase } from "firebase-admin/database";
import { StoreDataError, StoreUnavailableError } from "../../src/store/errors";
import type { UserUsage } from "../../src/store/records";
import { pendingExchangeKey } from "../../src/store/message-keys";
import { silentLog } from "../../src/log/log";
import { runMaintenance } from "../../src/session/maintenance";
import { endRule } from "../../src/session/session-rules";
import { RtdbStore } from "../../src/store/rtdb/rtdb-store";
import { appendAt, CREATED_AT, exchange, newSession, POLICY } from "../support/fixtures";
import { copyOf, describeWithRtdb, freshNamespace, holdingUpdates, losingUpdates, RtdbInstances } from "../support/rtdb";
import { TrailingLink } from "../support/trailing-link";
import { withEmulatorHost } from "../../src/store/rtdb/instance-databases";

/** What only the Realtime Database adapter does: the journal, the stored shape, deadlines. */
describeWithRtdb("RtdbStore journal and shape", () => {
  const instances = new RtdbInstances(freshNamespace("adapter"));
  afterAll(() => instances.close());

  it("finishes the copy of an exchange whose writer died after committing it", async () => {
    const db = instances.database();
    const store = new RtdbStore(db, 10_000);
    const session = newSession();
    await store.createSession(session);
    await store.appendExchange(session.id, exchange("1"), appendAt(1));
    // A writer that committed exchange 2 and died before copying it to `messages`.
    await db.ref(`userSessions/${session.id}/state`).update({
      message_count: 2,
      [`pending/${pendingExchangeKey(2)}`]: exchange("2"),
    });

    const cold = new RtdbStore(instances.database(), 10_000);
    expect((await recentMessages(cold, session.id, 10)).map((message) => message.content)).toEqual([
      "question 1",
      "answer 1",
      "question 2",
      "answer 2",
    ]);
    expect(await cold.appendExchange(session.id, exchange("3"), appendAt(3))).toMatchObject({ outcome: { kind: "appended", seq: 3 } });
    // The copy is sent with the commit, not awaited by it; the next transaction drops the journal.
    await cold.copiesSettled();
    const messages = (await db.ref(`userSessions/${session.id}/messages`).get()).val() as Record<string, { content: string }>;
    await cold.updateState(session.id, (state) => ({ outcome: undefined, next: state }));
    const state = (await db.ref(`userSessions/${session.id}/state`).get()).val() as { message_count: number; pending?: unknown };
    expect(state.message_count).toBe(3);
    expect(state.pending).toBeUndefined();
    expect(Object.entries(messages).map(([key, message]) => [key, message.content])).toEqual([
      ["m000000001", "question 1"],
      ["m000000002", "answer 1"],
      ["m000000003", "question 2"],
      ["m000000004", "answer 2"],
      ["m000000005", "question 3"],
      ["m000000006", "answer 3"],
    ]);
  });

  it("finishes, in the sweep, the copy of a session that closed while its copy failed", async () => {
    const session = newSession();
    const writer = new RtdbStore(instances.database(), 10_000);
    await writer.createSession(session);
    await writer.appendExchange(session.id, exchange("1", CREATED_AT + 1), appendAt(CREATED_AT + 2));
    // Ended by an instance whose copies all fail (a lost connection): the end commits, its copy does
    // not; the end is answered as done all the same, the rest left to the sweep.
    const ender = new RtdbStore(losingUpdates(instances.database(), copyOf(session.id)), 3_000);
    await expect(ender.updateState(session.id, endRule(CREATED_AT + 3, POLICY))).resolves.toMatchObject({ found: true, outcome: { kind: "ended" } });
    const db = instances.database();
    expect(((await db.ref(`userSessions/${session.id}/state`).get()).val() as { pending?: unknown }).pending).toBeDefined();

    const sweeper = new RtdbStore(instances.database(), 10_000);
    const report = await runMaintenance({ store: sweeper, now: CREATED_AT + 4, policy: POLICY, retentionMs: 0, closingCopyLandsWithinMs: 0, createKeyTtlMs: 1e12, batchSize: 10, maxBatches: 2, log: silentLog });
    expect(report.flushed).toBe(1);
    const stored = (await db.ref(`userSessions/${session.id}`).get()).val() as { state: Record<string, unknown>; messages?: Record<string, { content: string }> };
    expect(stored.state.pending).toBeUndefined();
    expect(stored.state.unflushed_since).toBeUndefined();
    expect(Object.values(stored.messages ?? {}).map((message) => message.content)).toEqual(["question 1", "answer 1"]);
    writer.close();
    ender.close();
    sweeper.close();
  });

  it("deletes a session's whole node, with its index entry and a child it does not know of", async () => {
    const db = instances.database();
    const store = new RtdbStore(db, 10_000);
    const session = newSession();
    await store.createSession(session);
    await store.appendExchange(session.id, exchange("1", CREATED_AT + 1), appendAt(CREATED_AT + 2));
    await store.copiesSettled();
    await db.ref(`userSessions/${session.id}/legacy`).set({ left: "by an older version" });

    expect(await store.deleteSession(session.id)).toBe(true);

    expect((await db.ref(`userSessions/${session.id}`).get()).exists()).toBe(false);
    expect((await db.ref(`userConversations/${session.meta.user_id}/${session.id}`).get()).exists()).toBe(false);
    store.close();
  });

  it("deletes again, up to a cutoff, what late writes left under erased ids, and keeps a session created after it, or the index entry its create wrote ahead of it; returns only the id of the session it deleted", async () => {
    const db = instances.database();
    const store = new RtdbStore(db, 10_000);
    const user = `erased_${randomUUID().slice(0, 8)}`;
    const cutoff = CREATED_AT + 1_000;
    const before = newSession({ user_id: user, created_at: CREATED_AT });
    const after = newSession({ user_id: user, created_at: cutoff + 1 });
    await store.createSession(before);
    await store.createSession(after);
    // Under an erased id, a live partial and the count a late copy wrote back; under another, the
    // entry a keyed retry's create sends ahead of its session, which has not landed yet.
    const [leftover, ahead] = [randomUUID(), randomUUID()];
    await db.ref().update({
      [`userSessions/${leftover}/partials/k1`]: { text: "late words", updated_at: cutoff + 5 },
      [`userConversations/${user}/${leftover}`]: { last_activity: cutoff + 5, message_count: 1 },
      [`userConversations/${user}/${ahead}`]: { template_id: "tester", template_name: "Tester", created_at: cutoff + 2, last_activity: cutoff + 2, message_count: 0, status: "active" },
    });

    const deleted = await store.deleteUserSessionsUpTo(user, [before.id, after.id, leftover, ahead], cutoff);

    const exists = async (path: string) => (await db.ref(path).get()).exists();
    expect({
      deleted: [...deleted],
      before: [await exists(`userSessions/${before.id}`), await exists(`userConversations/${user}/${before.id}`)],
      after: [await exists(`userSessions/${after.id}`), await exists(`userConversations/${user}/${after.id}`)],
      leftover: [await exists(`userSessions/${leftover}`), await exists(`userConversations/${user}/${leftover}`)],
      ahead: await exists(`userConversations/${user}/${ahead}`),
    }).toEqual({ deleted: [before.id], before: [false, false], after: [true, true], leftover: [false, false], ahead: true });
    store.close();
  });

  it("leaves a session whose deletion failed before its state to the next run, which counts it, and reads none of its messages meanwhile", async () => {
    // A namespace of its own: the run deletes every closed session of its database.
    const own = new RtdbInstances(freshNamespace("deletion"));
    const db = own.database();
    const store = new RtdbStore(db, 10_000);
    // An instance whose last step, the transaction on the session's node, never reaches the database.
    const session = newSession();
    const failing = own.database();
    const ref = failing.ref.bind(failing);
    (failing as { ref: typeof failing.ref }).ref = (path?: string) => {
      const node = ref(path);
      if (path === `userSessions/${session.id}`) node.transaction = () => Promise.reject(new Error("connection lost"));
      return node;
    };
    const broken = new RtdbStore(failing, 3_000);
    try {
      await store.createSession(session);
      await store.appendExchange(session.id, exchange("1", CREATED_AT + 1), appendAt(CREATED_AT + 2));
      await store.updateState(session.id, endRule(CREATED_AT + 3, POLICY));

      await expect(broken.deleteSession(session.id)).rejects.toThrow(StoreUnavailableError);
      // Its history and index entry are gone; its state is still found by retention's query.
      expect((await db.ref(`userSessions/${session.id}/messages`).get()).exists()).toBe(false);
      expect((await db.ref(`userConversations/${session.meta.user_id}/${session.id}`).get()).exists()).toBe(false);
      expect((await store.findClosedSessions(CREATED_AT + 3, undefined, 1_000)).keys).toEqual([session.id]);
      // Its state still counts an exchange whose messages are gone: a session being deleted, not bad data.
      await expect(store.readMessages(session.id, 1, 2)).resolves.toEqual([]);

      const report = await runMaintenance({ store, now: CREATED_AT + 4, policy: POLICY, retentionMs: 1, closingCopyLandsWithinMs: 1, createKeyTtlMs: 1e12, batchSize: 1_000, maxBatches: 1, log: silentLog });

      expect(report.deleted).toBe(1);
      expect((await db.ref(`userSessions/${session.id}`).get()).exists()).toBe(false);
    } finally {
      store.close();
      broken.close();
      await own.close();
    }
  });

  describe("the flush's count", () => {
    // A namespace per test: the sweep finds every marked session of its database.
    let own: RtdbInstances;
    beforeEach(() => {
      own = new RtdbInstances(freshNamespace("flushcount"));
    });
    afterEach(() => own.close());

    /** A session whose copy failed as it closed (ended by an instance whose copies are lost): marked for the sweep. */
    async function closedUnflushed(): Promise<{ marked: () => Promise<boolean>; stores: RtdbStore[] }> {
      const session = newSession();
      const writer = new RtdbStore(own.database(), 10_000);
      await writer.createSession(session);
      await writer.appendExchange(session.id, exchange("1", CREATED_AT + 1), appendAt(CREATED_AT + 2));
      const ender = new RtdbStore(losingUpdates(own.database(), copyOf(session.id)), 3_000);
      await ender.updateState(session.id, endRule(CREATED_AT + 3, POLICY));
      const db = own.database();
      const marked = async () => ((await db.ref(`userSessions/${session.id}/state/unflushed_since`).once("value")).val() as unknown) !== null;
      expect(await marked()).toBe(true);
      // The sweep's copies are lost too.
      const losing = new RtdbStore(losingUpdates(own.database(), copyOf(session.id)), 3_000);
      return { marked, stores: [writer, ender, losing] };
    }

    const sweep = (store: RtdbStore) => runMaintenance({ store, now: CREATED_AT + 4, policy: POLICY, retentionMs: 0, closingCopyLandsWithinMs: 0, createKeyTtlMs: 1e12, batchSize: 10, maxBatches: 2, log: silentLog });

    it("counts no session whose copy fails again in the run, and leaves it marked for the next run", async () => {
      const session = await closedUnflushed();
      try {
        const report = await sweep(session.stores[2]!);
        expect(await session.marked()).toBe(true);
        expect(report.flushed).toBe(0);
      } finally {
        for (const store of session.stores) store.close();
      }
    });

    it("counts a session two runs at once flush in one of their reports", async () => {
      const session = await closedUnflushed();
      const sweepers = [new RtdbStore(own.database(), 10_000), new RtdbStore(own.database(), 10_000)];
      try {
        const reports = await Promise.all(sweepers.map(sweep));
        expect(await session.marked()).toBe(false);
        expect(reports.map((report) => report.flushed).sort()).toEqual([0, 1]);
      } finally {
        for (const store of [...session.stores, ...sweepers]) store.close();
      }
    });
  });

  it("removes, as a session closes, the partial reply of a request that died before its commit", async () => {
    const db = instances.database();
    const store = new RtdbStore(db, 10_000);
    const session = newSession();
    await store.createSession(session);
    await db.ref(`userSessions/${session.id}/partials/dead-request`).set({ text: "half a rep", seq_after: 0, updated_at: CREATED_AT + 1 });
    await store.updateState(session.id, endRule(CREATED_AT + 2, POLICY));
    expect((await db.ref(`userSessions/${session.id}/partials`).get()).exists()).toBe(false);
    store.close();
  });

  it("stores the documented shape", async () => {
    const db = instances.database();
    const store = new RtdbStore(db, 10_000);
    const session = newSession();
    await store.createSession(session);
    // The reply was written as a live partial: the exchange completes it.
    const claim = randomUUID();
    await store.writePartial(session.id, claim, { text: "answ", seq_after: 0, updated_at: session.meta.created_at + 5 });
    await store.appendExchange(session.id, exchange("1", session.meta.created_at + 5), appendAt(session.meta.created_at + 6), claim);
    await store.copiesSettled();
    // Journaled until the next transaction: the entry names the partial once, beside the exchange.
    expect((await db.ref(`userSessions/${session.id}/state/pending`).get()).val()).toEqual({
      [pendingExchangeKey(1)]: { ...exchange("1", session.meta.created_at + 5), partial: claim },
    });
    // The next transaction on the state drops the copied journal.
    await store.updateState(session.id, (state) => ({ outcome: undefined, next: state }));
    const stored: unknown = (await db.ref(`userSessions/${session.id}`).get()).val();
    expect(stored).toEqual({
      ...session.meta,
      state: {
        status: "active",
        message_count: 1,
        last_activity: session.meta.created_at + 6,
        idle_since: session.meta.created_at + 6,
        // The key of its owner's conversation index, where the session is listed.
        conversation: session.meta.user_id,
      },
      messages: {
        m000000001: { role: "user", content: "question 1", timestamp: session.meta.created_at + 5 },
        // The reply names the partial it completed, which left as it arrived.
        m000000002: { role: "assistant", content: "answer 1", timestamp: session.meta.created_at + 6, partial: claim },
      },
    });
    // Its entry in the owner's index, brought up to date beside the copy.
    expect((await db.ref(`userConversations/${session.meta.user_id}/${session.id}`).get()).val()).toEqual({
      template_id: session.meta.template_id,
      template_name: session.meta.template_name,
      created_at: session.meta.created_at,
      last_activity: session.meta.created_at + 6,
      message_count: 1,
      status: "active",
    });
  });

  it("reports a corrupted state node instead of acting on it", async () => {
    const db = instances.database();
    const store = new RtdbStore(db, 10_000);
    const session = newSession();
    await store.createSession(session);
    await db.ref(`userSessions/${session.id}/state/message_count`).set("three");
    await expect(store.readSessionState(session.id)).rejects.toThrow(/userSessions\/.*\/state/);
    await expect(store.appendExchange(session.id, exchange("x"), appendAt(1))).rejects.toThrow(/message_count/);
    expect((await db.ref(`userSessions/${session.id}/messages`).get()).exists()).toBe(false);
  });

  it("reports a message missing from the stored history as bad data naming it, to an instance that listens to the state and to one that does not", async () => {
    const db = instances.database();
    const store = new RtdbStore(db, 10_000);
    const cold = new RtdbStore(instances.database(), 10_000);
    const session = newSession();
    try {
      await store.createSession(session);
      for (let i = 1; i <= 2; i += 1) await store.appendExchange(session.id, exchange(String(i), CREATED_AT + i), appendAt(CREATED_AT + i));
      await store.copiesSettled();
      // The next transaction drops the copied journal: the history is in `messages` alone.
      await store.updateState(session.id, () => ({ outcome: undefined }));
      expect((await db.ref(`userSessions/${session.id}/state/pending`).get()).exists()).toBe(false);
      await db.ref(`userSessions/${session.id}/messages/m000000002`).remove();

      // Read by the instance that listens to the state, and by one that does not.
      for (const reader of [store, cold]) {
        await expect(reader.readMessages(session.id, 1, 4)).rejects.toThrow(new StoreDataError(`userSessions/${session.id}/messages/m000000002`, "missing, though the session's message_count includes it"));
        await expect(reader.readMessages(session.id, 2, 2)).rejects.toThrow(StoreDataError);
        expect((await reader.readMessages(session.id, 3, 9)).map((message) => message.content)).toEqual(["question 2", "answer 2"]);
      }
    } finally {
      store.close();
      cold.close();
    }
  });

  it("expires, in the sweep, the idle sessions behind a page of session states it cannot parse, and passes those in every run", async () => {
    // A namespace of its own: the run expires every idle session of its database.
    const own = new RtdbInstances(freshNamespace("sweepunparsed"));
    const db = own.database();
    const store = new RtdbStore(db, 10_000);
    const sweep = (now: number) => runMaintenance({ store, now, policy: { idleTtlMs: 30 * 60_000, maxExchanges: 1_000 }, retentionMs: 0, closingCopyLandsWithinMs: 0, createKeyTtlMs: 1e12, batchSize: 2, maxBatches: 40, log: silentLog });
    try {
      // Two sessions whose state the service cannot parse (written by hand, by an older version), idle longest: the first page of expiry's query.
      const unparsed = ["unparsed-a", "unparsed-b"];
      for (const [i, id] of unparsed.entries()) {
        await store.createSession(newSession({}, id));
        await db.ref(`userSessions/${id}/state`).update({ message_count: "three", idle_since: CREATED_AT + i, last_activity: CREATED_AT + i });
      }
      // A session idle for days behind them.
      const idle = newSession({ created_at: CREATED_AT + 10 });
      await store.createSession(idle);

      const runs = [await sweep(CREATED_AT + 10 * 86_400_000), await sweep(CREATED_AT + 10 * 86_400_000 + 15 * 60_000)];

      expect({ expired: runs.map((run) => run.expired), status: (await store.readSessionState(idle.id))?.status }).toEqual({ expired: [1, 0], status: "expired" });
      // They stay for an operator, found by the query, and fail no run.
      expect((await store.findIdleSessions(Number.MAX_SAFE_INTEGER, undefined, 10)).keys).toEqual(unparsed);
      expect(runs.map((run) => run.failed)).toEqual([undefined, undefined]);
    } finally {
      store.close();
      await own.close();
    }
  });

  it("stores a user's usage record as one JSON string, reads one stored as a tree before, and refuses one that is neither", async () => {
    const db = instances.database();
    const store = new RtdbStore(db, 10_000);
    const bump = (usage: UserUsage | null) => ({ outcome: usage, next: { tokens: (usage?.tokens ?? 10) - 1, refilled_at: 5, sessions: { s1: 5 } } });

    await store.updateUsage("fresh-user", bump);
    const stored: unknown = (await db.ref("userUsage/fresh-user").once("value")).val();
    expect(typeof stored).toBe("string");
    expect(JSON.parse(stored as string)).toEqual({ tokens: 9, refilled_at: 5, sessions: { s1: 5 } });
    expect(await store.readUsage("fresh-user")).toEqual({ tokens: 9, refilled_at: 5, sessions: { s1: 5 } });

    // Written by an earlier version, field by field: read as it is, then written back as one string.
    await db.ref("userUsage/tree-user").set({ tokens: 4, refilled_at: 2, daily: { day: "2026-12-06", tokens: 7 } });
    expect(await store.readUsage("tree-user")).toEqual({ tokens: 4, refilled_at: 2, daily: { day: "2026-12-06", tokens: 7 } });
    expect(await store.updateUsage("tree-user", bump)).toEqual({ tokens: 4, refilled_at: 2, daily: { day: "2026-12-06", tokens: 7 } });
    expect(JSON.parse((await db.ref("userUsage/tree-user").once("value")).val() as string)).toEqual({ tokens: 3, refilled_at: 5, sessions: { s1: 5 } });

    // A day's cost stored as null (a NaN written by a version before 2026-12-07) reads as none: the limits still hold.
    await db.ref("userUsage/null-cost-user").set(JSON.stringify({ tokens: 4, refilled_at: 2, daily: { day: "2026-12-06", tokens: 7, cost_usd: null } }));
    expect(await store.readUsage("null-cost-user")).toEqual({ tokens: 4, refilled_at: 2, daily: { day: "2026-12-06", tokens: 7 } });

    await db.ref("userUsage/broken-user").set("{not json");
    await expect(store.readUsage("broken-user")).rejects.toThrow(StoreDataError);
    await expect(store.updateUsage("broken-user", bump)).rejects.toThrow(StoreDataError);
    expect((await db.ref("userUsage/broken-user").once("value")).val()).toBe("{not json");
  });
});

/**
 * A page of a conversation before a position the reader was shown (docs/api.md: `before` leads to
 * the page before) is read across the journal: an instance holding the session's state listener
 * reads `pending` from its copy, which trails the database as far as its link is slow, and
 * `messages` from the server; an exchange committed after that copy and not copied yet is in
 * neither read unless the read makes sure of the count.
 */
describeWithRtdb("RtdbStore: messages read by an instance whose copy of the state trails the database", () => {
  let link: TrailingLink;
  beforeAll(async () => {
    link = await TrailingLink.start("adapter-trailing");
  });
  afterAll(async () => link.close());

  it("reads every message the database holds in the positions asked for, those committed after the copy and not copied yet included", async () => {
    const writerDb = link.direct.database();
    const writer = new RtdbStore(writerDb, 10_000);
    const trailing = new RtdbStore(link.slow.database(), 10_000);
    link.track(writer, trailing);
    const session = newSession();
    await writer.createSession(session);
    for (let i = 1; i <= 2; i += 1) await writer.appendExchange(session.id, exchange(String(i)), appendAt(CREATED_AT + i));
    await writer.copiesSettled();
    // The trailing instance served the session: it holds its state's listener.
    expect(await trailing.readSessionMeta(session.id)).not.toBeNull();
    expect(await trailing.readMessages(session.id, 1, 4)).toHaveLength(4);
    // Its link slows down while another instance stores exchanges 3 and 4, whose copies are on their way.
    link.proxy.stall();
    const release = holdingUpdates(writerDb, copyOf(session.id));
    for (let i = 3; i <= 4; i += 1) await writer.appendExchange(session.id, exchange(String(i)), appendAt(CREATED_AT + i));

    // Another instance's newest page showed exchange 4 (positions 7 and 8): the page before position 7, through the trailing instance.
    const reading = trailing.readMessages(session.id, 1, 6);
    const pastTheEnd = trailing.readMessages(session.id, 5, 20);
    link.proxy.resume();
    const [read, newest] = await Promise.all([reading, pastTheEnd]);
    release();
    await writer.copiesSettled();

    expect(read.map((message) => message.content)).toEqual(["question 1", "answer 1", "question 2", "answer 2", "question 3", "answer 3"]);
    // Positions past the end are none; those before them, all the database holds.
    expect(newest.map((message) => message.content)).toEqual(["question 3", "answer 3", "question 4", "answer 4"]);
  }, 30_000);
});

describe("RtdbStore without a reachable database", () => {
  it("fails each call within its deadline with StoreUnavailableError", async () => {
    const app = initializeApp({ projectId: "demo-chatify", databaseURL: "https://offline-test.firebaseio.com" }, randomUUID());
    // Port 9 (discard) on loopback: nothing listens, so every call waits for a connection.
    const db = withEmulatorHost("127.0.0.1:9", () => getDatabase(app));
    const store = new RtdbStore(db, 300);
    try {
      const started = Date.now();
      const results = await Promise.allSettled([
        store.readSessionState(randomUUID()),
        store.readTemplate("friendly-assistant"),
        store.appendExchange(randomUUID(), exchange("x"), appendAt(1)),
        store.createSession(newSession()),
      ]);
      expect(Date.now() - started).toBeLessThan(3000);
      for (const result of results) {
        expect(result.status).toBe("rejected");
        expect((result as PromiseRejectedResult).reason).toBeInstanceOf(StoreUnavailableError);
      }
    } finally {
      db.goOffline();
      await deleteApp(app);
    }
  });
});
