import { recentMessages } from "../support/recent-messages";
import { FaultyStore } from "../support/faulty-store";
import type { SessionStore } from "../../src/store/session-store";
import { createSession, describeEachStore, ROUTES, startHarness, type Harness, type Instance } from "../support/http-harness";
import { describeWithRtdb } from "../support/rtdb";
import { TcpProxy } from "../support/tcp-proxy";
import { usageOf } from "../support/token-service";

/** The stored session, in the terms the consistency check needs. */
async function stored(instance: Instance, id: string) {
  const state = await instance.store.readSessionState(id);
  const history = await recentMessages(instance.store, id, 1000);
  return { state, history: history.map((message) => `${message.role}: ${message.content}`) };
}

/** Count equals stored exchanges, roles alternate, each reply answers the message before it. */
async function expectConsistent(instance: Instance, id: string) {
  const { state, history } = await stored(instance, id);
  expect(history).toHaveLength(2 * (state?.message_count ?? -1));
  for (let i = 0; i < history.length; i += 2) {
    expect(history[i]).toMatch(/^user: /);
    expect(history[i + 1]).toMatch(/^assistant: reply #\d+ to: /);
    expect(history[i + 1]!.endsWith(` to: ${history[i]!.slice("user: ".length)}`)).toBe(true);
  }
}

const keyed = (name: string) => ({ "Idempotency-Key": `${name}-${Math.random().toString(36).slice(2)}` });

describeEachStore("database faults at each step of a request", (kind) => {
  let harness: Harness;
  // One per instance, in the order the instances started; the first is `api`'s.
  const wrappers: FaultyStore[] = [];
  let faults: FaultyStore;
  let api: Instance;

  beforeAll(async () => {
    harness = await startHarness({
      store: kind,
      env: { OPENAI_TIMEOUT_MS: "400", DB_TIMEOUT_MS: "500" },
      wrapStore: (store) => {
        const wrapper = new FaultyStore(store);
        wrappers.push(wrapper);
        return wrapper.store;
      },
    });
    api = harness.api;
    faults = wrappers[0]!;
  });
  afterAll(async () => harness.close());
  beforeEach(() => {
    harness.fake.reset();
    faults.reset();
  });

  async function withOneExchange() {
    const id = await createSession(api);
    await api.call("POST", ROUTES.message(id), { message: "first" });
    harness.fake.reset();
    return id;
  }

  it("claiming the slot: 503, no model call, nothing stored, the next message works", async () => {
    const id = await withOneExchange();
    faults.arm("updateStateReadingKey", "before");
    const failed = await api.call("POST", ROUTES.message(id), { message: "lost" });
    expect(failed.status).toBe(503);
    expect(failed.body.error?.code).toBe("DATABASE_UNAVAILABLE");
    expect(failed.headers.get("retry-after")).toBe("1");
    expect(harness.fake.requests).toHaveLength(0);
    expect((await stored(api, id)).state?.message_count).toBe(1);
    expect((await api.call("POST", ROUTES.message(id), { message: "next" })).body.message_count).toBe(2);
    await expectConsistent(api, id);
  });

  it("reading history on a cold instance: 503, nothing stored", async () => {
    const id = await withOneExchange();
    const cold = await harness.instance();
    wrappers.at(-1)!.arm("readWindow", "before");
    expect((await cold.call("POST", ROUTES.message(id), { message: "lost" })).status).toBe(503);
    expect(harness.fake.requests).toHaveLength(0);
    expect((await stored(api, id)).state?.message_count).toBe(1);
  });

  it("after the model call, before the commit: 503, nothing stored, no dangling message next time", async () => {
    const id = await withOneExchange();
    faults.arm("appendExchange", "before");
    expect((await api.call("POST", ROUTES.message(id), { message: "lost" })).status).toBe(503);
    expect(harness.fake.requests).toHaveLength(1);
    expect(await stored(api, id)).toEqual({ state: expect.objectContaining({ message_count: 1 }), history: ["user: first", "assistant: reply #1 to: first"] });
    await api.call("POST", ROUTES.message(id), { message: "next" });
    expect(harness.fake.requests[1]!.body.messages.map((message) => message.content).slice(1)).toEqual(["first", "reply #1 to: first", "next"]);
    await expectConsistent(api, id);
  });

  it("during the commit (applied, answer lost): 503, the exchange stored whole, a keyed retry replays it", async () => {
    const id = await withOneExchange();
    const key = keyed("commit");
    faults.arm("appendExchange", "after");
    const failed = await api.call("POST", ROUTES.message(id), { message: "maybe" }, key);
    expect(failed.status).toBe(503);
    expect((await stored(api, id)).state?.message_count).toBe(2);
    await expectConsistent(api, id);

    const retried = await api.call("POST", ROUTES.message(id), { message: "maybe" }, key);
    expect(retried.status).toBe(200);
    expect(retried.headers.get("idempotent-replayed")).toBe("true");
    expect(retried.body).toMatchObject({ response: "reply #1 to: maybe", message_count: 2 });
    expect(harness.fake.requests).toHaveLength(1);
    expect((await stored(api, id)).state?.message_count).toBe(2);
  });

  it("claiming the key: 503, nothing claimed or stored, a retry runs", async () => {
    const id = await withOneExchange();
    const key = keyed("claim");
    faults.arm("updateStateReadingKey", "before");
    expect((await api.call("POST", ROUTES.message(id), { message: "claim" }, key)).status).toBe(503);
    expect(harness.fake.requests).toHaveLength(0);
    expect((await stored(api, id)).state?.requests).toBeUndefined();
    const retried = await api.call("POST", ROUTES.message(id), { message: "claim" }, key);
    expect(retried.status).toBe(200);
    expect(retried.headers.get("idempotent-replayed")).toBeNull();
  });

  it("claiming the key (applied, answer lost): 503, no model call; the claim is given back, so a keyed retry runs at once", async () => {
    // A 4 s function: a keyed repeat waits 600 ms for the key (4 s - 1 s - 400 ms - 4 x 500 ms), less than the lease.
    const short = await harness.instance({ TIMEOUT_SECONDS: "4" });
    const user = "user_claim_lost";
    const id = await createSession(short, "friendly-assistant", user);
    const key = keyed("claim-lost");
    wrappers.at(-1)!.arm("updateStateReadingKey", "after");
    expect((await short.call("POST", ROUTES.message(id), { message: "are you there?" }, key)).status).toBe(503);
    expect(harness.fake.requests).toHaveLength(0);

    // Kept, the claim would answer this 409 IDEMPOTENCY_IN_PROGRESS until its lease ran out.
    const retried = await short.call("POST", ROUTES.message(id), { message: "are you there?" }, key);
    expect({ status: retried.status, code: retried.body.error?.code }).toEqual({ status: 200, code: undefined });
    expect(retried.headers.get("idempotent-replayed")).toBeNull();
    // The lost message's reservation went back, once: the day's count is what the retry spent.
    expect((await usageOf(short.store, user))?.daily?.tokens).toBe((retried.body.usage as { total_tokens: number }).total_tokens);
  });

  it("committing (never sent): 503, nothing stored; the claim is given back, so a keyed retry runs at once", async () => {
    const short = await harness.instance({ TIMEOUT_SECONDS: "4" });
    const id = await createSession(short);
    const key = keyed("commit-lost");
    wrappers.at(-1)!.arm("appendExchange", "before");
    expect((await short.call("POST", ROUTES.message(id), { message: "are you there?" }, key)).status).toBe(503);

    // Kept, the claim would answer this 409 IDEMPOTENCY_IN_PROGRESS until its lease ran out.
    const retried = await short.call("POST", ROUTES.message(id), { message: "are you there?" }, key);
    expect({ status: retried.status, code: retried.body.error?.code, count: retried.body.message_count }).toEqual({ status: 200, code: undefined, count: 1 });
  });

  it.each([
    ["claiming the slot (applied, answer lost)", "updateStateReadingKey", "after"],
    ["committing (never sent)", "appendExchange", "before"],
  ] as const)("%s at the session's last exchange: the next message takes it", async (_step, method, fault) => {
    const limited = await harness.instance({ SESSION_MAX_EXCHANGES: "2" });
    const id = await createSession(limited);
    expect((await limited.call("POST", ROUTES.message(id), { message: "first" })).status).toBe(200);
    wrappers.at(-1)!.arm(method, fault);
    expect((await limited.call("POST", ROUTES.message(id), { message: "lost" })).status).toBe(503);
    const next = await limited.call("POST", ROUTES.message(id), { message: "next" });
    expect({ status: next.status, code: next.body.error?.code }).toEqual({ status: 200, code: undefined });
  });

  it("a claim whose release was lost lapses after its lease, and a retry then runs", async () => {
    // A 4 s function: the lease is the function timeout (4 s), and a keyed repeat waits what the
    // budget leaves (4 s - 1 s - 400 ms of model time - 4 x 500 ms of database time = 600 ms).
    const short = await harness.instance({ TIMEOUT_SECONDS: "4" });
    const shortFaults = wrappers.at(-1)!;
    const id = await createSession(short);
    expect((await short.call("POST", ROUTES.message(id), { message: "first" })).status).toBe(200);
    const key = keyed("release");
    harness.fake.enqueue({ kind: "status", status: 503 });
    // The claim passes; the release that follows the model failure is lost.
    shortFaults.arm("updateState", "before");
    const claimedBefore = Date.now();
    expect((await short.call("POST", ROUTES.message(id), { message: "later" }, key)).status).toBe(503);
    expect(Object.values((await stored(short, id)).state?.requests ?? {})).toHaveLength(1);

    // Each repeat waits its 600 ms and answers 409 while the claim stands; the first after its lease takes it over.
    const statuses: number[] = [];
    let retried;
    do {
      retried = await short.call("POST", ROUTES.message(id), { message: "later" }, key);
      statuses.push(retried.status);
    } while (retried.status === 409 && statuses.length < 20);
    expect(statuses.at(0)).toBe(409);
    expect(retried.status).toBe(200);
    expect(Date.now() - claimedBefore).toBeGreaterThanOrEqual(4_000);
    expect(retried.body.message_count).toBe(2);
    await expectConsistent(short, id);
  });

  it("ending: the end applied and its answer lost is an ended session; the retry says so, and releases its count", async () => {
    const user = "user_end_lost";
    const id = await createSession(api, "friendly-assistant", user);
    expect((await api.call("POST", ROUTES.message(id), { message: "first" })).status).toBe(200);
    faults.arm("updateState", "after");
    expect((await api.call("DELETE", ROUTES.end(id))).status).toBe(503);
    expect((await stored(api, id)).state?.status).toBe("ended");
    expect((await usageOf(api.store, user))?.sessions).toHaveProperty([id]);
    expect((await api.call("DELETE", ROUTES.end(id))).body.error?.code).toBe("SESSION_ENDED");
    // Kept, it would count against USER_MAX_ACTIVE_SESSIONS for the idle TTL.
    expect((await usageOf(api.store, user))?.sessions).not.toHaveProperty([id]);
  });

  it("creating with a key: the session written and its answer lost, a retry returns that session", async () => {
    const key = keyed("create");
    const body = { user_id: "user_faults", template_id: "friendly-assistant" };
    faults.arm("createSession", "after");
    expect((await api.call("POST", ROUTES.create, body, key)).status).toBe(503);
    const retried = await api.call("POST", ROUTES.create, body, key);
    expect(retried.status).toBe(201);
    expect(retried.headers.get("idempotent-replayed")).toBe("true");
    expect(await api.store.readSessionState(String(retried.body.session_id))).toMatchObject({ status: "active", message_count: 0 });
  });
});

/**
 * A database slow on every call, each within DB_TIMEOUT_MS: a claim must outlast its request
 * however many calls follow it. A warm instance whose window is behind the session (another
 * instance stored the last exchange) reads it after its claim, before the model.
 */
describeEachStore("a slow database, every call within its deadline", (kind) => {
  let harness: Harness;
  let other: Instance;
  let now = Date.parse("2026-01-01T00:00:00Z");
  // While set: the claim, the window read and the commit each take 4.9 s of the 5 s deadline.
  let slow = false;
  let beforeCommit: (() => Promise<void>) | undefined;

  function slowStore(store: SessionStore): SessionStore {
    return new Proxy(store, {
      get(target, property, receiver) {
        const value: unknown = Reflect.get(target, property, receiver);
        // Only the calls that take the time: the others, some of them synchronous, as they are.
        if (typeof value !== "function" || !(property === "updateStateReadingKey" || property === "readWindow" || property === "appendExchange")) return value;
        return async (...args: unknown[]) => {
          if (slow) {
            now += 4_900;
            if (property === "appendExchange" && beforeCommit) await beforeCommit();
          }
          return Reflect.apply(value, target, args) as unknown;
        };
      },
    });
  }

  beforeAll(async () => {
    harness = await startHarness({
      store: kind,
      clock: () => now,
      wrapStore: slowStore,
      // The deployed defaults: model time 2 x 15 s + 5 s = 35 s, database calls of 5 s, a 60 s function.
      env: { OPENAI_TIMEOUT_MS: "15000", OPENAI_MAX_RETRIES: "1", OPENAI_MAX_RETRY_WAIT_MS: "5000", DB_TIMEOUT_MS: "5000" },
    });
    other = await harness.instance();
  });
  afterAll(async () => harness.close());

  it("stores a keyed message whose claim, window read, model call and commit took 49.6 s, though the sweep ran during its commit", async () => {
    const id = await createSession(harness.api);
    now += 1_000;
    expect((await other.call("POST", ROUTES.message(id), { message: "first" })).status).toBe(200);

    now += 1_000;
    harness.fake.reset();
    const release = harness.fake.holdAnswers();
    slow = true;
    beforeCommit = async () => {
      beforeCommit = undefined;
      await other.runtime.maintain(now);
    };
    const sending = harness.api.call("POST", ROUTES.message(id), { message: "second" }, { "Idempotency-Key": "key-second" });
    await harness.fake.awaitRequests(1);
    // The model answers within its time (34.9 s of its 35 s).
    now += 34_900;
    release();
    const answer = await sending;
    slow = false;
    // 4.9 s + 4.9 s + 34.9 s + 4.9 s: within the 60 s function, so the claim still stood at the commit.
    expect({ status: answer.status, code: answer.body.error?.code }).toEqual({ status: 200, code: undefined });
    expect(await harness.api.store.readSessionState(id)).toMatchObject({ status: "active", message_count: 2 });
    // The keyed retry is a replay: the model is not called (billed) again.
    const retried = await harness.api.call("POST", ROUTES.message(id), { message: "second" }, { "Idempotency-Key": "key-second" });
    expect(retried.status).toBe(200);
    expect(harness.fake.requests).toHaveLength(1);
  });
});

describeWithRtdb("an unreachable Realtime Database", () => {
  let proxy: TcpProxy;
  let harness: Harness;

  beforeAll(async () => {
    const [host, port] = (process.env.FIREBASE_DATABASE_EMULATOR_HOST ?? "").split(":");
    proxy = await TcpProxy.start({ host: host!, port: Number(port) });
    harness = await startHarness({ store: "rtdb", databaseHost: proxy.address, env: { DB_TIMEOUT_MS: "500" } });
  });
  afterAll(async () => {
    proxy.resume();
    await harness.close();
    await proxy.stop();
  });

  it("fails fast with 503 while the database does not answer, and recovers without a half-written session", async () => {
    const api = harness.api;
    const id = await createSession(api);
    await api.call("POST", ROUTES.message(id), { message: "before" });
    const key = keyed("stall");

    proxy.stall();
    const started = Date.now();
    const answers = await Promise.all([
      api.call("POST", ROUTES.message(id), { message: "during" }, key),
      api.call("POST", ROUTES.create, { user_id: "u", template_id: "socratic-tutor" }),
      api.call("DELETE", ROUTES.end(id)),
    ]);
    const elapsed = Date.now() - started;
    for (const answer of answers) {
      expect(answer.status).toBe(503);
      expect(answer.body.error?.code).toBe("DATABASE_UNAVAILABLE");
    }
    // Each request made at most a few database calls, each bounded by DB_TIMEOUT_MS.
    expect(elapsed).toBeLessThan(3_000);

    proxy.resume();
    // Whatever the stalled calls did once delivered, each was whole: a keyed retry settles the message.
    const retried = await api.call("POST", ROUTES.message(id), { message: "during" }, key);
    expect([200, 410]).toContain(retried.status);
    // Read from a fresh instance: this one's own reads may trail the writes it queued while stalled.
    const fresh = await harness.instance();
    const state = await fresh.store.readSessionState(id);
    const history = (await recentMessages(fresh.store, id, 100)).map((message) => message.content);
    expect(history).toHaveLength(2 * state!.message_count);
    expect(history.slice(0, 2)).toEqual(["before", "reply #1 to: before"]);
    // The keyed message is stored once at most, and exactly once when the retry succeeded.
    expect(history.filter((text) => text === "during")).toHaveLength(retried.status === 200 ? 1 : state!.message_count - 1);
    if (retried.status === 410) expect(state?.status).toBe("ended");
  });

  it("a keyed commit cut off: 503; the claim's release, sent after it, lands after it: the exchange is stored once and a retry replays it", async () => {
    const api = harness.api;
    const id = await createSession(api);
    const key = keyed("commit-stall");
    harness.fake.reset();
    const answer = harness.fake.holdAnswers();
    const sending = api.call("POST", ROUTES.message(id), { message: "cut off" }, key);
    await harness.fake.awaitRequests(1);
    proxy.stall();
    answer();
    expect((await sending).status).toBe(503);
    // The release found the commit's own result as the SDK's latest state (its seq: nothing to
    // release), and waits behind it. Had it overtaken it, the commit would be refused as lost.
    proxy.resume();
    const retried = await api.call("POST", ROUTES.message(id), { message: "cut off" }, key);
    expect({ status: retried.status, replayed: retried.headers.get("idempotent-replayed"), count: retried.body.message_count }).toEqual({ status: 200, replayed: "true", count: 1 });
    expect(harness.fake.requests).toHaveLength(1);
  });
});
