import { HttpsError, onCall } from "firebase-functions/v2/https";
import { callableOptions } from "../../src/callable/callable-options";
import { CallableFailure, callableFailure, CODE_OF_ERROR, CODE_OF_STATUS } from "../../src/callable/callable-errors";
import { callableTrigger } from "../../src/callable/callable-trigger";
import { callableHandler } from "../../src/callable/cloud-callable";
import { ERROR_CODES, type ErrorCode } from "../../src/http/error-codes";

const answer = (code: ErrorCode, headers: Record<string, string> = {}) => ({ status: ERROR_CODES[code].status, code, message: `the ${code} message`, headers });

describe("callableFailure: a refusal as the error a callable answers", () => {
  it.each<[number, string]>([
    [400, "invalid-argument"],
    [401, "unauthenticated"],
    [403, "permission-denied"],
    [404, "not-found"],
    [409, "aborted"],
    [410, "failed-precondition"],
    [413, "invalid-argument"],
    [422, "invalid-argument"],
    [429, "resource-exhausted"],
    [500, "internal"],
    [502, "unavailable"],
    [503, "unavailable"],
    [504, "deadline-exceeded"],
  ])("maps every code answered with %i to %s, but those with a callable code of their own", (status, expected) => {
    const codes = (Object.keys(ERROR_CODES) as ErrorCode[]).filter((code) => ERROR_CODES[code].status === status && !(code in CODE_OF_ERROR));
    expect(codes.length).toBeGreaterThan(0);
    for (const code of codes) expect(callableFailure(answer(code)).code).toBe(expected);
  });

  it.each<[ErrorCode, string]>([
    // 409 as aborted: the same request is running, and a retry with the same key passes once it ends.
    ["IDEMPOTENCY_IN_PROGRESS", "aborted"],
    ["ERASURE_IN_PROGRESS", "aborted"],
    // 409 as failed-precondition: the connection is not in the state the call needs, and no retry passes until someone changes it.
    ["CONNECTION_PENDING", "failed-precondition"],
    ["CONNECTION_NOT_PENDING", "failed-precondition"],
  ])("answers %s, a 409, with %s", (code, expected) => {
    expect(ERROR_CODES[code].status).toBe(409);
    expect(callableFailure(answer(code)).code).toBe(expected);
  });

  it("names a callable code for every status of the list (a new one falls to a catch-all otherwise)", () => {
    const statuses = new Set(Object.values(ERROR_CODES).map((facts) => facts.status));
    expect([...statuses].filter((status) => !(status in CODE_OF_STATUS))).toEqual([]);
    for (const code of Object.keys(ERROR_CODES) as ErrorCode[]) expect(callableFailure(answer(code))).toBeInstanceOf(CallableFailure);
  });

  it("carries the project's code, the wait of Retry-After and the field issues in details, and the HTTP message", () => {
    const limited = callableFailure({ ...answer("RATE_LIMITED", { "Retry-After": "42" }) });
    expect({ code: limited.code, message: limited.message, details: limited.details }).toEqual({
      code: "resource-exhausted",
      message: "the RATE_LIMITED message",
      details: { code: "RATE_LIMITED", retry_after_seconds: 42 },
    });
    const invalid = callableFailure({ ...answer("INVALID_REQUEST"), details: [{ field: "message", message: "is required" }] });
    expect(invalid.details).toEqual({ code: "INVALID_REQUEST", fields: [{ field: "message", message: "is required" }] });
    // Serialised as the client receives it, once the handler made it the platform's HttpsError.
    expect(new HttpsError(invalid.code, invalid.message, invalid.details).toJSON()).toEqual({ status: "INVALID_ARGUMENT", message: "the INVALID_REQUEST message", details: { code: "INVALID_REQUEST", fields: [{ field: "message", message: "is required" }] } });
  });
});

describe("callableOptions", () => {
  it("enforces App Check as the instance reads REQUIRE_APP_CHECK, consuming only on the message callable with replay protection", () => {
    expect(callableOptions("session", {})).toMatchObject({ enforceAppCheck: false, cors: true, heartbeatSeconds: 15 });
    expect(callableOptions("message", { REQUIRE_APP_CHECK: "1", APP_CHECK_REPLAY_PROTECTION: "true" })).toMatchObject({ enforceAppCheck: true, consumeAppCheckToken: true });
    expect(callableOptions("session", { REQUIRE_APP_CHECK: "true", APP_CHECK_REPLAY_PROTECTION: "true" }).consumeAppCheckToken).toBeUndefined();
    expect(callableOptions("message", { APP_CHECK_REPLAY_PROTECTION: "true" }).consumeAppCheckToken).toBe(false);
  });

  it("allows CORS_ORIGINS' origins; when the config will not start, enforces no App Check (every call is answered CONFIGURATION_ERROR) and reads CORS_ORIGINS on its own", () => {
    expect(callableOptions("session", { CORS_ORIGINS: "https://a.example.com, https://b.example.com" }).cors).toEqual(["https://a.example.com", "https://b.example.com"]);
    expect(callableOptions("session", { CORS_ORIGINS: "nope" })).toMatchObject({ cors: false, enforceAppCheck: false });
    const badKey = { OPENAI_API_KEY: "sk-\u201cpasted\u201d", REQUIRE_APP_CHECK: "true", APP_CHECK_REPLAY_PROTECTION: "true" };
    expect(callableOptions("message", badKey)).toMatchObject({ cors: true, enforceAppCheck: false, consumeAppCheckToken: false });
    expect(callableOptions("session", { ...badKey, CORS_ORIGINS: "https://a.example.com" }).cors).toEqual(["https://a.example.com"]);
  });

  it("keeps the deploy knobs and the key of the HTTP functions", () => {
    expect(callableOptions("message", {})).toMatchObject({ invoker: "public", minInstances: expect.anything(), secrets: [expect.anything()] });
    expect(callableOptions("session", {}).secrets).toBeUndefined();
    const moderated = callableOptions("moderated", { REQUIRE_APP_CHECK: "true", APP_CHECK_REPLAY_PROTECTION: "true" });
    expect(moderated).toMatchObject({ invoker: "public", secrets: [expect.anything()], enforceAppCheck: true });
    expect({ minInstances: moderated.minInstances, consumeAppCheckToken: moderated.consumeAppCheckToken }).toEqual({ minInstances: undefined, consumeAppCheckToken: undefined });
  });
});

describe("callableHandler", () => {
  const request = { data: {}, acceptsStreaming: false, rawRequest: { headers: {}, socket: {} } } as unknown as Parameters<ReturnType<typeof callableHandler>>[0];

  it("throws a refusal as the HttpsError class it is given: the one of the onCall wrapper running it", async () => {
    class PlatformHttpsError extends Error {
      constructor(readonly code: string, message: string, readonly details?: unknown) {
        super(message);
      }
    }
    const handler = callableHandler("createSession", () => Promise.reject(new Error("instance could not start")));
    const error = await handler(request, undefined, PlatformHttpsError).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(PlatformHttpsError);
    expect(error).toMatchObject({ code: "internal", message: "Internal error", details: { code: "INTERNAL" } });
    // Without one, firebase-functions' own.
    expect(await handler(request, undefined).catch((caught: unknown) => caught)).toBeInstanceOf(HttpsError);
  });
});

describe("callableTrigger", () => {
  const handler = () => Promise.resolve({ handled: true });

  it("is onCall's own function in everything firebase-functions sets on it for the CLI, the emulator and tests", async () => {
    const options = callableOptions("message", {});
    const plain = onCall(options, handler);
    const trigger = callableTrigger(options, handler);
    expect(typeof trigger).toBe("function");
    expect(Reflect.ownKeys(trigger)).toEqual(Reflect.ownKeys(plain));
    expect({ endpoint: trigger.__endpoint, trigger: trigger.__trigger, length: trigger.length }).toEqual({ endpoint: plain.__endpoint, trigger: plain.__trigger, length: plain.length });
    const request = { data: { any: "data" }, rawRequest: {} } as unknown as Parameters<typeof trigger.run>[0];
    expect(await trigger.run(request)).toEqual({ handled: true });
  });
});
