import { recentMessages } from "../support/recent-messages";
import { claimToken, registerDevice, STALE_AFTER_MS } from "../../src/connections/device-rules";
import { resolveConfig } from "../../src/config";
import { MAINTENANCE_TIMEOUT_SECONDS } from "../../src/function-options";
import { silentLog } from "../../src/log/log";
import { createOfflineSender } from "../../src/notify/offline-sender";
import { composeInstance } from "../../src/runtime/instance";
import { maintenanceRunMs } from "../../src/runtime/time-budget";
import { MaintenanceSteps, runMaintenance, type MaintenanceOptions, type MaintenanceReport } from "../../src/session/maintenance";
import { placedSessionId } from "../../src/sharding/session-ids";
import { MemoryConnectionStore } from "../../src/store/memory-connection-store";
import { MemoryStore } from "../../src/store/memory-store";
import type { SessionState } from "../../src/store/records";
import type { SessionStore } from "../../src/store/session-store";
import { ShardedStore } from "../../src/store/sharded-store";
import { StoreUnavailableError } from "../../src/store/errors";
import type { Ruled, StateRule } from "../../src/store/session-store";
import type { SweepCursor, SweepPage } from "../../src/store/sweep-page";
import { FaultyStore } from "../support/faulty-store";
import { appendAt, CREATED_AT, exchange, newSession } from "../support/fixtures";
import { recordingLog } from "../support/recording-log";
import { NO_TOKENS } from "../support/service-env";

const MINUTE = 60_000;
const DAY = 86_400_000;
const IDLE_TTL = 30 * MINUTE;
const RETENTION = 7 * DAY;
/** The clean-up run's timeout (300 s, longer than a request's by default) plus a database deadline: closingCopyLandsWithinMs by default. */
const COPY_LANDS_WITHIN = 305_000;
const KEY_TTL = DAY;
const NOW = CREATED_AT + 30 * DAY;

const activeSince = (at: number): SessionState => ({ status: "active", message_count: 1, last_activity: at, idle_since: at });
const closed = (status: "ended" | "expired", at: number): SessionState => ({ status, message_count: 1, last_activity: at - MINUTE, ended_at: at });

describe("runMaintenance", () => {
  let store: MemoryStore;

  beforeEach(() => {
    store = new MemoryStore();
  });

  /** A session with one stored exchange, left in `state`. */
  async function add(state: SessionState): Promise<string> {
    const session = newSession();
    await store.createSession(session);
    await store.appendExchange(session.id, exchange(session.id), appendAt(CREATED_AT + 1));
    await store.updateState(session.id, () => ({ outcome: undefined, next: state }));
    return session.id;
  }

  async function addIdle(count: number, lastActivity = (i: number) => NOW - IDLE_TTL - (i + 1) * MINUTE): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < count; i += 1) ids.push(await add(activeSince(lastActivity(i))));
    return ids;
  }

  function run(options: Partial<MaintenanceOptions> = {}): Promise<MaintenanceReport> {
    return runMaintenance({
      store,
      now: NOW,
      policy: { idleTtlMs: IDLE_TTL, maxExchanges: 1_000_000 },
      retentionMs: RETENTION,
      closingCopyLandsWithinMs: COPY_LANDS_WITHIN,
      createKeyTtlMs: KEY_TTL,
      batchSize: 50,
      maxBatches: 10,
      ...options,
      log: options.log ?? silentLog,
    });
  }

  const stateOf = (id: string) => store.readSessionState(id);
  const statusOf = async (id: string) => (await stateOf(id))?.status;

  describe("expiry", () => {
    it("expires active sessions idle past the TTL, and nothing else", async () => {
      const idleSince = [NOW - IDLE_TTL - 1, NOW - 10 * IDLE_TTL];
      const idle = [await add(activeSince(idleSince[0]!)), await add(activeSince(idleSince[1]!))];
      const recent = [await add(activeSince(NOW - IDLE_TTL + 1)), await add(activeSince(NOW)), await add(activeSince(NOW + MINUTE))];
      const ended = await add(closed("ended", NOW - IDLE_TTL * 10));
      const expired = await add(closed("expired", NOW - IDLE_TTL * 10));
      const before = await Promise.all([...recent, ended, expired].map(stateOf));

      await expect(run()).resolves.toEqual({ expired: 2, flushed: 0, deleted: 0, keysForgotten: 0, lapsedClaims: 0, addressesForgotten: 0 });

      for (const [i, id] of idle.entries()) {
        const state = await stateOf(id);
        // Expired as of the moment the TTL ran out, as a request finding it would record.
        expect(state).toMatchObject({ status: "expired", ended_at: idleSince[i]! + IDLE_TTL, message_count: 1 });
        expect(state).not.toHaveProperty("idle_since");
      }
      expect(await Promise.all([...recent, ended, expired].map(stateOf))).toEqual(before);
      // Expired, they are no longer found as idle: a second run has nothing to do.
      await expect(run()).resolves.toEqual({ expired: 0, flushed: 0, deleted: 0, keysForgotten: 0, lapsedClaims: 0, addressesForgotten: 0 });
    });

    it("leaves a session idle exactly the TTL active, as a request at that moment would", async () => {
      const id = await add(activeSince(NOW - IDLE_TTL));
      await expect(run()).resolves.toMatchObject({ expired: 0 });
      expect(await statusOf(id)).toBe("active");
    });

    it.each([
      ["one batch each", 50],
      ["batches of 2", 2],
    ])("expires each session once when two runs race (%s)", async (_name, batchSize) => {
      const idle = await addIdle(7);
      const recent = await add(activeSince(NOW - MINUTE));

      const reports = await Promise.all([run({ batchSize }), run({ batchSize, now: NOW + 1 })]);

      expect(reports[0].expired + reports[1].expired).toBe(idle.length);
      for (const [i, id] of idle.entries()) {
        expect(await stateOf(id)).toMatchObject({ status: "expired", ended_at: NOW - (i + 1) * MINUTE });
      }
      expect(await statusOf(recent)).toBe("active");
    });

    it("expires them all in batches when the budget allows", async () => {
      const idle = await addIdle(7);
      await expect(run({ batchSize: 2, maxBatches: 10 })).resolves.toMatchObject({ expired: 7 });
      expect(await Promise.all(idle.map(statusOf))).toEqual(Array(7).fill("expired"));
    });

    it("expires only one batch, the longest idle, with a budget of one batch; the next run goes on", async () => {
      // addIdle makes each session idle a minute longer than the one before: the last two are the oldest.
      const idle = await addIdle(7);
      await expect(run({ batchSize: 2, maxBatches: 1 })).resolves.toMatchObject({ expired: 2 });
      expect(await Promise.all(idle.map(statusOf))).toEqual([...Array(5).fill("active"), "expired", "expired"]);

      await expect(run({ batchSize: 2, maxBatches: 1 })).resolves.toMatchObject({ expired: 2 });
      expect(await Promise.all(idle.map(statusOf))).toEqual([...Array(3).fill("active"), ...Array(4).fill("expired")]);
    });

    it("goes on past a full last batch (4 sessions, batches of 2)", async () => {
      await addIdle(4);
      await expect(run({ batchSize: 2, maxBatches: 10 })).resolves.toMatchObject({ expired: 4 });
    });
  });

  describe("retention", () => {
    it("deletes nothing with a retention of 0", async () => {
      const ids = [await add(closed("ended", CREATED_AT + 1)), await add(closed("expired", CREATED_AT + 2))];
      await expect(run({ retentionMs: 0 })).resolves.toEqual({ expired: 0, flushed: 0, deleted: 0, keysForgotten: 0, lapsedClaims: 0, addressesForgotten: 0 });
      for (const id of ids) {
        expect(await store.readSessionMeta(id)).not.toBeNull();
        expect(await recentMessages(store, id, 10)).toHaveLength(2);
      }
    });

    it("deletes sessions closed before the cutoff, with their history, and keeps the rest", async () => {
      const cutoff = NOW - RETENTION;
      const old = [
        await add(closed("ended", cutoff - 1)),
        await add(closed("expired", cutoff - 5 * DAY)),
        await add(closed("ended", cutoff)),
      ];
      const kept = [
        await add(closed("ended", cutoff + 1)),
        await add(closed("expired", NOW - 1)),
        await add(activeSince(NOW - MINUTE)),
        // Expired by this run, as of a moment after the cutoff.
        await add(activeSince(cutoff)),
        // Idle for longer than TTL + retention: expired by this run as of its TTL, before the cutoff,
        // but recorded now: its closing copy may still be on its way (below).
        await add(activeSince(cutoff - DAY)),
      ];

      await expect(run()).resolves.toEqual({ expired: 2, flushed: 0, deleted: 3, keysForgotten: 0, lapsedClaims: 0, addressesForgotten: 0 });

      for (const id of old) {
        expect(await store.readSessionMeta(id)).toBeNull();
        expect(await store.readSessionState(id)).toBeNull();
        expect(await recentMessages(store, id, 10)).toEqual([]);
        expect(await store.readExchange(id, 1)).toBeNull();
      }
      for (const id of kept) {
        expect(await store.readSessionMeta(id)).not.toBeNull();
        expect(await store.readExchange(id, 1)).toEqual(exchange(id));
      }
    });

    it("keeps a session whose expiry was recorded more recently than its closing copy may take to land, however long ago it ended, and deletes it after", async () => {
      const cutoff = NOW - RETENTION;
      // Idle since long before the cutoff, expired only now (an instance out of reach, a backlog, a shorter TTL).
      const late = await add(activeSince(cutoff - DAY));
      await expect(run()).resolves.toMatchObject({ expired: 1, deleted: 0 });
      expect(await stateOf(late)).toMatchObject({ status: "expired", ended_at: cutoff - DAY + IDLE_TTL, closed_at: NOW });

      // Another run at once, and one a moment before that time is over, keep it whole.
      await expect(run({ now: NOW + 1 })).resolves.toMatchObject({ deleted: 0 });
      await expect(run({ now: NOW + COPY_LANDS_WITHIN - 1 })).resolves.toMatchObject({ deleted: 0 });
      expect(await store.readExchange(late, 1)).toEqual(exchange(late));

      await expect(run({ now: NOW + COPY_LANDS_WITHIN })).resolves.toMatchObject({ deleted: 1 });
      expect(await stateOf(late)).toBeNull();
    });

    it("deletes a session an older version expired (no record of when) by the time it ended alone", async () => {
      const old = await add(closed("expired", NOW - RETENTION - 1));
      await expect(run()).resolves.toMatchObject({ deleted: 1 });
      expect(await stateOf(old)).toBeNull();
    });

    it("pages past the sessions it keeps, deleting those behind them in the same run", async () => {
      const cutoff = NOW - RETENTION;
      // Expired by this run, the oldest in retention's query: a page of them is kept, the page behind deleted.
      const late = await addIdle(4, (i) => cutoff - 10 * DAY - i * MINUTE);
      const old = [];
      for (let i = 0; i < 3; i += 1) old.push(await add(closed("ended", cutoff - (i + 1) * MINUTE)));

      await expect(run({ batchSize: 2, maxBatches: 10 })).resolves.toMatchObject({ expired: 4, deleted: 3 });

      expect(await Promise.all(late.map(statusOf))).toEqual(Array(4).fill("expired"));
      expect(await Promise.all(old.map(stateOf))).toEqual(Array(3).fill(null));
    });

    it("deletes in batches, within the budget", async () => {
      for (let i = 0; i < 5; i += 1) await add(closed("ended", NOW - RETENTION - (i + 1) * DAY));
      await expect(run({ batchSize: 2, maxBatches: 2 })).resolves.toMatchObject({ deleted: 4 });
      await expect(run({ batchSize: 2, maxBatches: 2 })).resolves.toMatchObject({ deleted: 1 });
    });

    it("deletes each session once when two runs race: their counts add up to the sessions deleted", async () => {
      const old: string[] = [];
      for (let i = 0; i < 5; i += 1) old.push(await add(closed("ended", NOW - RETENTION - (i + 1) * DAY)));

      const reports = await Promise.all([run(), run({ now: NOW + 1 })]);

      for (const id of old) expect(await stateOf(id)).toBeNull();
      expect(reports[0].deleted + reports[1].deleted).toBe(old.length);
    });
  });

  describe("create keys", () => {
    const key = (id: string, createdAt: number) => ({ fingerprint: `fp-${id}`, session_id: `session-${id}`, created_at: createdAt });

    it("forgets keys older than their TTL and keeps younger ones", async () => {
      const ages = { old: KEY_TTL + 1, ancient: 30 * KEY_TTL, edge: KEY_TTL, young: KEY_TTL - 1, fresh: 0 };
      for (const [id, age] of Object.entries(ages)) await store.claimCreateKey(id, key(id, NOW - age));

      await expect(run()).resolves.toEqual({ expired: 0, flushed: 0, deleted: 0, keysForgotten: 3, lapsedClaims: 0, addressesForgotten: 0 });

      // A forgotten key can be claimed afresh; a remembered one still answers with its first record.
      for (const [id, age] of Object.entries(ages)) {
        const again = key(`${id}-again`, NOW);
        const expected = age >= KEY_TTL ? again : key(id, NOW - age);
        await expect(store.claimCreateKey(id, again)).resolves.toEqual(expected);
      }
    });

    it("forgets keys in batches, within the budget", async () => {
      for (let i = 0; i < 5; i += 1) await store.claimCreateKey(`k${i}`, key(`k${i}`, NOW - 2 * KEY_TTL));
      await expect(run({ batchSize: 2, maxBatches: 2 })).resolves.toMatchObject({ keysForgotten: 4, lapsedClaims: 0, addressesForgotten: 0 });
      await expect(run({ batchSize: 2, maxBatches: 10 })).resolves.toMatchObject({ keysForgotten: 1, lapsedClaims: 0, addressesForgotten: 0 });
    });
  });

  describe("sessions whose change keeps failing", () => {
    /** A store whose changes of some sessions always fail, counting the queries for idle sessions. */
    class RefusingStore extends MemoryStore {
      readonly refused = new Set<string>();
      queries = 0;

      override async findIdleSessions(cutoff: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage> {
        this.queries += 1;
        return super.findIdleSessions(cutoff, after, limit);
      }

      override async updateState<O>(sessionId: string, rule: StateRule<O>): Promise<Ruled<O>> {
        if (this.refused.has(sessionId)) throw new StoreUnavailableError("update session state (refused)");
        return super.updateState(sessionId, rule);
      }
    }

    it("tries each once a run, not once a batch until the budget is spent, and expires the sessions behind them", async () => {
      const refusing = new RefusingStore();
      store = refusing;
      const idle = await addIdle(3);
      // The two longest idle, a whole batch, which a query from the oldest answers first in every run.
      for (const id of idle.slice(1)) refusing.refused.add(id);

      const report = await run({ batchSize: 2, maxBatches: 10 });

      expect({ expired: report.expired, queries: refusing.queries }).toEqual({ expired: 1, queries: 2 });
      expect(await Promise.all(idle.map(statusOf))).toEqual(["expired", "active", "active"]);
    });

    it("logs each session whose change failed, by id, so that one failing every run reaches an operator", async () => {
      const refusing = new RefusingStore();
      store = refusing;
      const idle = await addIdle(3);
      const [, failing] = idle;
      refusing.refused.add(failing ?? "");
      const { log, entries } = recordingLog();

      const report = await run({ log });

      expect(report).toMatchObject({ expired: 2 });
      expect(report.failed).toBeUndefined();
      expect(entries).toEqual([
        { level: "warn", message: "maintenance change failed; the run goes on", fields: { step: "expired", session_id: failing, error: "StoreUnavailableError", detail: expect.stringContaining("refused") as unknown } },
      ]);
    });
  });

  describe("with a time for the run", () => {
    const QUERY_MS = 100;
    let clock = 0;
    /** A store whose queries for idle sessions take QUERY_MS of `clock`. */
    class SlowIdleQueries extends MemoryStore {
      override async findIdleSessions(cutoff: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage> {
        clock += QUERY_MS;
        return super.findIdleSessions(cutoff, after, limit);
      }
    }

    it("starts no batch of a step once only the reserves of the steps after it are left, and leaves those steps their reserve", async () => {
      clock = 0;
      store = new SlowIdleQueries();
      const idle = await addIdle(12);
      for (let i = 0; i < 5; i += 1) await add(closed("ended", NOW - RETENTION - (i + 1) * DAY));
      // Six steps in 600 ms, each keeping a twentieth (30 ms) for itself: expiry may start batches until 450 ms
      // (five queries of 100 ms, not the six its backlog needs), the five steps after it keep 150 ms.
      const steps = new MaintenanceSteps(silentLog, { clock: () => clock, deadline: 6 * QUERY_MS, steps: 6 });

      const report = await runMaintenance({ store, now: NOW, policy: { idleTtlMs: IDLE_TTL, maxExchanges: 1_000_000 }, retentionMs: RETENTION, closingCopyLandsWithinMs: COPY_LANDS_WITHIN, createKeyTtlMs: KEY_TTL, batchSize: 2, maxBatches: 10, log: silentLog }, steps);

      // Five batches of expiry; retention, later, deletes all it finds.
      expect(report).toMatchObject({ expired: 10, deleted: 5 });
      expect(await Promise.all(idle.map(statusOf))).toEqual([...Array(2).fill("active"), ...Array(10).fill("expired")]);
      // Without a time, the batch budget alone bounds the run: the next run expires the rest.
      await expect(run({ batchSize: 2, maxBatches: 10 })).resolves.toMatchObject({ expired: 2 });
    });
  });

  describe("a step that fails", () => {
    it("runs the steps after it all the same, names it in the report as failed and logs it", async () => {
      const faulty = new FaultyStore(store);
      const { log, entries } = recordingLog();
      const idle = await addIdle(1);
      const old = await add(closed("ended", NOW - RETENTION - DAY));
      await store.claimCreateKey("old", { fingerprint: "fp", session_id: "session-old", created_at: NOW - 2 * KEY_TTL });
      // The query for idle sessions fails (a database deadline, say).
      faulty.arm("findIdleSessions", "before");

      await expect(run({ store: faulty.store, log })).resolves.toEqual({ expired: 0, flushed: 0, deleted: 1, keysForgotten: 1, lapsedClaims: 0, addressesForgotten: 0, failed: "expired" });
      expect(await stateOf(old)).toBeNull();
      expect(entries).toEqual([
        {
          level: "error",
          message: "maintenance step failed; the run goes on",
          fields: { step: "expired", error: "StoreUnavailableError", detail: "database unavailable during findIdleSessions (injected before)" },
        },
      ]);
      // The next run does what this one could not.
      await expect(run({ store: faulty.store })).resolves.toMatchObject({ expired: 1 });
      expect(await Promise.all(idle.map(statusOf))).toEqual(["expired"]);
    });
  });
});

/** An instance's scheduled clean-up (`Instance.maintain`): the sessions' steps, the erasures' second passes, the device sweep. */
describe("the scheduled clean-up of an instance", () => {
  const URLS = ["https://one.firebaseio.com", "https://two.firebaseio.com"];
  const SWEPT_AT = CREATED_AT + STALE_AFTER_MS + 1;

  /** An instance over `store`, whose connection store holds one device gone stale by SWEPT_AT. */
  async function instanceOver(store: SessionStore, log = silentLog, clock = () => CREATED_AT, env: Readonly<Record<string, string>> = {}) {
    const connectionStore = new MemoryConnectionStore();
    await connectionStore.updateDevices("stale-user", registerDevice("old", "token-old", CREATED_AT, undefined));
    await connectionStore.updateTokenOwner("old", claimToken("stale-user", CREATED_AT));
    return composeInstance(resolveConfig({ DATABASE_INSTANCES: URLS.join(","), ...env }), {
      store,
      connectionStore,
      identity: NO_TOKENS,
      log,
      clock,
      pushSender: createOfflineSender(silentLog),
      databaseUrls: URLS,
    });
  }

  it("expires the idle sessions of the instances that answer and sweeps stale devices while another database instance's queries fail, logging each failure", async () => {
    const home = new MemoryStore();
    const other = new FaultyStore(new MemoryStore());
    const { log, entries } = recordingLog();
    const instance = await instanceOver(new ShardedStore([home, other.store], log));
    const session = newSession({ created_at: CREATED_AT }, placedSessionId(0, 2));
    await home.createSession(session);
    // The second instance is unreachable for this run: each of its clean-up queries fails (no retention is set: no query for closed sessions).
    for (const query of ["findIdleSessions", "findUnflushedSessions", "findLapsedClaims"] as const) other.arm(query, "before");

    const report = await instance.maintain(SWEPT_AT);

    expect(report).toMatchObject({ expired: 1, staleDevices: 1, staleTokenOwners: 1 });
    // Each instance's failure is logged where it happens; the steps themselves went through.
    expect(report.failed).toBeUndefined();
    expect((await home.readSessionState(session.id))?.status).toBe("expired");
    expect(entries.map((entry) => [entry.level, entry.fields?.query, entry.fields?.instance])).toEqual([
      ["warn", "find idle sessions", 1],
      ["warn", "find unflushed sessions", 1],
      ["warn", "find lapsed claims", 1],
    ]);
  });

  it("deletes a session it expired past the retention only once the clean-up's timeout and a database deadline are over (305 s by default)", async () => {
    const home = new MemoryStore();
    const instance = await instanceOver(new ShardedStore([home, new MemoryStore()], silentLog), silentLog, () => CREATED_AT, { SESSION_RETENTION_DAYS: "1" });
    const session = newSession({ created_at: CREATED_AT }, placedSessionId(0, 2));
    await home.createSession(session);

    // Idle for months: expired as of its TTL, long past the retention, by this run.
    expect(await instance.maintain(SWEPT_AT)).toMatchObject({ expired: 1, deleted: 0 });
    expect(await instance.maintain(SWEPT_AT + 304_999)).toMatchObject({ deleted: 0 });
    expect(await instance.maintain(SWEPT_AT + 305_000)).toMatchObject({ deleted: 1 });
    expect(await home.readSessionState(session.id)).toBeNull();
  });

  it("expires the idle sessions of each database instance within the batches one instance's run would have", async () => {
    // More than a run's budget of one instance (40 batches of 50) on the two together, less on each.
    const PER_INSTANCE = 1_050;
    const instances = [new MemoryStore(), new MemoryStore()];
    for (const [position, store] of instances.entries()) {
      for (let i = 0; i < PER_INSTANCE; i += 1) await store.createSession(newSession({ created_at: CREATED_AT }, placedSessionId(position, 2)));
    }
    const instance = await instanceOver(new ShardedStore(instances, silentLog));

    const report = await instance.maintain(SWEPT_AT);

    const stillIdle = await Promise.all(instances.map(async (store) => (await store.findIdleSessions(CREATED_AT, undefined, 10_000)).keys.length));
    expect({ expired: report.expired, stillIdle }).toEqual({ expired: 2 * PER_INSTANCE, stillIdle: [0, 0] });
  });

  it("expires a healthy database instance's idle sessions within its own batches while another instance's transactions all fail", async () => {
    /** An instance whose queries answer but whose transactions fail (overloaded, or refusing writes for a while). */
    class WriteFailingStore extends MemoryStore {
      failing = false;
      override async updateState<O>(sessionId: string, rule: StateRule<O>): Promise<Ruled<O>> {
        if (this.failing) throw new StoreUnavailableError("update session state (instance failing)");
        return super.updateState(sessionId, rule);
      }
    }
    const failing = new WriteFailingStore();
    const healthy = new MemoryStore();
    // The failing instance holds the longest idle sessions, a whole batch (50), which every batch it leads brings again.
    for (let i = 0; i < 50; i += 1) await failing.createSession(newSession({ created_at: CREATED_AT }, placedSessionId(0, 2)));
    for (let i = 0; i < 500; i += 1) await healthy.createSession(newSession({ created_at: CREATED_AT + 1 }, placedSessionId(1, 2)));
    failing.failing = true;
    const instance = await instanceOver(new ShardedStore([failing, healthy], silentLog));

    const report = await instance.maintain(SWEPT_AT);

    const stillIdleOnHealthy = (await healthy.findIdleSessions(SWEPT_AT, undefined, 10_000)).keys.length;
    expect({ expired: report.expired, stillIdleOnHealthy }).toEqual({ expired: 500, stillIdleOnHealthy: 0 });
  });

  it("lets expiry use the scheduled run's time the steps after it leave unused: two instances' 2,100 idle sessions, batches of a second, in one run", async () => {
    let clock = CREATED_AT;
    /** Each expiry batch takes a second of the clock (a query downloading 50 whole sessions, then 50 transactions). */
    class TimedStore extends MemoryStore {
      override async findIdleSessions(cutoff: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage> {
        clock += 1_000;
        return super.findIdleSessions(cutoff, after, limit);
      }
    }
    const PER_INSTANCE = 1_050;
    const instances = [new TimedStore(), new TimedStore()];
    for (const [position, store] of instances.entries()) {
      for (let i = 0; i < PER_INSTANCE; i += 1) await store.createSession(newSession({ created_at: CREATED_AT }, placedSessionId(position, 2)));
    }
    const instance = await instanceOver(new ShardedStore(instances, silentLog), silentLog, () => clock);
    const runMs = maintenanceRunMs(instance.config);

    // Some 43 batches, 43 s of the 240 s run: more than an eighth of it, less than what the seven idle steps after it leave.
    const report = await instance.maintain(SWEPT_AT, runMs);

    expect(clock - CREATED_AT).toBeLessThan(runMs / 2);
    expect(report.expired).toBe(2 * PER_INSTANCE);
  });

  it("runs the erasures' second passes and the device sweep when a step before them fails, naming each failed step in its report", async () => {
    const faulty = new FaultyStore(new MemoryStore());
    const { log, entries } = recordingLog();
    const instance = await instanceOver(faulty.store, log);
    expect(await instance.erasure.erase("gone-user")).toMatchObject({ complete: true });
    faulty.arm("findIdleSessions", "before");
    faulty.arm("deleteCreateKeys", "before");

    expect(await instance.maintain(SWEPT_AT)).toMatchObject({ erasuresFinished: 1, staleDevices: 1, staleTokenOwners: 1, failed: "expired,keysForgotten" });

    // The erasures' step fails in turn: the device sweep still runs.
    const again = await instanceOver(faulty.store, log);
    faulty.arm("findDueErasures", "before");
    expect(await again.maintain(SWEPT_AT)).toMatchObject({ erasuresFinished: 0, staleDevices: 1, failed: "erasuresFinished" });
    expect(entries.filter((entry) => entry.level === "error").map((entry) => entry.fields?.step)).toEqual(["expired", "keysForgotten", "erasuresFinished"]);
  });
});

/*
 * docs/sharding.md: "The run keeps within its function's timeout however many instances there
 * are"; docs/sessions-over-time.md: it starts no batch after its timeout less a minute, or less
 * four database deadlines, "so the batch under way can end". A clean-up batch over several
 * database instances asks them one after another (ShardedStore.everywhere), each up to its own
 * database deadline: a batch is up to N deadlines, not one. And "a shared batch never ends a run
 * while an instance still has work": the instances behind those out of reach get their turn.
 */
describe("the scheduled clean-up over database instances that answer only at their deadline", () => {
  const DB_TIMEOUT_MS = 15_000;
  const COUNT = 8;
  const URLS = Array.from({ length: COUNT }, (_, i) => `https://shard${i}x.firebaseio.com`);
  let clock = CREATED_AT;

  /** An instance out of reach: each clean-up query fails at its database deadline, as RtdbStore's engine fails it. */
  class UnreachableStore extends MemoryStore {
    private async deadline(): Promise<never> {
      clock += DB_TIMEOUT_MS;
      await Promise.resolve();
      throw new StoreUnavailableError("query (past its deadline)");
    }
    override findIdleSessions(): Promise<SweepPage> {
      return this.deadline();
    }
    override findUnflushedSessions(): Promise<SweepPage> {
      return this.deadline();
    }
    override findLapsedClaims(): Promise<SweepPage> {
      return this.deadline();
    }
    override findClosedSessions(): Promise<SweepPage> {
      return this.deadline();
    }
  }

  /** `unreachable` out-of-reach instances between the home instance and `last` (or none after them), on the scheduled function's time by `clock`. */
  function instanceOver(home: MemoryStore, unreachable: number, last: readonly MemoryStore[], env: Readonly<Record<string, string>> = {}) {
    const store = new ShardedStore([home, ...Array.from({ length: unreachable }, () => new UnreachableStore()), ...last], silentLog);
    return composeInstance(resolveConfig({ DATABASE_INSTANCES: URLS.join(","), DB_TIMEOUT_MS: String(DB_TIMEOUT_MS), TIMEOUT_SECONDS: "540", ...env }), {
      store,
      connectionStore: new MemoryConnectionStore(),
      identity: NO_TOKENS,
      log: silentLog,
      clock: () => clock,
      pushSender: createOfflineSender(silentLog),
      databaseUrls: URLS,
    });
  }

  it("ends within the scheduled function's timeout while most instances are out of reach", async () => {
    clock = CREATED_AT;
    // The home instance answers; the seven others are out of reach (a region's outage, say).
    const instance = instanceOver(new MemoryStore(), COUNT - 1, []);
    const started = clock;

    await instance.maintain(CREATED_AT + STALE_AFTER_MS + 1, maintenanceRunMs(instance.config));

    // The platform ends the scheduled function at its timeout: the batch under way cut off, the report never logged.
    expect(clock - started).toBeLessThanOrEqual(MAINTENANCE_TIMEOUT_SECONDS * 1000);
  });

  it("deletes, within ten runs (2.5 hours), a session past the retention on a reachable instance behind those out of reach", async () => {
    clock = NOW;
    // The home instance and the last one answer; the six between are out of reach.
    const last = new MemoryStore();
    const instance = instanceOver(new MemoryStore(), COUNT - 2, [last], { SESSION_RETENTION_DAYS: "1" });
    // A session ended ten days ago on the last instance: past the retention of a day.
    const session = newSession({ created_at: CREATED_AT }, placedSessionId(COUNT - 1, COUNT));
    await last.createSession(session);
    await last.updateState(session.id, () => ({ outcome: undefined, next: closed("ended", clock - 10 * DAY) }));

    // Runs every 15 minutes, each given the scheduled function's time. The earlier steps' batches
    // over those out of reach leave the later ones (lapsed claims, retention) their reserve, about
    // 12 s: time for the lead and one instance out of reach (a 15 s deadline). Each run must begin
    // where the last one's batch was cut short, or it asks the same ones.
    let deleted = 0;
    for (let run = 0; run < 10; run += 1) {
      clock += 15 * MINUTE;
      deleted += (await instance.maintain(clock, maintenanceRunMs(instance.config))).deleted;
    }

    expect({ deleted, state: await last.readSessionState(session.id) }).toEqual({ deleted: 1, state: null });
  });
});
