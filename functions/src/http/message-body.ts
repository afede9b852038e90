/*
 * How large a request body carrying a message of MAX_MESSAGE_CHARS, or a device registration, can
 * be, so that an instance refuses at start a MAX_BODY_BYTES that would answer such a message or
 * registration 413 (config.ts, config-params.ts). No zod: config.ts loads this at instance start.
 */

/**
 * The longest `user_id` a body may name (request-schemas.ts reads it), in characters as zod 4.6.7's
 * `.max` counts them on a string: code points, each up to two UTF-16 units (an emoji is two).
 */
export const USER_ID_MAX_CHARS = 128;

/** UTF-16 units of a code point beyond the BMP: how many units a `user_id` of USER_ID_MAX_CHARS can hold. */
const UNITS_PER_CODE_POINT = 2;

/** The longest `Idempotency-Key`, a header of the HTTP routes and a data field of the callables (endpoint-parts.ts). */
export const IDEMPOTENCY_KEY_MAX_CHARS = 255;

/** The longest device token the device routes accept (connection-schemas.ts): an FCM registration token, visible ASCII. */
export const DEVICE_TOKEN_MAX_CHARS = 4096;

/** An id this service issues, a session's or a connection's: a UUID's text (sharding/session-ids.ts). */
const ISSUED_ID_CHARS = 36;

/**
 * Bytes one UTF-16 unit may take in a JSON string: `\uXXXX`. Every encoder writes control
 * characters so, and one that keeps its output ASCII (Python's `json.dumps` by default) writes
 * every non-ASCII unit so: a message is counted in UTF-16 units, a surrogate pair as two.
 */
const ESCAPED_UNIT_BYTES = 6;

/** A key or a device token is visible ASCII, where only `"` and `\` are escaped, as two bytes. */
const ESCAPED_ASCII_CHAR_BYTES = 2;

/**
 * The largest body around a message, its text left out: a user-to-user message's callable
 * (`chat-sendConnectionMessage`), whose data the Functions client SDK sends wrapped in `{"data":...}`,
 * holding the connection's id, the sender's `user_id` (without an ID token) and an idempotency key.
 * The HTTP routes' bodies (`{"message":...}`, `{"user_id":...,"message":...}`) and the session
 * callable's (a session id and a key, no user id) hold less.
 */
const ENVELOPE_BYTES =
  JSON.stringify({ data: { connection_id: "", user_id: "", message: "", idempotency_key: "" } }).length +
  ISSUED_ID_CHARS +
  USER_ID_MAX_CHARS * UNITS_PER_CODE_POINT * ESCAPED_UNIT_BYTES +
  IDEMPOTENCY_KEY_MAX_CHARS * ESCAPED_ASCII_CHAR_BYTES;

/** The largest body a message of `maxMessageChars` UTF-16 units can need, in bytes: the least MAX_BODY_BYTES that carries it. */
export function largestMessageBodyBytes(maxMessageChars: number): number {
  return ENVELOPE_BYTES + maxMessageChars * ESCAPED_UNIT_BYTES;
}

/** The longest message, in UTF-16 units, that every body can carry within `maxBodyBytes`; 0 when none can. */
export function longestMessageCarried(maxBodyBytes: number): number {
  return Math.max(0, Math.floor((maxBodyBytes - ENVELOPE_BYTES) / ESCAPED_UNIT_BYTES));
}

/**
 * The largest body of a device registration the routes accept, in bytes: the registration's
 * callable (`chat-registerDevice`), its data wrapped in `{"data":...}`, holding the `user_id`
 * (without an ID token), the token at its longest and `previews: false`. POST /devices holds the
 * same less the wrapping, and DELETE /devices less `previews`. It does not grow with
 * MAX_MESSAGE_CHARS, so it is the least MAX_BODY_BYTES (config-params.ts): below it, an instance
 * would start and answer a registration of the longest token the routes accept 413. The callable's
 * `idempotency_key` is left out: the device routes read no key.
 */
export const LARGEST_DEVICE_BODY_BYTES =
  JSON.stringify({ data: { user_id: "", token: "", previews: false } }).length +
  USER_ID_MAX_CHARS * UNITS_PER_CODE_POINT * ESCAPED_UNIT_BYTES +
  DEVICE_TOKEN_MAX_CHARS * ESCAPED_ASCII_CHAR_BYTES;
