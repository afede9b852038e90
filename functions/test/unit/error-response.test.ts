import { AppCheckInvalidError, AppCheckRequiredError, AppCheckUnavailableError } from "../../src/auth/app-check";
import { IdentityUnavailableError, InvalidTokenError } from "../../src/auth/identity";
import { ConfigError } from "../../src/config";
import { errorCodeFacts } from "../../src/http/error-codes";
import { errorBody, toErrorAnswer } from "../../src/http/error-response";
import { HttpError } from "../../src/http/http-error";
import { ModelError } from "../../src/llm/errors";
import { MessageFlaggedError, ModerationAbandonedError, ModerationNotSupportedError, ModerationUnavailableError } from "../../src/llm/moderation";
import {
  ForbiddenError,
  IdempotencyInProgressError,
  IdempotencyKeyReusedError,
  LimitExceededError,
  PromptTooLargeError,
  SessionClosedError,
  SessionNotFoundError,
  TemplateNotFoundError,
} from "../../src/session/errors";
import { StoreDataError, StoreUnavailableError } from "../../src/store/errors";

const SECRET = "sk-secret-0123456789";

interface Row {
  readonly name: string;
  readonly error: unknown;
  readonly status: number;
  readonly code: string;
  readonly headers?: Record<string, string>;
}

const table: Row[] = [
  { name: "InvalidTokenError", error: new InvalidTokenError("expired"), status: 401, code: "UNAUTHENTICATED", headers: { "WWW-Authenticate": 'Bearer error="invalid_token"' } },
  { name: "IdentityUnavailableError", error: new IdentityUnavailableError("no keys"), status: 503, code: "AUTH_UNAVAILABLE", headers: { "Retry-After": "1" } },
  { name: "ForbiddenError", error: new ForbiddenError("another user's"), status: 403, code: "FORBIDDEN" },
  { name: "LimitExceededError(messages)", error: new LimitExceededError("messages", 42), status: 429, code: "RATE_LIMITED", headers: { "Retry-After": "42" } },
  { name: "LimitExceededError(sessions)", error: new LimitExceededError("sessions", 60), status: 429, code: "TOO_MANY_ACTIVE_SESSIONS", headers: { "Retry-After": "60" } },
  { name: "LimitExceededError(exchanges)", error: new LimitExceededError("exchanges", 1800), status: 429, code: "SESSION_EXCHANGE_LIMIT", headers: { "Retry-After": "1800" } },
  { name: "LimitExceededError(tokens)", error: new LimitExceededError("tokens", 43200), status: 429, code: "TOKEN_LIMIT", headers: { "Retry-After": "43200" } },
  { name: "LimitExceededError(service)", error: new LimitExceededError("service", 3600), status: 429, code: "SERVICE_TOKEN_LIMIT", headers: { "Retry-After": "3600" } },
  { name: "LimitExceededError(address)", error: new LimitExceededError("address", 3600), status: 429, code: "ADDRESS_RATE_LIMITED", headers: { "Retry-After": "3600" } },
  { name: "PromptTooLargeError", error: new PromptTooLargeError(9000, 8192), status: 400, code: "MESSAGE_TOO_LONG" },
  { name: "IdempotencyKeyReusedError", error: new IdempotencyKeyReusedError(), status: 422, code: "IDEMPOTENCY_KEY_REUSED" },
  { name: "IdempotencyInProgressError", error: new IdempotencyInProgressError(5), status: 409, code: "IDEMPOTENCY_IN_PROGRESS", headers: { "Retry-After": "5" } },
  { name: "SessionNotFoundError", error: new SessionNotFoundError("s1"), status: 404, code: "SESSION_NOT_FOUND" },
  { name: "TemplateNotFoundError", error: new TemplateNotFoundError("nope"), status: 404, code: "TEMPLATE_NOT_FOUND" },
  { name: "SessionClosedError(ended)", error: new SessionClosedError("ended"), status: 410, code: "SESSION_ENDED" },
  { name: "SessionClosedError(expired)", error: new SessionClosedError("expired"), status: 410, code: "SESSION_EXPIRED" },
  { name: "ModelError(timeout)", error: new ModelError("timeout", "slow"), status: 504, code: "MODEL_TIMEOUT" },
  { name: "ModelError(unavailable)", error: new ModelError("unavailable", "busy"), status: 503, code: "MODEL_UNAVAILABLE" },
  { name: "ModelError(bad_response)", error: new ModelError("bad_response", "junk"), status: 502, code: "MODEL_ERROR" },
  { name: "ModelError(unavailable) with Retry-After", error: new ModelError("unavailable", "busy", { retryAfterMs: 7_000 }), status: 503, code: "MODEL_UNAVAILABLE", headers: { "Retry-After": "7" } },
  { name: "ModelError(timeout) with Retry-After rounded up", error: new ModelError("timeout", "slow", { retryAfterMs: 2_001 }), status: 504, code: "MODEL_TIMEOUT", headers: { "Retry-After": "3" } },
  { name: "ModelError(bad_response) with Retry-After 0", error: new ModelError("bad_response", "junk", { retryAfterMs: 0 }), status: 502, code: "MODEL_ERROR", headers: { "Retry-After": "1" } },
  { name: "StoreUnavailableError", error: new StoreUnavailableError("readSessionState"), status: 503, code: "DATABASE_UNAVAILABLE", headers: { "Retry-After": "1" } },
  { name: "StoreDataError", error: new StoreDataError("/sessions/x/meta", "bad"), status: 500, code: "DATA_ERROR" },
  { name: "ConfigError", error: new ConfigError("OPENAI_BASE_URL must be an http(s) URL"), status: 500, code: "CONFIGURATION_ERROR" },
  { name: "AppCheckRequiredError", error: new AppCheckRequiredError("none"), status: 401, code: "APP_CHECK_REQUIRED" },
  { name: "AppCheckInvalidError", error: new AppCheckInvalidError("forged"), status: 401, code: "APP_CHECK_INVALID" },
  { name: "AppCheckUnavailableError", error: new AppCheckUnavailableError("keys"), status: 503, code: "APP_CHECK_UNAVAILABLE", headers: { "Retry-After": "1" } },
  { name: "MessageFlaggedError", error: new MessageFlaggedError(["harassment"]), status: 422, code: "MESSAGE_FLAGGED" },
  { name: "ModerationUnavailableError (failing closed)", error: new ModerationUnavailableError("timeout", "slow"), status: 503, code: "MODERATION_UNAVAILABLE", headers: { "Retry-After": "1" } },
  { name: "ModerationNotSupportedError (a 404: configuration, not outage)", error: new ModerationNotSupportedError("no /moderations"), status: 500, code: "CONFIGURATION_ERROR" },
  { name: "ModerationAbandonedError (never meant to reach a client)", error: new ModerationAbandonedError("gone"), status: 500, code: "INTERNAL" },
  { name: "a plain Error", error: new Error("boom"), status: 500, code: "INTERNAL" },
  { name: "a TypeError", error: new TypeError("x is undefined"), status: 500, code: "INTERNAL" },
  { name: "a thrown string", error: "boom", status: 500, code: "INTERNAL" },
  { name: "undefined", error: undefined, status: 500, code: "INTERNAL" },
];

describe("ModelError", () => {
  it.each([
    ["timeout", true],
    ["unavailable", true],
    ["bad_response", false],
  ] as const)("a %s is retryable: %p unless told otherwise", (failure, retryable) => {
    expect(new ModelError(failure, "x").retryable).toBe(retryable);
    expect(new ModelError(failure, "x", { retryable: !retryable }).retryable).toBe(!retryable);
  });

  it("keeps the wait in milliseconds and its cause", () => {
    const cause = new Error("sdk");
    const error = new ModelError("unavailable", "busy", { retryAfterMs: 1_500, cause });
    expect(error).toMatchObject({ name: "ModelError", failure: "unavailable", message: "busy", retryAfterMs: 1_500, cause });
    expect(new ModelError("unavailable", "busy").retryAfterMs).toBeUndefined();
  });

  it.each([
    [undefined, undefined],
    [0, 1],
    [1, 1],
    [999, 1],
    [1_000, 1],
    [1_001, 2],
    [7_000, 7],
  ])("turns retryAfterMs %p into retryAfterSeconds %p (whole seconds, at least 1)", (retryAfterMs, seconds) => {
    const options = retryAfterMs === undefined ? {} : { retryAfterMs };
    expect(new ModelError("unavailable", "busy", options).retryAfterSeconds).toBe(seconds);
  });
});

describe("toErrorAnswer", () => {
  it.each(table)("maps $name to $status $code", (row) => {
    const answer = toErrorAnswer(row.error);
    expect(answer.status).toBe(row.status);
    expect(answer.code).toBe(row.code);
    expect(answer.headers).toEqual(row.headers ?? {});
    expect(answer.details).toBeUndefined();
    expect(answer.message.length).toBeGreaterThan(0);
  });

  it.each(table)("answers $name with a code of the shared list, its status and its Retry-After as the list says", (row) => {
    const answer = toErrorAnswer(row.error);
    const facts = errorCodeFacts(answer.code);
    expect(facts?.status).toBe(answer.status);
    if (facts?.retryAfter === "none") expect(answer.headers).not.toHaveProperty("Retry-After");
    if (row.error instanceof LimitExceededError) expect(answer.headers).toHaveProperty("Retry-After");
  });

  it.each(["tokens", "service"] as const)("words a daily limit's refusal (%s) with no wait of its own, which a short Retry-After would contradict: the wait is Retry-After's", (limit) => {
    // Seconds, when only messages still running keep the message out; else to 00:00 UTC.
    for (const seconds of [7, 43_200]) {
      const answer = toErrorAnswer(new LimitExceededError(limit, seconds));
      expect({ retryAfter: answer.headers["Retry-After"], message: answer.message }).toEqual({ retryAfter: String(seconds), message: expect.not.stringMatching(/UTC|day\b|midnight|tomorrow/) as unknown });
    }
  });

  it("passes an HttpError through with its headers and details, its status from the shared list", () => {
    const details = [{ field: "message", message: "is required" }];
    const answer = toErrorAnswer(new HttpError("METHOD_NOT_ALLOWED", "Use POST", { Allow: "POST, OPTIONS" }, details));
    expect(answer).toEqual({ status: 405, code: "METHOD_NOT_ALLOWED", message: "Use POST", headers: { Allow: "POST, OPTIONS" }, details });
  });

  it("names the missing template and hides the session id", () => {
    expect(toErrorAnswer(new TemplateNotFoundError("no-such-template")).message).toBe('Template "no-such-template" not found');
    expect(toErrorAnswer(new SessionNotFoundError("0f8fad5b-d9cb-469f-a165-70867728950e")).message).toBe("Session not found");
  });

  it("sends Retry-After for a model error only when the provider gave one", () => {
    expect(toErrorAnswer(new ModelError("unavailable", "busy")).headers).not.toHaveProperty("Retry-After");
    expect(toErrorAnswer(new ModelError("unavailable", "busy", { retryAfterMs: 12_000 })).headers).toEqual({ "Retry-After": "12" });
  });

  it.each([
    ["APP_CHECK_REQUIRED", new AppCheckRequiredError(`missing ${SECRET}`), "An App Check token is required (X-Firebase-AppCheck header, from the Firebase App Check SDK)"],
    ["APP_CHECK_INVALID", new AppCheckInvalidError(`bad ${SECRET}`), "The App Check token is not valid; get a fresh one from the Firebase App Check SDK"],
    ["APP_CHECK_UNAVAILABLE", new AppCheckUnavailableError(`down ${SECRET}`), "The App Check token could not be verified; try again shortly"],
    ["MESSAGE_FLAGGED", new MessageFlaggedError(["self-harm/intent"]), "The message was flagged by moderation and was not sent"],
    ["MODERATION_UNAVAILABLE", new ModerationUnavailableError("unavailable", `down ${SECRET}`, { status: 503 }), "The message could not be checked by moderation; try again shortly"],
  ])("gives %s a fixed message: neither the token, the categories nor the provider's words", (_code, error, message) => {
    expect(toErrorAnswer(error).message).toBe(message);
  });

  it("keeps a model error's own safe message", () => {
    expect(toErrorAnswer(new ModelError("timeout", "the model did not answer in time")).message).toBe("Model error: the model did not answer in time");
  });

  describe("never leaks the cause", () => {
    const cause = new Error(`Incorrect API key provided: ${SECRET}`);
    it.each([
      ["ModelError", new ModelError("bad_response", "the model provider refused the request (status 401)", { cause })],
      ["StoreUnavailableError", new StoreUnavailableError("appendExchange", { cause })],
      ["StoreDataError", new StoreDataError(`/templates/${SECRET}`, SECRET)],
      ["ConfigError", new ConfigError(`OPENAI_BASE_URL must be an http(s) URL, got "${SECRET}"`)],
      ["Error", new Error(SECRET, { cause })],
      ["Error with a stack", Object.assign(new Error("boom"), { stack: `Error: ${SECRET}\n    at secret.ts:1:1` })],
    ])("%s", (_name, error) => {
      const answer = toErrorAnswer(error);
      const serialised = JSON.stringify(errorBody(answer)) + JSON.stringify(answer.headers);
      expect(serialised).not.toContain(SECRET);
      expect(serialised).not.toContain("Incorrect API key");
      expect(serialised).not.toMatch(/\bat .+:\d+:\d+/);
    });
  });
});

describe("errorBody", () => {
  it("wraps code and message, without details when there are none", () => {
    expect(errorBody(toErrorAnswer(new SessionClosedError("ended")))).toEqual({
      success: false,
      error: { code: "SESSION_ENDED", message: "Session has ended; start a new session" },
    });
  });

  it("includes details when the answer has them", () => {
    const details = [{ field: "user_id", message: "is required" }];
    expect(errorBody(toErrorAnswer(new HttpError("INVALID_REQUEST", "Invalid request body: user_id is required", {}, details)))).toEqual({
      success: false,
      error: { code: "INVALID_REQUEST", message: "Invalid request body: user_id is required", details },
    });
  });
});
