import { randomUUID } from "node:crypto";

/** A user signed up on the Auth emulator, with a real ID token from it. */
export interface TestUser {
  readonly uid: string;
  readonly idToken: string;
}

/**
 * Signs a new user up on the Auth emulator at `host` (host:port) and returns their ID token: with
 * an email and password, or anonymously (as the chat page does) with `anonymous`.
 */
export async function signUp(host: string, projectId: string, anonymous = false): Promise<TestUser> {
  const credentials = anonymous ? {} : { email: `${randomUUID()}@example.com`, password: "password-123" };
  const response = await fetch(`http://${host}/identitytoolkit.googleapis.com/v1/accounts:signUp?key=fake-api-key`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-firebase-gmpid": projectId },
    body: JSON.stringify({ ...credentials, returnSecureToken: true }),
  });
  const body = (await response.json()) as { localId?: string; idToken?: string };
  if (!response.ok || body.localId === undefined || body.idToken === undefined) {
    throw new Error(`sign-up on the Auth emulator failed: ${response.status} ${JSON.stringify(body)}`);
  }
  return { uid: body.localId, idToken: body.idToken };
}

/**
 * The same token with its claims changed. The Auth emulator's tokens are unsigned, so this is
 * how a test forges one: a different project, an expiry in the past, another user.
 */
export function withClaims(idToken: string, changes: Record<string, unknown>): string {
  const [header, payload] = idToken.split(".");
  const claims = JSON.parse(Buffer.from(payload ?? "", "base64url").toString("utf8")) as Record<string, unknown>;
  const forged = Buffer.from(JSON.stringify({ ...claims, ...changes })).toString("base64url");
  return `${header ?? ""}.${forged}.`;
}

export const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });
