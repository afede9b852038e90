import { randomUUID } from "node:crypto";
import { bearer, useAuthEmulator, type TestUser } from "../support/auth-emulator";
import { recentMessages } from "../support/recent-messages";
import { createSession, describeEachStore, ROUTES, startHarness, twoInstances, type Harness, type Instance } from "../support/http-harness";
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

/** rtdb-wire's counts (its README: /.wire/stats): first attempts refused for a stale hash, and listens started and stopped. */
async function listenStats(namespace: string): Promise<{ datastale: number; listens: number; unlistens: number }> {
  const answer = await fetch(`http://${process.env.FIREBASE_DATABASE_EMULATOR_HOST ?? ""}/.wire/stats?ns=${namespace}`);
  const counted = (await answer.json()) as { datastale?: number; listens?: number; unlistens?: number };
  return { datastale: counted.datastale ?? 0, listens: counted.listens ?? 0, unlistens: counted.unlistens ?? 0 };
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

/**
 * The same with ID tokens: the chat page signs every visitor in (anonymously, minting users at
 * will), and a signed-in request's caller has a usage record a message would transact on. Neither
 * a request for a session that does not exist (404) nor one for another user's session (403)
 * may leave a listener behind or push out those of the sessions served.
 */
describeWithWireStats("an instance's listeners, under signed-in requests for sessions that do not exist or are another user's [Realtime Database]", () => {
  const authEmulator = useAuthEmulator("demo-chatify");
  const instances = twoInstances({ store: "rtdb" });

  /** `count` anonymous visitors, signed up 50 at a time. */
  async function visitors(count: number): Promise<TestUser[]> {
    const signedUp: TestUser[] = [];
    while (signedUp.length < count) signedUp.push(...(await Promise.all(Array.from({ length: Math.min(50, count - signedUp.length) }, () => authEmulator().signUp(true)))));
    return signedUp;
  }

  /** A session served warm by the first instance: its next message starts its transactions from the server's value. */
  async function warmSession(): Promise<{ id: string; namespace: string }> {
    const { harness } = instances;
    const namespace = harness.namespace!;
    const id = await createSession(harness.api, "friendly-assistant", `owner-${randomUUID()}`);
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "one" })).status).toBe(200);
    await resetWireStats(namespace);
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "two" })).status).toBe(200);
    expect(await listenStats(namespace)).toMatchObject({ datastale: 0, listens: 0 });
    return { id, namespace };
  }

  it("leaves no listener behind for a signed-in message to a session that does not exist (404), or to another user's session or a read of it (403)", async () => {
    const { harness, second } = instances;
    const namespace = harness.namespace!;
    const [visitor] = await visitors(1);
    // Another user's session, made through the second instance: the first has never served it.
    const theirs = await createSession(second, "friendly-assistant", `owner-${randomUUID()}`);
    await resetWireStats(namespace);
    const token = bearer(visitor!.idToken);
    expect((await harness.api.call("POST", ROUTES.message(randomUUID()), { message: "hello?" }, token)).status).toBe(404);
    expect((await harness.api.call("POST", ROUTES.message(theirs), { message: "hello?" }, token)).status).toBe(403);
    expect((await harness.api.call("GET", ROUTES.get(theirs), undefined, token)).status).toBe(403);
    const { listens, unlistens } = await listenStats(namespace);
    // Every listen the requests started (the sessions' states, the visitor's usage record) is stopped again.
    expect(listens).toBeGreaterThan(0);
    expect(listens - unlistens).toBe(0);
  });

  it("keeps listening to the sessions it serves through 600 signed-in visitors' messages to sessions that do not exist (404)", async () => {
    const { harness } = instances;
    const { id, namespace } = await warmSession();
    const signedIn = await visitors(600);
    for (let batch = 0; batch < 12; batch += 1) {
      const answers = await Promise.all(
        signedIn.slice(batch * 50, batch * 50 + 50).map((visitor) => harness.api.call("POST", ROUTES.message(randomUUID()), { message: "hello?" }, bearer(visitor.idToken))),
      );
      expect(answers.map((answer) => answer.status)).toEqual(Array(50).fill(404));
    }
    await resetWireStats(namespace);
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "three" })).status).toBe(200);
    // The session's state and its user's usage record are still listened to: no first attempt refused as stale, no listen started again.
    expect(await listenStats(namespace)).toMatchObject({ datastale: 0, listens: 0 });
  }, 120_000);

  it("keeps listening to the sessions it serves through 600 signed-in visitors' messages to, and reads of, other users' sessions (403)", async () => {
    const { harness, second } = instances;
    const { id, namespace } = await warmSession();
    // 600 real sessions of other users, made through the second instance: the first has never served them.
    const others: string[] = [];
    for (let batch = 0; batch < 12; batch += 1) {
      others.push(...(await Promise.all(Array.from({ length: 50 }, () => createSession(second, "friendly-assistant", `owner-${randomUUID()}`)))));
    }
    const signedIn = await visitors(600);
    for (let batch = 0; batch < 12; batch += 1) {
      const answers = await Promise.all(
        others.slice(batch * 50, batch * 50 + 50).flatMap((other, index) => {
          const token = bearer(signedIn[batch * 50 + index]!.idToken);
          return [harness.api.call("POST", ROUTES.message(other), { message: "hello?" }, token), harness.api.call("GET", ROUTES.get(other), undefined, token)];
        }),
      );
      expect(answers.map((answer) => answer.status)).toEqual(Array(100).fill(403));
    }
    await resetWireStats(namespace);
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "three" })).status).toBe(200);
    expect(await listenStats(namespace)).toMatchObject({ datastale: 0, listens: 0 });
  }, 120_000);
});
