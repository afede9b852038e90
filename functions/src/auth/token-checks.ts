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
 * The token's header and payload when both decode (base64url JSON) to objects whose claims
 * firebase-admin turns into text are text (`hasTextClaims`), else undefined: a malformed token,
 * refused before firebase-admin sees it. With `typ: "JWT"` in the header, jws 4.0.1 (under
 * jsonwebtoken 9.0.3's `decode`) parses the payload itself: a payload of `null` reaches
 * firebase-admin 14.5.1's content checks (lib/auth/token-verifier.js and
 * lib/app-check/token-verifier.js `verifyContent`), which read `payload.aud` and throw a
 * TypeError, and one that is not JSON throws jws's SyntaxError past firebase-admin's decoding
 * check. Both carry no code and come before any key fetch, yet would read as an outage: a 503
 * that tells the client to retry, and an outage warning anyone could write to the logs.
 */
export function jwtParts(token: string): JwtParts | undefined {
  const [header, payload] = token.split(".", 2).map(jsonObject);
  return header !== undefined && payload !== undefined && hasTextClaims(header, payload) ? { header, payload } : undefined;
}

/**
 * Whether the claims firebase-admin 14.5.1 turns into text are absent or strings (`aud`: or a list
 * of strings), as every token Firebase issues has them. Its `verifyContent` builds its refusals by
 * concatenation before the signature is checked: `'... but got "' + header.alg + '"'` (both
 * verifiers), `payload.aud` (both) and `payload.iss` (ID tokens); and once the keys are fetched,
 * lib/utils/jwt.js `getKeyCallback` looks `header.kid` up in them with `hasOwnProperty`, which
 * turns it into a string. A claim that is a deeply nested list (3,500 levels fit in a header well under
 * Node's 16 KB) overflows the stack there, and an object with a `toString` claim that is not a
 * function cannot be made text: a RangeError or TypeError with no code, read as an outage.
 */
function hasTextClaims(header: Readonly<Record<string, unknown>>, payload: Readonly<Record<string, unknown>>): boolean {
  const text = (value: unknown) => value === undefined || typeof value === "string";
  const { aud } = payload;
  return text(header.alg) && text(header.kid) && text(payload.iss)
    && (text(aud) || (Array.isArray(aud) && aud.every((entry: unknown) => typeof entry === "string")));
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
 * App Check: jwks-rsa 4.1.0, which gives up only after 30 s of silence), nor App Check's replay
 * check, so an endpoint that accepts the connection and never answers would hold every request
 * with a token until the function's timeout, with no answer.
 */
export const VERIFICATION_TIMEOUT_MS = 5_000;

/** How long verifications are refused at once after one was left at its deadline, unless it ends or another succeeds sooner (VerificationGate). */
export const STALL_PAUSE_MS = 30_000;

/** No verdict within the deadline: an outage, never a verdict on the token. */
export class VerificationTimeout extends Error {
  override readonly name = "VerificationTimeout";
  readonly code = "timeout";
}

export interface VerificationGateOptions {
  /** The deadline of each verification (default VERIFICATION_TIMEOUT_MS). */
  readonly timeoutMs?: number;
  readonly clock?: () => number;
}

/**
 * Whether a verification's failure is firebase-admin's verdict on the token (refused on what it
 * carries: its audience, its expiry, its signature), which tells nothing of whether Google answers:
 * the audience, issuer and algorithm are refused before any key is fetched.
 */
export type VerdictOnToken = (error: unknown) => boolean;

/**
 * Runs a verifier's verifications each with its deadline, and keeps one left at its deadline from
 * being followed by more. firebase-admin 14.5.1 gives its calls to Google no timeout and shares
 * none of them between verifications: each ID-token verification made while it holds no keys
 * fetches them itself (lib/utils/jwt.js UrlKeyFetcher.refresh, an HttpClient given no `timeout`),
 * and each App Check replay check is a call of its own (AppCheckApiClient.verifyReplayProtection,
 * the same). A verification left at its deadline cannot be cancelled, so while Google accepts
 * connections and never answers, every request would leave one more call open for as long as the
 * silence lasts.
 *
 * So once one is left at its deadline with no verification succeeding since it started, the next
 * are refused at once (the 503 their deadline would have given) until it ends or one succeeds, or
 * for STALL_PAUSE_MS; then one verification tries again, the others still refused meanwhile. While
 * Google never answers, what stays open is the verifications started before that deadline, then
 * one a pause at most, whatever the traffic; a recovery is seen within a pause and a deadline.
 * - A success lifts the pause, and one since a verification started keeps its deadline from
 *   pausing: Google answered after it started (one stuck connection among answered ones), and the
 *   ID-token keys are cached then, so the next verifications fetch nothing; a pause would only
 *   refuse every signed-in user of the instance for STALL_PAUSE_MS.
 * - The verification the pause waits on lifts nothing when it ends in a verdict on the token
 *   (`isVerdictOnToken`), which may come before any call to Google (another project's audience,
 *   which anyone can send): the next verification is let through as the try instead, else one
 *   such token after each pause would let every request through to leave a call open.
 * - Any other end of the verification the pause waits on lifts it: Google answered, or failed
 *   fast; a verification that fails before its deadline (keys out of reach) pauses nothing.
 * With several left at their deadlines, the pause waits on the last one.
 */
export class VerificationGate {
  private readonly timeoutMs: number;
  private readonly clock: () => number;
  /** How many verifications have succeeded so far: one that starts notes it, to know at its deadline whether any succeeded since. */
  private successes = 0;
  /**
   * While verifications are held back: refused until `until`, then the next one is let through as
   * the try (`until` Infinity while it runs). `awaiting` is the verification whose end (other than
   * a verdict on the token) lifts the pause: the last left at its deadline, or the try; none once
   * the try's place is free.
   */
  private pause: { readonly awaiting: Promise<unknown> | undefined; readonly until: number } | undefined;

  constructor(private readonly isVerdictOnToken: VerdictOnToken, options: VerificationGateOptions = {}) {
    this.timeoutMs = options.timeoutMs ?? VERIFICATION_TIMEOUT_MS;
    this.clock = options.clock ?? Date.now;
  }

  async run<T>(verify: () => Promise<T>): Promise<T> {
    const pause = this.pause;
    if (pause !== undefined && this.clock() < pause.until) {
      throw new VerificationTimeout("an earlier verification is still without a verdict");
    }
    const successesBefore = this.successes;
    const verification = verify();
    if (pause !== undefined) this.pause = { awaiting: verification, until: Number.POSITIVE_INFINITY };
    const state = { running: true };
    verification.then(() => {
      state.running = false;
      this.successes += 1;
      this.pause = undefined;
    }, (error: unknown) => {
      state.running = false;
      if (this.pause?.awaiting !== verification) return;
      this.pause = this.isVerdictOnToken(error) ? { awaiting: undefined, until: Number.NEGATIVE_INFINITY } : undefined;
    });
    try {
      return await withDeadline(verification, this.timeoutMs);
    } catch (error) {
      if (error instanceof VerificationTimeout && state.running && this.successes === successesBefore) {
        this.pause = { awaiting: verification, until: this.clock() + STALL_PAUSE_MS };
      }
      throw error;
    }
  }
}

/** `promise`, or a VerificationTimeout after `timeoutMs`; the verification left behind is not cancelled. */
function withDeadline<T>(promise: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => { reject(new VerificationTimeout(`no verdict within ${timeoutMs} ms`)); }, timeoutMs);
  });
  return Promise.race([promise, deadline]).finally(() => { clearTimeout(timer); });
}
