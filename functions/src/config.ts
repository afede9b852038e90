import { defineBoolean, defineInt, defineSecret, defineString } from "firebase-functions/params";
import { z } from "zod";

/**
 * Every tunable of the service, declared once.
 *
 * Cloud Functions params read `process.env` only, and their `default` is applied by the
 * Firebase CLI at deploy/emulator time, never at runtime. The local server and the tests
 * start without the CLI, so `resolveConfig` applies the very same defaults itself: the
 * table below is the single source for both.
 */
const INT_PARAMS = {
  OPENAI_TIMEOUT_MS: {
    default: 15_000,
    min: 100,
    max: 120_000,
    description: "Per-attempt timeout of a model call, in milliseconds. Keep attempts x timeout well inside the function timeout.",
  },
  OPENAI_MAX_RETRIES: {
    default: 1,
    min: 0,
    max: 5,
    description: "Retries of a failed model call (timeouts, lost connections, 429, 5xx), with exponential backoff.",
  },
  OPENAI_MAX_RETRY_WAIT_MS: {
    default: 5_000,
    min: 0,
    max: 60_000,
    description: "Longest wait before a retry; when the provider's Retry-After asks for more, the client gets a 503 with it instead.",
  },
  CONTEXT_WINDOW_MESSAGES: {
    default: 10,
    min: 0,
    max: 200,
    description: "History messages sent to the model when a template sets no context_window.",
  },
  MAX_MESSAGE_CHARS: {
    default: 4_000,
    min: 1,
    max: 100_000,
    description: "Longest accepted user message, in characters.",
  },
  MAX_BODY_BYTES: {
    default: 32_768,
    min: 256,
    max: 10_485_760,
    description: "Largest accepted request body, in bytes (413 above it).",
  },
  DB_TIMEOUT_MS: {
    default: 5_000,
    min: 50,
    max: 60_000,
    description: "Deadline of each Realtime Database call; past it the request fails with 503.",
  },
  SESSION_IDLE_TTL_MINUTES: {
    default: 60,
    min: 1,
    max: 525_600,
    description: "Sessions idle longer than this are expired (410 to further messages).",
  },
  SESSION_RETENTION_DAYS: {
    default: 0,
    min: 0,
    max: 3_650,
    description: "Days ended and expired sessions are kept before the clean-up deletes them; 0 keeps them forever.",
  },
  TEMPLATE_CACHE_TTL_MS: {
    default: 60_000,
    min: 0,
    max: 3_600_000,
    description: "How long an instance reuses a template it has read.",
  },
  SESSION_CACHE_TTL_MS: {
    default: 600_000,
    min: 0,
    max: 86_400_000,
    description: "How long an instance keeps a session's immutable fields and recent history warm.",
  },
  SESSION_CACHE_MAX_ENTRIES: {
    default: 2_000,
    min: 0,
    max: 1_000_000,
    description: "Most sessions one instance keeps warm (least recently used go first).",
  },
  USER_MESSAGES_PER_MINUTE: {
    default: 20,
    min: 1,
    max: 100_000,
    description: "Messages one user may send per minute, across all sessions and instances (429 above).",
  },
  USER_MAX_ACTIVE_SESSIONS: {
    default: 5,
    min: 1,
    max: 100_000,
    description: "Sessions one user may have active at once (429 on creating another).",
  },
  SESSION_MAX_EXCHANGES: {
    default: 100,
    min: 1,
    max: 100_000,
    description: "Exchanges one session may hold (429 after that; start a new session).",
  },
} as const;

const BOOLEAN_PARAMS = {
  REQUIRE_AUTH: {
    default: true,
    description: "Require a Firebase ID token (Authorization: Bearer) on every request. The local server defaults to false.",
  },
} as const;

const STRING_PARAMS = {
  OPENAI_BASE_URL: {
    default: "",
    description: "Base URL of an OpenAI-compatible API; empty means api.openai.com.",
  },
  CORS_ORIGINS: {
    default: "*",
    description: "Comma-separated origins allowed by CORS, or * for any.",
  },
} as const;

type IntParamName = keyof typeof INT_PARAMS;
type StringParamName = keyof typeof STRING_PARAMS;
type BooleanParamName = keyof typeof BOOLEAN_PARAMS;

/** The secret holding the OpenAI API key; bound to each function that calls the model. */
export const openaiApiKey = defineSecret("OPENAI_API_KEY");

// Declared at load so the Firebase CLI discovers, prompts for and documents them.
for (const [name, spec] of Object.entries(INT_PARAMS)) {
  defineInt(name, { default: spec.default, description: spec.description });
}
for (const [name, spec] of Object.entries(STRING_PARAMS)) {
  defineString(name, { default: spec.default, description: spec.description });
}
for (const [name, spec] of Object.entries(BOOLEAN_PARAMS)) {
  defineBoolean(name, { default: spec.default, description: spec.description });
}

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
  readonly limits: {
    readonly userMessagesPerMinute: number;
    readonly userMaxActiveSessions: number;
    readonly sessionMaxExchanges: number;
  };
}

export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

type Env = Readonly<Record<string, string | undefined>>;

function intParam(env: Env, name: IntParamName): number {
  const spec = INT_PARAMS[name];
  const raw = env[name];
  if (raw === undefined || raw.trim() === "") return spec.default;
  const parsed = z.coerce.number().int().min(spec.min).max(spec.max).safeParse(raw.trim());
  if (!parsed.success) {
    throw new ConfigError(`${name} must be an integer from ${spec.min} to ${spec.max}, got "${raw}"`);
  }
  return parsed.data;
}

function stringParam(env: Env, name: StringParamName): string {
  return env[name]?.trim() || STRING_PARAMS[name].default;
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
  if (!z.url({ protocol: /^https?$/ }).safeParse(raw).success) {
    throw new ConfigError(`OPENAI_BASE_URL must be an http(s) URL, got "${raw}"`);
  }
  return raw;
}

function parseCorsOrigins(raw: string): "*" | string[] {
  const origins = raw.split(",").map((origin) => origin.trim()).filter(Boolean);
  if (origins.includes("*")) return "*";
  for (const origin of origins) {
    if (!/^https?:\/\/[^/\s]+$/.test(origin)) {
      throw new ConfigError(`CORS_ORIGINS entries must look like https://host[:port], got "${origin}"`);
    }
  }
  return origins;
}

/**
 * Reads the configuration from the environment, applying the declared defaults. Fails fast.
 * `defaults` changes a default where the local server differs from a deployment.
 */
export function resolveConfig(env: Env = process.env, defaults: { requireAuth?: boolean } = {}): Config {
  return {
    openai: {
      apiKey: env.OPENAI_API_KEY?.trim() || undefined,
      baseUrl: parseBaseUrl(stringParam(env, "OPENAI_BASE_URL")),
      timeoutMs: intParam(env, "OPENAI_TIMEOUT_MS"),
      maxRetries: intParam(env, "OPENAI_MAX_RETRIES"),
      maxRetryWaitMs: intParam(env, "OPENAI_MAX_RETRY_WAIT_MS"),
    },
    contextWindowMessages: intParam(env, "CONTEXT_WINDOW_MESSAGES"),
    maxMessageChars: intParam(env, "MAX_MESSAGE_CHARS"),
    maxBodyBytes: intParam(env, "MAX_BODY_BYTES"),
    corsOrigins: parseCorsOrigins(stringParam(env, "CORS_ORIGINS")),
    dbTimeoutMs: intParam(env, "DB_TIMEOUT_MS"),
    sessionIdleTtlMs: intParam(env, "SESSION_IDLE_TTL_MINUTES") * 60_000,
    sessionRetentionMs: intParam(env, "SESSION_RETENTION_DAYS") * 86_400_000,
    templateCacheTtlMs: intParam(env, "TEMPLATE_CACHE_TTL_MS"),
    sessionCacheTtlMs: intParam(env, "SESSION_CACHE_TTL_MS"),
    sessionCacheMaxEntries: intParam(env, "SESSION_CACHE_MAX_ENTRIES"),
    requireAuth: booleanParam(env, "REQUIRE_AUTH", defaults.requireAuth ?? BOOLEAN_PARAMS.REQUIRE_AUTH.default),
    limits: {
      userMessagesPerMinute: intParam(env, "USER_MESSAGES_PER_MINUTE"),
      userMaxActiveSessions: intParam(env, "USER_MAX_ACTIVE_SESSIONS"),
      sessionMaxExchanges: intParam(env, "SESSION_MAX_EXCHANGES"),
    },
  };
}

/** The declared params, for documentation and for the test that keeps README and code in step. */
export const DECLARED_PARAMS = [
  ...Object.entries(INT_PARAMS).map(([name, spec]) => ({ name, default: String(spec.default), description: spec.description })),
  ...Object.entries(STRING_PARAMS).map(([name, spec]) => ({ name, default: spec.default, description: spec.description })),
  ...Object.entries(BOOLEAN_PARAMS).map(([name, spec]) => ({ name, default: String(spec.default), description: spec.description })),
];
