import { randomUUID } from "node:crypto";
import { createServer, type OutgoingHttpHeaders, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { recentMessages } from "../support/recent-messages";
import type { Log, LogFields } from "../../src/log/log";
import { streamCall, type StreamedAnswer } from "../support/event-stream-client";
import type { Scripted } from "../support/fake-openai-server";
import { createSession, describeEachStore, ROUTES, startHarness, type Harness, type StoreKind } from "../support/http-harness";
import { flood, FLOOD_PIECE, rawProvider, type RawBody } from "../support/raw-provider";
import { describeWithRtdb } from "../support/rtdb";

interface Failure {
  readonly name: string;
  readonly step: Scripted;
  readonly status: number;
  readonly code: string;
  readonly retryAfter?: string;
}

const failures: Failure[] = [
  { name: "a 500", step: { kind: "status", status: 500 }, status: 502, code: "MODEL_ERROR" },
  { name: "a 401 (bad key)", step: { kind: "status", status: 401 }, status: 502, code: "MODEL_ERROR" },
  { name: "a 429 with Retry-After", step: { kind: "status", status: 429, headers: { "retry-after": "7" } }, status: 503, code: "MODEL_UNAVAILABLE", retryAfter: "7" },
  // At most a day, in whole seconds, whatever the provider asked for (1e+24, Infinity as numbers).
  { name: "a 429 with a Retry-After of 24 digits", step: { kind: "status", status: 429, headers: { "retry-after": "9".repeat(24) } }, status: 503, code: "MODEL_UNAVAILABLE", retryAfter: "86400" },
  { name: "a 429 with a Retry-After of 400 digits", step: { kind: "status", status: 429, headers: { "retry-after": "9".repeat(400) } }, status: 503, code: "MODEL_UNAVAILABLE", retryAfter: "86400" },
  { name: "a 503", step: { kind: "status", status: 503 }, status: 503, code: "MODEL_UNAVAILABLE" },
  { name: "no answer in time", step: { kind: "hang" }, status: 504, code: "MODEL_TIMEOUT" },
  { name: "a dropped connection", step: { kind: "drop" }, status: 503, code: "MODEL_UNAVAILABLE" },
  { name: "a malformed body", step: { kind: "raw", status: 200, body: "{not json" }, status: 502, code: "MODEL_ERROR" },
  { name: "a body without choices", step: { kind: "raw", status: 200, body: '{"id":"x","choices":[]}' }, status: 502, code: "MODEL_ERROR" },
  { name: "an empty reply", step: { kind: "reply", text: "" }, status: 502, code: "MODEL_ERROR" },
];

/** Captures log entries so the test can check that nothing secret reaches them. */
function capturingLog(entries: string[]): Log {
  const keep = (message: string, fields?: LogFields) => entries.push(JSON.stringify({ message, ...fields }));
  return { info: keep, warn: keep, error: keep };
}

describeEachStore("model failures", (kind) => {
  let harness: Harness;
  const logs: string[] = [];

  beforeAll(async () => {
    harness = await startHarness({ store: kind, env: { OPENAI_TIMEOUT_MS: "400" }, log: capturingLog(logs) });
  });
  afterAll(async () => harness.close());

  it.each(failures)("$name -> $status $code, nothing stored, the next message works", async (failure) => {
    const id = await createSession(harness.api);
    await harness.api.call("POST", ROUTES.message(id), { message: "before" });
    harness.fake.reset();
    harness.fake.enqueue(failure.step);

    const failed = await harness.api.call("POST", ROUTES.message(id), { message: "lost" });
    expect(failed.status).toBe(failure.status);
    expect(failed.body).toEqual({ success: false, error: { code: failure.code, message: expect.any(String) } });
    expect(failed.headers.get("retry-after")).toBe(failure.retryAfter ?? null);
    expect(failed.text).not.toMatch(/scripted|sk-test-key|stack/i);
    expect(await harness.api.store.readSessionState(id)).toMatchObject({ status: "active", message_count: 1 });

    const next = await harness.api.call("POST", ROUTES.message(id), { message: "after" });
    expect(next.status).toBe(200);
    expect(next.body.message_count).toBe(2);
    // The failed message left no trace in the context: no dangling user message.
    expect(harness.fake.requests.at(-1)!.body.messages.slice(1).map((message) => message.content)).toEqual([
      "before",
      expect.stringContaining("before"),
      "after",
    ]);
    expect((await recentMessages(harness.api.store, id, 10)).map((message) => message.content)).not.toContain("lost");
  });

  it("stores and flags a reply cut by the token limit", async () => {
    const id = await createSession(harness.api);
    harness.fake.enqueue({ kind: "reply", text: "This reply was cut", finishReason: "length" });
    const answer = await harness.api.call("POST", ROUTES.message(id), { message: "long question" });
    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({ response: "This reply was cut", truncated: true, message_count: 1 });
    expect((await recentMessages(harness.api.store, id, 2))[1]?.content).toBe("This reply was cut");
  });

  it("keeps keys and provider messages out of the logs", () => {
    expect(logs.length).toBeGreaterThan(0);
    expect(logs.join("\n")).not.toMatch(/sk-test-key|scripted|before|after|lost/);
  });
});

describe("model retries", () => {
  let harness: Harness;
  beforeAll(async () => {
    harness = await startHarness({ store: "memory", env: { OPENAI_MAX_RETRIES: "1", OPENAI_TIMEOUT_MS: "2000" } });
  });
  afterAll(async () => harness.close());

  it("retries a transient failure once and answers", async () => {
    const id = await createSession(harness.api);
    harness.fake.enqueue({ kind: "status", status: 503, headers: { "retry-after-ms": "50" } });
    const answer = await harness.api.call("POST", ROUTES.message(id), { message: "hello" });
    expect(answer.status).toBe(200);
    expect(harness.fake.requests).toHaveLength(2);
    expect(answer.body.message_count).toBe(1);
  });

  it("gives up after the configured retries", async () => {
    const id = await createSession(harness.api);
    harness.fake.reset();
    harness.fake.enqueue({ kind: "status", status: 500, headers: { "retry-after-ms": "10" } }, { kind: "status", status: 500, headers: { "retry-after-ms": "10" } });
    const answer = await harness.api.call("POST", ROUTES.message(id), { message: "hello" });
    expect(answer.status).toBe(502);
    expect(harness.fake.requests).toHaveLength(2);
  });
});

describeEachStore("a provider that ignores max_tokens", (kind) => {
  let harness: Harness;
  beforeAll(async () => {
    harness = await startHarness({ store: kind, env: { USER_TOKENS_PER_DAY: "20000" } });
  });
  afterAll(async () => harness.close());

  it("charges its reply at most max_tokens, so one reply cannot lock the user out for the day", async () => {
    const user = `user-${randomUUID()}`;
    const id = await createSession(harness.api, "friendly-assistant", user);
    // About 100 KB of words (some 25,000 tokens) for a template whose max_tokens is 50, no usage reported.
    harness.fake.enqueue({ kind: "reply", text: "lorem ipsum dolor sit amet ".repeat(4_000), usage: null });
    const answer = await harness.api.call("POST", ROUTES.message(id), { message: "hello" });
    expect(answer.status).toBe(200);
    expect(answer.body.usage).toMatchObject({ completion_tokens: 50, estimated: true });
    // That session's next prompt would carry the reply: more than the day allows, so it is refused...
    const next = await harness.api.call("POST", ROUTES.message(id), { message: "and again" });
    expect(next.status).toBe(429);
    expect(next.body.error?.code).toBe("TOKEN_LIMIT");
    // ...but the user's day is not spent: another conversation goes on.
    const other = await createSession(harness.api, "friendly-assistant", user);
    expect((await harness.api.call("POST", ROUTES.message(other), { message: "hello" })).status).toBe(200);
  });
});

const completionNamed = (model: string, text: string) =>
  JSON.stringify({ id: "x", object: "chat.completion", created: 1, model, choices: [{ index: 0, message: { role: "assistant", content: text }, finish_reason: "stop" }], usage: { prompt_tokens: 20, completion_tokens: 3, total_tokens: 23 } });

describeEachStore("a provider answering under a model name Object.prototype holds", (kind) => {
  let harness: Harness;
  beforeAll(async () => {
    harness = await startHarness({ store: kind });
  });
  afterAll(async () => harness.close());
  beforeEach(() => { harness.fake.reset(); });

  it.each(["constructor", "toString", "__proto__"])("a reply from a model named %s is stored with tokens and no cost, and the user's next message works", async (model) => {
    const user = `user-${randomUUID()}`;
    const id = await createSession(harness.api, "friendly-assistant", user);
    harness.fake.enqueue({ kind: "raw", status: 200, body: completionNamed(model, "Hello from an unlisted model.") });
    const first = await harness.api.call("POST", ROUTES.message(id), { message: "Hi" });
    // The provider is back to normal: the same session, and a new one of the same user.
    const second = await harness.api.call("POST", ROUTES.message(id), { message: "And again" });
    const created = await harness.api.call("POST", ROUTES.create, { user_id: user, template_id: "friendly-assistant" });
    const third = created.status === 201 ? await harness.api.call("POST", ROUTES.message(String(created.body.session_id)), { message: "Another session" }) : created;
    const seen = (answer: typeof first) => ({ status: answer.status, code: (answer.body.error as { code?: string } | undefined)?.code, cost: (answer.body.usage as { cost_usd?: unknown } | undefined)?.cost_usd });
    expect({ first: seen(first), second: seen(second), third: seen(third) }).toEqual({
      first: { status: 200, code: undefined, cost: undefined },
      second: { status: 200, code: undefined, cost: expect.any(Number) },
      third: { status: 200, code: undefined, cost: expect.any(Number) },
    });
  });
});

/**
 * A provider (or a proxy in front of it) that sends the whole reply, its finish reason and its
 * usage, then drops the connection before `data: [DONE]` (the chunked body cut without its last
 * chunk: undici's "terminated"). Nothing of the reply is missing, and the provider bills it.
 */
function completeThenReset(response: ServerResponse): void {
  const frame = (fields: Record<string, unknown>) => `data: ${JSON.stringify({ id: "chatcmpl-1", object: "chat.completion.chunk", model: "gpt-4o-mini", ...fields })}\n\n`;
  response.writeHead(200, { "content-type": "text/event-stream" });
  response.write(frame({ choices: [{ index: 0, delta: { role: "assistant", content: "Hello" }, finish_reason: null }] }));
  response.write(frame({ choices: [{ index: 0, delta: { content: " world" }, finish_reason: null }] }));
  response.write(frame({ choices: [{ index: 0, delta: {}, finish_reason: "stop" }] }));
  // The usage chunk has left: the connection is then cut, [DONE] never comes.
  response.write(frame({ choices: [], usage: { prompt_tokens: 30, completion_tokens: 2, total_tokens: 32 } }), () => response.destroy());
}

const deltaText = (answer: StreamedAnswer) => answer.events.filter((event) => event.event === "delta").map((event) => (event.data as { text: string }).text).join("");

/** A harness on `kind` whose provider is `completeThenReset`, with one retry allowed; `calls` counts the model calls. */
function withCuttingProvider(kind: StoreKind): { harness: () => Harness; calls: () => number } {
  let harness: Harness;
  let provider: Server;
  let calls = 0;
  beforeAll(async () => {
    provider = createServer((request, response) => {
      request.resume();
      request.on("end", () => {
        calls += 1;
        completeThenReset(response);
      });
    });
    await new Promise<void>((resolve) => provider.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(provider.address() as AddressInfo).port}/v1`;
    harness = await startHarness({ store: kind, env: { OPENAI_BASE_URL: url, OPENAI_MAX_RETRIES: "1", OPENAI_MAX_RETRY_WAIT_MS: "100" } });
  });
  afterAll(async () => {
    await harness.close();
    provider.closeAllConnections();
    await new Promise((resolve) => provider.close(resolve));
  });
  beforeEach(() => { calls = 0; });
  return { harness: () => harness, calls: () => calls };
}

describeEachStore("a provider stream cut after its finish reason and usage, before [DONE]", (kind) => {
  const { harness, calls } = withCuttingProvider(kind);

  it("a streamed reply whose finish reason arrived is stored and ends with done, after the whole text", async () => {
    const id = await createSession(harness().api);
    const answer = await streamCall(harness().api.baseUrl, ROUTES.message(id), { message: "hi" });
    expect(deltaText(answer)).toBe("Hello world");
    expect(answer.events.at(-1)).toMatchObject({ event: "done", data: { success: true, response: "Hello world", message_count: 1 } });
    expect(calls()).toBe(1);
    expect((await recentMessages(harness().api.store, id, 10)).map((message) => message.content)).toEqual(["hi", "Hello world"]);
  });
});

// On a database the model is streamed for the live partial even when the client asked for JSON.
describeWithRtdb("a provider stream cut after its finish reason and usage, before [DONE], under a JSON request [Realtime Database]", () => {
  const { harness, calls } = withCuttingProvider("rtdb");

  it("takes the complete reply once, without a second, billed, model call", async () => {
    const id = await createSession(harness().api);
    const answer = await harness().api.call("POST", ROUTES.message(id), { message: "hi" });
    expect({ status: answer.status, calls: calls() }).toEqual({ status: 200, calls: 1 });
    expect(answer.body).toMatchObject({ success: true, response: "Hello world", message_count: 1 });
  });
});

const chunk = (fields: object) => `data: ${JSON.stringify(fields)}\n\n`;
const SNAPSHOT = "gpt-4o-mini-2024-07-18";
const GREETING = "Hello! How can I help today?";

/** Azure OpenAI's stream: a prompt-filter chunk with `model: ""` first, then the reply under its dated snapshot name. */
const azureStream =
  chunk({ id: "", object: "", created: 0, model: "", choices: [], prompt_filter_results: [{ prompt_index: 0, content_filter_results: {} }] }) +
  chunk({ id: "c1", object: "chat.completion.chunk", created: 1, model: SNAPSHOT, choices: [{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }] }) +
  chunk({ id: "c1", object: "chat.completion.chunk", created: 1, model: SNAPSHOT, choices: [{ index: 0, delta: { content: GREETING }, finish_reason: null }] }) +
  chunk({ id: "c1", object: "chat.completion.chunk", created: 1, model: SNAPSHOT, choices: [{ index: 0, delta: {}, finish_reason: "stop" }] }) +
  "data: [DONE]\n\n";

/** A stream whose choice never names a finish reason, ended by `[DONE]` (Gemini proxies, LocalAI, some gateways). */
const noFinishStream =
  chunk({ model: "gpt-4o-mini", choices: [{ index: 0, delta: { role: "assistant", content: "" } }] }) +
  chunk({ model: "gpt-4o-mini", choices: [{ index: 0, delta: { content: GREETING } }] }) +
  "data: [DONE]\n\n";

describeEachStore("a provider whose answers are unusual, or never end", (kind) => {
  let harness: Harness;
  let provider: Awaited<ReturnType<typeof rawProvider>>;
  /** What the provider writes to the next calls, and as which content type. */
  let answer: RawBody = async (write) => { await write(azureStream); };
  let contentType = "text/event-stream";
  let calls = 0;

  beforeAll(async () => {
    provider = await rawProvider((...args) => {
      calls += 1;
      return answer(...args);
    }, () => contentType);
    harness = await startHarness({ store: kind, env: { OPENAI_BASE_URL: provider.baseUrl, USER_TOKENS_PER_DAY: "0", OPENAI_MAX_RETRIES: "1", OPENAI_MAX_RETRY_WAIT_MS: "100" } });
  });
  afterAll(async () => {
    await harness.close();
    await provider.stop();
  });
  beforeEach(() => {
    calls = 0;
    contentType = "text/event-stream";
  });

  const session = () => createSession(harness.api, "friendly-assistant", `user-${randomUUID()}`);

  it("prices an Azure reply, whose stream opens with a blank model name, as the model its later chunks name: cost_usd in the done event and the stored exchange", async () => {
    answer = async (write) => { await write(azureStream); };
    const id = await session();
    const { events } = await streamCall(harness.api.baseUrl, ROUTES.message(id), { message: "Stream it" });
    const done = events.find((event) => event.event === "done");
    const usage = (done?.data as { usage?: { cost_usd?: number } } | undefined)?.usage;
    const stored = await harness.api.store.readExchange(id, 1);
    expect({ answered: typeof usage?.cost_usd, stored: typeof stored?.assistant.usage?.cost_usd }).toEqual({ answered: "number", stored: "number" });
  });

  it("stores a reply whose stream ended with [DONE] and no finish reason, and ends the stream with done, after one model call", async () => {
    answer = async (write) => { await write(noFinishStream); };
    const id = await session();
    const { events } = await streamCall(harness.api.baseUrl, ROUTES.message(id), { message: "Stream it" });
    expect(events.map((event) => event.event).filter((name) => name !== "delta")).toEqual(["done"]);
    expect(calls).toBe(1);
    expect((await harness.api.store.readExchange(id, 1))?.assistant.content).toBe(GREETING);
  });

  it("ends a streamed reply that never ends with an error event MODEL_ERROR, after one model call, and stores nothing", async () => {
    const event = chunk({ model: "gpt-4o-mini", choices: [{ index: 0, delta: { content: FLOOD_PIECE }, finish_reason: null }] });
    answer = (write, _cut, gone) => flood(write, gone, event);
    const id = await session();
    const before = provider.sent();
    const { events } = await streamCall(harness.api.baseUrl, ROUTES.message(id), { message: "Stream it" });
    expect(events.at(-1)).toMatchObject({ event: "error", data: { success: false, error: { code: "MODEL_ERROR" } } });
    expect(calls).toBe(1);
    expect(provider.sent() - before).toBeLessThan(16 * 2 ** 20);
    expect(await harness.api.store.readExchange(id, 1)).toBeNull();
  });

  it("answers 502 MODEL_ERROR to a message whose provider's JSON answer never ends, after one model call", async () => {
    contentType = "application/json";
    answer = async (write, _cut, gone) => {
      if (await write('{"model":"gpt-4o-mini","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"')) await flood(write, gone);
    };
    const id = await session();
    const before = provider.sent();
    const answered = await harness.api.call("POST", ROUTES.message(id), { message: "hello" });
    expect({ status: answered.status, code: answered.body.error?.code, calls }).toEqual({ status: 502, code: "MODEL_ERROR", calls: 1 });
    expect(provider.sent() - before).toBeLessThan(16 * 2 ** 20);
  });
});

/** An error as OpenAI sends it once a stream's 200 went out (go-openai #396), then `[DONE]`. */
const streamError = (error: Record<string, unknown>) =>
  `${chunk({ error: { message: "The server had an error while processing your request. Sorry about that!", param: null, code: null, ...error } })}data: [DONE]\n\n`;
const SERVER_ERROR = streamError({ type: "server_error" });
const WHOLE_REPLY =
  chunk({ model: "gpt-4o-mini", choices: [{ index: 0, delta: { role: "assistant", content: "Hello" }, finish_reason: null }] }) +
  chunk({ model: "gpt-4o-mini", choices: [{ index: 0, delta: { content: " there." }, finish_reason: null }] }) +
  chunk({ model: "gpt-4o-mini", choices: [{ index: 0, delta: {}, finish_reason: "stop" }] }) +
  "data: [DONE]\n\n";

/** A harness on `kind` whose provider streams `answers[n]` to its call n (the last one again once they run out), with one retry allowed. */
function withScriptedStreams(kind: StoreKind): { harness: () => Harness; calls: () => number; answer: (...bodies: string[]) => void } {
  let harness: Harness;
  let provider: Awaited<ReturnType<typeof rawProvider>>;
  let answers: string[] = [WHOLE_REPLY];
  let calls = 0;
  beforeAll(async () => {
    provider = await rawProvider(async (write) => {
      calls += 1;
      await write(answers[Math.min(calls, answers.length) - 1]!);
    });
    harness = await startHarness({ store: kind, env: { OPENAI_BASE_URL: provider.baseUrl, OPENAI_MAX_RETRIES: "1", OPENAI_MAX_RETRY_WAIT_MS: "100" } });
  });
  afterAll(async () => {
    await harness.close();
    await provider.stop();
  });
  beforeEach(() => { calls = 0; });
  return { harness: () => harness, calls: () => calls, answer: (...bodies) => { answers = bodies; } };
}

describeEachStore("a provider's error event inside its stream (after its 200)", (kind) => {
  const { harness, calls, answer } = withScriptedStreams(kind);
  const session = () => createSession(harness().api, "friendly-assistant", `user-${randomUUID()}`);

  it("retries a server error before any text, as the 5xx it stands for, and streams and stores the retry's reply", async () => {
    answer(SERVER_ERROR, WHOLE_REPLY);
    const id = await session();
    const streamed = await streamCall(harness().api.baseUrl, ROUTES.message(id), { message: "Hi" });
    expect({ status: streamed.status, text: deltaText(streamed), last: streamed.events.at(-1)?.event, calls: calls() }).toEqual({ status: 200, text: "Hello there.", last: "done", calls: 2 });
    expect((await harness().api.store.readExchange(id, 1))?.assistant.content).toBe("Hello there.");
  });

  it("answers a server error 503 MODEL_UNAVAILABLE (a provider failure a client may retry) once the retries are spent, not 502 MODEL_ERROR", async () => {
    answer(SERVER_ERROR);
    const id = await session();
    const streamed = await streamCall(harness().api.baseUrl, ROUTES.message(id), { message: "Hi" });
    expect({ status: streamed.status, code: streamed.json?.error?.code, calls: calls() }).toEqual({ status: 503, code: "MODEL_UNAVAILABLE", calls: 2 });
  });

  it("ends the stream with an error event MODEL_UNAVAILABLE for a server error after the first delta, after one call, and stores nothing", async () => {
    answer(chunk({ model: "gpt-4o-mini", choices: [{ index: 0, delta: { content: "Hello" }, finish_reason: null }] }) + SERVER_ERROR);
    const id = await session();
    const streamed = await streamCall(harness().api.baseUrl, ROUTES.message(id), { message: "Hi" });
    const last = streamed.events.at(-1);
    expect({ text: deltaText(streamed), last: { event: last?.event, data: last?.data }, calls: calls() }).toEqual({
      text: "Hello",
      last: { event: "error", data: { success: false, error: { code: "MODEL_UNAVAILABLE", message: expect.any(String) } } },
      calls: 1,
    });
    expect(await harness().api.store.readExchange(id, 1)).toBeNull();
  });

  it("answers a refusal in the stream (Azure's content filter) 502 MODEL_ERROR, after one call", async () => {
    answer(streamError({ type: null, code: "content_filter" }));
    const id = await session();
    const streamed = await streamCall(harness().api.baseUrl, ROUTES.message(id), { message: "Hi" });
    expect({ status: streamed.status, code: streamed.json?.error?.code, calls: calls() }).toEqual({ status: 502, code: "MODEL_ERROR", calls: 1 });
  });
});

// On a database the model is streamed for the live partial even when the client asked for JSON.
describeWithRtdb("a provider's error event inside its stream, under a JSON request [Realtime Database]", () => {
  const { harness, calls, answer } = withScriptedStreams("rtdb");

  it("retries a server error, and answers 200 with the retry's reply, as a 5xx is", async () => {
    answer(SERVER_ERROR, WHOLE_REPLY);
    const id = await createSession(harness().api, "friendly-assistant", `user-${randomUUID()}`);
    const answered = await harness().api.call("POST", ROUTES.message(id), { message: "Hi" });
    expect({ status: answered.status, code: answered.body.error?.code, response: answered.body.response, calls: calls() }).toEqual({ status: 200, code: undefined, response: "Hello there.", calls: 2 });
  });
});

/**
 * A provider whose answer's body breaks off: each call gets `answer`'s status and headers and a
 * body announced whole, cut after a few bytes (a reset, a proxy dropping the connection), unless
 * `answer.whole` is the body to send on this call. `calls` counts the calls.
 */
describeEachStore("a provider whose answer breaks off mid-body", (kind) => {
  let harness: Harness;
  let server: Server;
  let calls = 0;
  let answer: (call: number) => { status: number; headers?: OutgoingHttpHeaders; body: string; whole?: boolean } = () => ({ status: 429, body: "" });

  beforeAll(async () => {
    server = createServer((request, response) => {
      request.resume();
      request.on("end", () => {
        calls += 1;
        const { status, headers, body, whole } = answer(calls);
        response.writeHead(status, { "content-type": "application/json", "content-length": String(Buffer.byteLength(body)), ...headers });
        if (whole) response.end(body);
        else response.write(body.slice(0, 20), () => { response.destroy(); });
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
    harness = await startHarness({ store: kind, env: { OPENAI_BASE_URL: baseUrl, OPENAI_MAX_RETRIES: "2", OPENAI_MAX_RETRY_WAIT_MS: "200" } });
  });
  afterAll(async () => {
    await harness.close();
    await new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => { resolve(); }); });
  });
  beforeEach(() => { calls = 0; });

  const session = () => createSession(harness.api, "friendly-assistant", `user-${randomUUID()}`);
  const errorBody = JSON.stringify({ error: { message: "Rate limit reached for requests", type: "requests" } });

  it("answers a 429 asking for longer than OPENAI_MAX_RETRY_WAIT_MS with 503 MODEL_UNAVAILABLE and its Retry-After, after one call", async () => {
    answer = () => ({ status: 429, headers: { "retry-after": "30" }, body: errorBody });
    const id = await session();
    const failed = await harness.api.call("POST", ROUTES.message(id), { message: "hello" });
    expect({ status: failed.status, code: failed.body.error?.code, retryAfter: failed.headers.get("retry-after"), calls }).toEqual({
      status: 503,
      code: "MODEL_UNAVAILABLE",
      retryAfter: "30",
      calls: 1,
    });
  });

  it("answers a 401 (a bad key) with 502 MODEL_ERROR, after one call", async () => {
    answer = () => ({ status: 401, body: errorBody });
    const id = await session();
    const failed = await harness.api.call("POST", ROUTES.message(id), { message: "hello" });
    expect({ status: failed.status, code: failed.body.error?.code, calls }).toEqual({ status: 502, code: "MODEL_ERROR", calls: 1 });
  });

  it("retries a JSON completion cut partway (a lost connection) and answers 200 with the retry's reply", async () => {
    const completion = JSON.stringify({ model: "gpt-4o-mini", choices: [{ index: 0, message: { role: "assistant", content: "Hello again." }, finish_reason: "stop" }] });
    answer = (call) => ({ status: 200, body: completion, whole: call > 1 });
    const id = await session();
    const answered = await harness.api.call("POST", ROUTES.message(id), { message: "hello" });
    expect({ status: answered.status, code: answered.body.error?.code, response: answered.body.response, calls }).toEqual({
      status: 200,
      code: undefined,
      response: "Hello again.",
      calls: 2,
    });
  });
});
