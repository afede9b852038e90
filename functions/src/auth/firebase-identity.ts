import type { App } from "firebase-admin/app";
import { getAuth } from "firebase-admin/auth";
import { IdentityUnavailableError, InvalidTokenError, type Identity, type IdentityVerifier } from "./identity";
import { jwtParts, VerificationGate, type JwtParts, type VerificationGateOptions } from "./token-checks";

/** firebase-admin's verdicts that mean "this token is not acceptable", whatever their message. */
const REJECTED = new Set([
  "auth/invalid-id-token",
  "auth/id-token-expired",
  "auth/id-token-revoked",
  "auth/user-disabled",
  "auth/user-not-found",
  "auth/tenant-id-mismatch",
]);

/**
 * `auth/argument-error` is ambiguous in firebase-admin 14 (checked against 14.5.1,
 * lib/auth/token-verifier.js and lib/utils/jwt.js). Its verdicts on the token itself are built
 * from fixed templates that name the token: "Decoding Firebase ID token failed", "Firebase ID
 * token has no "kid" claim / incorrect algorithm / incorrect "aud" / invalid signature / "kid"
 * claim which does not correspond to a known public key", "verifyIdToken() expects an ID token,
 * but was given a custom token", "First argument to verifyIdToken() must be ...". But when the
 * public keys cannot be fetched, `mapJwtErrorToAuthError` falls through to the same code with the
 * fetch's own message ("Error while making request: connect ECONNREFUSED ...", "Error fetching
 * public keys for Google certs: ...") and no cause. So an argument error counts as a verdict only
 * when its message is one of those templates; anything else is the key fetch, a 503 rather than a
 * 401 that would make clients sign their users out. Should an upgrade reword the templates, bad
 * tokens would turn into 503s (loud in the tests), never an outage into sign-outs.
 */
const VERDICT_MESSAGE = /^(?:Decoding |First argument to )?(?:Firebase ID token|verifyIdToken\(\))/;

/** The deadline of a verification (default VERIFICATION_TIMEOUT_MS, token-checks.ts), and the clock of the pause after one is left at it. */
export type FirebaseIdentityOptions = VerificationGateOptions;

/**
 * Verifies Firebase ID tokens with firebase-admin: signature (skipped by the Auth emulator,
 * whose tokens are unsigned), project, issuer, expiry. `FIREBASE_AUTH_EMULATOR_HOST` is read
 * when the app's Auth is first used. A verification left at its deadline holds the others back
 * rather than let each leave a key fetch of its own open (VerificationGate, token-checks.ts);
 * one refused on its token (isVerdictOnToken), perhaps before any fetch, lifts no such hold.
 */
export function firebaseIdentity(app: App, options: FirebaseIdentityOptions = {}): IdentityVerifier {
  const gate = new VerificationGate(isVerdictOnToken, options);
  return {
    async verify(idToken: string): Promise<Identity> {
      // Not handed to firebase-admin, which would fail on it with no code, read as an outage (token-checks.ts).
      const parts = jwtParts(idToken);
      if (parts === undefined || failsLegacyCheck(parts)) throw new InvalidTokenError("the ID token is not valid");
      try {
        return identityOf(await gate.run(() => getAuth(app).verifyIdToken(idToken)));
      } catch (error) {
        if (isVerdictOnToken(error)) throw new InvalidTokenError("the ID token is not valid", { cause: error });
        throw new IdentityUnavailableError("the ID token could not be verified", { cause: error });
      }
    },
  };
}

/**
 * firebase-admin 14.5.1 (lib/auth/token-verifier.js `verifyContent`) takes a kid-less HS256 token
 * with `v: 0` and a `d` claim for a legacy custom token by testing `'uid' in payload.d`, a
 * TypeError with no code when `d` is not an object. Refused: an ID token has a kid, and the Auth
 * emulator's, which have none, are `alg: "none"`.
 */
function failsLegacyCheck({ header, payload }: JwtParts): boolean {
  return header.kid === undefined && header.alg === "HS256" && payload.v === 0 && "d" in payload && (typeof payload.d !== "object" || payload.d === null);
}

function isVerdictOnToken(error: unknown): boolean {
  if (typeof error !== "object" || error === null) return false;
  const code = "code" in error ? String(error.code) : "";
  if (REJECTED.has(code)) return true;
  const message = "message" in error ? String(error.message) : "";
  return code === "auth/argument-error" && VERDICT_MESSAGE.test(message);
}

/**
 * The caller a verified ID token's claims name (firebase-admin's, or a callable's `auth.token`).
 * `firebase` is read as optional: firebase-admin 14.5 types it as always there, but a token it
 * accepts need not carry it (one minted with another tool); such a caller is not anonymous.
 */
export function identityOf(claims: { readonly uid: string; readonly firebase?: { readonly sign_in_provider?: string } }): Identity {
  return claims.firebase?.sign_in_provider === "anonymous" ? { uid: claims.uid, anonymous: true } : { uid: claims.uid };
}
