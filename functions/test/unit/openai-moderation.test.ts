import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { ConfigError, resolveConfig } from "../../src/config";
import { toErrorAnswer } from "../../src/http/error-response";
import { moderatorFromConfig } from "../../src/llm/model-from-config";
import { MessageFlaggedError, ModerationAbandonedError, ModerationNotSupportedError, ModerationUnavailableError } from "../../src/llm/moderation";
import { createOpenAiModerator, MODERATION_MODEL } from "../../src/llm/openai-moderation";
import { messageModeration } from "../../src/moderation/message-moderation";
import { FakeOpenAiServer } from "../support/fake-openai-server";
import { recordingLog, type Logged } from "../support/recording-log";
import { flood, rawProvider } from "../support/raw-provider";

async function failure(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error("the check gave a verdict");
}

describe("createOpenAiModerator against an OpenAI-compatible server", () => {
  let fake: FakeOpenAiServer;
  beforeAll(async () => {
    fake = await FakeOpenAiServer.start();
  });
  afterAll(async () => fake.stop());
  beforeEach(() => { fake.reset(); });

  const moderator = (timeoutMs = 2_000, baseUrl = fake.baseUrl) => createOpenAiModerator({ apiKey: "sk-test-key", baseUrl, timeoutMs });

  it("asks omni-moderation-latest about the text, with the key, and reads a clean verdict", async () => {
    await expect(moderator().check("hello there")).resolves.toEqual({ flagged: false, categories: [] });
    expect(fake.moderationRequests).toHaveLength(1);
    expect(fake.moderationRequests[0]).toMatchObject({ path: "/v1/moderations", body: { model: MODERATION_MODEL, input: "hello there" } });
    expect(fake.moderationRequests[0]?.headers.authorization).toBe("Bearer sk-test-key");
    expect(fake.requests).toHaveLength(0);
  });

  it("reads a flagged verdict with the categories it flagged", async () => {
    fake.enqueueModeration({ kind: "verdict", flagged: true, categories: ["harassment", "violence/graphic"] });
    await expect(moderator().check("something awful")).resolves.toEqual({ flagged: true, categories: ["harassment", "violence/graphic"] });
  });

  it("takes the verdict's flag as it is, whatever the categories say", async () => {
    fake.enqueueModeration({ kind: "raw", status: 200, body: JSON.stringify({ results: [{ flagged: false, categories: { hate: true, violence: null } }] }) });
    await expect(moderator().check("borderline")).resolves.toEqual({ flagged: false, categories: ["hate"] });
  });

  it("keeps a bounded part of a verdict naming thousands of long categories, so that the flag's log entry stays one Cloud Logging takes", async () => {
    // Some 3.3 MB: within what an answer may hold (4 MiB, json-answer.ts).
    const categories = Object.fromEntries(Array.from({ length: 30_000 }, (_, index) => [`category-${index}-${"x".repeat(90)}`, true]));
    fake.enqueueModeration({ kind: "raw", status: 200, body: JSON.stringify({ results: [{ flagged: true, categories }] }) });
    const logged: Logged[] = [];
    const moderation = messageModeration(moderator(5_000), "open", recordingLog(logged).log);
    const refusal = await failure(moderation.admit("some text", { session_id: "s1" }));
    expect(refusal).toBeInstanceOf(MessageFlaggedError);
    const kept = (refusal as MessageFlaggedError).categories;
    expect(kept).toHaveLength(33);
    expect(kept[0]).toBe(`category-0-${"x".repeat(90)}`.slice(0, 64));
    expect(kept.at(-1)).toBe("+29968 more");
    const entry = logged.find((line) => line.message === "message flagged");
    // Without the bound: one entry of some 3.3 MB, which Cloud Logging (256 KB an entry) refuses whole.
    expect(JSON.stringify(entry).length).toBeLessThan(4 * 1024);
  });

  it.each([
    ["null", null],
    ["an array", ["harassment"]],
    ['"true" for true', { harassment: "true", hate: true }],
  ])("takes the verdict's flag whatever shape its categories have: %s", async (_shape, categories) => {
    const flagged = categories !== null;
    fake.enqueueModeration({ kind: "raw", status: 200, body: JSON.stringify({ results: [{ flagged, categories }] }) });
    const expected = Array.isArray(categories) || categories === null ? [] : ["hate"];
    await expect(moderator().check("something")).resolves.toEqual({ flagged, categories: expected });
  });

  it("calls a server without a moderations endpoint (404) a configuration error, not an outage", async () => {
    fake.enqueueModeration({ kind: "status", status: 404, body: { error: { message: "Not Found" } } });
    const error = await failure(moderator().check("hello"));
    expect(error).toBeInstanceOf(ModerationNotSupportedError);
    expect(error).toBeInstanceOf(ConfigError);
    expect(error).not.toBeInstanceOf(ModerationUnavailableError);
    expect((error as Error).message).toMatch(/MODERATION.*OPENAI_BASE_URL.*404/);
    expect(toErrorAnswer(error)).toMatchObject({ status: 500, code: "CONFIGURATION_ERROR" });
  });

  it("calls a 404 whose body breaks off a configuration error too: its status came whole", async () => {
    const server = await rawProvider(async (write, cut) => {
      await write('{"error":{"message":"');
      await cut();
    }, "application/json", 404);
    try {
      expect(await failure(moderator(5_000, server.baseUrl).check("hello"))).toBeInstanceOf(ModerationNotSupportedError);
    } finally {
      await server.stop();
    }
  });

  it.each([
    [429, "unavailable"],
    [500, "bad_response"],
    [502, "bad_response"],
    [503, "unavailable"],
    [504, "timeout"],
    [401, "bad_response"],
  ] as const)("calls a %s an outage (%s), keeping the status", async (status, failure_) => {
    fake.enqueueModeration({ kind: "status", status });
    const error = await failure(moderator().check("hello"));
    expect(error).toBeInstanceOf(ModerationUnavailableError);
    expect(error).toMatchObject({ failure: failure_, status });
    expect(toErrorAnswer(error)).toMatchObject({ status: 503, code: "MODERATION_UNAVAILABLE" });
  });

  it("calls a server that never answers a timeout, within the deadline", async () => {
    fake.enqueueModeration({ kind: "hang" });
    const error = await failure(moderator(200).check("hello"));
    expect(error).toMatchObject({ name: "ModerationUnavailableError", failure: "timeout" });
    await fake.noRequestHanging();
  });

  it("calls a dropped connection an outage", async () => {
    fake.enqueueModeration({ kind: "drop" });
    expect(await failure(moderator().check("hello"))).toMatchObject({ name: "ModerationUnavailableError", failure: "unavailable" });
  });

  it("calls a server that is not there an outage", async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    expect(await failure(moderator(2_000, `http://127.0.0.1:${port}/v1`).check("hello"))).toMatchObject({ name: "ModerationUnavailableError", failure: "unavailable" });
  });

  it.each([
    ["not JSON", "<html>oops</html>"],
    ["no results", JSON.stringify({ results: [] })],
    ["a flag that is not a boolean", JSON.stringify({ results: [{ flagged: "yes" }] })],
    ["no results field", JSON.stringify({ id: "modr-1" })],
  ])("calls an answer with %s an outage (no verdict)", async (_name, body) => {
    fake.enqueueModeration({ kind: "raw", status: 200, body });
    expect(await failure(moderator().check("hello"))).toMatchObject({ name: "ModerationUnavailableError", failure: "bad_response" });
  });

  it("calls an answer that never ends an outage (no verdict), having read no more than a few megabytes", async () => {
    const server = await rawProvider(async (write, _cut, gone) => {
      if (await write('{"id":"modr-1","model":"omni-moderation-latest","results":[{"flagged":false,"categories":{"')) await flood(write, gone);
    }, "application/json");
    try {
      expect(await failure(moderator(10_000, server.baseUrl).check("hello"))).toMatchObject({ name: "ModerationUnavailableError", failure: "bad_response" });
      expect(server.sent()).toBeLessThan(16 * 2 ** 20);
    } finally {
      await server.stop();
    }
  });

  it("calls an error answer (500) that never ends an outage (no verdict), having read no more than a few megabytes, before the deadline", async () => {
    const server = await rawProvider(async (write, _cut, gone) => {
      if (await write('{"error":{"message":"')) await flood(write, gone);
    }, "application/json", 500);
    try {
      const started = Date.now();
      expect(await failure(moderator(10_000, server.baseUrl).check("hello"))).toMatchObject({ name: "ModerationUnavailableError", failure: "bad_response" });
      expect(Date.now() - started).toBeLessThan(9_500);
      expect(server.sent()).toBeLessThan(16 * 2 ** 20);
    } finally {
      await server.stop();
    }
  }, 30_000);

  it("is abandoned when the caller aborts: the request is cut and no outage is reported", async () => {
    fake.enqueueModeration({ kind: "hang" });
    const caller = new AbortController();
    const check = failure(moderator().check("hello", { signal: caller.signal }));
    await fake.awaitModerationRequests(1);
    caller.abort();
    expect(await check).toBeInstanceOf(ModerationAbandonedError);
    await fake.noRequestHanging();
  });

  it("sends nothing when the caller has already given up", async () => {
    const error = await failure(moderator().check("hello", { signal: AbortSignal.abort() }));
    expect(error).toBeInstanceOf(ModerationAbandonedError);
    expect(fake.moderationRequests).toHaveLength(0);
  });

  it("leaves the chat completions script alone", async () => {
    fake.enqueue({ kind: "status", status: 500 });
    await expect(moderator().check("hello")).resolves.toEqual({ flagged: false, categories: [] });
    const chat = await fetch(`${fake.baseUrl}/chat/completions`, { method: "POST", body: JSON.stringify({ model: "m", messages: [] }) });
    expect(chat.status).toBe(500);
  });

  describe("moderatorFromConfig", () => {
    it("builds none with MODERATION off (the default)", () => {
      expect(moderatorFromConfig(resolveConfig({ OPENAI_BASE_URL: fake.baseUrl }))).toBeUndefined();
    });

    it("asks the chat model's server with MODERATION on", async () => {
      fake.enqueueModeration({ kind: "verdict", flagged: true, categories: ["hate"] });
      const configured = moderatorFromConfig(resolveConfig({ MODERATION: "true", OPENAI_BASE_URL: fake.baseUrl, OPENAI_API_KEY: "sk-from-config" }));
      await expect(configured?.check("hello")).resolves.toEqual({ flagged: true, categories: ["hate"] });
      expect(fake.moderationRequests[0]?.headers.authorization).toBe("Bearer sk-from-config");
    });

    it("fails every check as a configuration error when there is no server to ask", async () => {
      const unconfigured = moderatorFromConfig(resolveConfig({ MODERATION: "true" }));
      expect(await failure(unconfigured?.check("hello") ?? Promise.resolve())).toBeInstanceOf(ModerationNotSupportedError);
    });
  });
});
