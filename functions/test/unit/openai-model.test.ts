import OpenAI from "openai";
import type { CompletionRequest } from "../../src/llm/chat-model";
import { ModelError } from "../../src/llm/errors";
import { createOpenAiModel, retryAfterSeconds, toModelError } from "../../src/llm/openai-model";
import { FakeOpenAiServer } from "../support/fake-openai-server";

const NOW = Date.parse("2025-01-01T00:00:00Z");
const SECRET = "sk-secret-0123456789";

const headers = (values: Record<string, string>) => new Headers(values);

describe("retryAfterSeconds", () => {
  it("reads delta seconds", () => {
    expect(retryAfterSeconds(headers({ "retry-after": "7" }), NOW)).toBe(7);
    expect(retryAfterSeconds(headers({ "retry-after": "0" }), NOW)).toBe(0);
    expect(retryAfterSeconds(headers({ "retry-after": " 120 " }), NOW)).toBe(120);
  });

  it("reads retry-after-ms, rounding up to whole seconds and at least 1", () => {
    expect(retryAfterSeconds(headers({ "retry-after-ms": "1500" }), NOW)).toBe(2);
    expect(retryAfterSeconds(headers({ "retry-after-ms": "2000" }), NOW)).toBe(2);
    expect(retryAfterSeconds(headers({ "retry-after-ms": "50" }), NOW)).toBe(1);
    expect(retryAfterSeconds(headers({ "retry-after-ms": "0" }), NOW)).toBe(1);
    expect(retryAfterSeconds(headers({ "retry-after-ms": "2500.5" }), NOW)).toBe(3);
  });

  it("prefers retry-after-ms over retry-after", () => {
    expect(retryAfterSeconds(headers({ "retry-after-ms": "3000", "retry-after": "60" }), NOW)).toBe(3);
  });

  it("falls back to retry-after when retry-after-ms is not a number", () => {
    expect(retryAfterSeconds(headers({ "retry-after-ms": "soon", "retry-after": "9" }), NOW)).toBe(9);
  });

  it("reads an HTTP date relative to the injected now, rounding up", () => {
    expect(retryAfterSeconds(headers({ "retry-after": "Wed, 01 Jan 2025 00:00:30 GMT" }), NOW)).toBe(30);
    expect(retryAfterSeconds(headers({ "retry-after": "Wed, 01 Jan 2025 00:00:30 GMT" }), NOW + 10_500)).toBe(20);
    expect(retryAfterSeconds(headers({ "retry-after": "Wed, 01 Jan 2025 00:02:00 GMT" }), NOW)).toBe(120);
  });

  it("answers 0 for an HTTP date in the past", () => {
    expect(retryAfterSeconds(headers({ "retry-after": "Tue, 31 Dec 2024 23:59:00 GMT" }), NOW)).toBe(0);
  });

  it("answers undefined without headers or without either header", () => {
    expect(retryAfterSeconds(undefined, NOW)).toBeUndefined();
    expect(retryAfterSeconds(headers({}), NOW)).toBeUndefined();
    expect(retryAfterSeconds(headers({ "x-request-id": "abc" }), NOW)).toBeUndefined();
  });

  it.each(["soon", "12abc", "in 5 minutes", ""])("answers undefined for the garbage %p", (value) => {
    expect(retryAfterSeconds(headers({ "retry-after": value }), NOW)).toBeUndefined();
  });

  it.each(["1.5", "-1", "foo 1", "tomorrow 5"])("answers undefined for %p, which Date.parse alone would read as a date", (value) => {
    expect(retryAfterSeconds(headers({ "retry-after": value }), NOW)).toBeUndefined();
  });
});

describe("toModelError", () => {
  const apiError = (status: number, extra: Record<string, string> = {}) =>
    OpenAI.APIError.generate(status, { error: { message: `provider says ${SECRET}`, type: "x" } }, `provider says ${SECRET}`, headers(extra));

  it.each([429, 503, 529])("maps status %i to unavailable", (status) => {
    const error = toModelError(apiError(status));
    expect(error).toBeInstanceOf(ModelError);
    expect(error.failure).toBe("unavailable");
  });

  it.each([408, 504])("maps status %i to timeout", (status) => {
    expect(toModelError(apiError(status)).failure).toBe("timeout");
  });

  it.each([400, 401, 403, 404, 409, 422, 500, 502])("maps status %i to bad_response, naming the status", (status) => {
    const error = toModelError(apiError(status));
    expect(error.failure).toBe("bad_response");
    expect(error.message).toContain(String(status));
  });

  it("maps a connection timeout to timeout", () => {
    const error = toModelError(new OpenAI.APIConnectionTimeoutError());
    expect(error.failure).toBe("timeout");
    expect(error.retryAfterSeconds).toBeUndefined();
  });

  it("maps a connection error to unavailable", () => {
    expect(toModelError(new OpenAI.APIConnectionError({ message: "x" })).failure).toBe("unavailable");
  });

  it("maps a status-less SDK error (as generate builds it without headers) to unavailable", () => {
    expect(toModelError(OpenAI.APIError.generate(undefined, undefined, "fetch failed", undefined)).failure).toBe("unavailable");
  });

  it("carries Retry-After from the provider's headers", () => {
    expect(toModelError(apiError(429, { "retry-after": "7" })).retryAfterSeconds).toBe(7);
    expect(toModelError(apiError(503, { "retry-after-ms": "1200" })).retryAfterSeconds).toBe(2);
    expect(toModelError(apiError(504, { "retry-after": "3" })).retryAfterSeconds).toBe(3);
    expect(toModelError(apiError(429)).retryAfterSeconds).toBeUndefined();
  });

  it("keeps the SDK error as the cause but never its text in the message", () => {
    const sdkError = apiError(401);
    expect(sdkError.message).toContain(SECRET);
    const error = toModelError(sdkError);
    expect(error.cause).toBe(sdkError);
    expect(error.message).not.toContain(SECRET);
    expect(error.message).not.toContain("provider says");
  });

  it("maps anything else to bad_response without its text", () => {
    const cause = new TypeError(`cannot read ${SECRET}`);
    const error = toModelError(cause);
    expect(error.failure).toBe("bad_response");
    expect(error.cause).toBe(cause);
    expect(error.message).not.toContain(SECRET);
  });

  it("returns a ModelError unchanged", () => {
    const original = new ModelError("unavailable", "no model is configured", 5);
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

  const model = (timeoutMs = 2_000) => createOpenAiModel({ apiKey: "sk-test-key", baseUrl: fake.baseUrl, timeoutMs, maxRetries: 0 });
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
    await expect(model().complete(request)).resolves.toEqual({ text: "hi there", truncated: false, model: "gpt-test" });
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

  it("flags a reply cut at the token limit", async () => {
    fake.enqueue({ kind: "reply", text: "cut", finishReason: "length" });
    await expect(model().complete(request)).resolves.toMatchObject({ text: "cut", truncated: true });
  });

  it.each([
    ["an empty reply", { kind: "reply", text: "   " }],
    ["no choices", { kind: "raw", status: 200, body: '{"choices":[]}' }],
    ["a malformed body", { kind: "raw", status: 200, body: "{not json" }],
  ] as const)("answers bad_response to %s", async (_name, step) => {
    fake.enqueue(step);
    await expect(model().complete(request)).rejects.toMatchObject({ name: "ModelError", failure: "bad_response" });
  });

  it("answers unavailable with Retry-After to a 429", async () => {
    fake.enqueue({ kind: "status", status: 429, headers: { "retry-after": "4" } });
    await expect(model().complete(request)).rejects.toMatchObject({ failure: "unavailable", retryAfterSeconds: 4 });
  });

  it("answers timeout when the server does not answer in time", async () => {
    fake.enqueue({ kind: "hang" });
    await expect(model(200).complete(request)).rejects.toMatchObject({ failure: "timeout" });
  });

  it("answers unavailable when the connection drops", async () => {
    fake.enqueue({ kind: "drop" });
    await expect(model().complete(request)).rejects.toMatchObject({ failure: "unavailable" });
  });
});
