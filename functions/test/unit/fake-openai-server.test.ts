import { fakeUsage, FakeOpenAiServer } from "../support/fake-openai-server";

// Other suites compute expected usage with fakeUsage: its formula and when the fake reports it are a contract.

const messages = [
  { role: "system", content: "be brief" },
  { role: "user", content: "hello" },
];

describe("fakeUsage", () => {
  it("counts a token per 4 characters rounded up, plus 4 per message and 3 for the reply", () => {
    // (ceil(8/4) + 4) + (ceil(5/4) + 4) + 3 = 6 + 6 + 3; ceil(8/4) = 2.
    expect(fakeUsage({ messages }, "hi there")).toEqual({ prompt_tokens: 15, completion_tokens: 2 });
    expect(fakeUsage({ messages: [] }, "")).toEqual({ prompt_tokens: 3, completion_tokens: 0 });
  });
});

describe("the fake server's usage reports", () => {
  let fake: FakeOpenAiServer;
  beforeAll(async () => {
    fake = await FakeOpenAiServer.start();
  });
  afterAll(async () => fake.stop());
  beforeEach(() => { fake.reset(); });

  const post = (body: Record<string, unknown>) =>
    fetch(`${fake.baseUrl}/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "gpt-test", messages, ...body }) });

  /** The JSON of each `data:` event before `[DONE]`. */
  async function events(response: Response): Promise<Record<string, unknown>[]> {
    const lines = (await response.text()).split("\n").filter((line) => line.startsWith("data: ") && line !== "data: [DONE]");
    return lines.map((line) => JSON.parse(line.slice("data: ".length)) as Record<string, unknown>);
  }

  it("reports usage, with its total, in a non-streamed reply", async () => {
    fake.enqueue({ kind: "reply", text: "hi there" });
    const body = (await (await post({})).json()) as Record<string, unknown>;
    expect(body.usage).toEqual({ prompt_tokens: 15, completion_tokens: 2, total_tokens: 17 });
  });

  it("reports no usage in a stream that did not ask for it", async () => {
    fake.enqueue({ kind: "stream", chunks: ["hi", " there"] });
    const chunks = await events(await post({ stream: true }));
    expect(chunks.length).toBeGreaterThan(0);
    for (const chunk of chunks) expect(chunk).not.toHaveProperty("usage");
  });

  it("reports usage in a last chunk without choices when the stream asked for it, and null before", async () => {
    fake.enqueue({ kind: "stream", chunks: ["hi", " there"] });
    const chunks = await events(await post({ stream: true, stream_options: { include_usage: true } }));
    const last = chunks.at(-1);
    expect(last).toMatchObject({ choices: [], usage: { prompt_tokens: 15, completion_tokens: 2, total_tokens: 17 } });
    for (const chunk of chunks.slice(0, -1)) expect(chunk.usage).toBeNull();
  });

  it("reports none, even when asked, for a script with usage: null", async () => {
    fake.enqueue({ kind: "stream", chunks: ["hi"], usage: null }, { kind: "reply", text: "hi", usage: null });
    for (const chunk of await events(await post({ stream: true, stream_options: { include_usage: true } }))) expect(chunk).not.toHaveProperty("usage");
    expect(await (await post({})).json()).not.toHaveProperty("usage");
  });
});

describe("the fake server's moderations endpoint", () => {
  let fake: FakeOpenAiServer;
  beforeAll(async () => {
    fake = await FakeOpenAiServer.start();
  });
  afterAll(async () => fake.stop());
  beforeEach(() => { fake.reset(); });

  const moderate = (input: string) =>
    fetch(`${fake.baseUrl}/moderations`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "omni-moderation-latest", input }) });

  it("answers a clean verdict when unscripted, shaped as OpenAI's (every category listed, false)", async () => {
    const body = (await (await moderate("hello")).json()) as { model: string; results: { flagged: boolean; categories: Record<string, boolean> }[] };
    expect(body.model).toBe("omni-moderation-latest");
    expect(body.results).toHaveLength(1);
    expect(body.results[0]?.flagged).toBe(false);
    expect(Object.keys(body.results[0]?.categories ?? {})).toEqual(expect.arrayContaining(["harassment", "hate", "self-harm", "sexual", "violence"]));
    expect(Object.values(body.results[0]?.categories ?? {}).every((flagged) => !flagged)).toBe(true);
  });

  it("answers from its own script, in order: flagged with categories, then a status", async () => {
    fake.enqueueModeration({ kind: "verdict", flagged: true, categories: ["hate"] }, { kind: "status", status: 404 });
    const flagged = (await (await moderate("a")).json()) as { results: { flagged: boolean; categories: Record<string, boolean> }[] };
    expect(flagged.results[0]?.flagged).toBe(true);
    expect(Object.entries(flagged.results[0]?.categories ?? {}).filter(([, on]) => on)).toEqual([["hate", true]]);
    expect((await moderate("b")).status).toBe(404);
  });

  it("records moderations apart from chat completions, and does not take the chat script", async () => {
    fake.enqueue({ kind: "reply", text: "from the chat script" });
    await moderate("checked text");
    expect(fake.requests).toHaveLength(0);
    expect(fake.moderationRequests.map((request) => request.body)).toEqual([{ model: "omni-moderation-latest", input: "checked text" }]);
    const chat = await fetch(`${fake.baseUrl}/chat/completions`, { method: "POST", body: JSON.stringify({ model: "m", messages: [] }) });
    expect(((await chat.json()) as { choices: { message: { content: string } }[] }).choices[0]?.message.content).toBe("from the chat script");
  });

  it("hangs when told to, until released, and is waited for by count", async () => {
    fake.enqueueModeration({ kind: "hang" });
    const answer = moderate("slow").then(() => "answered", () => "cut");
    await fake.awaitModerationRequests(1);
    fake.releaseHanging();
    expect(await answer).toBe("cut");
    await fake.noRequestHanging();
  });

  it("forgets its script and requests on reset", async () => {
    fake.enqueueModeration({ kind: "status", status: 500 });
    await moderate("x");
    fake.enqueueModeration({ kind: "status", status: 500 });
    fake.reset();
    expect(fake.moderationRequests).toHaveLength(0);
    expect((await moderate("y")).status).toBe(200);
  });
});
