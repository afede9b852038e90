import { silentLog } from "../../src/log/log";
import { runMaintenance } from "../../src/session/maintenance";
import { instanceName } from "../../src/sharding/database-instances";
import { placedSessionId } from "../../src/sharding/session-ids";
import { userKey } from "../../src/session/ledger/limits";
import type { SessionStore } from "../../src/store/session-store";
import { appendAt, CREATED_AT, endAt, exchange, newSession, POLICY } from "../support/fixtures";
import { describeUnless } from "../support/visible-skip";
import { rtdbSessionStore } from "../../src/store/rtdb/instance-databases";
import { StoreUnavailableError } from "../../src/store/errors";
import { copyOf, freshNamespace, holdingUpdates, losingUpdates, RtdbInstances, rtdbSkipReason, valueWhere } from "../support/rtdb";
import { ShardedRtdb, shardedSkipReason, type ShardedLayout } from "../support/sharded-rtdb";
import { describeWithWireStats, resetWireStats, wireStats } from "../support/wire-stats";
import { conversationContract } from "./conversation-contract";
import { storeContract } from "./store-contract";

/**
 * The store contracts on a store over two database instances (docs/sharding.md), each session on
 * the instance its id names and every per-user record on the first: as namespaces of the one
 * server the run shares, and as two server processes.
 */
for (const layout of ["namespaces", "processes"] as const satisfies readonly ShardedLayout[]) {
  describeUnless(rtdbSkipReason() ?? shardedSkipReason(layout), `ShardedStore over two instances (${layout})`, () => {
    describe("the store contract", () => {
      storeContract(async () => {
        const shards = await ShardedRtdb.start(2, layout);
        const reader = shards.databases();
        return {
          instance: () => shards.store(),
          empty: () => shards.sibling().store(),
          partials: async (sessionId) => {
            await shards.settled();
            const value: unknown = (await reader[shards.instanceOf(sessionId)]?.ref(`userSessions/${sessionId}/partials`).once("value"))?.val();
            return (value ?? {}) as Record<string, unknown>;
          },
          close: () => shards.close(),
          sharded: { newSessionId: shards.newSessionId(), instanceOf: (id) => shards.instanceOf(id) },
        };
      });
    });

    describe("the conversations contract", () => {
      conversationContract(async () => {
        const shards = await ShardedRtdb.start(2, layout);
        return {
          instance: () => shards.store(),
          empty: () => shards.sibling().store(),
          settled: () => shards.settled(),
          close: () => shards.close(),
          sharded: { newSessionId: shards.newSessionId(), instanceOf: (id) => shards.instanceOf(id) },
        };
      });
    });

    describe("the clean-up over instances with unequal work", () => {
      let shards: ShardedRtdb;
      beforeAll(async () => {
        shards = await ShardedRtdb.start(2, layout);
      });
      afterAll(async () => shards.close());

      it("finishes every instance's work in one run, in batches, when one instance holds most of it", async () => {
        const store = shards.store();
        const sessionsOn = (position: number, count: number, state: (id: string, i: number) => Promise<unknown>) =>
          Promise.all(
            Array.from({ length: count }, async (_, i) => {
              const session = newSession({ created_at: NOW - RETENTION - DAY }, placedSessionId(position, 2));
              await store.createSession(session);
              await state(session.id, i);
              return session.id;
            }),
          );
        const idleFor = (minutes: number) => (id: string) =>
          store.updateState(id, (state) => ({ outcome: undefined, next: { ...state, last_activity: NOW - minutes * MINUTE, idle_since: NOW - minutes * MINUTE } }));
        const closedAt = (at: number) => (id: string, i: number) => store.updateState(id, endAt(at - i));
        // Idle past the TTL: 2 on the first instance, 13 on the second; closed past retention: 7 and 1.
        const idle = [...(await sessionsOn(0, 2, idleFor(IDLE_MINUTES + 5))), ...(await sessionsOn(1, 13, idleFor(IDLE_MINUTES + 5)))];
        const old = [...(await sessionsOn(0, 7, closedAt(NOW - RETENTION - 1))), ...(await sessionsOn(1, 1, closedAt(NOW - RETENTION - 1)))];
        const kept = [
          ...(await sessionsOn(0, 1, idleFor(IDLE_MINUTES - 5))),
          ...(await sessionsOn(1, 1, idleFor(IDLE_MINUTES - 5))),
          ...(await sessionsOn(0, 1, closedAt(NOW - RETENTION + MINUTE))),
          ...(await sessionsOn(1, 1, closedAt(NOW - RETENTION + MINUTE))),
        ];
        const before = await Promise.all(kept.map((id) => store.readSessionState(id)));

        const report = await runMaintenance({
          store,
          now: NOW,
          policy: { idleTtlMs: IDLE_MINUTES * MINUTE, maxExchanges: 1_000_000 },
          retentionMs: RETENTION,
          closingCopyLandsWithinMs: COPY_LANDS_WITHIN,
          createKeyTtlMs: DAY,
          // Far less than the second instance's work: a batch shared evenly would come back short once the first ran out.
          batchSize: 4,
          maxBatches: 10,
          log: silentLog,
        });

        expect(report).toMatchObject({ expired: 15, deleted: 8 });
        const reader = shards.store();
        expect(await Promise.all(idle.map(async (id) => (await reader.readSessionState(id))?.status))).toEqual(Array(15).fill("expired"));
        expect(await Promise.all(old.map((id) => reader.readSessionState(id)))).toEqual(Array(8).fill(null));
        expect(await Promise.all(kept.map((id) => reader.readSessionState(id)))).toEqual(before);
      });
    });

    describe("retention of a session off the home instance", () => {
      let shards: ShardedRtdb;
      beforeAll(async () => {
        shards = await ShardedRtdb.start(2, layout);
      });
      afterAll(async () => shards.close());

      it("deletes its index entry on the home instance first: a lost delete leaves the session for the next run, which removes both", async () => {
        const databases = shards.databases();
        const store = shards.store(10_000, databases);
        const session = newSession({ user_id: "retained-user" }, placedSessionId(1, 2));
        expect(await store.createSession(session)).toBe("created");
        await store.updateState(session.id, endAt(CREATED_AT + 100));
        await shards.settled();
        const listed = async () => (await store.listConversations("retained-user", 10)).map((entry) => entry.sessionId);
        expect(await listed()).toEqual([session.id]);

        // The home instance's connection drops for the first update sent from its root: the index entry's delete.
        let lose = true;
        losingUpdates(databases[0]!, (path) => {
          const lost = lose && (path === undefined || path === "");
          if (lost) lose = false;
          return lost;
        });
        const options = { store, policy: POLICY, retentionMs: 1_000, closingCopyLandsWithinMs: 1_000, createKeyTtlMs: 86_400_000, batchSize: 50, maxBatches: 40, log: silentLog };
        expect(await runMaintenance({ ...options, now: CREATED_AT + 10_000 })).toMatchObject({ deleted: 0 });
        expect(lose).toBe(false);
        // The session stays, with its entry, so the next run finds it again.
        expect(await store.readSessionMeta(session.id)).not.toBeNull();
        expect(await listed()).toEqual([session.id]);

        expect(await runMaintenance({ ...options, now: CREATED_AT + 20_000 })).toMatchObject({ deleted: 1 });
        expect(await store.readSessionMeta(session.id)).toBeNull();
        expect(await listed()).toEqual([]);
      });
    });
  });
}

const MINUTE = 60_000;
const DAY = 86_400_000;
const IDLE_MINUTES = 30;
const RETENTION = 7 * DAY;
/** The clean-up run's timeout (300 s, longer than a request's by default) plus a database deadline: closingCopyLandsWithinMs by default. */
const COPY_LANDS_WITHIN = 305_000;
const NOW = CREATED_AT + 30 * DAY;

/** Characters of the one message each session of the download test holds: far more than the rest of its node. */
const TEXT = 10_000;
const BATCH = 10;

describeWithWireStats("ShardedStore's clean-up queries over four instances", () => {
  let shards: ShardedRtdb;
  beforeAll(async () => {
    shards = await ShardedRtdb.start(4, "namespaces");
  });
  afterAll(async () => shards.close());

  /** `count` idle sessions on the instance at `position`, each with one long message. */
  async function idleWithHistory(store: SessionStore, position: number, count: number): Promise<void> {
    await Promise.all(
      Array.from({ length: count }, async (_, i) => {
        const session = newSession({}, placedSessionId(position, 4));
        await store.createSession(session);
        const long = exchange(String(i));
        await store.appendExchange(session.id, { ...long, user: { ...long.user, content: "x".repeat(TEXT) } }, appendAt(CREATED_AT + 1 + i));
      }),
    );
  }

  it("has the instances send one batch of whole sessions in all, however many hold more than a batch", async () => {
    const seeding = shards.store();
    for (let position = 0; position < 4; position += 1) await idleWithHistory(seeding, position, BATCH + 2);
    await shards.settled();
    const namespaces = shards.urls.map((url) => new URL(url).hostname.split(".")[0] ?? "");
    /** UTF-16 units the instances sent for `query`, asked by a function instance of its own (nothing of these sessions in its cache) over `urls`. */
    const unitsSent = async (query: (store: SessionStore) => Promise<readonly string[]>, urls = shards.urls): Promise<{ readonly ids: readonly string[]; readonly units: number }> => {
      const store = shards.store(10_000, shards.databases(urls));
      await Promise.all(namespaces.map((namespace) => resetWireStats(namespace)));
      const ids = await query(store);
      const units = (await Promise.all(namespaces.map(async (namespace) => (await wireStats(namespace)).unitsOut))).reduce((sum, sent) => sum + sent, 0);
      return { ids, units };
    };

    const batch = await unitsSent(async (store) => (await store.findIdleSessions(CREATED_AT + 1_000, undefined, BATCH)).keys);
    // One whole session, as the first instance alone sends it.
    const one = await unitsSent(async (store) => (await store.findIdleSessions(CREATED_AT + 1_000, undefined, 1)).keys, shards.urls.slice(0, 1));

    expect(batch.ids).toHaveLength(BATCH);
    expect(one.ids).toHaveLength(1);
    // A session comes whole, history included ...
    expect(one.units).toBeGreaterThan(TEXT);
    // ... and a batch is a batch of sessions in all, where one asked of each instance sent four.
    expect(batch.units).toBeGreaterThan((BATCH - 1) * one.units);
    expect(batch.units).toBeLessThan((BATCH + 1) * one.units);
  }, 60_000);
});

describeWithWireStats("the warm listeners of one function instance over two database instances", () => {
  let shards: ShardedRtdb;
  beforeAll(async () => {
    shards = await ShardedRtdb.start(2, "namespaces");
  });
  afterAll(async () => shards.close());

  it("stay within the 512 nodes one database instance's adapter listens to, in all", async () => {
    const store = shards.store();
    const ids = shards.newSessionId();
    const created: string[] = [];
    // 800 sessions served by this function instance, 400 on each database instance.
    for (let batch = 0; batch < 16; batch += 1) {
      const sessions = Array.from({ length: 50 }, () => newSession({ user_id: `user-${batch}` }, ids()));
      await Promise.all(sessions.map((session) => store.createSession(session)));
      created.push(...sessions.map((session) => session.id));
    }
    // A read on each instance after the creates: the server has handled every listen and unlisten sent before it.
    await Promise.all([0, 1].map((position) => store.readSummary(created.find((id) => shards.instanceOf(id) === position) ?? "")));
    const open = await Promise.all(shards.urls.map(async (url) => (await wireStats(instanceName(url))).openListens));
    expect(open.every((listens) => listens > 0)).toBe(true);
    expect(open.reduce((sum, listens) => sum + listens, 0)).toBeLessThanOrEqual(512);
  }, 60_000);

  it("keep the state and usage record of 200 sessions of 200 users served lately (402 nodes with two summaries read), as over one instance: the home instance holds every usage record", async () => {
    const openListens = async () => (await Promise.all(shards.urls.map(async (url) => (await wireStats(instanceName(url))).openListens))).reduce((sum, listens) => sum + listens, 0);
    // Those another function instance (the test before) keeps open.
    const before = await openListens();
    const store = shards.store();
    const ids = shards.newSessionId();
    const created: string[] = [];
    for (let batch = 0; batch < 4; batch += 1) {
      const sessions = Array.from({ length: 50 }, (_, i) => newSession({ user_id: `user-${batch}-${i}` }, ids()));
      await Promise.all(
        sessions.map(async (session) => {
          await store.createSession(session);
          store.prepareUsage(userKey(session.meta.user_id));
        }),
      );
      created.push(...sessions.map((session) => session.id));
    }
    // A read on each instance after the holds, twice: the server has handled every listen and unlisten sent before it.
    for (let round = 0; round < 2; round += 1) await Promise.all([0, 1].map((position) => store.readSummary(created.find((id) => shards.instanceOf(id) === position) ?? "")));
    expect((await openListens()) - before).toBe(402);
  }, 60_000);
});

/**
 * Two clean-up runs at once (the scheduler may overlap them: docs/sessions-over-time.md), each on a
 * function instance of its own. A session stayed idle, unexpired, for longer than the retention (its
 * instance was out of reach of the sweep, the sweep was behind, or a deploy lowered the TTL): run A
 * expires it, as of the moment its TTL ran out, past the retention at once, and its copy of the
 * closing session (the journal into `messages`, the closing fields into the index entry) is slow to
 * land. Run B's retention finds the session past the retention while that copy is on its way.
 */
for (const { count, layout } of [
  { count: 2, layout: "namespaces" },
  { count: 2, layout: "processes" },
  // One instance, no sharding: the copy and the deletion of two function instances go over two connections.
  { count: 1, layout: "namespaces" },
] as const satisfies readonly { readonly count: number; readonly layout: ShardedLayout }[]) {
  describeUnless(rtdbSkipReason() ?? shardedSkipReason(layout), `retention beside another clean-up run's expiry, over ${String(count)} instance(s) (${layout})`, () => {
    let shards: ShardedRtdb;
    beforeAll(async () => {
      shards = await ShardedRtdb.start(count, layout);
    });
    afterAll(async () => shards.close());

    it("keeps a session the other run expires past the retention until its closing copy has landed, then deletes all of it", async () => {
      const setup = shards.store();
      const session = newSession({ user_id: "retained-user", created_at: CREATED_AT }, placedSessionId(count - 1, count));
      expect(await setup.createSession(session)).toBe("created");
      await setup.appendExchange(session.id, exchange("kept too long"), appendAt(CREATED_AT + 1));
      await shards.settled();
      // Not annotated: a literal typed as the options would refuse a field they lack.
      const options = (store: SessionStore, now: number) => ({
        store,
        now,
        policy: { idleTtlMs: IDLE_MINUTES * MINUTE, maxExchanges: 1_000_000 },
        retentionMs: DAY,
        closingCopyLandsWithinMs: COPY_LANDS_WITHIN,
        createKeyTtlMs: DAY,
        batchSize: 50,
        maxBatches: 40,
        log: silentLog,
      });

      // Run A: its function instance's link is slow for the copy it sends as the session closes.
      const databasesA = shards.databases();
      const releases = databasesA.map((database) => holdingUpdates(database, copyOf(session.id)));
      const runA = runMaintenance(options(shards.store(10_000, databasesA), NOW));
      const reader = shards.databases();
      await valueWhere(reader[count - 1]!.ref(`userSessions/${session.id}/state/status`), (status) => status === "expired", "run A's expiry");

      // Run B, at the same time on another function instance, finds it past the retention and keeps it.
      expect(await runMaintenance(options(shards.store(10_000, shards.databases()), NOW))).toMatchObject({ deleted: 0 });

      // A's copy lands now.
      for (const release of releases) release();
      expect(await runA).toMatchObject({ expired: 1, deleted: 0 });
      await shards.settled();
      expect(await shards.store().readSessionState(session.id)).toMatchObject({ status: "expired", closed_at: NOW });

      // A run once the closing copy's time to land is over deletes it, and nothing comes back.
      expect(await runMaintenance(options(shards.store(10_000, shards.databases()), NOW + COPY_LANDS_WITHIN))).toMatchObject({ deleted: 1 });
      await shards.settled();
      const node: unknown = (await reader[count - 1]!.ref(`userSessions/${session.id}`).once("value")).val();
      const entry: unknown = (await reader[0]!.ref(`userConversations/retained-user/${session.id}`).once("value")).val();
      expect({ node, entry }).toEqual({ node: null, entry: null });
    }, 60_000);
  });
}

describeUnless(rtdbSkipReason(), "the session store of a deployment with one database instance", () => {
  let instances: RtdbInstances;
  beforeAll(() => {
    instances = new RtdbInstances(freshNamespace("one-instance"));
  });
  afterAll(async () => instances.close());

  it("refuses every write for an id naming a second instance, issued by a function instance already on the appended list", async () => {
    const database = instances.database();
    const store = rtdbSessionStore([database], 10_000, silentLog);
    const session = newSession({ user_id: "rolling-user" }, placedSessionId(1, 2));
    await expect(store.createSession(session)).rejects.toThrow(StoreUnavailableError);
    await expect(store.appendExchange(session.id, exchange("1"), appendAt(CREATED_AT + 1))).rejects.toThrow(StoreUnavailableError);
    expect(await store.readSessionMeta(session.id)).toBeNull();
    expect((await database.ref(`userSessions/${session.id}`).once("value")).exists()).toBe(false);
    // Its own ids, v4 as before sharding, are written as ever.
    const own = newSession({ user_id: "rolling-user" }, placedSessionId(0, 1));
    expect(await store.createSession(own)).toBe("created");
  });
});
