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
