import { randomUUID } from "node:crypto";
import { startEmulatorProject, type EmulatorProject } from "./emulator-project";

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

/** The Auth emulator a suite runs against, once its `beforeAll` has started it. */
export interface AuthEmulator {
  readonly host: string;
  /** A new user with a real ID token from it (anonymous as the chat page signs in, or with an email). */
  signUp(anonymous?: boolean): Promise<TestUser>;
  /** A user with this uid, as the Admin SDK makes one (a uid may be any text): firebase-admin checks the user exists when it verifies an emulator's token. */
  createUser(uid: string): Promise<void>;
}

/**
 * Starts the Auth emulator (offline) before the suite's tests and points firebase-admin at it;
 * after them stops it and puts FIREBASE_AUTH_EMULATOR_HOST back. Call at the top of a `describe`,
 * before any hook that starts a harness: firebase-admin reads the variable when an app's Auth
 * is first used.
 */
export function useAuthEmulator(projectId: string): () => AuthEmulator {
  let emulator: EmulatorProject | undefined;
  const previousHost = process.env.FIREBASE_AUTH_EMULATOR_HOST;
  beforeAll(async () => {
    emulator = await startEmulatorProject({ projectId, only: ["auth"], env: {}, secrets: {} });
    process.env.FIREBASE_AUTH_EMULATOR_HOST = emulator.authHost;
  }, 120_000);
  afterAll(async () => {
    if (previousHost === undefined) delete process.env.FIREBASE_AUTH_EMULATOR_HOST;
    else process.env.FIREBASE_AUTH_EMULATOR_HOST = previousHost;
    await emulator?.stop();
  }, 30_000);
  return () => {
    if (!emulator) throw new Error("the Auth emulator has not started: use it from a test or a later hook");
    const host = emulator.authHost;
    return {
      host,
      signUp: (anonymous = false) => signUp(host, projectId, anonymous),
      async createUser(uid) {
        // The emulator takes "Bearer owner" as the Admin SDK's credentials.
        const response = await fetch(`http://${host}/identitytoolkit.googleapis.com/v1/projects/${projectId}/accounts`, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: "Bearer owner" },
          body: JSON.stringify({ localId: uid }),
        });
        if (!response.ok) throw new Error(`the Auth emulator did not create ${JSON.stringify(uid)}: ${response.status} ${await response.text()}`);
      },
    };
  };
}
