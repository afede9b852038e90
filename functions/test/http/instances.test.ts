import { randomUUID } from "node:crypto";
import { recentMessages } from "../support/recent-messages";
import { createSession, describeEachStore, ROUTES, startHarness, type Harness, type Instance } from "../support/http-harness";
import { describeWithWireStats, resetWireStats } from "../support/wire-stats";

/** Several function instances (own runtime, cache and database connection) on one database. */
describeEachStore("several instances", (kind) => {
  let harness: Harness;
  let a: Instance;
  let b: Instance;

  beforeAll(async () => {
    harness = await startHarness({ store: kind });
    a = harness.api;
    b = await harness.instance();
  });
  afterAll(async () => harness.close());
  beforeEach(() => { harness.fake.reset(); });

  it("loses no exchange when instances take messages for one session at once", async () => {
    const id = await createSession(a);
    const total = 12;
    const answers = await Promise.all(
      Array.from({ length: total }, (_, i) => (i % 2 ? a : b).call("POST", ROUTES.message(id), { message: `q${i}` })),
    );
    expect(answers.map((answer) => answer.status)).toEqual(Array(total).fill(200));
    const counts = answers.map((answer) => Number(answer.body.message_count)).sort((x, y) => x - y);
    expect(counts).toEqual(Array.from({ length: total }, (_, i) => i + 1));

    const state = await (await harness.instance()).store.readSessionState(id);
    expect(state?.message_count).toBe(total);
    const history = await recentMessages(a.store, id, 100);
    expect(history).toHaveLength(2 * total);
    for (let i = 0; i < history.length; i += 2) {
      expect(history[i]?.role).toBe("user");
      expect(history[i + 1]?.role).toBe("assistant");
      expect(history[i + 1]?.content).toMatch(new RegExp(`to: ${history[i]?.content ?? ""}$`));
    }
  });

  it("refuses, on a warm instance, a session that another instance ended", async () => {
    const id = await createSession(a);
    expect((await a.call("POST", ROUTES.message(id), { message: "warm up" })).status).toBe(200);
    expect((await b.call("DELETE", ROUTES.end(id))).body).toMatchObject({ success: true, message_count: 1 });
    harness.fake.reset();

    const late = await a.call("POST", ROUTES.message(id), { message: "too late" });
    expect(late.status).toBe(410);
    expect(harness.fake.requests).toHaveLength(0);
    expect((await a.call("DELETE", ROUTES.end(id))).status).toBe(410);
  });

  it("continues on a cold instance with the history another instance stored", async () => {
    const id = await createSession(a, "socratic-tutor");
    await a.call("POST", ROUTES.message(id), { message: "first" });
    const cold = await harness.instance();
    harness.fake.reset();
    const answer = await cold.call("POST", ROUTES.message(id), { message: "second" });
    expect(answer.body).toMatchObject({ success: true, message_count: 2 });
    expect(harness.fake.requests[0]?.body.messages.slice(1).map((message) => message.content)).toEqual([
      "first",
      "reply #1 to: first",
      "second",
    ]);
    // And the first instance, warm, sees what the cold one added.
    await a.call("POST", ROUTES.message(id), { message: "third" });
    expect(harness.fake.requests[1]?.body.messages.slice(1).map((message) => message.content)).toEqual([
      "first",
      "reply #1 to: first",
      "second",
      "reply #1 to: second",
      "third",
    ]);
  });
}, { sharded: true });

/** rtdb-wire's counts (its README: /.wire/stats): first attempts refused for a stale hash, and listens started. */
async function listenStats(namespace: string): Promise<{ datastale: number; listens: number }> {
  const answer = await fetch(`http://${process.env.FIREBASE_DATABASE_EMULATOR_HOST ?? ""}/.wire/stats?ns=${namespace}`);
  const counted = (await answer.json()) as { datastale?: number; listens?: number };
  return { datastale: counted.datastale ?? 0, listens: counted.listens ?? 0 };
}

/**
 * An instance listens to the `state` of the sessions it serves and their users' usage records (at
 * most 512 nodes, docs/correctness.md), so that a warm message takes 2 round trips
 * (docs/costs.md). A request names its session before the instance knows that it exists: one for
 * a session that does not (404, no sign-in needed) must leave no listener behind, nor push out
 * those of the sessions served.
 */
describeWithWireStats("an instance's listeners, under requests for sessions that do not exist [Realtime Database]", () => {
  let harness: Harness;
  beforeAll(async () => { harness = await startHarness({ store: "rtdb" }); });
  afterAll(async () => harness.close());

  it("keeps listening to the sessions it serves: their next message still starts its transactions from the server's value", async () => {
    const namespace = harness.namespace!;
    const id = await createSession(harness.api);
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "one" })).status).toBe(200);
    await resetWireStats(namespace);
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "two" })).status).toBe(200);
    expect((await listenStats(namespace)).datastale).toBe(0);

    // 600 requests for session ids nobody created: each answered 404.
    for (let batch = 0; batch < 12; batch += 1) {
      const answers = await Promise.all(Array.from({ length: 50 }, () => harness.api.call("POST", ROUTES.message(randomUUID()), { message: "hello?" })));
      expect(answers.map((answer) => answer.status)).toEqual(Array(50).fill(404));
    }

    await resetWireStats(namespace);
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "three" })).status).toBe(200);
    // The session's state and its user's usage record are still listened to: no first attempt refused as stale.
    expect(await listenStats(namespace)).toMatchObject({ datastale: 0, listens: 0 });
  });
});
