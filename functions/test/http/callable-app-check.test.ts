import { generateKeyPairSync } from "node:crypto";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import express from "express";
import { callableOptions } from "../../src/callable/callable-options";
import { CALLABLES, CALLABLE_GROUP } from "../../src/callable/callable-operations";
import { callableTrigger } from "../../src/callable/callable-trigger";
import { callableHandler } from "../../src/callable/cloud-callable";
import { ConfigError } from "../../src/config";
import { startingConfig } from "../../src/runtime/cloud-instance";
import { FunctionsError, httpsCallable, type HttpsCallableStreamResult } from "firebase/functions";
import { firebaseAppCheck } from "../../src/auth/firebase-app-check";
import { callableClient, serveCallables, type CallableClient, type CallableServer } from "../support/callable-server";
import { startHarness, type Harness } from "../support/http-harness";
import { appCheckToken, LocalAppCheck } from "../support/local-app-check";
import { recordingLog } from "../support/recording-log";

// firebase-functions 7.4's onCall logs "Callable request verification passed" at debug level on
// every call, through the console it captured when loaded: that one level is muted here.
jest.mock("../../node_modules/firebase-functions/lib/logger/common.js", () => {
  const actual = jest.requireActual<{ UNPATCHED_CONSOLE: Record<string, unknown> }>("../../node_modules/firebase-functions/lib/logger/common.js");
  return { ...actual, UNPATCHED_CONSOLE: { ...actual.UNPATCHED_CONSOLE, debug: () => undefined, warn: () => undefined } };
});

type Body = Record<string, unknown>;

/** A streamed call's result, or its failure's code and details, once its stream was read to the end (each chunk a text). */
async function streamedOutcome(call: Promise<HttpsCallableStreamResult<Body, { text: string }>>): Promise<unknown> {
  const { stream, data } = await call;
  const settled = data.then((body) => ({ response: body.response }), (error: unknown) => ({ failed: error instanceof FunctionsError ? { code: error.code, details: error.details } : String(error) }));
  try {
    for await (const chunk of stream) expect(typeof chunk.text).toBe("string");
  } catch {
    // The same failure as the result's.
  }
  return settled;
}

/**
 * App Check on the callables, outside the emulator (which lets any non-empty token through):
 * firebase-functions' own onCall verifies the token with firebase-admin's default app, which
 * reaches App Check's keys and replay check served locally through its `httpAgent`. A refusal
 * there is `unauthenticated` before the handler runs, whatever the reason, key outage included
 * (no 503 as on the HTTP routes); the handler holds the platform to the instance's config and
 * refuses a replayed token itself.
 */
describe("App Check on the callables (REQUIRE_APP_CHECK, APP_CHECK_REPLAY_PROTECTION)", () => {
  const signing = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const other = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const env = { REQUIRE_APP_CHECK: "true", APP_CHECK_REPLAY_PROTECTION: "true" };
  let google: LocalAppCheck;
  let harness: Harness;
  let server: CallableServer;
  /** The same instance behind callables whose platform does not enforce (a param the platform reads otherwise). */
  let unenforced: CallableServer;
  let reachable = false;
  const clients: CallableClient[] = [];

  beforeAll(async () => {
    google = await LocalAppCheck.start(signing.publicKey);
    // The default app: the one firebase-functions verifies callables' tokens with.
    google.app(() => reachable, "[DEFAULT]");
    harness = await startHarness({ store: "memory", env, appCheck: firebaseAppCheck(google.app().app, { log: recordingLog().log }) });
    server = await serveCallables(harness.api.runtime, env);
    unenforced = await serveCallables(harness.api.runtime, {});
  });
  afterAll(async () => {
    await Promise.all(clients.map((client) => client.close()));
    await unenforced.close();
    await server.close();
    await harness.close();
    await google.close();
  });
  beforeEach(() => {
    google.reset();
    harness.fake.reset();
  });

  function client(token?: () => string, on: CallableServer = server): CallableClient {
    const made = callableClient("127.0.0.1", on.port, token ? { appCheckToken: token } : {});
    clients.push(made);
    return made;
  }
  const valid = () => appCheckToken(signing.privateKey);
  const call = (from: CallableClient, name: string, data: unknown, limitedUse = false) =>
    httpsCallable<unknown, Body>(from.functions, `chat-${name}`, { limitedUseAppCheckTokens: limitedUse })(data).then((result) => result.data);
  const create = { user_id: "user_attested", template_id: "friendly-assistant" };

  // First: firebase-admin keeps the keys once it fetched them, as a warm instance does.
  it("refuses with unauthenticated, not unavailable, when App Check's keys cannot be fetched: the platform decides before the handler", async () => {
    await expect(call(client(valid), "createSession", create)).rejects.toMatchObject({ code: "functions/unauthenticated", details: undefined });
    expect(harness.fake.requests).toHaveLength(0);
    reachable = true;
  });

  it("serves a call whose token verifies, and refuses one without a token, forged, expired or another project's", async () => {
    const attested = client(valid);
    const session = await call(attested, "createSession", create);
    expect(session).toMatchObject({ success: true, user_id: "user_attested" });
    for (const token of [undefined, () => appCheckToken(other.privateKey), () => appCheckToken(signing.privateKey, { claims: { iat: 1_000, exp: 2_000 } }), () => appCheckToken(signing.privateKey, { project: { id: "demo-other", number: "987654321", appId: "1:987654321:web:ff" } })]) {
      await expect(call(client(token), "sendMessage", { session_id: session.session_id, message: "hi" })).rejects.toMatchObject({ code: "functions/unauthenticated", details: undefined });
    }
    expect(harness.fake.requests).toHaveLength(0);
  });

  it("consumes the message callable's token (replay protection), and refuses one App Check says was used", async () => {
    const attested = client(valid);
    const session = await call(attested, "createSession", create);
    // Creating consumed nothing: the keys only.
    expect(google.received.filter((request) => request.path.endsWith(":verifyAppCheckToken"))).toEqual([]);
    expect(await call(attested, "sendMessage", { session_id: session.session_id, message: "once" }, true)).toMatchObject({ success: true, message_count: 1 });
    expect(google.received.filter((request) => request.path.endsWith(":verifyAppCheckToken"))).toHaveLength(1);

    google.answers.replay = { status: 200, body: JSON.stringify({ alreadyConsumed: true }) };
    await expect(call(attested, "sendMessage", { session_id: session.session_id, message: "twice" }, true)).rejects.toMatchObject({
      code: "functions/unauthenticated",
      details: { code: "APP_CHECK_INVALID" },
    });
    expect(harness.fake.requests).toHaveLength(1);
  });

  it("streams every message of a session with replay protection when .stream() is given limitedUseAppCheckTokens: each call sends a token of its own", async () => {
    // Each token consumed once, as App Check does: a second message with the first one's token would be refused.
    google.consumeOnce();
    let minted = 0;
    const attested = client(() => appCheckToken(signing.privateKey, { claims: { jti: `token-${(minted += 1)}` } }));
    const session = await call(attested, "createSession", { ...create, user_id: "user_replay_stream" });
    const send = httpsCallable<unknown, Body, { text: string }>(attested.functions, "chat-sendMessage", { limitedUseAppCheckTokens: true });
    // The option again on .stream(), as docs/app-check-and-moderation.md says: @firebase/functions 0.14.0's
    // `callable.stream = (data, options) => stream(...)` ignores the options given to httpsCallable.
    const streamed = (message: string) => streamedOutcome(send.stream({ session_id: session.session_id, message }, { limitedUseAppCheckTokens: true }));
    const first = await streamed("first");
    const second = await streamed("second");
    expect({ first, second }).toEqual({ first: { response: "reply #1 to: first" }, second: { response: "reply #2 to: second" } });
    const checked = google.received.filter((request) => request.path.endsWith(":verifyAppCheckToken")).map((request) => (JSON.parse(request.body) as { app_check_token: string }).app_check_token);
    expect({ checks: checked.length, tokens: new Set(checked).size }).toEqual({ checks: 2, tokens: 2 });
  });

  it("holds the platform to the instance's config: a call the platform let through without a token is refused by the handler", async () => {
    await expect(call(client(undefined, unenforced), "createSession", create)).rejects.toMatchObject({
      code: "functions/unauthenticated",
      details: { code: "APP_CHECK_REQUIRED" },
    });
  });
});

/**
 * A deployment whose instance cannot start for a bad param: README says an OPENAI_API_KEY pasted with
 * a character no HTTP header carries (a curly quote) is refused at start, "500 CONFIGURATION_ERROR
 * deployed", and so is a time budget that does not fit the function's timeout (docs/time-budget.md)
 * or an emulator's URL in a deployed DATABASE_INSTANCES; docs/app-check-and-moderation.md's table
 * gives CONFIGURATION_ERROR as the callables' `internal`, and docs/api.md says such an answer carries
 * the CORS headers of CORS_ORIGINS (default *), for a page to read it. The triggers read the same env
 * at load as the instance does at start (index.ts: callableOptions), and the instance's start
 * throws its ConfigError on every call (cloud-app.ts callableApi -> cloudInstance). App Check is
 * required where the env says so, and the calls send no token.
 */
describe.each([
  ["a curly-quoted OPENAI_API_KEY", { OPENAI_API_KEY: "sk-\u201cpasted-with-a-curly-quote\u201d" }],
  ["a time budget that does not fit TIMEOUT_SECONDS, App Check required", { REQUIRE_APP_CHECK: "true", OPENAI_TIMEOUT_MS: "120000" }],
  ["an emulator's URL in DATABASE_INSTANCES, deployed, App Check required", { REQUIRE_APP_CHECK: "true", DATABASE_INSTANCES: "http://127.0.0.1:9000/?ns=demo-chatify" }],
])("a callable of an instance that could not start for a bad param: %s", (_name, env: Record<string, string>) => {
  const ORIGIN = "https://app.example";
  let server: Server;
  let port: number;

  beforeAll(async () => {
    // What the instance's start throws with that env, deployed.
    let startFailure: Error | undefined;
    try {
      startingConfig(env, false);
    } catch (error) {
      if (error instanceof Error) startFailure = error;
    }
    expect(startFailure).toBeInstanceOf(ConfigError);
    const app = express();
    const body = express.json({ limit: "10mb", verify: (request, _response, raw) => { Object.assign(request, { rawBody: raw }); } });
    // As index.ts makes chat-sendMessage: onCall's options read from the env at load, the handler on the app's callables.
    const trigger = callableTrigger(callableOptions(CALLABLES.sendMessage.role, env), callableHandler("sendMessage", () => Promise.reject(startFailure ?? new Error("no start failure"))));
    app.all(`/demo-chatify/us-central1/${CALLABLE_GROUP}-sendMessage`, body, (request, response) => {
      void trigger(request as never, response);
    });
    server = app.listen(0, "127.0.0.1");
    await new Promise((resolve) => server.once("listening", resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  it("answers internal with details.code CONFIGURATION_ERROR, as the HTTP routes answer 500 CONFIGURATION_ERROR, not unauthenticated", async () => {
    const client = callableClient("127.0.0.1", port);
    try {
      const failure = await httpsCallable(client.functions, "chat-sendMessage")({ session_id: "8d3c4f0e-5b1a-4c2e-9f57-1a2b3c4d5e6f", message: "hi" }).then(
        () => "succeeded",
        (error: unknown) => (error instanceof FunctionsError ? { code: error.code, details: error.details } : String(error)),
      );
      expect(failure).toEqual({ code: "functions/internal", details: { code: "CONFIGURATION_ERROR" } });
    } finally {
      await client.close();
    }
  });

  it("gives a page of another origin the CORS headers of CORS_ORIGINS (default *) on that answer, as the HTTP routes do", async () => {
    const response = await fetch(`http://127.0.0.1:${port}/demo-chatify/us-central1/chat-sendMessage`, {
      method: "POST",
      headers: { "content-type": "application/json", origin: ORIGIN },
      body: JSON.stringify({ data: { session_id: "8d3c4f0e-5b1a-4c2e-9f57-1a2b3c4d5e6f", message: "hi" } }),
    });
    expect({ status: response.status, allowedOrigin: response.headers.get("access-control-allow-origin"), body: await response.json() }).toEqual({
      status: 500,
      allowedOrigin: ORIGIN,
      body: { error: expect.objectContaining({ status: "INTERNAL", details: { code: "CONFIGURATION_ERROR" } }) },
    });
  });
});
