/**
 * What the ID-token and App Check verifiers (firebase-identity.ts, firebase-app-check.ts) both
 * need around firebase-admin 14.5.1: tokens it must not be given, and a deadline it does not keep.
 */

/** A JWT's header and payload, each a JSON object. */
export interface JwtParts {
  readonly header: Readonly<Record<string, unknown>>;
  readonly payload: Readonly<Record<string, unknown>>;
}

/**
 * The token's header and payload when both decode (base64url JSON) to objects, else undefined: a
 * malformed token, refused before firebase-admin sees it. With `typ: "JWT"` in the header, jws
 * 4.0.1 (under jsonwebtoken 9.0.3's `decode`) parses the payload itself: a payload of `null`
 * reaches firebase-admin 14.5.1's content checks (lib/auth/token-verifier.js and
 * lib/app-check/token-verifier.js `verifyContent`), which read `payload.aud` and throw a
 * TypeError, and one that is not JSON throws jws's SyntaxError past firebase-admin's decoding
 * check. Both carry no code and come before any key fetch, yet would read as an outage: a 503
 * that tells the client to retry, and an outage warning anyone could write to the logs.
 */
export function jwtParts(token: string): JwtParts | undefined {
  const [header, payload] = token.split(".", 2).map(jsonObject);
  return header !== undefined && payload !== undefined ? { header, payload } : undefined;
}

function jsonObject(part: string): Record<string, unknown> | undefined {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(part, "base64url").toString("utf8"));
  } catch {
    return undefined;
  }
  return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
}

/**
 * The longest a verification may take before it counts as an outage (503): firebase-admin 14.5.1
 * fetches the keys with no timeout of its own (ID tokens: UrlKeyFetcher through its HttpClient;
 * App Check: jwks-rsa 4.1.0), so an endpoint that accepts the connection and never answers would
 * hold every request with a token until the function's timeout, with no answer.
 */
export const VERIFICATION_TIMEOUT_MS = 5_000;

/** No verdict within the deadline: an outage, never a verdict on the token. */
export class VerificationTimeout extends Error {
  override readonly name = "VerificationTimeout";
  readonly code = "timeout";
}

/** `promise`, or a VerificationTimeout after `timeoutMs`; the verification left behind is not cancelled. */
export function withDeadline<T>(promise: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => { reject(new VerificationTimeout(`no verdict within ${timeoutMs} ms`)); }, timeoutMs);
  });
  return Promise.race([promise, deadline]).finally(() => { clearTimeout(timer); });
}
