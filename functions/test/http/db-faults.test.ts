import { recentMessages } from "../support/recent-messages";
import { FaultyStore } from "../support/faulty-store";
import { createSession, describeEachStore, ROUTES, startHarness, type Harness, type Instance } from "../support/http-harness";
import { describeWithRtdb } from "../support/rtdb";
import { TcpProxy } from "../support/tcp-proxy";

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

  it("a claim whose release was lost lapses after its lease, and a retry then runs", async () => {
    const id = await withOneExchange();
    const key = keyed("release");
    harness.fake.enqueue({ kind: "status", status: 503 });
    // The claim passes; the release that follows the model failure is lost.
    faults.arm("updateState", "before");
    expect((await api.call("POST", ROUTES.message(id), { message: "later" }, key)).status).toBe(503);
    expect(Object.values((await stored(api, id)).state?.requests ?? {})).toHaveLength(1);

    const started = Date.now();
    const retried = await api.call("POST", ROUTES.message(id), { message: "later" }, key);
    expect(retried.status).toBe(200);
    // It waited out the lease (400 ms of model time + 2 x 500 ms of database time + 1 s), then took the claim over.
    expect(Date.now() - started).toBeGreaterThan(2_000);
    expect(retried.body.message_count).toBe(2);
    await expectConsistent(api, id);
  });

  it("ending: the end applied and its answer lost is an ended session; the retry says so", async () => {
    const id = await withOneExchange();
    faults.arm("updateState", "after");
    expect((await api.call("DELETE", ROUTES.end(id))).status).toBe(503);
    expect((await stored(api, id)).state?.status).toBe("ended");
    expect((await api.call("DELETE", ROUTES.end(id))).status).toBe(410);
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
});
