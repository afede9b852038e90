import { FunctionsError, httpsCallable } from "firebase/functions";
import { randomUUID } from "node:crypto";
import { CallableFailure } from "../../src/callable/callable-errors";
import { anyUsage } from "../support/any-usage";
import { HOSTING_ROUTES } from "../support/connection-api";
import { callableClient, serveCallables, type CallableClient, type CallableServer } from "../support/callable-server";
import { eventually } from "../support/event-stream-client";
import { describeEachStore, ROUTES, startHarness, type Harness, type HarnessOptions } from "../support/http-harness";
import { recentMessages } from "../support/recent-messages";
import { recordingLog, type Logged } from "../support/recording-log";
import { recordingPartials } from "../support/recording-partials";

// firebase-functions 7.4's onCall logs "Callable request verification passed" at debug level on
// every call, through the console it captured when loaded: that one level is muted here. Its
// error-level lines are kept too (and still printed), for a test to show a call wrote none.
const mockPlatformErrors: string[] = [];
jest.mock("../../node_modules/firebase-functions/lib/logger/common.js", () => {
  const actual = jest.requireActual<{ UNPATCHED_CONSOLE: Record<string, (line: string) => void> }>("../../node_modules/firebase-functions/lib/logger/common.js");
  const error = (line: string) => {
    mockPlatformErrors.push(line);
    actual.UNPATCHED_CONSOLE.error?.(line);
  };
  return { ...actual, UNPATCHED_CONSOLE: { ...actual.UNPATCHED_CONSOLE, debug: () => undefined, error } };
});

type Body = Record<string, unknown>;

/** What a failed call rejects with, as a Functions client sees it. */
interface Failure {
  readonly code: string;
  readonly message: string;
  readonly details: unknown;
}

async function failureOf(promise: Promise<unknown>): Promise<Failure> {
  try {
    await promise;
  } catch (error) {
    // firebase 12.19 (@firebase/functions `_errorForResponse`) appends the HTTP status to the server's message.
    if (error instanceof FunctionsError) return { code: error.code, message: error.message.replace(/ \[\d+\]$/, ""), details: error.details };
    throw error;
  }
  throw new Error("the call succeeded");
}

/** `promise`, or a rejection saying what did not come within `ms`. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(`${what} did not come within ${ms} ms`)); }, ms); });
  return Promise.race([promise, late]).finally(() => { clearTimeout(timer); });
}

/** A harness, its callables served through firebase-functions' onCall, and a Functions SDK client calling them. */
interface Callables {
  readonly harness: Harness;
  readonly server: CallableServer;
  readonly client: CallableClient;
  call(name: string, data?: unknown): Promise<Body>;
  close(): Promise<void>;
}

async function startCallables(options: HarnessOptions): Promise<Callables> {
  const harness = await startHarness(options);
  const server = await serveCallables(harness.api.runtime, options.env);
  const client = callableClient("127.0.0.1", server.port);
  return {
    harness,
    server,
    client,
    call: async (name, data) => (await httpsCallable<unknown, Body>(client.functions, `chat-${name}`)(data)).data,
    async close() {
      await client.close();
      await server.close();
      await harness.close();
    },
  };
}

/**
 * The callables (`chat-createSession`, `chat-sendMessage`, `chat-endSession`) called with the
 * real Firebase JS SDK (`firebase/functions`, `httpsCallable`, `.stream()`), served by
 * firebase-functions' own onCall wrapper on express as the Functions framework runs it, in
 * front of the same instance the HTTP routes use.
 */
describeEachStore("callable functions through the Functions client SDK", (kind) => {
  let main: Callables;
  const partials: (string | null)[] = [];
  const logged: Logged[] = [];

  beforeAll(async () => {
    main = await startCallables({ store: kind, log: recordingLog(logged).log, wrapStore: (store) => recordingPartials(store, partials) });
  });
  afterAll(async () => main.close());
  beforeEach(() => {
    main.harness.fake.reset();
    partials.length = 0;
    logged.length = 0;
    mockPlatformErrors.length = 0;
  });

  const created = async (userId = "user_callable") => String((await main.call("createSession", { user_id: userId, template_id: "friendly-assistant" })).session_id);
  const sendMessage = () => httpsCallable<unknown, Body, { text: string }>(main.client.functions, "chat-sendMessage");

  it("creates, answers and ends a session with the bodies the HTTP routes answer, on the same session", async () => {
    const session = await main.call("createSession", { user_id: "user_callable", template_id: "socratic-tutor" });
    expect(session).toEqual({
      success: true,
      session_id: expect.stringMatching(/^[0-9a-f-]{36}$/),
      message: "Session created successfully",
      user_id: "user_callable",
      template_id: "socratic-tutor",
      template_name: "Socratic Tutor",
      created_at: expect.any(String),
      // Where its clients listen, on a database (docs/sharding.md); the embedded store has none.
      ...(kind === "memory" ? {} : { database_url: expect.stringMatching(/^https:\/\/http-[0-9a-f]{8}\.firebaseio\.com$/) }),
    });
    const id = String(session.session_id);
    const reply = await main.call("sendMessage", { session_id: id, message: "Hi" });
    expect(reply).toEqual({ success: true, response: "reply #1 to: Hi", session_id: id, message_count: 1, truncated: false, usage: anyUsage() });
    // The HTTP route meets the same session, and the same answer shape.
    const http = await main.harness.api.call("POST", ROUTES.message(id), { message: "Again" });
    expect(Object.keys(http.body).sort()).toEqual(Object.keys(reply).sort());
    expect(http.body).toMatchObject({ message_count: 2 });
    const ended = await main.call("endSession", { session_id: id });
    expect(ended).toEqual({
      success: true,
      message: "Session ended successfully",
      session_id: id,
      status: "ended",
      message_count: 2,
      duration_seconds: expect.any(Number),
      created_at: session.created_at,
      ended_at: expect.any(String),
      usage: anyUsage(),
    });
  });

  it("streams the reply's text as chunks while it is written, then resolves with the same body", async () => {
    const id = await created();
    const chunks = ["Streamed", " to", " a", " callable."];
    main.harness.fake.enqueue({ kind: "stream", chunks, chunkDelayMs: 150 });
    const started = performance.now();
    const { stream, data } = await sendMessage().stream({ session_id: id, message: "Stream" });
    const received: { text: string; at: number }[] = [];
    for await (const chunk of stream) received.push({ text: chunk.text, at: performance.now() - started });
    const body = await data;
    expect(received.map((chunk) => chunk.text).join("")).toBe(chunks.join(""));
    // As written, not at the end: a chunk per delta, spread over the model's pauses.
    expect(received).toHaveLength(chunks.length);
    expect(received.at(-1)!.at - received[0]!.at).toBeGreaterThanOrEqual(300);
    expect(body).toEqual({ success: true, response: chunks.join(""), session_id: id, message_count: 1, truncated: false, usage: anyUsage() });
    expect(logged).toContainEqual({ level: "info", message: "request", fields: expect.objectContaining({ endpoint: "sendMessage", via: "callable", streamed: true, status: 200 }) });
  });

  // U+2028 / U+2029 (a model may write them; a user can ask it to repeat them): the client reads
  // each streamed event with a pattern whose `.` stops at them.
  it("streams every chunk of a reply holding U+2028 and U+2029, and resolves the result, the text as stored", async () => {
    const id = await created();
    const chunks = ["First line", "\u2028second line", " and\u2029a paragraph."];
    main.harness.fake.enqueue({ kind: "stream", chunks, chunkDelayMs: 20 });
    const { stream, data } = await sendMessage().stream({ session_id: id, message: "Repeat with separators" });
    const result = data.then((body) => ({ body }), (error: unknown) => ({ error }));
    const received: string[] = [];
    for await (const chunk of stream) received.push(chunk.text);
    const settled = await within(result, 3_000, "the call's result").catch((error: unknown) => String(error));
    expect({ chunks: received.join(""), settled }).toEqual({
      chunks: chunks.join(""),
      settled: { body: expect.objectContaining({ success: true, response: chunks.join(""), message_count: 1 }) },
    });
    expect((await recentMessages(main.harness.api.store, id, 10)).map((message) => message.content)).toEqual(["Repeat with separators", chunks.join("")]);
  });

  it("answers a plain call whose reply holds U+2028 and U+2029 with the same text", async () => {
    const id = await created();
    const text = "One\u2028two\u2029three.";
    main.harness.fake.enqueue({ kind: "reply", text });
    await expect(within(main.call("sendMessage", { session_id: id, message: "Separators" }), 3_000, "the plain call's result")).resolves.toMatchObject({ success: true, response: text });
  });

  it("rejects both the stream and the result when the model fails mid-reply, storing nothing", async () => {
    const id = await created();
    main.harness.fake.enqueue({ kind: "stream", chunks: ["cut", " here", " never"], cutAfter: 2, chunkDelayMs: 20 });
    const { stream, data } = await sendMessage().stream({ session_id: id, message: "Break" });
    const dataFailure = failureOf(data);
    const received: string[] = [];
    const streamFailure = await failureOf((async () => {
      for await (const chunk of stream) received.push(chunk.text);
    })());
    expect(received).toEqual(["cut", " here"]);
    const expected = { code: "functions/unavailable", details: { code: "MODEL_UNAVAILABLE" } };
    expect(streamFailure).toMatchObject(expected);
    expect(await dataFailure).toMatchObject(expected);
    expect(await main.harness.api.store.readSessionState(id)).toMatchObject({ message_count: 0 });
  });

  it("finishes and stores the exchange when the client goes away mid-stream, as the SSE route does", async () => {
    const id = await created();
    const chunks = ["still", " written", " after", " you", " left"];
    main.harness.fake.enqueue({ kind: "stream", chunks, chunkDelayMs: 80 });
    const abort = new AbortController();
    const { stream, data } = await sendMessage().stream({ session_id: id, message: "bye" }, { signal: abort.signal });
    void data.catch(() => undefined);
    const received: string[] = [];
    await failureOf((async () => {
      for await (const chunk of stream) {
        received.push(chunk.text);
        abort.abort();
      }
    })()).catch(() => undefined);
    expect(received).toEqual(["still"]);
    const state = await eventually(() => main.harness.api.store.readSessionState(id), (value) => value?.message_count === 1);
    expect(state).toMatchObject({ status: "active", message_count: 1 });
    expect((await main.harness.api.store.readWindow(id, 2)).messages.map((message) => message.content)).toEqual(["bye", chunks.join("")]);
    await eventually(() => Promise.resolve(logged.some((entry) => entry.message === "request" && entry.fields?.status === 200 && entry.fields.streamed === true)), Boolean);
    // The instance is none the worse: the next message streams.
    const next = await sendMessage().stream({ session_id: id, message: "back" });
    for await (const chunk of next.stream) expect(typeof chunk.text).toBe("string");
    expect(await next.data).toMatchObject({ success: true, message_count: 2 });
  });

  it("takes an idempotency key in the data: a repeat answers the first call's reply, calling the model once", async () => {
    const id = await created();
    const first = await main.call("sendMessage", { session_id: id, message: "once", idempotency_key: "callable-key-1" });
    const repeat = await main.call("sendMessage", { session_id: id, message: "once", idempotency_key: "callable-key-1" });
    expect(repeat).toEqual(first);
    expect(main.harness.fake.requests).toHaveLength(1);
    const reused = await failureOf(main.call("sendMessage", { session_id: id, message: "another", idempotency_key: "callable-key-1" }));
    expect(reused).toMatchObject({ code: "functions/invalid-argument", details: { code: "IDEMPOTENCY_KEY_REUSED" } });
  });

  it("reads an optional field a Functions client left undefined (the SDK sends null) as absent, as JSON.stringify drops it over HTTP", async () => {
    const maybeKey: string | undefined = undefined;
    const session = await main.call("createSession", { user_id: "user_callable_undefined", template_id: "friendly-assistant", idempotency_key: maybeKey });
    expect(session).toMatchObject({ success: true });
    const reply = await main.call("sendMessage", { session_id: session.session_id, message: "Hi", idempotency_key: maybeKey });
    expect(reply).toMatchObject({ success: true, message_count: 1 });
    const previews: boolean | undefined = undefined;
    expect(await main.call("registerDevice", { user_id: "user_callable_undefined", token: `device-token-${kind}-undefined`, previews })).toEqual({ success: true, devices: 1 });
    // The query routes too.
    expect(await main.call("listSessions", { user_id: "user_callable_undefined", cursor: undefined })).toMatchObject({ sessions: [{ session_id: session.session_id }] });
  });

  it.each<[string, () => Promise<[string, unknown]>, Failure | Partial<Failure>]>([
    ["data that is not an object", () => Promise.resolve(["createSession", "a string"]), { code: "functions/invalid-argument", message: "The call's data must be an object", details: { code: "INVALID_REQUEST", fields: [{ field: "(data)", message: "must be an object" }] } }],
    ["no template", () => Promise.resolve(["createSession", { user_id: "user_callable" }]), { code: "functions/invalid-argument", details: { code: "INVALID_REQUEST", fields: [{ field: "template_id", message: "is required" }] } }],
    ["no user_id without an ID token", () => Promise.resolve(["createSession", { template_id: "friendly-assistant" }]), { code: "functions/invalid-argument", details: { code: "INVALID_REQUEST", fields: [{ field: "user_id", message: "is required" }] } }],
    ["an unknown template", () => Promise.resolve(["createSession", { user_id: "u", template_id: "no-such-template" }]), { code: "functions/not-found", details: { code: "TEMPLATE_NOT_FOUND" } }],
    ["no session_id", () => Promise.resolve(["sendMessage", { message: "hi" }]), { code: "functions/invalid-argument", details: { code: "INVALID_REQUEST", fields: [{ field: "session_id", message: "is required" }] } }],
    // The SDK sends a field left undefined as null: a required one is then missing, as when absent.
    ["a session_id left undefined", () => Promise.resolve(["sendMessage", { session_id: undefined, message: "hi" }]), { code: "functions/invalid-argument", details: { code: "INVALID_REQUEST", fields: [{ field: "session_id", message: "is required" }] } }],
    ["a message left undefined", async () => ["sendMessage", { session_id: await created(), message: undefined }], { code: "functions/invalid-argument", details: { code: "INVALID_REQUEST", fields: [{ field: "message", message: "is required" }] } }],
    ["a session_id that is a number", () => Promise.resolve(["endSession", { session_id: 7 }]), { code: "functions/invalid-argument", details: { code: "INVALID_REQUEST", fields: [{ field: "session_id", message: "must be a string" }] } }],
    ["a session_id holding a lone surrogate", () => Promise.resolve(["sendMessage", { session_id: "\ud800", message: "hi" }]), { code: "functions/invalid-argument", details: { code: "INVALID_REQUEST", fields: [{ field: "session_id", message: "must be valid Unicode text (no lone surrogates)" }] } }],
    ["an id this service never issued", () => Promise.resolve(["sendMessage", { session_id: "../../templates", message: "hi" }]), { code: "functions/not-found", details: { code: "SESSION_NOT_FOUND" } }],
    ["an unknown session", () => Promise.resolve(["endSession", { session_id: "0b4f3a52-1111-4e2e-9c1c-9a1e5c6d7e8f" }]), { code: "functions/not-found", details: { code: "SESSION_NOT_FOUND" } }],
    ["an empty message", async () => ["sendMessage", { session_id: await created(), message: "  " }], { code: "functions/invalid-argument", details: { code: "INVALID_REQUEST", fields: [{ field: "message", message: "must not be empty" }] } }],
    ["a malformed idempotency key", async () => ["sendMessage", { session_id: await created(), message: "hi", idempotency_key: "has spaces" }], { code: "functions/invalid-argument", details: { code: "INVALID_IDEMPOTENCY_KEY" } }],
    ["a call larger than MAX_BODY_BYTES", async () => ["sendMessage", { session_id: await created(), message: "x".repeat(40_000) }], { code: "functions/invalid-argument", details: { code: "PAYLOAD_TOO_LARGE" } }],
  ])("refuses %s with the matching code and the project's code in details", async (_name, make, expected) => {
    const [name, data] = await make();
    expect(await failureOf(main.call(name, data))).toMatchObject(expected);
  });

  it("answers an ended session with failed-precondition, and a model outage with unavailable and its wait", async () => {
    const id = await created();
    main.harness.fake.enqueue({ kind: "status", status: 503, headers: { "retry-after": "7" } });
    expect(await failureOf(main.call("sendMessage", { session_id: id, message: "hi" }))).toEqual({
      code: "functions/unavailable",
      message: "Model error: the model provider is overloaded or rate limited",
      details: { code: "MODEL_UNAVAILABLE", retry_after_seconds: 7 },
    });
    main.harness.fake.enqueue({ kind: "status", status: 503, headers: { "retry-after": "9".repeat(24) } });
    expect(await failureOf(main.call("sendMessage", { session_id: id, message: "hi" }))).toMatchObject({ details: { code: "MODEL_UNAVAILABLE", retry_after_seconds: 86_400 } });
    main.harness.fake.enqueue({ kind: "status", status: 504 });
    expect(await failureOf(main.call("sendMessage", { session_id: id, message: "hi" }))).toMatchObject({ code: "functions/deadline-exceeded", details: { code: "MODEL_TIMEOUT" } });
    await main.call("endSession", { session_id: id });
    expect(await failureOf(main.call("sendMessage", { session_id: id, message: "late" }))).toEqual({
      code: "functions/failed-precondition",
      message: "Session has ended; start a new session",
      details: { code: "SESSION_ENDED" },
    });
    expect(await failureOf(main.call("endSession", { session_id: id }))).toMatchObject({ code: "functions/failed-precondition", details: { code: "SESSION_ENDED" } });
  });

  it("lists, reads, exports and erases a user's conversations with the bodies the HTTP routes answer, the query's fields in the data", async () => {
    const user = `user_data_${kind}`;
    const first = await created(user);
    await main.call("sendMessage", { session_id: first, message: "First words" });
    const second = await created(user);
    await main.call("sendMessage", { session_id: second, message: "Second words" });
    const stranger = await created(`${user}_stranger`);
    // A page of one, then the next through its cursor: newest first, as over HTTP.
    const page = await main.call("listSessions", { user_id: user, limit: 1 });
    const http = await main.harness.api.call("GET", `${ROUTES.list}?user_id=${user}&limit=1`);
    expect(page).toEqual(http.body);
    expect((page.sessions as Body[]).map((entry) => entry.session_id)).toEqual([second]);
    const rest = await main.call("listSessions", { user_id: user, limit: 1, cursor: page.next_cursor });
    expect((rest.sessions as Body[]).map((entry) => entry.session_id)).toEqual([first]);
    const read = await main.call("getSession", { session_id: first, user_id: user, limit: 10 });
    expect((read.messages as Body[]).map((message) => message.content)).toEqual(["First words", "reply #1 to: First words"]);
    // The export, produced in parts over HTTP, is one answer here.
    const exported = await main.call("exportUserData", { user_id: user });
    expect(JSON.stringify(exported)).toContain("Second words");
    expect(JSON.stringify(exported)).not.toContain(stranger);
    const erased = await main.call("eraseUserData", { user_id: user });
    expect(erased).toMatchObject({ success: true, user_id: user, sessions_erased: 2 });
    expect((await main.call("listSessions", { user_id: user })).sessions).toEqual([]);
    expect((await main.call("listSessions", { user_id: `${user}_stranger` })).sessions).toHaveLength(1);
  });

  it("refuses data a query cannot carry, and bad page sizes, naming the field, before reading anything", async () => {
    expect(await failureOf(main.call("listSessions", { user_id: "someone", limit: { many: true } }))).toEqual({
      code: "functions/invalid-argument",
      message: "The call's data has fields of the wrong type",
      details: { code: "INVALID_REQUEST", fields: [{ field: "limit", message: "must be a string or a number" }] },
    });
    expect(await failureOf(main.call("listSessions", { user_id: "someone", limit: 0 }))).toMatchObject({
      code: "functions/invalid-argument",
      details: { code: "INVALID_REQUEST", fields: [{ field: "limit" }] },
    });
    expect(await failureOf(main.call("getSession", { user_id: "someone" }))).toMatchObject({ code: "functions/invalid-argument", details: { fields: [{ field: "session_id", message: "is required" }] } });
  });

  /** `{"a":{"a":...1...}}`, `depth` objects deep, as JSON text. */
  const nested = (depth: number) => `${'{"a":'.repeat(depth)}1${"}".repeat(depth)}`;
  const TOO_DEEP = { message: "The call's data is nested too deep", details: { code: "INVALID_REQUEST", fields: [{ field: "(data)", message: "must not nest more than 100 levels deep" }] } };
  const TYPED = {
    message: "The call's data holds a typed value that cannot be decoded",
    details: { code: "INVALID_REQUEST", fields: [{ field: "(data)", message: 'must not hold an object with an "@type" key, but for an Int64Value or UInt64Value holding a number' }] },
  };
  const INT64 = "type.googleapis.com/google.protobuf.Int64Value";

  /**
   * Data nested deep well inside MAX_BODY_BYTES (5,000 objects: 25 KB of the default 32 KB). The
   * HTTP routes parse such a body without recursion and answer it (an extra field dropped, a
   * message of the wrong type named). The callables' boundary makes the data's fields the body
   * again with JSON.stringify, which recurses (about 4,450 levels on Node 24's default stack).
   * The data is handed over as onCall hands it to the handler, decoded: the trigger refuses
   * such data itself, before the handler (the next describe).
   */
  describe("the callables' boundary given deeply nested data", () => {
    const call = (name: "createSession" | "sendMessage", json: string) =>
      main.harness.api.runtime.callables(name, { data: JSON.parse(json) as unknown, bodyBytes: Buffer.byteLength(`{"data":${json}}`), clientAddress: "127.0.0.1" });
    const outcome = (promise: Promise<Body>) =>
      promise.then(
        (result) => ({ result }),
        (error: unknown) => ({ failure: error instanceof CallableFailure ? { code: error.code, message: error.message, details: error.details } : String(error) }),
      );
    const refused = { failure: { code: "invalid-argument", ...TOO_DEEP } };
    const failuresLogged = () => logged.filter((entry) => entry.level === "error");

    it("refuses data nested past 100 levels with invalid-argument naming the data, logging no failure, where POST /session drops such an extra field", async () => {
      const http = await main.harness.api.call("POST", ROUTES.create, `{"user_id":"user_deep_http","template_id":"friendly-assistant","x":${nested(5_000)}}`);
      expect(http.status).toBe(201);
      const create = (extra: string) => call("createSession", `{"user_id":"user_deep","template_id":"friendly-assistant","x":${extra}}`);
      expect(await outcome(create(nested(5_000)))).toEqual(refused);
      expect(await outcome(create(nested(100)))).toEqual(refused);
      // 100 levels, the data's own object the first: taken, the field dropped as over HTTP.
      expect(await outcome(create(nested(99)))).toEqual({ result: expect.objectContaining({ success: true, user_id: "user_deep", template_id: "friendly-assistant" }) });
      expect(failuresLogged()).toEqual([]);
    });

    it("refuses a message that is an object nested 5,000 deep with invalid-argument, as the HTTP route answers 400 INVALID_REQUEST, calling no model and logging no failure", async () => {
      const id = await created("user_deep_message");
      const http = await main.harness.api.call("POST", ROUTES.message(id), `{"message":${nested(5_000)}}`);
      expect({ status: http.status, code: http.body.error?.code }).toEqual({ status: 400, code: "INVALID_REQUEST" });
      expect(await outcome(call("sendMessage", `{"session_id":"${id}","message":${nested(5_000)}}`))).toEqual(refused);
      expect(main.harness.fake.requests).toHaveLength(0);
      expect(failuresLogged()).toEqual([]);
    });
  });

  /**
   * Data firebase-functions 7.4's onCall cannot decode: its `decode`, run on the data before the
   * handler, throws on an `@type` key it does not know and recurses. The Functions client SDK
   * sends `@type` keys as they are; the depth is sent raw (the SDK's own encoder recurses too).
   * The HTTP routes drop such a field (201).
   */
  describe("data firebase-functions cannot decode", () => {
    const ORIGIN = "https://app.example";
    async function rawCall(name: string, data: string, port = main.server.port): Promise<{ status: number; allowedOrigin: string | null; body: unknown }> {
      const response = await fetch(`http://127.0.0.1:${port}/demo-chatify/us-central1/chat-${name}`, {
        method: "POST",
        headers: { "content-type": "application/json", origin: ORIGIN },
        body: `{"data":${data}}`,
      });
      return { status: response.status, allowedOrigin: response.headers.get("access-control-allow-origin"), body: await response.json() };
    }

    it.each([
      ["an object with an @type key", `{"@type":"type.googleapis.com/example.Thing","name":"x"}`, TYPED],
      ["an Int64Value that is not a number", `{"@type":"${INT64}","value":"many"}`, TYPED],
      ["an Int64Value whose value cannot be made text", `{"@type":"${INT64}","value":{"toString":1}}`, TYPED],
      ["an array holding an object with an @type key", `[1,{"@type":"type.googleapis.com/example.Thing"}]`, TYPED],
      ["arrays nested 5,000 deep (10 KB)", `${"[".repeat(5_000)}${"]".repeat(5_000)}`, TOO_DEEP],
    ])("refuses an extra field holding %s with onCall's own invalid-argument answer naming the data, running no handler and logging no error", async (_what, extra, error) => {
      const body = `{"user_id":"user_undecodable","template_id":"friendly-assistant","extra":${extra}}`;
      expect((await main.harness.api.call("POST", ROUTES.create, body)).status).toBe(201);
      logged.length = 0;
      // With the CORS headers of any answer of onCall's, for a page to read it.
      expect(await rawCall("createSession", body)).toEqual({ status: 400, allowedOrigin: ORIGIN, body: { error: { status: "INVALID_ARGUMENT", ...error } } });
      expect({ handled: logged.filter((entry) => entry.message === "request"), platformErrors: mockPlatformErrors }).toEqual({ handled: [], platformErrors: [] });
    });

    it("answers a body without data onCall's own 400 whether it nests 50 or 5,000 deep, logging no unhandled error", async () => {
      const answer = async (depth: number) => {
        const response = await fetch(`http://127.0.0.1:${main.server.port}/demo-chatify/us-central1/chat-createSession`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: `{"x":${"[".repeat(depth)}${"]".repeat(depth)}}`,
        });
        return { status: response.status, body: await response.json() };
      };
      const shallow = await answer(50);
      expect(shallow).toEqual({ status: 400, body: { error: { status: "INVALID_ARGUMENT", message: "Bad Request" } } });
      expect(await answer(5_000)).toEqual(shallow);
      // onCall logs its own refusal of such a request at error level ("Invalid request, unable to process."), each time.
      expect(mockPlatformErrors.filter((line) => line.includes("Unhandled error"))).toEqual([]);
      expect(mockPlatformErrors).toHaveLength(2);
    });

    it("checks the call's tokens first, as for any data: without the App Check token REQUIRE_APP_CHECK asks for, unauthenticated", async () => {
      const enforcing = await serveCallables(main.harness.api.runtime, { REQUIRE_APP_CHECK: "true" });
      try {
        const answer = await rawCall("createSession", `{"user_id":"u","template_id":"friendly-assistant","extra":{"@type":"type.googleapis.com/example.Thing"}}`, enforcing.port);
        expect(answer).toMatchObject({ status: 401, body: { error: { status: "UNAUTHENTICATED" } } });
      } finally {
        await enforcing.close();
      }
    });

    it("refuses a typed value from a Functions client with invalid-argument, on a plain call and at both ends of a stream, calling no model", async () => {
      const thing = { "@type": "type.googleapis.com/example.Thing" };
      const typed = { code: "functions/invalid-argument", ...TYPED };
      expect(await failureOf(main.call("createSession", { user_id: "user_typed", template_id: "friendly-assistant", extra: thing }))).toEqual(typed);
      const id = await created("user_typed");
      const { stream, data } = await sendMessage().stream({ session_id: id, message: "Hi", extra: thing });
      const dataFailure = failureOf(data);
      const received: string[] = [];
      const streamFailure = await failureOf((async () => {
        for await (const chunk of stream) received.push(chunk.text);
      })());
      expect({ received, streamFailure, dataFailure: await dataFailure }).toEqual({ received: [], streamFailure: typed, dataFailure: typed });
      expect(main.harness.fake.requests).toHaveLength(0);
      expect(mockPlatformErrors).toEqual([]);
    });

    it("hands data firebase-functions decodes to the handler as decoded: an Int64Value of a number is that number", async () => {
      const user = `user_int64_${kind}`;
      await created(user);
      const newest = await created(user);
      const page = await main.call("listSessions", { user_id: user, limit: { "@type": INT64, value: "1" } });
      expect((page.sessions as Body[]).map((entry) => entry.session_id)).toEqual([newest]);
    });
  });

  describe("with limits, ID tokens required, or moderation", () => {
    let limited: Callables;
    let strict: Callables;
    let moderated: Callables;
    beforeAll(async () => {
      [limited, strict, moderated] = await Promise.all([
        startCallables({ store: kind, env: { USER_MESSAGES_PER_MINUTE: "1" } }),
        startCallables({ store: kind, env: { REQUIRE_AUTH: "true" } }),
        // One model retry allowed: a call that fails while moderation still holds its text is retried.
        startCallables({ store: kind, env: { MODERATION: "true", OPENAI_MAX_RETRIES: "1" }, wrapStore: (store) => recordingPartials(store, partials) }),
      ]);
    });
    afterAll(async () => {
      await Promise.all([limited.close(), strict.close(), moderated.close()]);
    });

    it("answers a usage limit with resource-exhausted and the wait in details", async () => {
      const id = String((await limited.call("createSession", { user_id: "user_limited", template_id: "friendly-assistant" })).session_id);
      await limited.call("sendMessage", { session_id: id, message: "one" });
      const refused = await failureOf(limited.call("sendMessage", { session_id: id, message: "two" }));
      expect(refused).toMatchObject({ code: "functions/resource-exhausted", details: { code: "RATE_LIMITED", retry_after_seconds: expect.any(Number) } });
      expect((refused.details as { retry_after_seconds: number }).retry_after_seconds).toBeGreaterThan(0);
    });

    it("answers a call without an ID token with unauthenticated when REQUIRE_AUTH holds, user_id or not", async () => {
      for (const data of [{ template_id: "friendly-assistant" }, { user_id: "someone", template_id: "friendly-assistant" }]) {
        expect(await failureOf(strict.call("createSession", data))).toMatchObject({ code: "functions/unauthenticated", details: { code: "UNAUTHENTICATED" } });
      }
      expect(strict.harness.fake.requests).toHaveLength(0);
    });

    it("streams nothing of a flagged message: no chunk, both the stream and the result rejected, nothing stored or written as a partial", async () => {
      const id = String((await moderated.call("createSession", { user_id: "user_moderated", template_id: "friendly-assistant" })).session_id);
      moderated.harness.fake.enqueue({ kind: "stream", chunks: ["never", " shown", " to", " anyone"], chunkDelayMs: 10 });
      moderated.harness.fake.enqueueModeration({ kind: "verdict", flagged: true, categories: ["harassment"], delayMs: 200 });
      partials.length = 0;
      const { stream, data } = await httpsCallable<unknown, Body, { text: string }>(moderated.client.functions, "chat-sendMessage").stream({ session_id: id, message: "flag me" });
      const dataFailure = failureOf(data);
      const received: string[] = [];
      const streamFailure = await failureOf((async () => {
        for await (const chunk of stream) received.push(chunk.text);
      })());
      expect(received).toEqual([]);
      const expected = { code: "functions/invalid-argument", message: "The message was flagged by moderation and was not sent", details: { code: "MESSAGE_FLAGGED" } };
      expect(streamFailure).toEqual(expected);
      expect(await dataFailure).toEqual(expected);
      expect(await moderated.harness.api.store.readSessionState(id)).toMatchObject({ message_count: 0 });
      expect(partials.filter((text) => text !== null)).toEqual([]);
      // A clean message then streams as usual.
      const clean = await httpsCallable<unknown, Body>(moderated.client.functions, "chat-sendMessage")({ session_id: id, message: "fine" });
      expect(clean.data).toMatchObject({ success: true, message_count: 1 });
    });

    it("retries a model call that broke off while moderation held its text: the stream gets the retry's text alone, and the result its reply", async () => {
      const id = String((await moderated.call("createSession", { user_id: "user_moderated_retry", template_id: "friendly-assistant" })).session_id);
      moderated.harness.fake.reset();
      // The first attempt writes a chunk and breaks off while the verdict is still 600 ms away; the retry answers.
      moderated.harness.fake.enqueue({ kind: "stream", chunks: ["lost", " words"], cutAfter: 1, chunkDelayMs: 10 });
      moderated.harness.fake.enqueue({ kind: "stream", chunks: ["Second", " try"], chunkDelayMs: 10 });
      moderated.harness.fake.enqueueModeration({ kind: "verdict", flagged: false, delayMs: 600 });
      const { stream, data } = await httpsCallable<unknown, Body, { text: string }>(moderated.client.functions, "chat-sendMessage").stream({ session_id: id, message: "hi" });
      const result = data.catch((error: unknown) => ({ failed: String(error) }));
      const chunks: string[] = [];
      const streamed = (async () => {
        for await (const chunk of stream) chunks.push(chunk.text);
      })().catch((error: unknown) => String(error));
      expect(await result).toMatchObject({ success: true, response: "Second try", message_count: 1 });
      expect(await streamed).toBeUndefined();
      expect(chunks.join("")).toBe("Second try");
      expect(moderated.harness.fake.requests).toHaveLength(2);
    });
  });

  describe("connections and devices (issue 17)", () => {
    let tag = 0;
    const users = () => {
      tag += 1;
      return { alice: `alice_cc${tag}_${kind}`, bob: `bob_cc${tag}_${kind}`, mallory: `mallory_cc${tag}_${kind}` };
    };
    const routes = HOSTING_ROUTES;

    it("asks, accepts, talks, pages, blocks, ends, with each callable answering the HTTP route's body", async () => {
      const { alice, bob } = users();
      const asked = await main.call("requestConnection", { user_id: alice, other_user_id: bob });
      expect(asked).toMatchObject({ success: true, created: true, connection: { status: "pending", other_user_id: bob } });
      const id = String((asked.connection as Body).connection_id);
      expect(await main.call("acceptConnection", { connection_id: id, user_id: bob })).toMatchObject({ connection: { status: "accepted" } });
      const sent = await main.call("sendConnectionMessage", { connection_id: id, user_id: alice, message: "Hi Bob", idempotency_key: "first-hello" });
      expect(sent).toMatchObject({ success: true, connection_id: id, message: { position: 1, sender_id: alice, content: "Hi Bob" }, message_count: 1 });
      // A repeat with the same key is the first call's answer, nothing stored twice.
      expect(await main.call("sendConnectionMessage", { connection_id: id, user_id: alice, message: "Hi Bob", idempotency_key: "first-hello" })).toEqual(sent);
      await main.call("sendConnectionMessage", { connection_id: id, user_id: bob, message: "Hi Alice" });
      const page = await main.call("listConnectionMessages", { connection_id: id, user_id: bob, limit: 1 });
      expect(page).toEqual((await main.harness.api.call("GET", `${routes.messages(id)}?user_id=${bob}&limit=1`)).body);
      expect(page).toMatchObject({ messages: [{ position: 2, content: "Hi Alice" }], next_before: 2 });
      expect((await main.call("listConnectionMessages", { connection_id: id, user_id: bob, before: 2 })).messages).toMatchObject([{ position: 1, content: "Hi Bob" }]);
      expect(await main.call("getConnection", { connection_id: id, user_id: alice })).toEqual((await main.harness.api.call("GET", `${routes.connection(id)}?user_id=${alice}`)).body);
      const listed = await main.call("listConnections", { user_id: bob, limit: 5 });
      expect(listed).toEqual((await main.harness.api.call("GET", `${routes.connections}?user_id=${bob}&limit=5`)).body);
      expect((listed.connections as Body[]).map((entry) => entry.connection_id)).toEqual([id]);

      expect(await main.call("blockConnection", { connection_id: id, user_id: bob })).toMatchObject({ connection: { blocked_by_you: true } });
      expect(await failureOf(main.call("sendConnectionMessage", { connection_id: id, user_id: alice, message: "hello?" }))).toMatchObject({ details: { code: "CONNECTION_BLOCKED" } });
      expect(await main.call("unblockConnection", { connection_id: id, user_id: bob })).toMatchObject({ connection: { blocked_by_you: false } });
      expect(await main.call("endConnection", { connection_id: id, user_id: alice })).toMatchObject({ connection: { status: "ended" } });
      expect(await failureOf(main.call("sendConnectionMessage", { connection_id: id, user_id: bob, message: "late" }))).toMatchObject({ code: "functions/failed-precondition", details: { code: "CONNECTION_ENDED" } });

      const again = String(((await main.call("requestConnection", { user_id: bob, other_user_id: alice })).connection as Body).connection_id);
      expect(again).not.toBe(id);
      expect(await main.call("declineConnection", { connection_id: again, user_id: alice })).toMatchObject({ connection: { status: "declined" } });
      // Paged by the cursor it answers, which is the caller's own, as over HTTP.
      const first = await main.call("listConnections", { user_id: bob, limit: 1 });
      const rest = await main.call("listConnections", { user_id: bob, limit: 1, cursor: first.next_cursor });
      expect([...(first.connections as Body[]), ...(rest.connections as Body[])].map((entry) => entry.connection_id).sort()).toEqual([id, again].sort());
      expect(rest.next_cursor).toBeNull();
      expect(await failureOf(main.call("listConnections", { user_id: alice, limit: 1, cursor: first.next_cursor }))).toMatchObject({ details: { code: "INVALID_CURSOR" } });
    });

    it("registers and unregisters a device", async () => {
      const { alice } = users();
      expect(await main.call("registerDevice", { user_id: alice, token: "device-token-1", previews: false })).toEqual({ success: true, devices: 1 });
      expect(await main.call("registerDevice", { user_id: alice, token: "device-token-2" })).toEqual({ success: true, devices: 2 });
      expect(await main.call("unregisterDevice", { user_id: alice, token: "device-token-1" })).toEqual({ success: true, removed: true, devices: 1 });
      expect(await main.call("unregisterDevice", { user_id: alice, token: "device-token-1" })).toEqual({ success: true, removed: false, devices: 1 });
    });

    it("refuses another user's connection exactly as over HTTP, and an unknown one as not found", async () => {
      const { alice, bob, mallory } = users();
      const asked = await main.call("requestConnection", { user_id: alice, other_user_id: bob });
      const id = String((asked.connection as Body).connection_id);
      await main.call("acceptConnection", { connection_id: id, user_id: bob });
      const http = await main.harness.api.call("GET", `${routes.connection(id)}?user_id=${mallory}`);
      expect(http.status).toBe(403);
      const refused = { code: "functions/permission-denied", message: http.body.error?.message, details: { code: "FORBIDDEN" } };
      for (const [name, data] of [
        ["getConnection", {}],
        ["endConnection", {}],
        ["acceptConnection", {}],
        ["blockConnection", {}],
        ["sendConnectionMessage", { message: "let me in" }],
        ["listConnectionMessages", {}],
      ] as const) {
        expect(await failureOf(main.call(name, { connection_id: id, user_id: mallory, ...data }))).toEqual(refused);
      }
      expect(await failureOf(main.call("getConnection", { connection_id: randomUUID(), user_id: alice }))).toMatchObject({ code: "functions/not-found", details: { code: "CONNECTION_NOT_FOUND" } });
      // Nothing of Mallory's reached the connection.
      expect((await main.call("listConnectionMessages", { connection_id: id, user_id: alice })).messages).toEqual([]);
    });

    it.each([
      ["no connection_id", "getConnection", { user_id: "someone" }, { field: "connection_id", message: "is required" }],
      ["a connection_id that is a number", "endConnection", { user_id: "someone", connection_id: 7 }, { field: "connection_id", message: "must be a string" }],
      ["a connection_id holding a lone surrogate", "getConnection", { user_id: "someone", connection_id: "\udfff" }, { field: "connection_id", message: "must be valid Unicode text (no lone surrogates)" }],
      ["no other user", "requestConnection", { user_id: "someone" }, { field: "other_user_id" }],
      ["an empty message", "sendConnectionMessage", { user_id: "someone", connection_id: "8d3c4f0e-5b1a-4c2e-9f57-1a2b3c4d5e6f", message: " " }, { field: "message", message: "must not be empty" }],
      ["a page size a query cannot carry", "listConnections", { user_id: "someone", limit: { many: true } }, { field: "limit", message: "must be a string or a number" }],
      ["a page size past the cap", "listConnectionMessages", { user_id: "someone", connection_id: "8d3c4f0e-5b1a-4c2e-9f57-1a2b3c4d5e6f", limit: 1000 }, { field: "limit" }],
      ["no token", "registerDevice", { user_id: "someone" }, { field: "token" }],
      ["a token with spaces", "unregisterDevice", { user_id: "someone", token: "has spaces" }, { field: "token" }],
    ] as const)("refuses %s with invalid-argument naming the field", async (_what, name, data, field) => {
      expect(await failureOf(main.call(name, data))).toMatchObject({ code: "functions/invalid-argument", details: { code: "INVALID_REQUEST", fields: [field] } });
    });
  });
});
