import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { ConfigError, DECLARED_PARAMS, resolveConfig, type Config } from "../../src/config";
import { DEPLOY_PARAMS } from "../../src/function-options";
import { connectionBodies } from "../../src/http/connection-schemas";
import { DEVICE_TOKEN_MAX_CHARS, LARGEST_DEVICE_BODY_BYTES } from "../../src/http/message-body";
import { corsHeaders } from "../../src/http/cors";
import { idempotencyKeyOf } from "../../src/http/endpoint-parts";

/** Where each declared param lands in the resolved config, written back as the declared string form. */
const READ_BACK: Readonly<Record<string, (config: Config) => string>> = {
  OPENAI_TIMEOUT_MS: (config) => String(config.openai.timeoutMs),
  OPENAI_MAX_RETRIES: (config) => String(config.openai.maxRetries),
  OPENAI_MAX_RETRY_WAIT_MS: (config) => String(config.openai.maxRetryWaitMs),
  CONTEXT_WINDOW_MESSAGES: (config) => String(config.contextWindowMessages),
  MAX_MESSAGE_CHARS: (config) => String(config.maxMessageChars),
  MAX_BODY_BYTES: (config) => String(config.maxBodyBytes),
  DB_TIMEOUT_MS: (config) => String(config.dbTimeoutMs),
  SESSION_IDLE_TTL_MINUTES: (config) => String(config.sessionIdleTtlMs / 60_000),
  SESSION_RETENTION_DAYS: (config) => String(config.sessionRetentionMs / 86_400_000),
  TEMPLATE_CACHE_TTL_MS: (config) => String(config.templateCacheTtlMs),
  SESSION_CACHE_TTL_MS: (config) => String(config.sessionCacheTtlMs),
  SESSION_CACHE_MAX_ENTRIES: (config) => String(config.sessionCacheMaxEntries),
  OPENAI_BASE_URL: (config) => config.openai.baseUrl ?? "",
  CORS_ORIGINS: (config) => (config.corsOrigins === "*" ? "*" : config.corsOrigins.join(",")),
  USER_MESSAGES_PER_MINUTE: (config) => String(config.limits.userMessagesPerMinute),
  USER_TOKENS_PER_DAY: (config) => String(config.limits.userTokensPerDay),
  USER_MAX_ACTIVE_SESSIONS: (config) => String(config.limits.userMaxActiveSessions),
  SESSION_MAX_EXCHANGES: (config) => String(config.limits.sessionMaxExchanges),
  SERVICE_TOKENS_PER_DAY: (config) => String(config.limits.serviceTokensPerDay),
  ADDRESS_SESSIONS_PER_HOUR: (config) => String(config.limits.addressSessionsPerHour),
  REQUIRE_AUTH: (config) => String(config.requireAuth),
  LIVE_PARTIALS: (config) => String(config.livePartials),
  REQUIRE_APP_CHECK: (config) => String(config.requireAppCheck),
  APP_CHECK_REPLAY_PROTECTION: (config) => String(config.appCheckReplayProtection),
  MODERATION: (config) => String(config.moderation.enabled),
  MODERATION_ON_OUTAGE: (config) => config.moderation.onOutage,
  MIN_INSTANCES: (config) => String(config.deploy.minInstances),
  MAX_INSTANCES: (config) => String(config.deploy.maxInstances),
  CONCURRENCY: (config) => String(config.deploy.concurrency),
  MEMORY_MIB: (config) => String(config.deploy.memoryMib),
  TIMEOUT_SECONDS: (config) => String(config.deploy.timeoutSeconds),
  CONNECTION_MESSAGES_PER_MINUTE: (config) => String(config.connections.messagesPerMinute),
  CONNECTION_REQUESTS_PER_HOUR: (config) => String(config.connections.requestsPerHour),
  NOTIFICATION_PREVIEW_CHARS: (config) => String(config.notifications.previewChars),
  NOTIFICATION_DEADLINE_MS: (config) => String(config.notifications.deadlineMs),
  PARTIAL_MAX_INTERVAL_MS: (config) => String(config.partialMaxIntervalMs),
  DATABASE_INSTANCES: (config) => config.databaseInstances.join(","),
};

const INT_PARAM_NAMES = DECLARED_PARAMS.filter((param) => /^\d+$/.test(param.default)).map((param) => param.name);

/** The error `resolveConfig` throws for `env`, failing the test when it throws none. */
function configError(env: Record<string, string>): ConfigError {
  try {
    resolveConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error(`resolveConfig accepted ${JSON.stringify(env)}`);
}

/** The declared range of an int param, as its own error message states it. */
function declaredRange(name: string): { min: number; max: number } {
  const match = /from (\d+) to (\d+)/.exec(configError({ [name]: "not a number" }).message);
  if (!match) throw new Error(`no range in the error for ${name}`);
  return { min: Number(match[1]), max: Number(match[2]) };
}

describe("resolveConfig defaults", () => {
  it("reads every declared param back", () => {
    expect(Object.keys(READ_BACK).sort()).toEqual(DECLARED_PARAMS.map((param) => param.name).sort());
  });

  it.each(DECLARED_PARAMS)("$name defaults to its declared default ($default)", (param) => {
    expect(READ_BACK[param.name]!(resolveConfig({}))).toBe(param.default);
  });

  it("has no API key, no base URL and allows any origin by default", () => {
    const config = resolveConfig({});
    expect(config.openai.apiKey).toBeUndefined();
    expect(config.openai.baseUrl).toBeUndefined();
    expect(config.corsOrigins).toBe("*");
  });

  // The deploy knobs are the exception: refused blank ("resolveConfig deploy knobs").
  it.each(DECLARED_PARAMS.filter((param) => !Object.hasOwn(DEPLOY_PARAMS, param.name)))("blank $name falls back to the default", (param) => {
    expect(READ_BACK[param.name]!(resolveConfig({ [param.name]: "  " }))).toBe(param.default);
    expect(READ_BACK[param.name]!(resolveConfig({ [param.name]: "" }))).toBe(param.default);
  });

  it("treats a blank API key as no key and trims a set one", () => {
    expect(resolveConfig({ OPENAI_API_KEY: "   " }).openai.apiKey).toBeUndefined();
    expect(resolveConfig({ OPENAI_API_KEY: " sk-abc \n" }).openai.apiKey).toBe("sk-abc");
  });
});

describe("resolveConfig overrides", () => {
  it("applies every override from the environment", () => {
    const config = resolveConfig({
      OPENAI_API_KEY: "sk-test",
      OPENAI_BASE_URL: "http://localhost:8080/v1",
      OPENAI_TIMEOUT_MS: "2500",
      OPENAI_MAX_RETRIES: "3",
      OPENAI_MAX_RETRY_WAIT_MS: "1500",
      CONTEXT_WINDOW_MESSAGES: "0",
      MAX_MESSAGE_CHARS: "123",
      MAX_BODY_BYTES: "12288",
      CORS_ORIGINS: "https://app.example.com",
      DB_TIMEOUT_MS: "750",
      SESSION_IDLE_TTL_MINUTES: "90",
      SESSION_RETENTION_DAYS: "2",
      TEMPLATE_CACHE_TTL_MS: "0",
      SESSION_CACHE_TTL_MS: "1000",
      SESSION_CACHE_MAX_ENTRIES: "7",
      USER_MESSAGES_PER_MINUTE: "11",
      USER_TOKENS_PER_DAY: "0",
      USER_MAX_ACTIVE_SESSIONS: "3",
      SESSION_MAX_EXCHANGES: "40",
      SERVICE_TOKENS_PER_DAY: "5000000",
      ADDRESS_SESSIONS_PER_HOUR: "0",
      REQUIRE_AUTH: "false",
      LIVE_PARTIALS: "false",
      REQUIRE_APP_CHECK: "true",
      APP_CHECK_REPLAY_PROTECTION: "true",
      MODERATION: "true",
      MODERATION_ON_OUTAGE: "closed",
      MIN_INSTANCES: "1",
      MAX_INSTANCES: "40",
      CONCURRENCY: "20",
      MEMORY_MIB: "1024",
      TIMEOUT_SECONDS: "120",
      CONNECTION_MESSAGES_PER_MINUTE: "7",
      CONNECTION_REQUESTS_PER_HOUR: "3",
      NOTIFICATION_PREVIEW_CHARS: "0",
      NOTIFICATION_DEADLINE_MS: "250",
      PARTIAL_MAX_INTERVAL_MS: "1000",
      DATABASE_INSTANCES: " https://chatify-default-rtdb.firebaseio.com/ , https://chatify-2.europe-west1.firebasedatabase.app",
    });
    expect(config).toEqual({
      openai: { apiKey: "sk-test", baseUrl: "http://localhost:8080/v1", timeoutMs: 2500, maxRetries: 3, maxRetryWaitMs: 1500 },
      contextWindowMessages: 0,
      maxMessageChars: 123,
      maxBodyBytes: 12288,
      corsOrigins: ["https://app.example.com"],
      dbTimeoutMs: 750,
      sessionIdleTtlMs: 90 * 60_000,
      sessionRetentionMs: 2 * 86_400_000,
      templateCacheTtlMs: 0,
      sessionCacheTtlMs: 1000,
      sessionCacheMaxEntries: 7,
      requireAuth: false,
      livePartials: false,
      partialMaxIntervalMs: 1000,
      requireAppCheck: true,
      appCheckReplayProtection: true,
      moderation: { enabled: true, onOutage: "closed" },
      deploy: { minInstances: 1, maxInstances: 40, concurrency: 20, memoryMib: 1024, timeoutSeconds: 120 },
      limits: { userMessagesPerMinute: 11, userMaxActiveSessions: 3, sessionMaxExchanges: 40, userTokensPerDay: 0, serviceTokensPerDay: 5_000_000, addressSessionsPerHour: 0 },
      connections: { messagesPerMinute: 7, requestsPerHour: 3 },
      notifications: { previewChars: 0, deadlineMs: 250 },
      databaseInstances: ["https://chatify-default-rtdb.firebaseio.com", "https://chatify-2.europe-west1.firebasedatabase.app"],
    });
  });

  it("reads REQUIRE_AUTH as a boolean, with the default a caller gives", () => {
    expect(resolveConfig({ REQUIRE_AUTH: "TRUE" }).requireAuth).toBe(true);
    expect(resolveConfig({ REQUIRE_AUTH: "0" }).requireAuth).toBe(false);
    expect(resolveConfig({}, { requireAuth: false }).requireAuth).toBe(false);
    expect(resolveConfig({ REQUIRE_AUTH: "1" }, { requireAuth: false }).requireAuth).toBe(true);
    expect(configError({ REQUIRE_AUTH: "yes" }).message).toContain("REQUIRE_AUTH");
  });

  it("trims whitespace around an integer", () => {
    expect(resolveConfig({ OPENAI_MAX_RETRIES: " 3 \n" }).openai.maxRetries).toBe(3);
  });

  it("ignores variables it does not declare", () => {
    expect(resolveConfig({ SOMETHING_ELSE: "x" })).toEqual(resolveConfig({}));
  });
});

describe("resolveConfig integer validation", () => {
  it.each(INT_PARAM_NAMES)("%s accepts its bounds and refuses one past them", (name) => {
    const { min, max } = declaredRange(name);
    expect(min).toBeLessThan(max);
    // A bound that needs another param beside it (the cross-checks are tested below): MIN_INSTANCES at its
    // most as many instances allowed, the longest messages the largest bodies, the smallest bodies short messages.
    const besidesMin = name === "MAX_BODY_BYTES" ? { MAX_MESSAGE_CHARS: "1" } : {};
    const besidesMax = name === "MIN_INSTANCES" ? { MAX_INSTANCES: String(max) } : name === "MAX_MESSAGE_CHARS" ? { MAX_BODY_BYTES: "10485760" } : {};
    expect(READ_BACK[name]!(resolveConfig({ ...besidesMin, [name]: String(min) }))).toBe(String(min));
    expect(READ_BACK[name]!(resolveConfig({ ...besidesMax, [name]: String(max) }))).toBe(String(max));
    expect(configError({ [name]: String(min - 1) }).message).toContain(name);
    expect(configError({ [name]: String(max + 1) }).message).toContain(name);
  });

  it("states the range of OPENAI_MAX_RETRIES as documented (0 to 5)", () => {
    expect(declaredRange("OPENAI_MAX_RETRIES")).toEqual({ min: 0, max: 5 });
  });

  it.each(["1.5", "abc", "12abc", "Infinity", "NaN", "0x10", "1_000", "true"])("refuses the non-integer %p, naming the variable and the value", (raw) => {
    const error = configError({ OPENAI_TIMEOUT_MS: raw });
    expect(error.name).toBe("ConfigError");
    expect(error.message).toBe(`OPENAI_TIMEOUT_MS must be an integer from 100 to 120000, got "${raw}"`);
  });

  it("names the offending variable, not another one", () => {
    expect(configError({ OPENAI_TIMEOUT_MS: "1000", DB_TIMEOUT_MS: "-1" }).message).toMatch(/^DB_TIMEOUT_MS /);
  });
});

describe("resolveConfig App Check and moderation", () => {
  it("leaves App Check and moderation off by default, failing open", () => {
    expect(resolveConfig({})).toMatchObject({ requireAppCheck: false, moderation: { enabled: false, onOutage: "open" } });
  });

  it.each([["open", "open"], ["closed", "closed"], [" CLOSED ", "closed"], ["Open", "open"]] as const)("reads MODERATION_ON_OUTAGE %p as %p", (raw, expected) => {
    expect(resolveConfig({ MODERATION_ON_OUTAGE: raw }).moderation.onOutage).toBe(expected);
  });

  it.each(["fail-open", "true", "sometimes"])("refuses MODERATION_ON_OUTAGE %p, naming the choices", (raw) => {
    expect(configError({ MODERATION_ON_OUTAGE: raw }).message).toBe(`MODERATION_ON_OUTAGE must be one of open, closed, got "${raw}"`);
  });

  it.each(["REQUIRE_APP_CHECK", "APP_CHECK_REPLAY_PROTECTION", "MODERATION"])("reads %s as a boolean, refusing anything else", (name) => {
    expect(READ_BACK[name]!(resolveConfig({ [name]: "1" }))).toBe("true");
    expect(READ_BACK[name]!(resolveConfig({ [name]: "FALSE" }))).toBe("false");
    expect(configError({ [name]: "on" }).message).toBe(`${name} must be true or false, got "on"`);
  });
});

describe("resolveConfig deploy knobs", () => {
  it("defaults to what the functions were deployed with before they were params", () => {
    expect(resolveConfig({}).deploy).toEqual({ minInstances: 0, maxInstances: 10, concurrency: 80, memoryMib: 512, timeoutSeconds: 60 });
  });

  it.each(["256", "512", "2048", "32768"])("accepts MEMORY_MIB %s, a size Cloud Run offers", (raw) => {
    expect(resolveConfig({ MEMORY_MIB: raw }).deploy.memoryMib).toBe(Number(raw));
  });

  it.each(["300", "768", "1000", "3072"])("refuses MEMORY_MIB %s inside the range but not a size, naming the sizes", (raw) => {
    expect(configError({ MEMORY_MIB: raw }).message).toBe(`MEMORY_MIB must be one of 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, got "${raw}"`);
  });

  // The Firebase CLI deploys a blank int param as 0 (firebase-tools 15.34 `+""`), which the platform reads as unset:
  // read as the default, a blank MAX_INSTANCES bounded nothing deployed while the instance read 10.
  it.each(Object.keys(DEPLOY_PARAMS))("refuses %s set but blank, naming it and its default, where a deploy would give it 0", (name) => {
    for (const raw of ["", "  "]) {
      const { message } = configError({ [name]: raw });
      expect(message).toMatch(new RegExp(`^${name} is set but blank: the Firebase CLI deploys a blank deploy knob as 0`));
      expect(message).toContain(`(the default: ${name} ${DEPLOY_PARAMS[name as keyof typeof DEPLOY_PARAMS].default})`);
    }
  });

  it("names every deploy knob left blank at once", () => {
    expect(configError({ MAX_INSTANCES: "", TIMEOUT_SECONDS: "", CONCURRENCY: "8" }).message).toMatch(/^MAX_INSTANCES and TIMEOUT_SECONDS are set but blank: .*\(the defaults: MAX_INSTANCES 10, TIMEOUT_SECONDS 60\) or leave them unset$/);
  });

  it("refuses more warm instances than instances at all, naming both", () => {
    expect(configError({ MIN_INSTANCES: "3", MAX_INSTANCES: "2" }).message).toBe("MIN_INSTANCES (3) must not exceed MAX_INSTANCES (2)");
    expect(resolveConfig({ MIN_INSTANCES: "2", MAX_INSTANCES: "2" }).deploy).toMatchObject({ minInstances: 2, maxInstances: 2 });
  });
});

describe("resolveConfig CORS_ORIGINS", () => {
  it.each([
    ["*", "*"],
    [" * ", "*"],
    ["https://a.example.com, *", "*"],
    ["https://a.example.com", ["https://a.example.com"]],
    ["https://a.example.com,http://localhost:5000", ["https://a.example.com", "http://localhost:5000"]],
    [" https://a.example.com ,  http://localhost:5000 ", ["https://a.example.com", "http://localhost:5000"]],
    ["https://a.example.com,,", ["https://a.example.com"]],
  ])("parses %p", (raw, expected) => {
    expect(resolveConfig({ CORS_ORIGINS: raw }).corsOrigins).toEqual(expected);
  });

  it.each(["https://a.example.com/", "https://a.example.com/path", "a.example.com", "ftp://a.example.com", "https://a.example.com https://b.example.com", "https://ok.example.com,nope"])(
    "refuses %p, naming the variable",
    (raw) => {
      const error = configError({ CORS_ORIGINS: raw });
      expect(error.message).toMatch(/^CORS_ORIGINS /);
    },
  );

  it("quotes the bad entry, not the whole list", () => {
    expect(configError({ CORS_ORIGINS: "https://ok.example.com, nope" }).message).toContain('got "nope"');
  });

  it.each(["https://a.example.com?x=1", "https://a.example.com#x", "https://user@a.example.com", "https://a.example.com:99999"])("refuses %p, which no browser's Origin states", (raw) => {
    expect(configError({ CORS_ORIGINS: raw }).message).toMatch(/^CORS_ORIGINS /);
  });

  // The URL parser takes `*` in a host, and the entry, compared exactly with the browser's Origin, allowed no origin at all.
  it.each([
    ["https://*.example.com", "https://app.example.com"],
    ["https://*.example.com:8443", "https://app.example.com:8443"],
    ["https://chat.example.com,https://*.example.com", "https://app.example.com"],
    ["http://*", "http://localhost"],
    // The parser decodes %2A in a host and maps a fullwidth asterisk (U+FF0A) to *: the same origin.
    ["https://%2A.example.com", "https://app.example.com"],
    ["https://\uff0a.example.com", "https://app.example.com"],
  ])("refuses %p at start, naming the param: its wildcard entry matches no browser's Origin (%p's included)", (raw, browserOrigin) => {
    expect(configError({ CORS_ORIGINS: raw }).message).toBe(
      `CORS_ORIGINS does not support wildcards: each entry is compared exactly with the origin a browser sends, so list each origin, got "${raw.split(",").at(-1) ?? ""}"`,
    );
    const listed = resolveConfig({ CORS_ORIGINS: browserOrigin }).corsOrigins;
    expect(corsHeaders({ method: "POST", path: "/", headers: { origin: browserOrigin }, body: Buffer.alloc(0) }, listed)["Access-Control-Allow-Origin"]).toBe(browserOrigin);
  });

  // Browsers send the serialised origin (WHATWG URL): scheme and host in lower case, an IDN in punycode, the default port left out.
  it.each([
    ["an upper-case host", "https://Chat.Example.com", "https://chat.example.com"],
    ["https with its default port", "https://chat.example.com:443", "https://chat.example.com"],
    ["http with its default port", "http://localhost:80", "http://localhost"],
    ["an upper-case scheme", "HTTPS://chat.example.com", "https://chat.example.com"],
    ["an internationalised host", "https://bücher.example", "https://xn--bcher-kva.example"],
  ])("reads %s (%s) as the origin a browser sends, %s, and allows it", (_case, configured, browserOrigin) => {
    const origins = resolveConfig({ CORS_ORIGINS: configured }).corsOrigins;
    expect(origins).toEqual([browserOrigin]);
    const headers = corsHeaders({ method: "POST", path: "/", headers: { origin: browserOrigin }, body: Buffer.alloc(0) }, origins);
    expect(headers["Access-Control-Allow-Origin"]).toBe(browserOrigin);
  });

  it("keeps a non-default port, and one origin written two ways once", () => {
    expect(resolveConfig({ CORS_ORIGINS: "https://A.example.com:8443,https://a.example.com:443,https://a.example.com" }).corsOrigins).toEqual(["https://a.example.com:8443", "https://a.example.com"]);
  });
});

describe("resolveConfig OPENAI_BASE_URL", () => {
  it.each(["http://localhost:8080/v1", "https://api.example.com/v1", "http://127.0.0.1:11434"])("accepts %p", (raw) => {
    expect(resolveConfig({ OPENAI_BASE_URL: raw }).openai.baseUrl).toBe(raw);
  });

  it("trims the URL", () => {
    expect(resolveConfig({ OPENAI_BASE_URL: "  https://api.example.com/v1 " }).openai.baseUrl).toBe("https://api.example.com/v1");
  });

  // The openai SDK (7.57) appends each call's path after the fragment: every call went to the base URL itself, each message answered 502.
  it.each(["https://api.example.com/v1#", "https://api.example.com/v1#chat", "http://127.0.0.1:11434/#section", "https://api.example.com/v1?x=1#sk-secret-in-fragment"])(
    "refuses %p, a URL with a fragment, naming the param without showing the URL",
    (raw) => {
      const { message } = configError({ OPENAI_BASE_URL: raw });
      expect(message).toBe(
        "OPENAI_BASE_URL must not hold a fragment (a # and what follows it): the openai SDK would append each call's path to the fragment, and every call would go to the base URL itself",
      );
    },
  );

  it.each(["not a url", "ftp://files.example.com", "javascript:alert(1)", "http://", "api.example.com/v1"])("refuses %p, naming the variable", (raw) => {
    expect(configError({ OPENAI_BASE_URL: raw }).message).toBe(`OPENAI_BASE_URL must be an http(s) URL, got "${raw}"`);
  });

  it.each(["api.example.com/v1#sk-secret-in-fragment", "https://api.example.com:70000/v1#sk-secret-in-fragment", "https://api example.com/v1#sk-secret-in-fragment"])(
    "refuses %p, not an http(s) URL, showing it without its fragment",
    (raw) => {
      expect(configError({ OPENAI_BASE_URL: raw }).message).toBe(`OPENAI_BASE_URL must be an http(s) URL, got "${raw.split("#")[0] ?? ""}#***"`);
    },
  );

  // Node's fetch, which the openai SDK calls, refuses a URL holding credentials: every model call would fail as an outage.
  it.each(["https://proxy-user:s3cret-pass@proxy.example/v1", "http://s3cret-pass@127.0.0.1:8080/v1", "https://:s3cret-pass@proxy.example/v1"])(
    "refuses %p, a URL with a user name or password, without showing them",
    (raw) => {
      const { message } = configError({ OPENAI_API_KEY: "sk-test-key", OPENAI_BASE_URL: raw });
      expect(message).toBe("OPENAI_BASE_URL must not hold a user name or password: credentials in the URL are not supported (an API key goes in OPENAI_API_KEY)");
    },
  );

  // A password starting with `#`, `?`, `/` or `\` (or a port-like number and one) ends the authority: WHATWG URL
  // parsing reads `proxy-user` as the host and the rest as a fragment, query or path, and sees no credentials.
  it.each([
    "https://proxy-user:#s3cret-pass@api.example.com/v1",
    "https://proxy-user:2024?s3cret-pass@api.example.com/v1",
    "https://proxy-user:8080/s3cret-pass@api.example.com",
    "http://proxy-user:\\s3cret-pass@127.0.0.1:8080/v1",
  ])("refuses %p, whose credentials end the host early, rather than calling the host proxy-user", (raw) => {
    const { message } = configError({ OPENAI_API_KEY: "sk-test-key", OPENAI_BASE_URL: raw });
    expect(message).toBe("OPENAI_BASE_URL must not hold a user name or password: credentials in the URL are not supported (an API key goes in OPENAI_API_KEY)");
  });
});

/**
 * The key goes in the Authorization header of every model and moderation call: one that Node's
 * fetch cannot put there (a zero-width space or a curly quote pasted with it, a line break inside
 * it) made every call fail before it was sent, with no cause.
 */
describe("resolveConfig OPENAI_API_KEY", () => {
  /** Whether the key is taken as it is; false when it is refused (a ConfigError). */
  function keyAccepted(key: string): boolean {
    try {
      return resolveConfig({ OPENAI_API_KEY: key }).openai.apiKey === key;
    } catch (error) {
      if (error instanceof ConfigError) return false;
      throw error;
    }
  }

  it.each([
    ["a zero-width space pasted with it", "sk-test\u200bkey", "U+200B"],
    ["curly quotes around it", "\u201csk-test-key\u201d", "U+201C"],
    ["a line break inside it", "sk-test\nkey", "U+000A"],
    ["a carriage return inside it", "sk-test\rkey", "U+000D"],
    ["a NUL inside it", "sk-test\0key", "U+0000"],
    ["another control character inside it", "sk-test\u007fkey", "U+007F"],
  ])("refuses at start a key with %s, naming OPENAI_API_KEY and the character, never the key", (_case, key, code) => {
    const { message } = configError({ OPENAI_API_KEY: key });
    expect(message).toContain("OPENAI_API_KEY cannot be sent in an HTTP header");
    expect(message).toContain(code);
    expect(message).not.toContain(key.trim());
    expect(message).not.toContain("test");
  });

  it("says where the character is, counting an emoji as one character", () => {
    expect(configError({ OPENAI_API_KEY: " sk-\u{1F600}x\n" }).message).toMatch(/^OPENAI_API_KEY cannot be sent in an HTTP header: its character 4 of 5 is U\+1F600,/);
  });

  it("accepts every key Node's fetch sends in a header, and refuses every key it does not", async () => {
    const server = createServer((_request, response) => response.end());
    await new Promise<void>((listening) => server.listen(0, "127.0.0.1", listening));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    try {
      const characters = [...Array.from({ length: 0x180 }, (_, code) => code), 0x200b, 0x201c, 0x2028, 0xfeff, 0x1f600];
      const sendable: Record<string, boolean> = {};
      const accepted: Record<string, boolean> = {};
      for (const code of characters) {
        const key = `sk-a${String.fromCodePoint(code)}b`;
        const name = `U+${code.toString(16)}`;
        sendable[name] = await fetch(url, { headers: { Authorization: `Bearer ${key}` } }).then((response) => response.arrayBuffer()).then(() => true, () => false);
        accepted[name] = keyAccepted(key);
      }
      expect(accepted).toEqual(sendable);
      // The oracle refuses something: the comparison is not between two tables of `true`.
      expect(Object.values(sendable).filter((sent) => !sent).length).toBeGreaterThan(30);
    } finally {
      server.closeAllConnections();
      await new Promise((closed) => server.close(closed));
    }
  });
});

describe("resolveConfig errors about URL params", () => {
  it.each([
    ["OPENAI_BASE_URL", "ftp://proxy-user:s3cret-pass@files.example.com"],
    ["OPENAI_BASE_URL", "http://proxy-user:s3cret-pass@"],
    ["CORS_ORIGINS", "https://proxy-user:s3cret-pass@a.example.com"],
    ["CORS_ORIGINS", "https://ok.example.com,https://proxy-user:s3cret-pass@a.example.com/path"],
    ["DATABASE_INSTANCES", "https://proxy-user:s3cret-pass@chatify.firebaseio.com"],
    // Written without a scheme, as proxies often are: WHATWG URL parsing reads `proxy-user:` as the scheme, and sees no credentials.
    ["OPENAI_BASE_URL", "proxy-user:s3cret-pass@proxy.example:8080/v1"],
    ["OPENAI_BASE_URL", "proxy-user:s3cret-pass@proxy.example"],
    ["OPENAI_BASE_URL", "proxy-user:s3cret@pass@proxy.example"],
    ["CORS_ORIGINS", "proxy-user:s3cret-pass@app.example.com"],
    ["DATABASE_INSTANCES", "proxy-user:s3cret-pass@chatify.firebaseio.com"],
    ["OPENAI_BASE_URL", "ftp://proxy-user:s3cret-pass@files.example.com"],
    ["OPENAI_BASE_URL", "mailto:proxy-user:s3cret-pass@proxy.example"],
    // A password that ends the authority early (`#`, `?`, `/`, `\`, or a port-like number and one): an http(s) URL without credentials to the parser.
    ["CORS_ORIGINS", "https://proxy-user:#s3cret-pass@app.example.com"],
    ["CORS_ORIGINS", "https://proxy-user:2024#s3cret-pass@app.example.com"],
    ["CORS_ORIGINS", "https://proxy-user:8080/s3cret-pass@app.example.com"],
    ["CORS_ORIGINS", "https://proxy-user:\\s3cret-pass@app.example.com"],
    ["DATABASE_INSTANCES", "https://proxy-user:#s3cret-pass@chatify.firebaseio.com"],
    ["DATABASE_INSTANCES", "https://proxy-user:2024?s3cret-pass@chatify.firebaseio.com"],
    ["OPENAI_BASE_URL", "https://proxy-user:#s3cret-pass@api.example.com/v1"],
  ])("name %s without showing the password of %p", (name, raw) => {
    const { message } = configError({ [name]: raw });
    expect(message.startsWith(name)).toBe(true);
    expect(message).not.toContain("s3cret-pass");
    expect(message).not.toContain("proxy-user");
  });

  it("shows what follows the last @ of a value that is no http(s) URL, and its scheme if it has one, so the message still names the host", () => {
    expect(configError({ OPENAI_BASE_URL: "proxy-user:s3cret-pass@proxy.example:8080/v1" }).message).toBe('OPENAI_BASE_URL must be an http(s) URL, got "***@proxy.example:8080/v1"');
    expect(configError({ OPENAI_BASE_URL: "ftp://proxy-user:s3cret-pass@files.example.com" }).message).toBe('OPENAI_BASE_URL must be an http(s) URL, got "ftp://***@files.example.com"');
    expect(configError({ CORS_ORIGINS: "https://ok.example.com, app-user:s3cret@app.example.com" }).message).toBe('CORS_ORIGINS entries must look like https://host[:port], got "***@app.example.com"');
  });

  it("hides what precedes the last @ of an http(s) URL too, whether or not it parses with credentials", () => {
    expect(configError({ CORS_ORIGINS: "https://proxy-user:#s3cret-pass@app.example.com" }).message).toBe('CORS_ORIGINS entries must look like https://host[:port], got "https://***@app.example.com"');
    expect(configError({ CORS_ORIGINS: "https://proxy-user:s3cret-pass@app.example.com" }).message).toBe('CORS_ORIGINS entries must look like https://host[:port], got "https://***@app.example.com"');
    expect(configError({ DATABASE_INSTANCES: "https://proxy-user:2024?s3cret-pass@chatify.firebaseio.com" }).message).toContain('"https://***@chatify.firebaseio.com"');
  });
});

/**
 * A message travels in a JSON body: MAX_BODY_BYTES must carry the longest one MAX_MESSAGE_CHARS
 * accepts. The largest body around it is a user-to-user message's call, which the Functions client
 * SDK wraps in {"data":...}: the connection's id, the sender's user_id and an idempotency key
 * beside the message, each at its longest, each character escaped as long as JSON escapes it.
 */
describe("resolveConfig MAX_MESSAGE_CHARS and MAX_BODY_BYTES", () => {
  /**
   * That body for a message of `chars` UTF-16 units, as JSON text: the message of control characters
   * (`\u0001`, as every encoder writes them), the user id of 128 emoji written ASCII-only (`\ud83d\ude00`:
   * zod counts a character a code point, two UTF-16 units here),
   * the key of quotes (`\"`); and the data it carries.
   */
  function largestBody(chars: number): { readonly json: string; readonly data: Readonly<Record<"connection_id" | "user_id" | "message" | "idempotency_key", string>> } {
    const escaped = { connection_id: "0b4f3a52-1111-4e2e-9c1c-9a1e5c6d7e8f", user_id: "\\ud83d\\ude00".repeat(128), message: "\\u0001".repeat(chars), idempotency_key: '\\"'.repeat(255) };
    const json = `{"data":{${Object.entries(escaped).map(([field, text]) => `"${field}":"${text}"`).join(",")}}}`;
    return { json, data: (JSON.parse(json) as { data: Record<keyof typeof escaped, string> }).data };
  }

  it("refuses at start a MAX_MESSAGE_CHARS raised alone past what the default MAX_BODY_BYTES carries, naming both and the least MAX_BODY_BYTES that does", () => {
    const { message } = configError({ MAX_MESSAGE_CHARS: "40000" });
    expect(message).toBe(
      "MAX_BODY_BYTES (32768) is too small for MAX_MESSAGE_CHARS (40000): a message that long can need a body of 242158 bytes " +
        "(up to 6 bytes a character in JSON, \\uXXXX, and the other fields); raise MAX_BODY_BYTES to at least 242158, or lower MAX_MESSAGE_CHARS to at most 5101",
    );
    expect(resolveConfig({ MAX_MESSAGE_CHARS: "40000", MAX_BODY_BYTES: "242158" })).toMatchObject({ maxMessageChars: 40_000, maxBodyBytes: 242_158 });
  });

  it.each([2000, 4000, 100_000])("asks of MAX_BODY_BYTES, for MAX_MESSAGE_CHARS %i, the bytes of the largest body such a message can travel in, and no more", (chars) => {
    const { json, data } = largestBody(chars);
    // The body is one the service accepts: each field at its longest, the message at MAX_MESSAGE_CHARS.
    expect(connectionBodies(chars).message.safeParse({ user_id: data.user_id, message: data.message }).success).toBe(true);
    expect(idempotencyKeyOf({ method: "POST", path: "/", headers: { "idempotency-key": data.idempotency_key }, body: Buffer.alloc(0) })).toBe(data.idempotency_key);
    const bytes = Buffer.byteLength(json);
    expect(resolveConfig({ MAX_MESSAGE_CHARS: String(chars), MAX_BODY_BYTES: String(bytes) }).maxBodyBytes).toBe(bytes);
    expect(configError({ MAX_MESSAGE_CHARS: String(chars), MAX_BODY_BYTES: String(bytes - 1) }).message).toContain(`raise MAX_BODY_BYTES to at least ${bytes},`);
  });

  it("leaves the default MAX_BODY_BYTES room for messages of up to 5,101 units, past the default MAX_MESSAGE_CHARS of 4,000", () => {
    expect(resolveConfig({}).maxMessageChars).toBe(4000);
    expect(resolveConfig({ MAX_MESSAGE_CHARS: "5101" }).maxBodyBytes).toBe(32_768);
    expect(configError({ MAX_MESSAGE_CHARS: "5102" }).message).toMatch(/^MAX_BODY_BYTES \(32768\) is too small for MAX_MESSAGE_CHARS \(5102\)/);
  });

  /**
   * A device registration's body does not grow with MAX_MESSAGE_CHARS: its largest is the callable's,
   * the token at its longest (each character `\"` or `\\`), the user id of 128 emoji written
   * ASCII-only, `previews: false`.
   */
  it("asks of MAX_BODY_BYTES, whatever MAX_MESSAGE_CHARS, the bytes of the largest body a device registration can travel in, naming it when refused", () => {
    const data = { user_id: "\u{1F600}".repeat(128), token: '"\\'.repeat(DEVICE_TOKEN_MAX_CHARS / 2), previews: false };
    const json = JSON.stringify({ data }).replace(/[\u0080-\uffff]/g, (unit) => `\\u${unit.charCodeAt(0).toString(16).padStart(4, "0")}`);
    // The body is one the service accepts: the token and the user id at their longest.
    expect(connectionBodies(1).device.safeParse(data).success).toBe(true);
    expect(connectionBodies(1).device.safeParse({ ...data, token: `${data.token}x` }).success).toBe(false);
    const bytes = Buffer.byteLength(json);
    expect(bytes).toBe(LARGEST_DEVICE_BODY_BYTES);
    // A message of one unit needs far less: the device body alone sets the least MAX_BODY_BYTES.
    expect(resolveConfig({ MAX_MESSAGE_CHARS: "1", MAX_BODY_BYTES: String(bytes) }).maxBodyBytes).toBe(bytes);
    expect(configError({ MAX_MESSAGE_CHARS: "1", MAX_BODY_BYTES: String(bytes - 1) }).message).toBe(
      `MAX_BODY_BYTES must be an integer from ${bytes} to 10485760, got "${bytes - 1}": ${bytes} is the largest body a device registration can need ` +
        "(a token of 4096 visible ASCII characters and a user_id of 128 characters, as JSON may escape them)",
    );
    // Where a message needs more, the message's check names the least value, as above.
    expect(configError({ MAX_MESSAGE_CHARS: "2000", MAX_BODY_BYTES: String(bytes) }).message).toContain("raise MAX_BODY_BYTES to at least 14158,");
  });
});
