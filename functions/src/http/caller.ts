import { InvalidTokenError, type Identity } from "../auth/identity";
import type { Runtime } from "../runtime/runtime";
import type { HttpRequest } from "./http-types";

/**
 * Who is calling: the uid of a verified Firebase ID token (`Authorization: Bearer <token>`),
 * or undefined when there is no token and none is required. A token that is present is always
 * verified, and wins over anything the body says.
 */
export async function callerOf(request: HttpRequest, runtime: Runtime): Promise<Identity | undefined> {
  const header = request.headers.authorization;
  if (header === undefined) {
    if (runtime.config.requireAuth) throw new InvalidTokenError("an ID token is required");
    return undefined;
  }
  const token = /^Bearer\s+(\S+)\s*$/i.exec(header)?.[1];
  if (token === undefined) throw new InvalidTokenError("the Authorization header must be: Bearer <Firebase ID token>");
  return runtime.identity.verify(token);
}
