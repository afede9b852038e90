// The module object itself, which @firebase/database reads `stringify` from at each send: an ES
// namespace import would be a copy (a bundler's interop object), and replacing its export would change nothing.
// eslint-disable-next-line @typescript-eslint/no-require-imports
import firebaseUtil = require("@firebase/util");

/**
 * Workaround for @firebase/database 1.1.x (through firebase-admin 14.5, with @firebase/util
 * 1.15): `WebSocketConnection.send` serialises each message with `util.stringify` and, above
 * 16,384 UTF-16 units, splits the JSON text into frames that the WebSocket encodes as UTF-8
 * each on its own. A surrogate pair (an emoji) cut by a frame boundary becomes two lone
 * surrogates, which UTF-8 cannot encode: the server stores U+FFFD U+FFFD in place of the
 * character. Long messages of control characters (6 units each in JSON) and emoji hit it at the
 * default MAX_MESSAGE_CHARS.
 *
 * JSON that writes every surrogate as a `\uXXXX` escape is the same data, in ASCII where a
 * split can fall anywhere. The SDK looks `stringify` up on @firebase/util's exports at each send,
 * so replacing that export fixes every message this process sends, with nothing changed in what
 * is stored or what clients read. firebase-admin and @firebase/util are pinned in package.json for
 * it; the regression tests (test/http/message-text.test.ts, and for the deployed bundle,
 * where @firebase/util must stay one shared module: test/unit/deployed-entry.test.ts) fail if an
 * upgrade stops honouring the replacement.
 */
const SURROGATE = /[\uD800-\uDFFF]/;
const SURROGATES = /[\uD800-\uDFFF]/g;

function escapeSurrogates(json: string): string {
  return json.replace(SURROGATES, (unit) => `\\u${unit.charCodeAt(0).toString(16)}`);
}

let installed = false;

export function installFrameSafeJson(): void {
  if (installed) return;
  installed = true;
  const original = firebaseUtil.stringify;
  // Only the text changes: a surrogate appears in JSON text inside strings alone, where the escape means the same.
  const frameSafe: typeof original = (data) => {
    const json = original(data);
    return SURROGATE.test(json) ? escapeSurrogates(json) : json;
  };
  (firebaseUtil as { stringify: typeof original }).stringify = frameSafe;
}
