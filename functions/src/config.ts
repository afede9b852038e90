import { BOOLEAN_PARAMS, DECLARED_SERVICE_PARAMS, INT_PARAMS, STRING_PARAMS, type BooleanParamName, type IntParamName, type StringParamName } from "./config-params";
import { DEPLOY_PARAMS, type DeployParamName, type DeployParamSpec } from "./function-options";
import { largestMessageBodyBytes, longestMessageCarried } from "./http/message-body";
import { parseDatabaseInstances } from "./sharding/database-instances";
import { hasCredentials, withoutCredentials } from "./url-credentials";

/** Every declared param, the service's and the deploy knobs, for documentation and the tests. */
export const DECLARED_PARAMS = [
  ...DECLARED_SERVICE_PARAMS,
  ...Object.entries(DEPLOY_PARAMS).map(([name, spec]) => ({ name, default: String(spec.default), description: spec.description })),
];

/** What to do with a message moderation could not judge: let it through (logged), or refuse it (503). */
export type ModerationOnOutage = "open" | "closed";

export interface Config {
  readonly openai: {
    readonly apiKey: string | undefined;
    readonly baseUrl: string | undefined;
    readonly timeoutMs: number;
    readonly maxRetries: number;
    readonly maxRetryWaitMs: number;
  };
  readonly contextWindowMessages: number;
  readonly maxMessageChars: number;
  readonly maxBodyBytes: number;
  /** `"*"` or an explicit allow-list. */
  readonly corsOrigins: "*" | readonly string[];
  readonly dbTimeoutMs: number;
  readonly sessionIdleTtlMs: number;
  /** 0: closed sessions are kept forever. */
  readonly sessionRetentionMs: number;
  readonly templateCacheTtlMs: number;
  readonly sessionCacheTtlMs: number;
  readonly sessionCacheMaxEntries: number;
  readonly requireAuth: boolean;
  /** Write replies' text so far to the database while they are generated. */
  readonly livePartials: boolean;
  /** The longest wait between two writes of a live partial (its write budget). */
  readonly partialMaxIntervalMs: number;
  /** Refuse requests without a valid App Check token. */
  readonly requireAppCheck: boolean;
  /** With requireAppCheck, message calls consume their App Check token (replay protection). */
  readonly appCheckReplayProtection: boolean;
  readonly moderation: { readonly enabled: boolean; readonly onOutage: ModerationOnOutage };
  /** What the functions were deployed with (params the CLI resolved and set as environment variables). */
  readonly deploy: {
    readonly minInstances: number;
    readonly maxInstances: number;
    readonly concurrency: number;
    readonly memoryMib: number;
    readonly timeoutSeconds: number;
  };
  readonly limits: {
    readonly userMessagesPerMinute: number;
    readonly userMaxActiveSessions: number;
    readonly sessionMaxExchanges: number;
    /** 0: unlimited. */
    readonly userTokensPerDay: number;
    /** 0: no deployment-wide cap. */
    readonly serviceTokensPerDay: number;
    /** 0: no per-address limit on creating sessions. */
    readonly addressSessionsPerHour: number;
  };
  /** Connections between users (docs/connections.md). */
  readonly connections: {
    readonly messagesPerMinute: number;
    readonly requestsPerHour: number;
  };
  readonly notifications: {
    /** 0: no previews. */
    readonly previewChars: number;
    readonly deadlineMs: number;
  };
  /** DATABASE_INSTANCES, normalised; empty: the app's default database alone. The first is the home of per-user records. */
  readonly databaseInstances: readonly string[];
}

export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

type Env = Readonly<Record<string, string | undefined>>;

/** Every int param's range: the service's and the deploy knobs. */
const INT_SPECS: Readonly<Record<IntParamName | DeployParamName, DeployParamSpec>> = { ...INT_PARAMS, ...DEPLOY_PARAMS };

function intParam(env: Env, name: IntParamName | DeployParamName): number {
  return integerSetting(name, env[name], INT_SPECS[name]);
}

/**
 * The integer setting `name` set to `raw`, read as every int param is: unset or blank is the
 * default; anything else must be an integer in the range (and one of the choices, if any), or a
 * ConfigError names the setting and the value (and, below the least, what needs it: `minFor`).
 * Exported for the settings of `npm start` (PORT).
 */
export function integerSetting(name: string, raw: string | undefined, spec: Pick<DeployParamSpec, "default" | "min" | "minFor" | "max" | "choices">): number {
  if (raw === undefined || raw.trim() === "") return spec.default;
  // Plain parsing, not zod: this runs at instance start, where every loaded module costs.
  const value = /^[+-]?\d+$/.test(raw.trim()) ? Number(raw.trim()) : Number.NaN;
  if (!Number.isSafeInteger(value) || value < spec.min || value > spec.max) {
    const why = value < spec.min && spec.minFor !== undefined ? `: ${spec.min} is ${spec.minFor}` : "";
    throw new ConfigError(`${name} must be an integer from ${spec.min} to ${spec.max}, got "${raw}"${why}`);
  }
  if (spec.choices !== undefined && !spec.choices.includes(value)) {
    throw new ConfigError(`${name} must be one of ${spec.choices.join(", ")}, got "${raw}"`);
  }
  return value;
}

function stringParam(env: Env, name: StringParamName): string {
  return env[name]?.trim() || STRING_PARAMS[name].default;
}

function choiceParam<T extends string>(env: Env, name: StringParamName, choices: readonly T[]): T {
  const value = stringParam(env, name).toLowerCase();
  const choice = choices.find((candidate) => candidate === value);
  if (choice === undefined) throw new ConfigError(`${name} must be one of ${choices.join(", ")}, got "${env[name] ?? ""}"`);
  return choice;
}

/** The App Check params, as an instance reads them from `env` (resolveConfig, and the files a deploy writes beside the functions: page-files.ts). */
export function appCheckParams(env: Env): Pick<Config, "requireAppCheck" | "appCheckReplayProtection"> {
  return {
    requireAppCheck: booleanParam(env, "REQUIRE_APP_CHECK", BOOLEAN_PARAMS.REQUIRE_APP_CHECK.default),
    appCheckReplayProtection: booleanParam(env, "APP_CHECK_REPLAY_PROTECTION", BOOLEAN_PARAMS.APP_CHECK_REPLAY_PROTECTION.default),
  };
}

/**
 * Whether message calls consume their App Check token: APP_CHECK_REPLAY_PROTECTION, which counts
 * only with REQUIRE_APP_CHECK. The page must then send each message a limited-use token (its App
 * Check file, written by a deploy from the params, or served by the local server from its instance).
 */
export function messageTokensConsumed(config: Pick<Config, "requireAppCheck" | "appCheckReplayProtection">): boolean {
  return config.requireAppCheck && config.appCheckReplayProtection;
}

function booleanParam(env: Env, name: BooleanParamName, fallback: boolean): boolean {
  const raw = env[name]?.trim().toLowerCase();
  if (raw === undefined || raw === "") return fallback;
  if (raw === "true" || raw === "1") return true;
  if (raw === "false" || raw === "0") return false;
  throw new ConfigError(`${name} must be true or false, got "${env[name] ?? ""}"`);
}

function parseBaseUrl(raw: string): string | undefined {
  if (raw === "") return undefined;
  const url = URL.canParse(raw) ? new URL(raw) : undefined;
  if (url === undefined || !/^https?:$/.test(url.protocol)) {
    // Shown without its credentials or fragment (see below): either may hold a secret.
    throw new ConfigError(`OPENAI_BASE_URL must be an http(s) URL, got "${withoutCredentials(raw.split("#")[0] ?? "")}${raw.includes("#") ? "#***" : ""}"`);
  }
  // Node's fetch (undici, Node 24), which the openai SDK calls, refuses every URL holding credentials
  // ("Request cannot be constructed from a URL that includes credentials"): each model call would fail as an outage.
  // An `@` the parser read otherwise marks credentials all the same: a password that starts with `#`, `?`, `/`
  // or `\` (or a number and one of them) ends the authority, so `https://user:#pass@api.example.com` is the
  // host `user` with the fragment `#pass@api.example.com`: every call would go to that host, and whatever
  // printed the URL would print the password.
  if (hasCredentials(url) || raw.includes("@")) {
    throw new ConfigError("OPENAI_BASE_URL must not hold a user name or password: credentials in the URL are not supported (an API key goes in OPENAI_API_KEY)");
  }
  // The openai SDK (7.57 buildURL) appends each call's path to a base URL without `?` as text: after a
  // fragment (a lone `#` too, which URL parsing drops) the path lands in it, and every call goes to the
  // base URL itself (a 404, each message answered 502). Not echoed: a fragment may hold anything.
  if (raw.includes("#")) {
    throw new ConfigError("OPENAI_BASE_URL must not hold a fragment (a # and what follows it): the openai SDK would append each call's path to the fragment, and every call would go to the base URL itself");
  }
  return raw;
}

/**
 * What an HTTP header value may hold, as Node 24's fetch (undici 7.30) checks it: a tab, visible
 * ASCII and space, or a byte from 0x80 to 0xFF. A key with anything else never leaves: a character
 * above U+00FF fails the header's conversion to bytes ("Cannot convert argument to a ByteString"),
 * CR, LF or NUL the Headers check, another control character the send ("invalid Authorization
 * header"), which the openai SDK 7.57 reports as a lost connection (APIConnectionError).
 */
const HEADER_VALUE_UNSENDABLE = /[^\t\x20-\x7e\x80-\xff]/u;

/**
 * OPENAI_API_KEY, trimmed (a secret's value often ends with a line break), or undefined when unset
 * or blank. Refused when an HTTP header cannot carry it (a zero-width space or curly quotes pasted
 * with it, a line break inside it): every model and moderation call would fail before it is sent,
 * answered as an outage of the model whose cause no log names. The error names the character and
 * where it is, never the key.
 */
function parseApiKey(raw: string | undefined): string | undefined {
  const key = raw?.trim();
  if (!key) return undefined;
  const bad = HEADER_VALUE_UNSENDABLE.exec(key);
  if (bad !== null) {
    // Counted in code points, as an editor moves over them (an emoji is one), not UTF-16 units.
    const position = Array.from(key.slice(0, bad.index)).length + 1;
    const code = `U+${(bad[0].codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, "0")}`;
    throw new ConfigError(
      `OPENAI_API_KEY cannot be sent in an HTTP header: its character ${position} of ${Array.from(key).length} is ${code}, and no header carries a character above U+00FF ` +
        "(a zero-width space or a curly quote pasted with the key) nor a control character (a line break inside it); set the key again, its own characters only",
    );
  }
  return key;
}

/**
 * CORS_ORIGINS as resolveConfig reads it, exported for the answers of an instance whose start
 * failed (cloud-adapter.ts), which still carry the CORS headers when this param is not the bad one.
 */
export function corsOriginsParam(env: Env = process.env): "*" | string[] {
  return parseCorsOrigins(stringParam(env, "CORS_ORIGINS"));
}

/** An origin as written in CORS_ORIGINS: scheme://host[:port], no path, query, fragment or credentials (nor a wildcard: parseCorsOrigins). */
const ORIGIN_ENTRY = /^https?:\/\/[^/\\\s?#@]+$/i;

/**
 * The origins of CORS_ORIGINS, each as a browser's Origin header states it (the WHATWG URL
 * serialisation: scheme and host in lower case, an internationalised host in punycode, the
 * scheme's default port left out), since the header is compared with them exactly: written
 * `https://Chat.Example.com:443`, an entry allows `https://chat.example.com`, which it means,
 * instead of matching no browser at all.
 */
function parseCorsOrigins(raw: string): "*" | string[] {
  const entries = raw.split(",").map((entry) => entry.trim()).filter(Boolean);
  if (entries.includes("*")) return "*";
  const origins = entries.map((entry) => {
    // The URL parser takes `*` in a host (`https://*.example.com`), and no browser sends one: compared
    // exactly (http/cors.ts), such an entry would allow no origin at all, the pages it was meant for refused.
    // Read on the entry as written and as the parser reads it: it decodes `%2A` in a host and maps a
    // fullwidth asterisk (U+FF0A) to `*`.
    const origin = URL.canParse(entry) ? new URL(entry).origin : undefined;
    if (entry.includes("*") || origin?.includes("*")) {
      throw new ConfigError(`CORS_ORIGINS does not support wildcards: each entry is compared exactly with the origin a browser sends, so list each origin, got "${withoutCredentials(entry)}"`);
    }
    if (!ORIGIN_ENTRY.test(entry) || origin === undefined) {
      throw new ConfigError(`CORS_ORIGINS entries must look like https://host[:port], got "${withoutCredentials(entry)}"`);
    }
    return origin;
  });
  return [...new Set(origins)];
}

/**
 * MAX_MESSAGE_CHARS and MAX_BODY_BYTES, each in its range, and bodies large enough for the longest
 * message: read apart, a MAX_MESSAGE_CHARS raised alone would be accepted at start and its long
 * messages answered 413 PAYLOAD_TOO_LARGE. The largest device registration, which does not grow
 * with MAX_MESSAGE_CHARS, is MAX_BODY_BYTES's least value (config-params.ts), refused by its range.
 */
function messageLimits(env: Env): Pick<Config, "maxMessageChars" | "maxBodyBytes"> {
  const maxMessageChars = intParam(env, "MAX_MESSAGE_CHARS");
  const maxBodyBytes = intParam(env, "MAX_BODY_BYTES");
  const needed = largestMessageBodyBytes(maxMessageChars);
  if (maxBodyBytes < needed) {
    throw new ConfigError(
      `MAX_BODY_BYTES (${maxBodyBytes}) is too small for MAX_MESSAGE_CHARS (${maxMessageChars}): a message that long can need a body of ${needed} bytes ` +
        `(up to 6 bytes a character in JSON, \\uXXXX, and the other fields); raise MAX_BODY_BYTES to at least ${needed}, or lower MAX_MESSAGE_CHARS to at most ${longestMessageCarried(maxBodyBytes)}`,
    );
  }
  return { maxMessageChars, maxBodyBytes };
}

/**
 * The deploy knobs `env` sets blank (`MAX_INSTANCES=` in an env file), refused, each named; undefined
 * when none is. The Firebase CLI (firebase-tools 15.34, lib/deploy/functions/params.js
 * ParamValue.asNumber: `+""`) deploys a blank int param as 0, not as its default, and the platform
 * reads 0 as unset, with its own defaults: MAX_INSTANCES 0 is no bound of ours (Cloud Functions'
 * 100 instances), CONCURRENCY 0 the CLI's own choice (prepare.js), TIMEOUT_SECONDS 0 the platform's;
 * MEMORY_MIB 0 the CLI refuses. An instance reading blank as the default would then not run with
 * the values it was deployed with. Checked by an instance at start (deployKnobs) and by a deploy
 * before anything is uploaded (project-files.ts checkDeployKnobs), `where` saying whose env files.
 */
export function blankDeployKnobs(env: Env, where = ""): string | undefined {
  const blank = (Object.keys(DEPLOY_PARAMS) as DeployParamName[]).filter((name) => env[name]?.trim() === "");
  if (blank.length === 0) return undefined;
  const one = blank.length === 1;
  const defaults = blank.map((name) => `${name} ${DEPLOY_PARAMS[name].default}`).join(", ");
  return (
    `${blank.join(" and ")} ${one ? "is" : "are"} set but blank${where}: the Firebase CLI deploys a blank deploy knob as 0, not as its default, ` +
    `and the platform reads 0 as unset (MAX_INSTANCES 0 is no bound at all); give ${one ? "it" : "each"} the value meant (${one ? "the default" : "the defaults"}: ${defaults}) or leave ${one ? "it" : "them"} unset`
  );
}

/** The deploy knobs, none blank, each in its range, and no more warm instances than instances at all. */
function deployKnobs(env: Env): Config["deploy"] {
  const blank = blankDeployKnobs(env);
  if (blank !== undefined) throw new ConfigError(blank);
  const knobs = {
    minInstances: intParam(env, "MIN_INSTANCES"),
    maxInstances: intParam(env, "MAX_INSTANCES"),
    concurrency: intParam(env, "CONCURRENCY"),
    memoryMib: intParam(env, "MEMORY_MIB"),
    timeoutSeconds: intParam(env, "TIMEOUT_SECONDS"),
  };
  if (knobs.minInstances > knobs.maxInstances) {
    throw new ConfigError(`MIN_INSTANCES (${knobs.minInstances}) must not exceed MAX_INSTANCES (${knobs.maxInstances})`);
  }
  return knobs;
}

/**
 * Reads the configuration from the environment, applying the declared defaults. Fails fast.
 * `defaults` changes a default where the local server differs from a deployment.
 */
export function resolveConfig(env: Env = process.env, defaults: { requireAuth?: boolean } = {}): Config {
  return {
    openai: {
      apiKey: parseApiKey(env.OPENAI_API_KEY),
      baseUrl: parseBaseUrl(stringParam(env, "OPENAI_BASE_URL")),
      timeoutMs: intParam(env, "OPENAI_TIMEOUT_MS"),
      maxRetries: intParam(env, "OPENAI_MAX_RETRIES"),
      maxRetryWaitMs: intParam(env, "OPENAI_MAX_RETRY_WAIT_MS"),
    },
    contextWindowMessages: intParam(env, "CONTEXT_WINDOW_MESSAGES"),
    ...messageLimits(env),
    corsOrigins: corsOriginsParam(env),
    dbTimeoutMs: intParam(env, "DB_TIMEOUT_MS"),
    sessionIdleTtlMs: intParam(env, "SESSION_IDLE_TTL_MINUTES") * 60_000,
    sessionRetentionMs: intParam(env, "SESSION_RETENTION_DAYS") * 86_400_000,
    templateCacheTtlMs: intParam(env, "TEMPLATE_CACHE_TTL_MS"),
    sessionCacheTtlMs: intParam(env, "SESSION_CACHE_TTL_MS"),
    sessionCacheMaxEntries: intParam(env, "SESSION_CACHE_MAX_ENTRIES"),
    requireAuth: booleanParam(env, "REQUIRE_AUTH", defaults.requireAuth ?? BOOLEAN_PARAMS.REQUIRE_AUTH.default),
    livePartials: booleanParam(env, "LIVE_PARTIALS", BOOLEAN_PARAMS.LIVE_PARTIALS.default),
    partialMaxIntervalMs: intParam(env, "PARTIAL_MAX_INTERVAL_MS"),
    ...appCheckParams(env),
    moderation: {
      enabled: booleanParam(env, "MODERATION", BOOLEAN_PARAMS.MODERATION.default),
      onOutage: choiceParam(env, "MODERATION_ON_OUTAGE", STRING_PARAMS.MODERATION_ON_OUTAGE.choices),
    },
    deploy: deployKnobs(env),
    limits: {
      userMessagesPerMinute: intParam(env, "USER_MESSAGES_PER_MINUTE"),
      userMaxActiveSessions: intParam(env, "USER_MAX_ACTIVE_SESSIONS"),
      sessionMaxExchanges: intParam(env, "SESSION_MAX_EXCHANGES"),
      userTokensPerDay: intParam(env, "USER_TOKENS_PER_DAY"),
      serviceTokensPerDay: intParam(env, "SERVICE_TOKENS_PER_DAY"),
      addressSessionsPerHour: intParam(env, "ADDRESS_SESSIONS_PER_HOUR"),
    },
    connections: {
      messagesPerMinute: intParam(env, "CONNECTION_MESSAGES_PER_MINUTE"),
      requestsPerHour: intParam(env, "CONNECTION_REQUESTS_PER_HOUR"),
    },
    notifications: {
      previewChars: intParam(env, "NOTIFICATION_PREVIEW_CHARS"),
      deadlineMs: intParam(env, "NOTIFICATION_DEADLINE_MS"),
    },
    databaseInstances: databaseInstancesParam(env),
  };
}

function databaseInstancesParam(env: Env): readonly string[] {
  const parsed = parseDatabaseInstances(stringParam(env, "DATABASE_INSTANCES"));
  if ("problem" in parsed) throw new ConfigError(`DATABASE_INSTANCES: ${parsed.problem}`);
  return parsed.urls;
}

