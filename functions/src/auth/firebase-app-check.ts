import type { App } from "firebase-admin/app";
import { getAppCheck } from "firebase-admin/app-check";
import type { Log } from "../log/log";
import { AppCheckInvalidError, AppCheckUnavailableError, type AppCheckClaims, type AppCheckVerifier } from "./app-check";
import { jwtParts, VerificationGate, type VerificationGateOptions } from "./token-checks";

/** Besides the apps and the log: the deadline of a verification (default VERIFICATION_TIMEOUT_MS, token-checks.ts), and the clock of the pause after one is left at it. */
export interface FirebaseAppCheckOptions extends VerificationGateOptions {
  /** The apps of the project whose tokens are accepted; absent, any app of the project (as Firebase's own `enforceAppCheck`). */
  readonly appIds?: readonly string[];
  readonly log: Log;
}

/**
 * `app-check/invalid-argument` is ambiguous in firebase-admin 14 (checked against 14.5.1,
 * lib/app-check/token-verifier.js and lib/utils/jwt.js). Its verdicts on the token are built from
 * fixed templates: "Decoding App Check token failed...", "App check token must be a non-null
 * string.", "The provided App Check token has incorrect algorithm / incorrect "aud" (audience)
 * claim / incorrect "iss" (issuer) claim / no "sub" / an empty string "sub" / invalid signature /
 * "kid" claim which does not correspond to a known public key". But when the keys cannot be
 * fetched, `mapJwtErrorToAppCheckError` falls through to the same code with the fetch's message,
 * "Error fetching Json Web Keys: <cause>" (the cause being "connect ECONNREFUSED ...", a status
 * text, "The JWKS endpoint did not contain any keys", a JSON parse error...), and the replay
 * check's failures carry App Check's own codes and messages. So an argument error is a verdict
 * only when its message is one of those templates; anything else is an outage, a 503 rather than
 * a 401 that would tell a genuine app its attestation is bad. Should an upgrade reword the
 * templates, bad tokens would turn into 503s (loud in the tests), never an outage into 401s.
 * The audience, issuer and algorithm are checked before the keys are fetched: those verdicts
 * stand during an outage too, unless a verification left at its deadline holds them back (a 503,
 * token-checks.ts VerificationGate). Each template is named by a short reason for the logs, which
 * never carry the message itself (it quotes the token's claims).
 */
const VERDICTS: readonly (readonly [RegExp, string])[] = [
  [/^Decoding App Check token failed/, "malformed"],
  [/^App check token must be a non-null string/, "malformed"],
  [/^The provided App Check token has incorrect algorithm/, "algorithm"],
  [/^The provided App Check token has incorrect "aud"/, "audience"],
  [/^The provided App Check token has incorrect "iss"/, "issuer"],
  [/^The provided App Check token has (?:no|an empty string) "sub"/, "subject"],
  [/^The provided App Check token has invalid signature/, "signature"],
  [/^The provided App Check token has "kid" claim which does not correspond to a known public key/, "unknown key"],
];

/**
 * Verifies App Check tokens with firebase-admin: signature against App Check's public keys
 * (fetched through the app's `httpAgent`, cached 6 hours once fetched, never while failing),
 * project in the audience, issuer, expiry; optionally consumes the token (replay protection). A
 * verification left at its deadline holds the others back rather than let each leave a call of its
 * own open (VerificationGate, token-checks.ts): the replay check has no timeout in firebase-admin
 * 14.5.1, and the key fetch (jwks-rsa 4.1.0) gives up only after 30 s of silence. Consuming
 * verifications have a gate of their own, so that a replay check left open holds back no request
 * that makes none. A refusal of the token (verdictOn), which the audience, issuer and algorithm
 * get before any call to Google, lifts no such hold.
 */
export function firebaseAppCheck(app: App, options: FirebaseAppCheckOptions): AppCheckVerifier {
  const isVerdict = (error: unknown) => verdictOn(error) !== undefined;
  const gates = { consuming: new VerificationGate(isVerdict, options), plain: new VerificationGate(isVerdict, options) };
  const { log } = options;
  const refuse = (reason: string, cause?: unknown): AppCheckInvalidError => {
    log.info("app check token refused", { reason });
    return new AppCheckInvalidError("the App Check token is not valid", { cause });
  };
  return {
    async verify(token, verifyOptions = {}): Promise<AppCheckClaims> {
      // Not handed to firebase-admin, which would fail on it with no code, read as an outage (token-checks.ts).
      if (jwtParts(token) === undefined) throw refuse("malformed");
      let result: Awaited<ReturnType<ReturnType<typeof getAppCheck>["verifyToken"]>>;
      try {
        const consume = verifyOptions.consume === true;
        result = await gates[consume ? "consuming" : "plain"].run(() => getAppCheck(app).verifyToken(token, { consume }));
      } catch (error) {
        const reason = verdictOn(error);
        if (reason !== undefined) throw refuse(reason, error);
        log.warn("app check unavailable", { code: fieldOf(error, "code"), detail: fieldOf(error, "message")?.slice(0, 200) });
        throw new AppCheckUnavailableError("the App Check token could not be verified", { cause: error });
      }
      if (result.alreadyConsumed === true) throw refuse("replayed");
      if (options.appIds !== undefined && !options.appIds.includes(result.appId)) throw refuse("app");
      return { appId: result.appId };
    },
  };
}

/** The reason firebase-admin refused the token, or undefined when it could not decide. */
function verdictOn(error: unknown): string | undefined {
  const code = fieldOf(error, "code");
  if (code === "app-check/app-check-token-expired") return "expired";
  if (code !== "app-check/invalid-argument") return undefined;
  const message = fieldOf(error, "message") ?? "";
  return VERDICTS.find(([template]) => template.test(message))?.[1];
}

function fieldOf(error: unknown, field: "code" | "message"): string | undefined {
  if (typeof error !== "object" || error === null || !(field in error)) return undefined;
  const value: unknown = (error as Record<string, unknown>)[field];
  return typeof value === "string" ? value : undefined;
}
