import { InvalidTokenError, type Identity, type IdentityVerifier } from "../auth/identity";
import type { HttpRequest } from "./http-types";

/**
 * Who is calling: the uid of a verified Firebase ID token (`Authorization: Bearer <token>`),
 * or undefined when there is no token and none is required. A token that is present is always
 * verified, and wins over anything the body says.
 */
export function authenticator(identity: IdentityVerifier, requireAuth: boolean): (request: HttpRequest) => Promise<Identity | undefined> {
  return async (request) => {
    const header = request.headers.authorization;
    if (header === undefined) {
      if (requireAuth) throw new InvalidTokenError("an ID token is required");
      return undefined;
    }
    const token = /^Bearer\s+(\S+)\s*$/i.exec(header)?.[1];
    if (token === undefined) throw new InvalidTokenError("the Authorization header must be: Bearer <Firebase ID token>");
    return identity.verify(token);
  };
}
