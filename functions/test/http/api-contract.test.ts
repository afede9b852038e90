import { recentMessages } from "../support/recent-messages";
import { seedTemplates } from "../../src/local/project-files";
import { GENERATION_DEFAULTS } from "../../src/session/prompt/generation-settings";
import { createSession, describeEachStore, ROUTES, startHarness, type Harness } from "../support/http-harness";
import { anyUsage } from "../support/any-usage";
import { instancePositionOf } from "../../src/sharding/session-ids";

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const UUID_V8 = /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const templates = seedTemplates();

describeEachStore("the chat API", (kind) => {
  let harness: Harness;
  /** The instances' time while a test sets it; the real time otherwise. */
  let frozenAt: number | undefined;

  beforeAll(async () => {
    harness = await startHarness({ store: kind, clock: () => frozenAt ?? Date.now() });
  });
  afterAll(async () => harness.close());
  beforeEach(() => { harness.fake.reset(); });
  afterEach(() => { frozenAt = undefined; });

  it("creates a session with the original route and the exact response fields", async () => {
    const answer = await harness.api.call("POST", ROUTES.create, { user_id: "user_12345", template_id: "friendly-assistant" });
    expect(answer.status).toBe(201);
    expect(answer.headers.get("content-type")).toMatch(/^application\/json/);
    expect(answer.body).toMatchObject({ success: true, message: "Session created successfully" });
    // One database instance: random v4 ids as always; two: v8 ids naming their instance (docs/sharding.md).
    expect(answer.body.session_id).toMatch(harness.shards ? UUID_V8 : UUID_V4);
    expect(harness.fake.requests).toHaveLength(0);
  });

  it("answers which database the session's clients listen to, the instance its id names, for one instance too", async () => {
    const answers = [];
    for (let i = 0; i < 4; i += 1) answers.push(await harness.api.call("POST", ROUTES.create, { user_id: "user_12345", template_id: "friendly-assistant" }));
    const urls = answers.map((answer) => answer.body.database_url);
    if (kind === "memory") {
      // The embedded store: no database any client could listen to.
      expect(urls).toEqual([undefined, undefined, undefined, undefined]);
      return;
    }
    const listed = harness.shards?.urls ?? [`https://${harness.namespace ?? ""}.firebaseio.com`];
    expect(answers.map((answer) => listed[instancePositionOf(String(answer.body.session_id))])).toEqual(urls);
    // Placed round robin: with two instances, four sessions in a row are on both.
    expect(new Set(urls).size).toBe(listed.length);
  });

  it("answers messages, counting completed exchanges, on both URL forms", async () => {
    const id = await createSession(harness.api);
    const first = await harness.api.call("POST", ROUTES.message(id), { message: "Hi" });
    expect(first.status).toBe(200);
    expect(first.body).toEqual({ success: true, response: "reply #1 to: Hi", session_id: id, message_count: 1, truncated: false, usage: anyUsage() });

    const second = await harness.api.call("POST", ROUTES.directMessage(id), { message: "And you?" });
    expect(second.body).toMatchObject({ success: true, response: "reply #2 to: And you?", session_id: id, message_count: 2 });
  });

  it("sends the template prompt, the settings and the history in order", async () => {
    const id = await createSession(harness.api, "socratic-tutor");
    await harness.api.call("POST", ROUTES.message(id), { message: "What is 2+2?" });
    await harness.api.call("POST", ROUTES.message(id), { message: "Is it 4?" });
    const sent = harness.fake.requests[1]?.body;
    const tutor = templates["socratic-tutor"]!;
    expect(sent).toMatchObject({
      model: GENERATION_DEFAULTS.model,
      temperature: tutor.temperature,
      max_tokens: tutor.max_tokens,
      presence_penalty: tutor.presence_penalty,
      frequency_penalty: tutor.frequency_penalty,
    });
    expect(sent?.messages).toEqual([
      { role: "system", content: tutor.personalityPrompt },
      { role: "user", content: "What is 2+2?" },
      { role: "assistant", content: "reply #1 to: What is 2+2?" },
      { role: "user", content: "Is it 4?" },
    ]);
    expect(harness.fake.requests[0]?.headers.authorization).toBe("Bearer sk-test-key");
  });

  it("applies the defaults where a template sets nothing", async () => {
    const id = await createSession(harness.api, "sarcastic-critic");
    await harness.api.call("POST", ROUTES.message(id), { message: "Nice weather" });
    const critic = templates["sarcastic-critic"]!;
    expect(harness.fake.requests[0]?.body).toMatchObject({
      model: "gpt-4o-mini",
      temperature: critic.temperature,
      max_tokens: critic.max_tokens,
      presence_penalty: 0.6,
      frequency_penalty: 0.6,
    });
  });

  it("sends only the last N history messages (N from the template)", async () => {
    const id = await createSession(harness.api, "friendly-assistant");
    const window = templates["friendly-assistant"]!.context_window!;
    for (let i = 1; i <= 8; i += 1) await harness.api.call("POST", ROUTES.message(id), { message: `m${i}` });
    const last = harness.fake.requests.at(-1)!.body.messages;
    expect(last).toHaveLength(1 + window + 1);
    expect(last[0]?.role).toBe("system");
    // 7 stored exchanges = 14 messages; the window keeps the newest `window` of them, in order.
    const expected = Array.from({ length: 7 }, (_, i) => [
      { role: "user", content: `m${i + 1}` },
      { role: "assistant", content: `reply #${i + 1} to: m${i + 1}` },
    ])
      .flat()
      .slice(-window);
    expect(last.slice(1, -1)).toEqual(expected);
    expect(last.at(-1)).toEqual({ role: "user", content: "m8" });
  });

  it("keeps conversations apart", async () => {
    const a = await createSession(harness.api);
    const b = await createSession(harness.api, "sarcastic-critic");
    await harness.api.call("POST", ROUTES.message(a), { message: "for a" });
    await harness.api.call("POST", ROUTES.message(b), { message: "for b" });
    const toB = harness.fake.requests[1]!.body.messages;
    expect(toB.map((message) => message.content)).toEqual([templates["sarcastic-critic"]!.personalityPrompt, "for b"]);
  });

  it("ends a session with its stats, then refuses it with 410", async () => {
    // Known times, so the duration is a known figure; two minutes back, so time never runs backwards once the test lets go.
    const createdAt = Date.now() - 120_000;
    frozenAt = createdAt;
    const id = await createSession(harness.api);
    frozenAt += 30_000;
    await harness.api.call("POST", ROUTES.message(id), { message: "one" });
    await harness.api.call("POST", ROUTES.message(id), { message: "two" });
    frozenAt += 60_500;
    const ended = await harness.api.call("DELETE", ROUTES.end(id));
    expect(ended.status).toBe(200);
    expect(ended.body).toMatchObject({ success: true, message: "Session ended successfully", session_id: id, message_count: 2, status: "ended" });
    expect(ended.body).toMatchObject({
      duration_seconds: 90.5,
      created_at: new Date(createdAt).toISOString(),
      ended_at: new Date(createdAt + 90_500).toISOString(),
    });

    const late = await harness.api.call("POST", ROUTES.message(id), { message: "three" });
    expect(late.status).toBe(410);
    expect(late.body).toEqual({ success: false, error: { code: "SESSION_ENDED", message: expect.any(String) } });
    expect((await harness.api.call("DELETE", ROUTES.directEnd(id))).status).toBe(410);
    expect(harness.fake.requests).toHaveLength(2);
    expect(await harness.api.store.readSessionState(id)).toMatchObject({ status: "ended", message_count: 2 });
  });

  it("serves the direct function URLs", async () => {
    const created = await harness.api.call("POST", ROUTES.directCreate, { user_id: "u1", template_id: "socratic-tutor" });
    expect(created.status).toBe(201);
    const id = String(created.body.session_id);
    expect((await harness.api.call("POST", ROUTES.directMessage(id), { message: "hello" })).body.message_count).toBe(1);
    expect((await harness.api.call("DELETE", ROUTES.directEnd(id))).body).toMatchObject({ success: true, message_count: 1 });
  });

  it("stores the conversation in the documented shape", async () => {
    const id = await createSession(harness.api, "friendly-assistant", "user_777");
    await harness.api.call("POST", ROUTES.message(id), { message: "store me" });
    const store = harness.api.store;
    expect(await store.readSessionMeta(id)).toMatchObject({
      user_id: "user_777",
      template_id: "friendly-assistant",
      system_prompt: templates["friendly-assistant"]!.personalityPrompt,
    });
    expect(await store.readSessionState(id)).toMatchObject({ status: "active", message_count: 1 });
    const history = await recentMessages(store, id, 10);
    expect(history.map(({ role, content }) => ({ role, content }))).toEqual([
      { role: "user", content: "store me" },
      { role: "assistant", content: "reply #1 to: store me" },
    ]);
    expect(history.every((message) => typeof message.timestamp === "number")).toBe(true);
  });
}, { sharded: true });
