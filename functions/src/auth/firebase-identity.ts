import type { App } from "firebase-admin/app";
import { getAuth } from "firebase-admin/auth";
import { IdentityUnavailableError, InvalidTokenError, type Identity, type IdentityVerifier } from "./identity";

/** firebase-admin's verdicts that mean "this token is not acceptable", as opposed to "cannot check now". */
const REJECTED = new Set([
  "auth/argument-error",
  "auth/invalid-id-token",
  "auth/id-token-expired",
  "auth/id-token-revoked",
  "auth/user-disabled",
  "auth/user-not-found",
  "auth/tenant-id-mismatch",
]);

/**
 * Verifies Firebase ID tokens with firebase-admin: signature (skipped by the Auth emulator,
 * whose tokens are unsigned), project, issuer, expiry. `FIREBASE_AUTH_EMULATOR_HOST` is read
 * when the app's Auth is first used.
 */
export function firebaseIdentity(app: App): IdentityVerifier {
  return {
    async verify(idToken: string): Promise<Identity> {
      try {
        const decoded = await getAuth(app).verifyIdToken(idToken);
        return { uid: decoded.uid };
      } catch (error) {
        const code = typeof error === "object" && error !== null && "code" in error ? String(error.code) : "";
        if (REJECTED.has(code)) throw new InvalidTokenError("the ID token is not valid", { cause: error });
        throw new IdentityUnavailableError("the ID token could not be verified", { cause: error });
      }
    },
  };
}
