/** Who a verified ID token says the caller is. */
export interface Identity {
  readonly uid: string;
  /** Signed in anonymously: a user anyone can mint at will, limited per network address like a caller without a token. */
  readonly anonymous?: boolean;
}

/**
 * Whether a request's `user_id` names `caller`. A Firebase uid may be any text (a custom token's
 * `" padded "`, `"bot\u0007"`, `"  "`): an HTTP request's `user_id` that is the uid exactly is
 * taken out before the field's checks, which such a uid may fail (request-schemas.ts
 * withoutCallersName), so a user naming themselves as their uid is is never refused. One that
 * reaches here was read as a client names it (userIdField: spaces around it dropped, control
 * characters refused), and is compared with the uid read the same way too: " padded " named as
 * "padded" is the caller. The request acts for `caller.uid` whatever it named.
 */
export function namesCaller(userId: string, caller: Identity): boolean {
  return userId === caller.uid || userId === caller.uid.trim();
}

/** The port through which the HTTP boundary checks a bearer token. */
export interface IdentityVerifier {
  verify(idToken: string): Promise<Identity>;
}

/** The token is missing where required, malformed, forged, expired or revoked (401). */
export class InvalidTokenError extends Error {
  override readonly name = "InvalidTokenError";
}

/** The token could not be checked at all, e.g. the signing keys could not be fetched (503). */
export class IdentityUnavailableError extends Error {
  override readonly name = "IdentityUnavailableError";
}
