import { recentMessages } from "../support/recent-messages";
import { createSession, describeEachStore, ROUTES, startHarness, type Harness, type Instance } from "../support/http-harness";

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
