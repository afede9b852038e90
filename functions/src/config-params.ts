import { defineBoolean, defineInt, defineSecret, defineString, select } from "firebase-functions/params";
import { DEVICE_TOKEN_MAX_CHARS, largestMessageBodyBytes, LARGEST_DEVICE_BODY_BYTES, USER_ID_MAX_CHARS } from "./http/message-body";

/**
 * Every tunable of the service, declared once.
 *
 * Cloud Functions params read `process.env` only, and their `default` is applied by the
 * Firebase CLI at deploy/emulator time, never at runtime. The local server and the tests
 * start without the CLI, so `resolveConfig` applies the very same defaults itself: the
 * table below is the single source for both.
 */
export const INT_PARAMS = {
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
    description: `Longest accepted user message, in characters (UTF-16 units); MAX_BODY_BYTES must be at least 6 x this + ${largestMessageBodyBytes(0)}.`,
  },
  MAX_BODY_BYTES: {
    default: 32_768,
    // The largest body a device registration can need, whatever MAX_MESSAGE_CHARS (more than
    // largestMessageBodyBytes(1), 2164): below it a registration the routes accept is answered 413.
    min: LARGEST_DEVICE_BODY_BYTES,
    minFor: `the largest body a device registration can need (a token of ${DEVICE_TOKEN_MAX_CHARS} visible ASCII characters and a user_id of ${USER_ID_MAX_CHARS} characters, as JSON may escape them)`,
    max: 10_485_760,
    description: `Largest accepted request body, in bytes (413 above it); at least 6 x MAX_MESSAGE_CHARS + ${largestMessageBodyBytes(0)}, the largest body a message can need, and at least ${LARGEST_DEVICE_BODY_BYTES}, the largest a device registration can need.`,
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
  USER_TOKENS_PER_DAY: {
    default: 200_000,
    min: 0,
    max: 1_000_000_000,
    description: "Model tokens (prompt and reply, summaries included) one user may use per UTC day, across instances (429 TOKEN_LIMIT above); 0 means unlimited.",
  },
  SERVICE_TOKENS_PER_DAY: {
    default: 0,
    min: 0,
    max: 1_000_000_000_000,
    description: "Model tokens the whole deployment may use per UTC day, across users and instances (429 SERVICE_TOKEN_LIMIT above); 0 means no cap. Set it: anonymous sign-in mints users at will, so per-user limits alone do not bound the bill (docs/security.md suggests a value).",
  },
  ADDRESS_SESSIONS_PER_HOUR: {
    default: 60,
    min: 0,
    max: 100_000,
    description: "Sessions one network address may create per hour when the caller sends no ID token or an anonymous one (429 ADDRESS_RATE_LIMITED above); 0 turns it off.",
  },
  SESSION_MAX_EXCHANGES: {
    default: 100,
    min: 1,
    max: 100_000,
    description: "Exchanges one session may hold (429 after that; start a new session).",
  },
  CONNECTION_MESSAGES_PER_MINUTE: {
    default: 30,
    min: 1,
    max: 100_000,
    description: "Messages each user may send per minute in one connection with another user, across instances (429 RATE_LIMITED above).",
  },
  CONNECTION_REQUESTS_PER_HOUR: {
    default: 20,
    min: 1,
    max: 100_000,
    description: "Connections one user may ask for per hour, each notifying the user asked (429 CONNECTION_REQUEST_LIMIT above).",
  },
  NOTIFICATION_PREVIEW_CHARS: {
    default: 100,
    min: 0,
    max: 200,
    description: "Longest preview of a message in its push notification, in characters; 0 sends no preview (a user may also turn theirs off).",
  },
  NOTIFICATION_DEADLINE_MS: {
    default: 1_000,
    min: 0,
    max: 10_000,
    description: "Longest a message's answer waits for its push notification's send; past it the message is answered anyway (the send is not retried).",
  },
  PARTIAL_MAX_INTERVAL_MS: {
    default: 2_000,
    min: 250,
    // Well under the 60 s after which clients take a partial not updated for its request's death (docs/api.md).
    max: 30_000,
    description: "The write budget of a live partial reply: its first text is written at once, then the waits between writes double from 500 ms up to this (steady at this when it is under 500). A reply streamed over 5 s then costs 4 partial writes (10 writes in all with its commit and copy), a long one one more write per this many ms (docs/costs.md).",
  },
} as const;

export const BOOLEAN_PARAMS = {
  REQUIRE_AUTH: {
    default: true,
    description: "Require a Firebase ID token (Authorization: Bearer) on every request. The local server defaults to false.",
  },
  LIVE_PARTIALS: {
    default: true,
    description: "Write each reply's text so far to the session's partials node while it is generated (the model then always streams); false saves that CPU and write per message.",
  },
  REQUIRE_APP_CHECK: {
    default: false,
    description: "Refuse requests without a valid Firebase App Check token (X-Firebase-AppCheck header; enforceAppCheck on callables): 401 APP_CHECK_REQUIRED or APP_CHECK_INVALID.",
  },
  MODERATION: {
    default: false,
    description: "Check each user message with the OpenAI moderations endpoint (omni-moderation-latest, through OPENAI_BASE_URL) beside the model call: a flagged message gets 422 MESSAGE_FLAGGED and is not stored.",
  },
  APP_CHECK_REPLAY_PROTECTION: {
    default: false,
    description: "With REQUIRE_APP_CHECK, each message call also consumes its App Check token at App Check (replay protection): a token used twice is refused. One more round trip to App Check per message; clients must send limited-use tokens.",
  },
} as const;

export const STRING_PARAMS = {
  OPENAI_BASE_URL: {
    default: "",
    description: "Base URL of an OpenAI-compatible API; empty means api.openai.com. No user name or password in it, nor any @, nor a # (a fragment, into which the SDK would append each call's path): refused at start. The API key goes in OPENAI_API_KEY.",
  },
  CORS_ORIGINS: {
    default: "*",
    description: "Comma-separated origins allowed by CORS (scheme://host[:port]), or * for any. Each is read as the origin a browser sends: scheme and host in lower case, an internationalised host in punycode, a default port (:443, :80) dropped; https://Chat.Example.com:443 allows https://chat.example.com. No wildcards (https://*.example.com is refused at start): list each origin.",
  },
  MODERATION_ON_OUTAGE: {
    default: "open",
    choices: ["open", "closed"],
    description: "When MODERATION is on and no verdict can be had (timeout, 5xx, unreachable): open lets the message through and logs it; closed refuses it with 503 MODERATION_UNAVAILABLE.",
  },
  DATABASE_INSTANCES: {
    default: "",
    description: "Comma-separated Realtime Database instance URLs that sessions are spread over, append-only (a session's id names its instance's position); empty means the default database alone. The first holds every per-user record. An emulator's http://HOST:PORT?ns=NAME only on the emulators and npm start: refused deployed, and in the deploy files of a project that is not demo- (docs/sharding.md).",
  },
} as const;

export type IntParamName = keyof typeof INT_PARAMS;
export type StringParamName = keyof typeof STRING_PARAMS;
export type BooleanParamName = keyof typeof BOOLEAN_PARAMS;

/** The secret holding the OpenAI API key; bound to each function that calls the model. */
export const openaiApiKey = defineSecret("OPENAI_API_KEY");

// Declared at load so the Firebase CLI discovers, prompts for and documents them.
for (const [name, spec] of Object.entries(INT_PARAMS)) {
  defineInt(name, { default: spec.default, description: spec.description });
}
for (const [name, spec] of Object.entries(STRING_PARAMS)) {
  defineString(name, { default: spec.default, description: spec.description, ...("choices" in spec ? { input: select([...spec.choices]) } : {}) });
}
for (const [name, spec] of Object.entries(BOOLEAN_PARAMS)) {
  defineBoolean(name, { default: spec.default, description: spec.description });
}

/** The service's declared params (the deploy knobs are in function-options.ts), for documentation and the tests. */
export const DECLARED_SERVICE_PARAMS = [
  ...Object.entries(INT_PARAMS).map(([name, spec]) => ({ name, default: String(spec.default), description: spec.description })),
  ...Object.entries(STRING_PARAMS).map(([name, spec]) => ({ name, default: spec.default, description: spec.description })),
  ...Object.entries(BOOLEAN_PARAMS).map(([name, spec]) => ({ name, default: String(spec.default), description: spec.description })),
];
