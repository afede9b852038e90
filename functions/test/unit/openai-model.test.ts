import { createServer, type OutgoingHttpHeaders } from "node:http";
import { createServer as createTcpServer, type AddressInfo } from "node:net";
import OpenAI from "openai";
import type { CompletionRequest } from "../../src/llm/chat-model";
import { MAX_RETRY_AFTER_MS, ModelError } from "../../src/llm/errors";
import { createOpenAiModel, maxReplyChars, maxStreamChars, retryAfter, toModelError } from "../../src/llm/openai-model";
import { withRetries } from "../../src/llm/retrying-model";
import { MAX_EVENT_CHARS } from "../../src/llm/server-sent-events";
import { fakeUsage, FakeOpenAiServer } from "../support/fake-openai-server";
import { HELLO_REQUEST } from "../support/fixtures";
import { flood, FLOOD_PIECE, rawProvider, type RawBody } from "../support/raw-provider";

const NOW = Date.parse("2025-01-01T00:00:00Z");
const SECRET = "sk-secret-0123456789";

const headers = (values: Record<string, string>) => new Headers(values);

describe("retryAfter", () => {
  it("reads delta seconds as milliseconds", () => {
    expect(retryAfter(headers({ "retry-after": "7" }), NOW)).toBe(7_000);
    expect(retryAfter(headers({ "retry-after": "0" }), NOW)).toBe(0);
    expect(retryAfter(headers({ "retry-after": " 120 " }), NOW)).toBe(120_000);
  });

  it("reads retry-after-ms as it is, rounding a fraction up", () => {
    expect(retryAfter(headers({ "retry-after-ms": "1500" }), NOW)).toBe(1_500);
    expect(retryAfter(headers({ "retry-after-ms": "50" }), NOW)).toBe(50);
    expect(retryAfter(headers({ "retry-after-ms": "0" }), NOW)).toBe(0);
    expect(retryAfter(headers({ "retry-after-ms": "2500.2" }), NOW)).toBe(2_501);
  });

  it("prefers retry-after-ms over retry-after", () => {
    expect(retryAfter(headers({ "retry-after-ms": "3000", "retry-after": "60" }), NOW)).toBe(3_000);
  });

  it.each(["soon", "-5", "1e3", ""])("falls back to retry-after when retry-after-ms is %p", (value) => {
    expect(retryAfter(headers({ "retry-after-ms": value, "retry-after": "9" }), NOW)).toBe(9_000);
  });

  it("reads an HTTP date relative to the injected now", () => {
    expect(retryAfter(headers({ "retry-after": "Wed, 01 Jan 2025 00:00:30 GMT" }), NOW)).toBe(30_000);
    expect(retryAfter(headers({ "retry-after": "Wed, 01 Jan 2025 00:00:30 GMT" }), NOW + 10_500)).toBe(19_500);
    expect(retryAfter(headers({ "retry-after": "Wed, 01 Jan 2025 00:02:00 GMT" }), NOW)).toBe(120_000);
  });

  it("answers 0 for an HTTP date in the past", () => {
    expect(retryAfter(headers({ "retry-after": "Tue, 31 Dec 2024 23:59:00 GMT" }), NOW)).toBe(0);
  });

  it("answers undefined without headers or without either header", () => {
    expect(retryAfter(undefined, NOW)).toBeUndefined();
    expect(retryAfter(headers({}), NOW)).toBeUndefined();
    expect(retryAfter(headers({ "x-request-id": "abc" }), NOW)).toBeUndefined();
  });

  it("answers undefined for an IMF-fixdate out of range, which Date.parse reads as NaN", () => {
    expect(retryAfter(headers({ "retry-after": "Wed, 01 Jan 2025 99:99:99 GMT" }), NOW)).toBeUndefined();
  });

  it.each(["soon", "12abc", "in 5 minutes", "", "1.5"])("answers undefined for the garbage %p", (value) => {
    expect(retryAfter(headers({ "retry-after": value }), NOW)).toBeUndefined();
  });

  it.each(["-1", "foo 1", "tomorrow 5", "2025-01-01T00:00:30Z", "Wednesday, 01-Jan-25 00:00:30 GMT", "Wed Jan  1 00:00:30 2025", "Wed, 01 Jan 2025 00:00:30 +0000"])(
    "answers undefined for %p, which is no IMF-fixdate though Date.parse may read it",
    (value) => {
      expect(retryAfter(headers({ "retry-after": value }), NOW)).toBeUndefined();
    },
  );
});

describe("toModelError", () => {
  const apiError = (status: number, extra: Record<string, string> = {}) =>
    OpenAI.APIError.generate(status, { error: { message: `provider says ${SECRET}`, type: "x" } }, `provider says ${SECRET}`, headers(extra));

  it.each([
    [429, "unavailable", true],
    [503, "unavailable", true],
    [529, "unavailable", true],
    [408, "timeout", true],
    [504, "timeout", true],
    [400, "bad_response", false],
    [401, "bad_response", false],
    [403, "bad_response", false],
    [404, "bad_response", false],
    [409, "bad_response", false],
    [422, "bad_response", false],
    [500, "bad_response", true],
    [502, "bad_response", true],
  ] as const)("maps status %i to %s, retryable: %p", (status, failure, retryable) => {
    const error = toModelError(apiError(status));
    expect(error).toBeInstanceOf(ModelError);
    expect(error.failure).toBe(failure);
    expect(error.retryable).toBe(retryable);
  });

  it.each([400, 401, 403, 404, 409, 422, 500, 502])("names status %i in a bad_response", (status) => {
    expect(toModelError(apiError(status)).message).toContain(String(status));
  });

  it("maps a connection timeout to a retryable timeout", () => {
    const error = toModelError(new OpenAI.APIConnectionTimeoutError());
    expect(error).toMatchObject({ failure: "timeout", retryable: true });
    expect(error.retryAfterMs).toBeUndefined();
  });

  it("maps a connection error to a retryable unavailable", () => {
    expect(toModelError(new OpenAI.APIConnectionError({ message: "x" }))).toMatchObject({ failure: "unavailable", retryable: true });
  });

  it("maps a status-less SDK error (as generate builds it without headers) to unavailable", () => {
    expect(toModelError(OpenAI.APIError.generate(undefined, undefined, "fetch failed", undefined))).toMatchObject({
      failure: "unavailable",
      retryable: true,
    });
  });

  it("carries the provider's wait in milliseconds", () => {
    expect(toModelError(apiError(429, { "retry-after": "7" }))).toMatchObject({ retryAfterMs: 7_000, retryAfterSeconds: 7 });
    expect(toModelError(apiError(503, { "retry-after-ms": "1200" }))).toMatchObject({ retryAfterMs: 1_200, retryAfterSeconds: 2 });
    expect(toModelError(apiError(504, { "retry-after": "3" }))).toMatchObject({ retryAfterMs: 3_000, retryAfterSeconds: 3 });
    expect(toModelError(apiError(500, { "retry-after": "2" }))).toMatchObject({ retryAfterMs: 2_000, retryable: true });
    expect(toModelError(apiError(400, { "retry-after": "2" }))).toMatchObject({ retryAfterMs: 2_000, retryable: false });
    expect(toModelError(apiError(429)).retryAfterMs).toBeUndefined();
  });

  it.each([
    ["a Retry-After of 24 digits", { "retry-after": "9".repeat(24) }],
    ["a Retry-After of 400 digits (Infinity as a number)", { "retry-after": "9".repeat(400) }],
    ["a retry-after-ms of 400 digits", { "retry-after-ms": "9".repeat(400) }],
    ["a Retry-After date in the year 9999", { "retry-after": "Fri, 31 Dec 9999 23:59:59 GMT" }],
  ])("carries at most a day's wait, in whole seconds, for %s", (_name, extra) => {
    expect(toModelError(apiError(429, extra))).toMatchObject({ retryAfterMs: MAX_RETRY_AFTER_MS, retryAfterSeconds: 86_400 });
  });

  it("keeps the SDK error as the cause but never its text in the message", () => {
    const sdkError = apiError(401);
    expect(sdkError.message).toContain(SECRET);
    const error = toModelError(sdkError);
    expect(error.cause).toBe(sdkError);
    expect(error.message).not.toContain(SECRET);
    expect(error.message).not.toContain("provider says");
  });

  it("maps anything else to a bad_response that is not retried, without its text", () => {
    const cause = new TypeError(`cannot read ${SECRET}`);
    const error = toModelError(cause);
    expect(error.failure).toBe("bad_response");
    expect(error.retryable).toBe(false);
    expect(error.cause).toBe(cause);
    expect(error.message).not.toContain(SECRET);
  });

  it("returns a ModelError unchanged", () => {
    const original = new ModelError("unavailable", "no model is configured", { retryAfterMs: 5_000, retryable: false });
    expect(toModelError(original)).toBe(original);
  });
});

describe("createOpenAiModel against an OpenAI-compatible server", () => {
  let fake: FakeOpenAiServer;
  beforeAll(async () => {
    fake = await FakeOpenAiServer.start();
  });
  afterAll(async () => fake.stop());
  beforeEach(() => { fake.reset(); });

  const model = (timeoutMs = 2_000) => createOpenAiModel({ apiKey: "sk-test-key", baseUrl: fake.baseUrl, timeoutMs });
  const request: CompletionRequest = {
    model: "gpt-test",
    messages: [
      { role: "system", content: "be brief" },
      { role: "user", content: "hello" },
    ],
    temperature: 0.3,
    max_tokens: 42,
    presence_penalty: 0.1,
    frequency_penalty: -0.2,
  };

  it("sends the request's fields and returns the reply", async () => {
    fake.enqueue({ kind: "reply", text: "hi there" });
    await expect(model().complete(request)).resolves.toEqual({ text: "hi there", truncated: false, model: "gpt-test", usage: fakeUsage(request, "hi there") });
    expect(fake.requests).toHaveLength(1);
    expect(fake.requests[0]?.headers.authorization).toBe("Bearer sk-test-key");
    expect(fake.requests[0]?.body).toMatchObject({
      model: "gpt-test",
      messages: request.messages,
      temperature: 0.3,
      max_tokens: 42,
      presence_penalty: 0.1,
      frequency_penalty: -0.2,
    });
  });

  it("reads the token usage the provider reports, and only its two counts", async () => {
    fake.enqueue({ kind: "reply", text: "hi", usage: { prompt_tokens: 1234, completion_tokens: 56 } });
    const completion = await model().complete(request);
    expect(completion.usage).toStrictEqual({ prompt_tokens: 1234, completion_tokens: 56 });
  });

  it("reports no usage when the provider sends none", async () => {
    fake.enqueue({ kind: "reply", text: "hi", usage: null });
    const completion = await model().complete(request);
    expect(completion).toStrictEqual({ text: "hi", truncated: false, model: "gpt-test" });
  });

  it.each([
    ["null", null],
    ["a string", "lots"],
    ["a negative count", { prompt_tokens: -1, completion_tokens: 2 }],
    ["a fractional count", { prompt_tokens: 3, completion_tokens: 2.5 }],
    ["a count as a string", { prompt_tokens: "3", completion_tokens: 2 }],
    ["a count missing", { prompt_tokens: 3 }],
  ])("ignores a usage block that is %s, and still answers", async (_name, usage) => {
    const body = { model: "gpt-test", choices: [{ message: { content: "fine" }, finish_reason: "stop" }], usage };
    fake.enqueue({ kind: "raw", status: 200, body: JSON.stringify(body) });
    const completion = await model().complete(request);
    expect(completion).toStrictEqual({ text: "fine", truncated: false, model: "gpt-test" });
  });

  it("answers as the model asked for when the provider names its model blank", async () => {
    const body = { model: "", choices: [{ message: { content: "fine" }, finish_reason: "stop" }] };
    fake.enqueue({ kind: "raw", status: 200, body: JSON.stringify(body) });
    await expect(model().complete({ ...request, model: "gpt-4o-mini" })).resolves.toStrictEqual({ text: "fine", truncated: false, model: "gpt-4o-mini" });
  });

  it("takes choice 0 for the reply when the provider sends several, in any order", async () => {
    const choices = [
      { index: 1, message: { content: "another answer, cut" }, finish_reason: "length" },
      { index: 0, message: { content: "the answer" }, finish_reason: "stop" },
    ];
    fake.enqueue({ kind: "raw", status: 200, body: JSON.stringify({ model: "gpt-test", choices }) });
    await expect(model().complete(request)).resolves.toStrictEqual({ text: "the answer", truncated: false, model: "gpt-test" });
  });

  it("never sends the caller's signal to the provider", async () => {
    await model().complete({ ...request, signal: new AbortController().signal });
    expect(Object.keys(fake.requests[0]?.body ?? {})).not.toContain("signal");
  });

  it("flags a reply cut at the token limit", async () => {
    fake.enqueue({ kind: "reply", text: "cut", finishReason: "length" });
    await expect(model().complete(request)).resolves.toMatchObject({ text: "cut", truncated: true });
  });

  it.each([
    ["an empty reply", { kind: "reply", text: "   " }],
    ["no choices", { kind: "raw", status: 200, body: '{"choices":[]}' }],
    ["a malformed body", { kind: "raw", status: 200, body: "{not json" }],
  ] as const)("answers a bad_response that is not retried to %s", async (_name, step) => {
    fake.enqueue(step);
    await expect(model().complete(request)).rejects.toMatchObject({ name: "ModelError", failure: "bad_response", retryable: false });
  });

  it("answers unavailable with Retry-After to a 429, without retrying it itself", async () => {
    fake.enqueue({ kind: "status", status: 429, headers: { "retry-after": "0" } });
    await expect(model().complete(request)).rejects.toMatchObject({ failure: "unavailable", retryable: true, retryAfterMs: 0 });
    expect(fake.requests).toHaveLength(1);
  });

  it("answers a retryable bad_response to a 500, without retrying it itself", async () => {
    fake.enqueue({ kind: "status", status: 500 });
    await expect(model().complete(request)).rejects.toMatchObject({ failure: "bad_response", retryable: true });
    expect(fake.requests).toHaveLength(1);
  });

  it("answers a bad_response that is not retried to a 400", async () => {
    fake.enqueue({ kind: "status", status: 400 });
    await expect(model().complete(request)).rejects.toMatchObject({ failure: "bad_response", retryable: false });
    expect(fake.requests).toHaveLength(1);
  });

  it.each([301, 302, 307, 308])("follows no redirect (%i): the prompt goes to no other host, and the call is a bad_response, not retried", async (status) => {
    const elsewhere = await FakeOpenAiServer.start();
    try {
      for (const stream of [false, true]) {
        fake.enqueue({ kind: "status", status, headers: { location: `${elsewhere.baseUrl}/chat/completions` } });
        const call = stream ? model().complete(request, { write: () => undefined }) : model().complete(request);
        await expect(call).rejects.toMatchObject({ failure: "bad_response", retryable: false, message: expect.stringContaining(`status ${status}`) });
      }
      expect({ here: fake.requests.length, elsewhere: elsewhere.requests.length }).toEqual({ here: 2, elsewhere: 0 });
    } finally {
      await elsewhere.stop();
    }
  });

  it("answers timeout when the server does not answer in time, after one attempt", async () => {
    fake.enqueue({ kind: "hang" });
    // A deadline a loaded machine's scheduling cannot reach before the request does: at 200 ms the
    // request once arrived after it, and took the next test's queued answer.
    await expect(model(1000).complete(request)).rejects.toMatchObject({ failure: "timeout", retryable: true });
    expect(fake.requests).toHaveLength(1);
  });

  it("answers unavailable when the connection drops, after one attempt", async () => {
    fake.enqueue({ kind: "drop" });
    await expect(model().complete(request)).rejects.toMatchObject({ failure: "unavailable", retryable: true });
    expect(fake.requests).toHaveLength(1);
  });

  describe("streaming (stream: true)", () => {
    const streamRequest = HELLO_REQUEST;

    /** The call, with the deltas it passed and when each came. */
    async function streamed(call: ReturnType<typeof model>) {
      const deltas: { text: string; at: number }[] = [];
      const started = performance.now();
      const result = await call.complete(streamRequest, { write: (text) => deltas.push({ text, at: performance.now() - started }) }).then(
        (completion) => ({ completion, error: undefined }),
        (error: unknown) => ({ completion: undefined, error }),
      );
      return { ...result, deltas, texts: deltas.map((delta) => delta.text), elapsed: performance.now() - started };
    }

    it("asks for a stream and passes each chunk on as it arrives; the chunks concatenate to the reply", async () => {
      fake.enqueue({ kind: "stream", chunks: ["Hel", "lo", " there"], chunkDelayMs: 60 });
      const { completion, texts, deltas } = await streamed(model());
      expect(fake.requests[0]?.body).toMatchObject({ model: "gpt-test", stream: true, max_tokens: 42 });
      expect(texts).toEqual(["Hel", "lo", " there"]);
      expect(completion).toEqual({ text: "Hello there", truncated: false, model: "gpt-test", usage: fakeUsage(streamRequest, "Hello there") });
      // Each delta came when its chunk did, not all at the end.
      expect(deltas[2]!.at - deltas[0]!.at).toBeGreaterThanOrEqual(100);
    });

    it("asks for usage in the stream and reads it from the last chunk, which has no choices", async () => {
      fake.enqueue({ kind: "stream", chunks: ["a", "b"], usage: { prompt_tokens: 321, completion_tokens: 7 } });
      const { completion, texts } = await streamed(model());
      expect(fake.requests[0]?.body.stream_options).toEqual({ include_usage: true });
      expect(texts).toEqual(["a", "b"]);
      expect(completion?.usage).toStrictEqual({ prompt_tokens: 321, completion_tokens: 7 });
    });

    it("reports no usage when the server ignores stream_options and sends none", async () => {
      fake.enqueue({ kind: "stream", chunks: ["a", "b"], usage: null });
      const { completion } = await streamed(model());
      expect(completion).toStrictEqual({ text: "ab", truncated: false, model: "gpt-test" });
    });

    it("ignores a malformed usage chunk, and still answers", async () => {
      fake.enqueue({ kind: "stream", chunks: ["a", "b"], usage: { prompt_tokens: -3, completion_tokens: 1.5 } });
      const { completion } = await streamed(model());
      expect(completion).toStrictEqual({ text: "ab", truncated: false, model: "gpt-test" });
    });

    it("flags a streamed reply cut at the token limit", async () => {
      fake.enqueue({ kind: "stream", chunks: ["cut"], finishReason: "length" });
      const { completion } = await streamed(model());
      expect(completion).toMatchObject({ text: "cut", truncated: true });
    });

    it("answers unavailable (retryable) when the stream breaks off after some chunks", async () => {
      fake.enqueue({ kind: "stream", chunks: ["one", " two", " three"], cutAfter: 2 });
      const { error, texts } = await streamed(model());
      expect(texts).toEqual(["one", " two"]);
      expect(error).toBeInstanceOf(ModelError);
      expect(error).toMatchObject({ failure: "unavailable", retryable: true });
    });

    it("answers timeout when the stream stalls past the deadline after its headers", async () => {
      fake.enqueue({ kind: "stream", chunks: ["slow", " and", " slower"], chunkDelayMs: 150 });
      const { error, texts, elapsed } = await streamed(model(250));
      expect(error).toMatchObject({ name: "ModelError", failure: "timeout" });
      expect(texts).toEqual(["slow"]);
      expect(elapsed).toBeLessThan(1_000);
    });

    it("answers timeout when no headers come in time", async () => {
      fake.enqueue({ kind: "hang" });
      const { error, texts } = await streamed(model(200));
      expect(error).toMatchObject({ failure: "timeout" });
      expect(texts).toEqual([]);
    });

    it("passes nothing on for a blank reply, which fails as a non-streamed one does", async () => {
      fake.enqueue({ kind: "stream", chunks: [" ", "\n", ""] });
      const { error, texts } = await streamed(model());
      expect(error).toMatchObject({ failure: "bad_response", retryable: false });
      expect(texts).toEqual([]);
    });

    it("holds a surrogate pair split across chunks together, and replaces a lone one as stored", async () => {
      fake.enqueue({ kind: "stream", chunks: ["a\ud83d", "\ude00b", "\ud800"] });
      const { completion, texts } = await streamed(model());
      expect(texts).toEqual(["a", "\ud83d\ude00b", "\ufffd"]);
      expect(completion?.text).toBe("a\u{1f600}b\ufffd");
      for (const text of texts) expect(text.isWellFormed()).toBe(true);
    });

    it("answers the provider's error statuses before the stream as a non-streamed call does", async () => {
      fake.enqueue({ kind: "status", status: 429, headers: { "retry-after": "3" } });
      const { error } = await streamed(model());
      expect(error).toMatchObject({ failure: "unavailable", retryAfterMs: 3_000 });
    });

    it("reads a whole JSON completion, passed on at once, from a server that ignores stream: true", async () => {
      fake.enqueue({ kind: "raw", status: 200, body: JSON.stringify({ model: "gpt-test", choices: [{ message: { content: "all at once" }, finish_reason: "length" }] }) });
      const { completion, texts } = await streamed(model());
      expect(completion).toEqual({ text: "all at once", truncated: true, model: "gpt-test" });
      expect(texts).toEqual(["all at once"]);
    });

    it("reads the usage of a whole JSON completion answering a streamed request", async () => {
      const usage = { prompt_tokens: 12, completion_tokens: 3, total_tokens: 15 };
      fake.enqueue({ kind: "raw", status: 200, body: JSON.stringify({ model: "gpt-test", choices: [{ message: { content: "all at once" }, finish_reason: "stop" }], usage }) });
      const { completion } = await streamed(model());
      expect(completion).toStrictEqual({ text: "all at once", truncated: false, model: "gpt-test", usage: { prompt_tokens: 12, completion_tokens: 3 } });
    });

    it.each([
      ["no choices", '{"choices":[]}'],
      ["a malformed body", "{not json"],
    ])("answers a bad_response that is not retried to a streamed request answered with %s", async (_name, body) => {
      fake.enqueue({ kind: "raw", status: 200, body });
      const { error, texts } = await streamed(model());
      expect(error).toMatchObject({ failure: "bad_response", retryable: false });
      expect(texts).toEqual([]);
    });
  });

  describe("a caller that gives up (its signal aborts)", () => {
    const abandoned = { name: "ModelError", failure: "timeout", retryable: false, message: "the call was abandoned" };

    /**
     * The call on a hanging server, its signal aborted once the server holds the request (not on a
     * timer: on a loaded machine the request may not have left in 50 ms, and a late one took the
     * next test's answer); the model's own deadline is far off. `elapsed`: from the abort.
     */
    async function abandonedCall(call: (request: CompletionRequest) => Promise<unknown>) {
      fake.enqueue({ kind: "hang" });
      const caller = new AbortController();
      const settled = call({ ...request, signal: caller.signal }).then(() => undefined, (error: unknown) => error);
      await fake.awaitRequests(1);
      const aborted = performance.now();
      caller.abort();
      const error = await settled;
      return { error, elapsed: performance.now() - aborted };
    }

    /**
     * Whether the server saw the connection closed within a second: nothing is left hanging. The
     * second's timer is cleared once the race is decided: left running, it held the jest worker
     * open after the suite ("a worker process has failed to exit gracefully").
     */
    const serverSawClose = async () => {
      let timer: NodeJS.Timeout | undefined;
      const gaveUp = new Promise<boolean>((wake) => { timer = setTimeout(() => { wake(false); }, 1_000); });
      try {
        return await Promise.race([fake.noRequestHanging().then(() => true), gaveUp]);
      } finally {
        clearTimeout(timer);
      }
    };

    it.each([
      ["a non-streamed call", (request: CompletionRequest) => model(10_000).complete(request)],
      ["a streamed call", (request: CompletionRequest) => model(10_000).complete(request, { write: () => undefined })],
    ])("rejects %s promptly, as abandoned and not retryable, and closes the connection", async (_name, call) => {
      const { error, elapsed } = await abandonedCall(call);
      expect(error).toBeInstanceOf(ModelError);
      expect(error).toMatchObject(abandoned);
      expect(elapsed).toBeLessThan(1_000);
      expect(fake.requests).toHaveLength(1);
      await expect(serverSawClose()).resolves.toBe(true);
    });

    it("rejects a stream given up midway, after the text passed so far", async () => {
      fake.enqueue({ kind: "stream", chunks: ["one", " two", " three"], chunkDelayMs: 100 });
      const caller = new AbortController();
      const texts: string[] = [];
      const call = model(10_000).complete({ ...request, signal: caller.signal }, {
        write: (text) => {
          texts.push(text);
          caller.abort();
        },
      });
      await expect(call).rejects.toMatchObject(abandoned);
      expect(texts).toEqual(["one"]);
    });

    it("makes no request at all with a signal already aborted", async () => {
      const caller = new AbortController();
      caller.abort();
      await expect(model().complete({ ...request, signal: caller.signal })).rejects.toMatchObject(abandoned);
      await expect(model().complete({ ...request, signal: caller.signal }, { write: () => undefined })).rejects.toMatchObject(abandoned);
      expect(fake.requests).toHaveLength(0);
    });

    it("is not retried by withRetries, which does not wait either", async () => {
      const waits: number[] = [];
      const retrying = withRetries(model(10_000), { maxRetries: 3, maxWaitMs: 1_000, sleep: async (ms) => { waits.push(ms); } });
      const { error, elapsed } = await abandonedCall((request) => retrying.complete(request));
      expect(error).toMatchObject(abandoned);
      expect(elapsed).toBeLessThan(1_000);
      expect(fake.requests).toHaveLength(1);
      expect(waits).toEqual([]);
    });
  });
});

/** A provider of ours (support/raw-provider.ts) and the model that calls it. */
async function rawStreamServer(body: RawBody, contentType?: string, status?: number) {
  const server = await rawProvider(body, contentType, status);
  return { ...server, model: (timeoutMs: number) => createOpenAiModel({ apiKey: "sk-test-key", baseUrl: server.baseUrl, timeoutMs }) };
}

describe("createOpenAiModel against a provider's broken or unusual stream", () => {
  it("takes a reply whose stream ends after the last line's break, without the blank line", async () => {
    const chunk = (fields: object) => `data: ${JSON.stringify({ model: "gpt-test", choices: [fields] })}\n`;
    const server = await rawStreamServer(async (write) => {
      await write(`${chunk({ delta: { content: "Hello" }, finish_reason: null })}\n`);
      await write(chunk({ delta: {}, finish_reason: "stop" }));
    });
    try {
      const texts: string[] = [];
      await expect(server.model(2_000).complete(HELLO_REQUEST, { write: (text) => texts.push(text) })).resolves.toMatchObject({ text: "Hello", truncated: false });
      expect(texts).toEqual(["Hello"]);
    } finally {
      await server.stop();
    }
  });

  const frame = (fields: object) => `data: ${JSON.stringify({ model: "gpt-test", ...fields })}\n\n`;
  const delta = (index: number, content: string | undefined, finish: string | null = null) =>
    frame({ choices: [{ index, delta: content === undefined ? {} : { content }, finish_reason: finish }] });

  it.each([
    ["no choices field (DeepInfra, Fireworks)", {}],
    ["choices: null (MiniMax)", { choices: null }],
  ])("takes the reply and the usage of a last usage chunk with %s", async (_name, fields) => {
    const server = await rawStreamServer(async (write) => {
      await write(`${delta(0, "Hello")}${delta(0, " there.", "stop")}${frame({ ...fields, usage: { prompt_tokens: 30, completion_tokens: 3, total_tokens: 33 } })}data: [DONE]\n\n`);
    });
    try {
      await expect(server.model(2_000).complete(HELLO_REQUEST, { write: () => undefined })).resolves.toStrictEqual({
        text: "Hello there.",
        truncated: false,
        model: "gpt-test",
        usage: { prompt_tokens: 30, completion_tokens: 3 },
      });
    } finally {
      await server.stop();
    }
  });

  it("takes a reply whose connection breaks off after its finish reason and usage, before [DONE]", async () => {
    const server = await rawStreamServer(async (write, cut) => {
      await write(`${delta(0, "Hello")}${delta(0, " there.", "stop")}${frame({ choices: [], usage: { prompt_tokens: 30, completion_tokens: 3, total_tokens: 33 } })}`);
      await cut();
    });
    try {
      const texts: string[] = [];
      await expect(server.model(2_000).complete(HELLO_REQUEST, { write: (text) => texts.push(text) })).resolves.toStrictEqual({
        text: "Hello there.",
        truncated: false,
        model: "gpt-test",
        usage: { prompt_tokens: 30, completion_tokens: 3 },
      });
      expect(texts).toEqual(["Hello", " there."]);
    } finally {
      await server.stop();
    }
  });

  it("takes a reply whose connection breaks off right after its finish reason, without usage (the caller estimates it)", async () => {
    const server = await rawStreamServer(async (write, cut) => {
      await write(`${delta(0, "Cut at the limit")}${delta(0, undefined, "length")}`);
      await cut();
    });
    try {
      await expect(server.model(2_000).complete(HELLO_REQUEST, { write: () => undefined })).resolves.toStrictEqual({ text: "Cut at the limit", truncated: true, model: "gpt-test" });
    } finally {
      await server.stop();
    }
  });

  // A close-delimited body (HTTP/1.1 with `Connection: close` and neither a length nor chunks) cut
  // mid-event reads as a clean end of the body: as this server's body ending there does.
  it("takes a reply whose body ends partway into the usage chunk after its finish reason (a close-delimited body cut there)", async () => {
    const usage = frame({ choices: [], usage: { prompt_tokens: 30, completion_tokens: 3, total_tokens: 33 } });
    const server = await rawStreamServer(async (write) => {
      await write(`${delta(0, "Hello")}${delta(0, " there.", "stop")}${usage.slice(0, 20)}`);
    });
    try {
      const texts: string[] = [];
      await expect(server.model(2_000).complete(HELLO_REQUEST, { write: (text) => texts.push(text) })).resolves.toStrictEqual({ text: "Hello there.", truncated: false, model: "gpt-test" });
      expect(texts).toEqual(["Hello", " there."]);
    } finally {
      await server.stop();
    }
  });

  it.each([
    ["after the finish reason, ended by a blank line", `${delta(0, "Hello", "stop")}data: {"model":"gpt-\n\n`],
    ["before the finish reason, ended by the body's end", `${delta(0, "Hello")}data: {"model":"gpt-`],
  ])("answers bad_response (not retried) to a malformed event %s", async (_name, body) => {
    const server = await rawStreamServer(async (write) => {
      await write(body);
    });
    try {
      await expect(server.model(2_000).complete(HELLO_REQUEST, { write: () => undefined })).rejects.toMatchObject({ failure: "bad_response", retryable: false });
    } finally {
      await server.stop();
    }
  });

  it("answers unavailable (retryable) to a connection that breaks off before the finish reason, after the whole text", async () => {
    const server = await rawStreamServer(async (write, cut) => {
      await write(delta(0, "Hello there."));
      await cut();
    });
    try {
      await expect(server.model(2_000).complete(HELLO_REQUEST, { write: () => undefined })).rejects.toMatchObject({ failure: "unavailable", retryable: true });
    } finally {
      await server.stop();
    }
  });

  it("answers timeout to a stream that stays open past the deadline after its finish reason", async () => {
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => { release = resolve; });
    const server = await rawStreamServer(async (write) => {
      await write(`${delta(0, "Hello")}${delta(0, undefined, "stop")}`);
      await held;
    });
    try {
      await expect(server.model(200).complete(HELLO_REQUEST, { write: () => undefined })).rejects.toMatchObject({ failure: "timeout" });
    } finally {
      release();
      await server.stop();
    }
  });

  it("streams choice 0 alone, with its own finish reason, from a stream interleaving several (as for n=2)", async () => {
    const server = await rawStreamServer(async (write) => {
      await write(`${delta(0, "The first")}${delta(1, "A second")}${delta(0, " answer.")}${delta(1, " answer, cut")}`);
      await write(`${delta(0, undefined, "stop")}${delta(1, undefined, "length")}data: [DONE]\n\n`);
    });
    try {
      const texts: string[] = [];
      await expect(server.model(2_000).complete(HELLO_REQUEST, { write: (text) => texts.push(text) })).resolves.toMatchObject({ text: "The first answer.", truncated: false });
      expect(texts).toEqual(["The first", " answer."]);
    } finally {
      await server.stop();
    }
  });

  it("refuses a line that never ends as a malformed reply, not retried, before reading more than a few megabytes", async () => {
    const piece = "x".repeat(65_536);
    const server = await rawStreamServer(async (write) => {
      if (!(await write('data: {"choices":[{"delta":{"content":"'))) return;
      for (let i = 0; i < 4_096; i += 1) if (!(await write(piece))) return;
    });
    try {
      await expect(server.model(30_000).complete(HELLO_REQUEST, { write: () => undefined })).rejects.toMatchObject({ failure: "bad_response", retryable: false });
      expect(server.sent()).toBeLessThan(16 * 2 ** 20);
    } finally {
      await server.stop();
    }
  });

  it("reads a whole JSON completion labelled text/plain, from a server that ignores stream: true, as response.json() took any media type", async () => {
    const body = JSON.stringify({ model: "gpt-test", choices: [{ index: 0, message: { role: "assistant", content: "Hi there." }, finish_reason: "stop" }] });
    const server = await rawStreamServer(async (write) => { await write(body); }, "text/plain; charset=utf-8");
    try {
      await expect(server.model(5_000).complete(HELLO_REQUEST, { write: () => undefined })).resolves.toStrictEqual({ text: "Hi there.", truncated: false, model: "gpt-test" });
    } finally {
      await server.stop();
    }
  });

  it("answers as the model the later chunks name, for a stream opening with a chunk whose model is blank (Azure's prompt filter)", async () => {
    const snapshot = "gpt-4o-mini-2024-07-18";
    const server = await rawStreamServer(async (write) => {
      await write(frame({ id: "", model: "", choices: [], prompt_filter_results: [{ prompt_index: 0, content_filter_results: {} }] }));
      await write(`${frame({ model: snapshot, choices: [{ index: 0, delta: { content: "Hi there." }, finish_reason: null }] })}${frame({ model: snapshot, choices: [{ index: 0, delta: {}, finish_reason: "stop" }] })}data: [DONE]\n\n`);
    });
    try {
      await expect(server.model(2_000).complete({ ...HELLO_REQUEST, model: "gpt-4o-mini" }, { write: () => undefined })).resolves.toStrictEqual({ text: "Hi there.", truncated: false, model: snapshot });
    } finally {
      await server.stop();
    }
  });

  it("answers as the model asked for when every chunk names its model blank", async () => {
    const server = await rawStreamServer(async (write) => {
      await write(`${frame({ model: "", choices: [{ index: 0, delta: { content: "Hi." }, finish_reason: null }] })}${frame({ model: " ", choices: [{ index: 0, delta: {}, finish_reason: "stop" }] })}data: [DONE]\n\n`);
    });
    try {
      await expect(server.model(2_000).complete({ ...HELLO_REQUEST, model: "gpt-4o-mini" }, { write: () => undefined })).resolves.toMatchObject({ text: "Hi.", model: "gpt-4o-mini" });
    } finally {
      await server.stop();
    }
  });

  it.each([
    ["no finish_reason field", {}],
    ["finish_reason null throughout", { finish_reason: null }],
  ])("takes a stream ended by [DONE] without a finish reason (%s) as a complete reply, in one call", async (_name, finish) => {
    let calls = 0;
    const server = await rawStreamServer(async (write) => {
      calls += 1;
      await write(`${frame({ choices: [{ index: 0, delta: { content: "Hi" }, ...finish }] })}${frame({ choices: [{ index: 0, delta: { content: " there." }, ...finish }] })}data: [DONE]\n\n`);
    });
    try {
      const retrying = withRetries(server.model(2_000), { maxRetries: 2, maxWaitMs: 10, sleep: () => Promise.resolve() });
      await expect(retrying.complete(HELLO_REQUEST, { write: () => undefined, restart: () => true })).resolves.toStrictEqual({ text: "Hi there.", truncated: false, model: "gpt-test" });
      expect(calls).toBe(1);
    } finally {
      await server.stop();
    }
  });
});

describe("createOpenAiModel against an error event inside a provider's stream (after its 200)", () => {
  const frame = (fields: object) => `data: ${JSON.stringify({ model: "gpt-test", ...fields })}\n\n`;
  const delta = (content: string | undefined, finish: string | null = null) =>
    frame({ choices: [{ index: 0, delta: content === undefined ? {} : { content }, finish_reason: finish }] });
  /** An error as OpenAI sends it once a stream's 200 went out (go-openai #396), then `[DONE]`. */
  const errorEvent = (error: object) =>
    `data: ${JSON.stringify({ error: { message: "The server had an error while processing your request. Sorry about that!", param: null, code: null, ...error } })}\n\ndata: [DONE]\n\n`;
  const SERVER_ERROR = errorEvent({ type: "server_error" });
  const WHOLE = `${delta("Hello there.")}${delta(undefined, "stop")}data: [DONE]\n\n`;
  const transient = { failure: "unavailable", retryable: true };
  const refused = { failure: "bad_response", retryable: false };

  /** What a call came to: its text, or its failure's kind and whether it may be retried. */
  const outcome = (call: Promise<{ text: string }>) =>
    call.then(
      (completion) => ({ text: completion.text }),
      (error: unknown) => ({ failure: (error as { failure?: string }).failure, retryable: (error as { retryable?: boolean }).retryable }),
    );

  it.each([
    ["a server error (OpenAI's, when a stream fails partway)", transient, SERVER_ERROR],
    ["a rate limit (OpenAI's code, type requests)", transient, errorEvent({ type: "requests", code: "rate_limit_exceeded" })],
    ["a status-like code 429", transient, errorEvent({ type: undefined, code: 429 })],
    ["an overload, as an error event (Anthropic's)", transient, 'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'],
    ["nothing it knows", transient, errorEvent({ type: "something_new" })],
    ["no name at all, as an error event", transient, 'event: error\ndata: {"message":"stream failed"}\n\n'],
    ["an invalid request", refused, errorEvent({ type: "invalid_request_error", code: "context_length_exceeded" })],
    ["an authentication error", refused, errorEvent({ type: "authentication_error" })],
    ["a content filter (Azure's code)", refused, errorEvent({ type: null, code: "content_filter" })],
    ["a status-like code 400", refused, errorEvent({ type: undefined, code: "400" })],
  ])("answers an error event naming %s, before any text, as %j", async (_name, expected, body) => {
    const server = await rawStreamServer(async (write) => { await write(body); });
    try {
      await expect(outcome(server.model(5_000).complete(HELLO_REQUEST, { write: () => undefined }))).resolves.toEqual(expected);
    } finally {
      await server.stop();
    }
  });

  it("retries a server error before any text, and answers with the retry's reply, passed on once", async () => {
    let calls = 0;
    const server = await rawStreamServer(async (write) => {
      calls += 1;
      await write(calls === 1 ? SERVER_ERROR : WHOLE);
    });
    try {
      const retrying = withRetries(server.model(5_000), { maxRetries: 1, maxWaitMs: 100, sleep: () => Promise.resolve() });
      const texts: string[] = [];
      await expect(outcome(retrying.complete(HELLO_REQUEST, { write: (text) => texts.push(text) }))).resolves.toEqual({ text: "Hello there." });
      expect({ calls, texts }).toEqual({ calls: 2, texts: ["Hello there."] });
    } finally {
      await server.stop();
    }
  });

  it("does not retry a server error after text it passed on, which a sink that cannot take it back has shown", async () => {
    let calls = 0;
    const server = await rawStreamServer(async (write) => {
      calls += 1;
      await write(`${delta("Hello")}${SERVER_ERROR}`);
    });
    try {
      const retrying = withRetries(server.model(5_000), { maxRetries: 1, maxWaitMs: 100, sleep: () => Promise.resolve() });
      const texts: string[] = [];
      await expect(outcome(retrying.complete(HELLO_REQUEST, { write: (text) => texts.push(text) }))).resolves.toEqual(transient);
      expect({ calls, texts }).toEqual({ calls: 1, texts: ["Hello"] });
    } finally {
      await server.stop();
    }
  });
});

describe("createOpenAiModel against a provider whose answer never ends", () => {
  const content = '{"model":"gpt-test","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"';

  it.each([
    ["a non-streamed call", undefined],
    ["a streamed call the provider answers with one JSON completion", { write: () => undefined }],
  ])("refuses a JSON completion that never ends as a malformed reply, not retried, before reading more than a few megabytes: %s", async (_name, sink) => {
    const server = await rawStreamServer(async (write, _cut, gone) => {
      if (await write(content)) await flood(write, gone);
    }, "application/json");
    try {
      await expect(server.model(10_000).complete(HELLO_REQUEST, sink)).rejects.toMatchObject({ failure: "bad_response", retryable: false });
      expect(server.sent()).toBeLessThan(16 * 2 ** 20);
    } finally {
      await server.stop();
    }
  });

  it.each([
    ["a non-streamed call", undefined],
    ["a streamed call", { write: () => undefined }],
  ])("refuses an error answer (500) that never ends as a malformed reply, not retried, before reading more than a few megabytes or waiting for the deadline: %s", async (_name, sink) => {
    const server = await rawStreamServer(async (write, _cut, gone) => {
      if (await write('{"error":{"message":"')) await flood(write, gone);
    }, "application/json", 500);
    try {
      const started = Date.now();
      await expect(server.model(10_000).complete(HELLO_REQUEST, sink)).rejects.toMatchObject({ failure: "bad_response", retryable: false });
      expect(Date.now() - started).toBeLessThan(9_500);
      expect(server.sent()).toBeLessThan(16 * 2 ** 20);
    } finally {
      await server.stop();
    }
  }, 30_000);

  it("refuses a stream of well-formed events that never ends as a malformed reply, not retried, past the reply's bound", async () => {
    const event = `data: ${JSON.stringify({ model: "gpt-test", choices: [{ index: 0, delta: { content: FLOOD_PIECE }, finish_reason: null }] })}\n\n`;
    const server = await rawStreamServer(async (write, _cut, gone) => flood(write, gone, event));
    try {
      let passedOn = 0;
      const call = server.model(10_000).complete(HELLO_REQUEST, { write: (text) => { passedOn += text.length; } });
      await expect(call).rejects.toMatchObject({ failure: "bad_response", retryable: false });
      expect(passedOn).toBeLessThanOrEqual(maxReplyChars(HELLO_REQUEST.max_tokens));
      expect(server.sent()).toBeLessThan(16 * 2 ** 20);
    } finally {
      await server.stop();
    }
  });

  it.each([
    ["another choice's text (index 1)", `data: ${JSON.stringify({ model: "gpt-test", choices: [{ index: 1, delta: { content: FLOOD_PIECE }, finish_reason: null }] })}\n\n`],
    ["chunks with no choice", `data: ${JSON.stringify({ model: "gpt-test", choices: [], pad: FLOOD_PIECE })}\n\n`],
    ["comments", `: ${FLOOD_PIECE}\n`],
  ])("refuses a stream of %s that never ends as a malformed reply, not retried, before reading more than a few megabytes or waiting for the deadline", async (_name, event) => {
    const server = await rawStreamServer(async (write, _cut, gone) => flood(write, gone, event));
    try {
      const started = Date.now();
      const outcome = await server.model(8_000).complete(HELLO_REQUEST, { write: () => undefined }).then(
        () => ({ failure: "none", retryable: undefined }),
        (error: unknown) => ({ failure: (error as { failure?: string }).failure, retryable: (error as { retryable?: boolean }).retryable }),
      );
      const read = server.sent();
      expect({ ...outcome, readUnder16MiB: read < 16 * 2 ** 20, beforeDeadline: Date.now() - started < 7_500 }).toEqual({
        failure: "bad_response",
        retryable: false,
        readUnder16MiB: true,
        beforeDeadline: true,
      });
    } finally {
      await server.stop();
    }
  }, 30_000);

  it.each([
    ["spaces", " "],
    ["line breaks", "\n"],
  ])("refuses a run of blank text (%s) past the reply's bound as malformed, not retried, before the deadline", async (_name, character) => {
    // Eight characters a chunk, as a model emitting runs of blanks streams them: over a hundred thousand chunks.
    const request = { ...HELLO_REQUEST, max_tokens: 16_384 };
    const event = `data: ${JSON.stringify({ model: "gpt-test", choices: [{ index: 0, delta: { content: character.repeat(8) }, finish_reason: null }] })}\n\n`;
    const chunks = Math.ceil((maxReplyChars(request.max_tokens) + 1) / 8);
    expect(chunks * event.length).toBeLessThan(maxStreamChars(request.max_tokens));
    const server = await rawStreamServer(async (write) => {
      for (let sent = 0; sent < chunks; sent += 1_024) if (!(await write(event.repeat(1_024)))) return;
      await write("data: [DONE]\n\n");
    });
    try {
      // A generous deadline: were the held blank text scanned again at each chunk, its reading would outlast it (a timeout, retried).
      const outcome = await server.model(10_000).complete(request, { write: () => undefined }).then(
        () => ({ failure: "none", retryable: undefined }),
        (error: unknown) => ({ failure: (error as { failure?: string }).failure, retryable: (error as { retryable?: boolean }).retryable }),
      );
      expect(outcome).toEqual({ failure: "bad_response", retryable: false });
    } finally {
      await server.stop();
    }
  }, 30_000);

  it("takes a stream of one small chunk a token up to max_tokens, each padded to several times what OpenAI sends, past the bound's floor", async () => {
    const request = { ...HELLO_REQUEST, max_tokens: 8_192 };
    // 900 characters a chunk: OpenAI's fields, Azure's filter results and reasoning fields, with room to spare.
    const chunk = (fields: object) => `data: ${JSON.stringify({ model: "gpt-test", choices: [{ index: 0, ...fields }] })}`;
    const token = chunk({ delta: { content: "ab" }, finish_reason: null });
    const event = `${token.slice(0, -1)},"pad":"${"p".repeat(900 - token.length - 9)}"}\n\n`;
    expect(event.length).toBe(902);
    const streamed = request.max_tokens * event.length;
    expect(streamed).toBeGreaterThan(maxStreamChars(HELLO_REQUEST.max_tokens));
    expect(streamed).toBeLessThanOrEqual(maxStreamChars(request.max_tokens));
    const server = await rawStreamServer(async (write) => {
      // Written 256 events at a time: the reader sees them as the network groups them anyway.
      for (let sent = 0; sent < request.max_tokens; sent += 256) if (!(await write(event.repeat(256)))) return;
      await write(`${chunk({ delta: {}, finish_reason: "stop" })}\n\ndata: [DONE]\n\n`);
    });
    try {
      const completion = await server.model(10_000).complete(request, { write: () => undefined });
      expect(completion.text).toBe("ab".repeat(request.max_tokens));
    } finally {
      await server.stop();
    }
  });

  it("takes a streamed reply longer than one event may be when its max_tokens allows it", async () => {
    const request = { ...HELLO_REQUEST, max_tokens: 100_000 };
    const pieces = Math.ceil((MAX_EVENT_CHARS + 1) / FLOOD_PIECE.length);
    expect(pieces * FLOOD_PIECE.length).toBeLessThanOrEqual(maxReplyChars(request.max_tokens));
    const event = (fields: object) => `data: ${JSON.stringify({ model: "gpt-test", choices: [{ index: 0, ...fields }] })}\n\n`;
    const server = await rawStreamServer(async (write) => {
      for (let i = 0; i < pieces; i += 1) if (!(await write(event({ delta: { content: FLOOD_PIECE }, finish_reason: null })))) return;
      await write(`${event({ delta: {}, finish_reason: "stop" })}data: [DONE]\n\n`);
    });
    try {
      const completion = await server.model(10_000).complete(request, { write: () => undefined });
      expect(completion.text).toHaveLength(pieces * FLOOD_PIECE.length);
    } finally {
      await server.stop();
    }
  });
});

/**
 * A provider that answers every call `status` with `headers` and a body that cannot be read whole:
 * `cut` announces 200 bytes and drops the connection after a few (a reset, a proxy cutting it);
 * `not gzip` declares gzip and sends plain JSON, which fetch cannot inflate. Its status and
 * headers (Retry-After) came whole; only the error's message did not.
 */
async function brokenErrorAnswer(status: number, headers: OutgoingHttpHeaders, broken: "cut" | "not gzip" = "cut") {
  let calls = 0;
  const server = createServer((request, response) => {
    request.resume();
    request.on("end", () => {
      calls += 1;
      if (broken === "not gzip") {
        response.writeHead(status, { "content-type": "application/json", "content-encoding": "gzip", ...headers });
        response.end('{"error":{"message":"slow down"}}');
        return;
      }
      response.writeHead(status, { "content-type": "application/json", "content-length": "200", ...headers });
      response.write('{"error":{"message":"', () => { response.destroy(); });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    model: (timeoutMs = 5_000) => createOpenAiModel({ apiKey: "sk-test-key", baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, timeoutMs }),
    calls: () => calls,
    stop: () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => { resolve(); }); }),
  };
}

/**
 * A provider whose error answers are whole, written byte for byte from `statusLine` (after
 * `HTTP/1.1 `, as UTF-8) and `headers` (each ended by CRLF): a reason phrase outside Latin-1 (a
 * gateway localised to another language) or a status of 600 or more, both of which fetch reads
 * as they came and the Response constructor refuses.
 */
async function rawErrorAnswer(statusLine: string, headers = "") {
  const server = createTcpServer((socket) => {
    socket.on("error", () => undefined);
    socket.once("data", () => {
      const body = '{"error":{"message":"slow down","type":"requests"}}';
      socket.end(Buffer.from(`HTTP/1.1 ${statusLine}\r\n${headers}content-type: application/json\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`, "utf8"));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    model: (timeoutMs = 5_000) => createOpenAiModel({ apiKey: "sk-test-key", baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, timeoutMs }),
    stop: () => new Promise<void>((resolve) => { server.close(() => { resolve(); }); }),
  };
}

describe.each([
  ["a non-streamed call", false],
  ["a streamed call", true],
])("createOpenAiModel, %s, against an error answer it cannot read whole or rebuild as it came", (_name, streamed) => {
  const sink = () => (streamed ? { write: () => undefined } : undefined);

  it.each([
    ["breaks off", "cut"],
    ["is not in its declared Content-Encoding (gzip)", "not gzip"],
  ] as const)("answers a 429 whose body %s as rate limited, with the Retry-After it came with", async (_how, broken) => {
    const provider = await brokenErrorAnswer(429, { "retry-after": "30" }, broken);
    try {
      await expect(provider.model().complete(HELLO_REQUEST, sink())).rejects.toMatchObject({ failure: "unavailable", retryable: true, retryAfterMs: 30_000, retryAfterSeconds: 30 });
    } finally {
      await provider.stop();
    }
  });

  it("answers a 401 (a bad key) whose body breaks off as a refusal that is not retried", async () => {
    const provider = await brokenErrorAnswer(401, {});
    try {
      await expect(provider.model().complete(HELLO_REQUEST, sink())).rejects.toMatchObject({ failure: "bad_response", retryable: false });
    } finally {
      await provider.stop();
    }
  });

  it("passes a 429 whose body breaks off, asking for longer than maxWaitMs, to withRetries' caller after one call, with its wait", async () => {
    const provider = await brokenErrorAnswer(429, { "retry-after": "30" });
    const waits: number[] = [];
    const retrying = withRetries(provider.model(), { maxRetries: 2, maxWaitMs: 5_000, sleep: (ms) => { waits.push(ms); return Promise.resolve(); } });
    try {
      const failed = await retrying.complete(HELLO_REQUEST, sink()).then(() => undefined, (error: unknown) => error as { retryAfterSeconds?: number });
      expect({ calls: provider.calls(), waits, retryAfterSeconds: failed?.retryAfterSeconds }).toEqual({ calls: 1, waits: [], retryAfterSeconds: 30 });
    } finally {
      await provider.stop();
    }
  });

  it("answers a whole 429 whose reason phrase is not Latin-1 (UTF-8) as rate limited, with the Retry-After it came with", async () => {
    const provider = await rawErrorAnswer("429 请求过多", "retry-after: 30\r\n");
    try {
      await expect(provider.model().complete(HELLO_REQUEST, sink())).rejects.toMatchObject({ failure: "unavailable", retryable: true, retryAfterMs: 30_000 });
    } finally {
      await provider.stop();
    }
  });

  it("answers a whole 401 whose reason phrase is not Latin-1 as a refusal that is not retried", async () => {
    const provider = await rawErrorAnswer("401 Unauthorized \u2013 invalid key");
    try {
      await expect(provider.model().complete(HELLO_REQUEST, sink())).rejects.toMatchObject({ failure: "bad_response", retryable: false });
    } finally {
      await provider.stop();
    }
  });

  it("answers a status of 600 or more (799) as the SDK reads it, a 5xx: a bad_response worth another try", async () => {
    const provider = await rawErrorAnswer("799 Unknown");
    try {
      await expect(provider.model().complete(HELLO_REQUEST, sink())).rejects.toMatchObject({ failure: "bad_response", retryable: true, message: expect.stringContaining("status 799") });
    } finally {
      await provider.stop();
    }
  });

  it("answers timeout to an error answer whose body stalls past the deadline", async () => {
    const server = await rawStreamServer(async (write, _cut, gone) => {
      if (await write('{"error":{"message":"')) await gone;
    }, "application/json", 429);
    try {
      await expect(server.model(300).complete(HELLO_REQUEST, sink())).rejects.toMatchObject({ failure: "timeout" });
    } finally {
      await server.stop();
    }
  });
});

describe.each([
  ["a non-streamed call", false],
  ["a streamed call answered with one JSON completion (stream ignored)", true],
])("createOpenAiModel, %s, against a JSON answer whose connection is lost partway into the body", (_name, streamed) => {
  const sink = () => (streamed ? { write: () => undefined } : undefined);
  const completion = JSON.stringify({ model: "gpt-test", choices: [{ index: 0, message: { role: "assistant", content: "Hi there." }, finish_reason: "stop" }] });

  /** A provider whose first `cuts` answers are cut 30 bytes into the completion (the chunked body without its end), and whole after. */
  async function cutJsonAnswer(cuts: number) {
    let calls = 0;
    const server = await rawStreamServer(async (write, cut) => {
      calls += 1;
      if (calls > cuts) {
        await write(completion);
        return;
      }
      await write(completion.slice(0, 30));
      await cut();
    }, "application/json");
    return { ...server, calls: () => calls };
  }

  it("answers unavailable (a lost connection, retryable), as a stream cut partway does", async () => {
    const provider = await cutJsonAnswer(1);
    try {
      await expect(provider.model(5_000).complete(HELLO_REQUEST, sink())).rejects.toMatchObject({ failure: "unavailable", retryable: true });
    } finally {
      await provider.stop();
    }
  });

  it("is retried by withRetries, and the retry's whole answer is the reply", async () => {
    const provider = await cutJsonAnswer(1);
    const retrying = withRetries(provider.model(5_000), { maxRetries: 1, maxWaitMs: 10, sleep: () => Promise.resolve() });
    try {
      const outcome = await retrying.complete(HELLO_REQUEST, sink()).then((answer) => answer.text, (error: unknown) => `failed: ${(error as Error).message}`);
      expect({ outcome, calls: provider.calls() }).toEqual({ outcome: "Hi there.", calls: 2 });
    } finally {
      await provider.stop();
    }
  });

  it("answers timeout (not a lost connection) to a JSON answer whose body stalls past the deadline", async () => {
    const server = await rawStreamServer(async (write, _cut, gone) => {
      if (await write(completion.slice(0, 30))) await gone;
    }, "application/json");
    try {
      await expect(server.model(300).complete(HELLO_REQUEST, sink())).rejects.toMatchObject({ failure: "timeout" });
    } finally {
      await server.stop();
    }
  });
});
