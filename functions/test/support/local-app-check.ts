import { randomUUID, type KeyObject } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { deleteApp, initializeApp, type App } from "firebase-admin/app";
import { LocalGoogleAgent, signedJwt, startLocalGoogle, type LocalGoogle } from "./google-endpoints";

/** A Firebase project and one of its apps, as App Check names them in a token. */
export interface AppCheckProject {
  readonly id: string;
  readonly number: string;
  readonly appId: string;
}

export const APP_CHECK_PROJECT: AppCheckProject = { id: "demo-appcheck", number: "123456789", appId: "1:123456789:web:0a1b2c3d4e5f" };
/** The key id the served key set lists. */
export const APP_CHECK_KID = "app-check-key-1";
/** The host firebase-admin fetches App Check's keys from. */
export const APP_CHECK_HOST = "firebaseappcheck.googleapis.com";

/** The JWKS App Check serves at /v1/jwks. */
export function jwks(keys: Record<string, KeyObject>): string {
  return JSON.stringify({ keys: Object.entries(keys).map(([kid, key]) => ({ ...key.export({ format: "jwk" }), kid, alg: "RS256", use: "sig" })) });
}

/**
 * An App Check token as App Check issues them (RS256, kid, the project's number and id in the
 * audience, the app as subject, an hour to live), signed with `key`; `header` and `claims` change it.
 */
export function appCheckToken(key: KeyObject, options: { header?: Record<string, unknown>; claims?: Record<string, unknown>; project?: AppCheckProject } = {}): string {
  const project = options.project ?? APP_CHECK_PROJECT;
  const now = Math.floor(Date.now() / 1000);
  return signedJwt(key, { alg: "RS256", kid: APP_CHECK_KID, typ: "JWT", ...options.header }, {
    iss: `https://firebaseappcheck.googleapis.com/${project.number}`,
    aud: [`projects/${project.number}`, `projects/${project.id}`],
    sub: project.appId,
    iat: now,
    exp: now + 3600,
    ...options.claims,
  });
}

/** How the stand-in for Google answers: the keys, and the replay check's verdict; "hang": it takes the request and never answers. */
export interface GoogleAnswers {
  keys: { status: number; contentType: string; body: string } | "hang";
  replay: { status: number; body: string } | "hang";
}

/**
 * Google's App Check endpoints for one project, served on loopback: the public keys (`/v1/jwks`,
 * serving `served`) and the replay check (`verifyAppCheckToken`), each answering as `answers`
 * says (by default: the keys, and "not used before"), recording what firebase-admin sent.
 */
export class LocalAppCheck {
  answers: GoogleAnswers;
  /** The paths and bodies firebase-admin sent, since the last `reset`. */
  readonly received: { path: string; body: string }[] = [];
  private readonly apps: App[] = [];
  /** The tokens the replay check has seen, while it answers as App Check does (`consumeOnce`). */
  private consumed: Set<string> | undefined;

  private constructor(
    private readonly served: KeyObject,
    readonly project: AppCheckProject,
    private readonly google: LocalGoogle,
  ) {
    this.answers = this.defaults();
  }

  static async start(served: KeyObject, project: AppCheckProject = APP_CHECK_PROJECT): Promise<LocalAppCheck> {
    // The server answers through the object made once it listens.
    const made: { local?: LocalAppCheck } = {};
    const google = await startLocalGoogle((request, response) => { made.local?.answer(request, response); });
    made.local = new LocalAppCheck(served, project, google);
    return made.local;
  }

  /** The default answers again, and nothing received. */
  reset(): void {
    this.answers = this.defaults();
    this.received.length = 0;
    this.consumed = undefined;
  }

  /**
   * Until the next `reset`, the replay check answers as App Check does, over `answers.replay`: a
   * token is `alreadyConsumed` at every check after its first, whatever kind of token it is
   * (firebase-admin 14.5.1's VerifyAppCheckTokenResponse: the token is "marked as
   * `already_consumed` for all future invocations").
   */
  consumeOnce(): void {
    this.consumed = new Set();
  }

  /**
   * A firebase-admin app of the project that reaches this stand-in (or, `unreachable`, a closed
   * port: Google out of reach) through its `httpAgent`, with a credential for the replay check. A
   * fresh app each time: firebase-admin caches the keys it fetched per app.
   */
  app(reach: "served" | "unreachable" | (() => boolean) = "served", name: string = randomUUID()): { app: App; agent: LocalGoogleAgent } {
    const reachable = typeof reach === "function" ? reach : () => reach === "served";
    const agent = new LocalGoogleAgent(() => (reachable() ? this.google.port : this.google.closedPort));
    const credential = { getAccessToken: () => Promise.resolve({ access_token: "test-access-token", expires_in: 3600 }) };
    const app = initializeApp({ projectId: this.project.id, httpAgent: agent, credential }, name);
    this.apps.push(app);
    return { app, agent };
  }

  async close(): Promise<void> {
    await Promise.all(this.apps.map((app) => deleteApp(app)));
    await this.google.close();
  }

  private defaults(): GoogleAnswers {
    return {
      keys: { status: 200, contentType: "application/json", body: jwks({ [APP_CHECK_KID]: this.served }) },
      replay: { status: 200, body: JSON.stringify({ alreadyConsumed: false }) },
    };
  }

  private answer(request: IncomingMessage, response: ServerResponse): void {
    let body = "";
    request.on("data", (chunk: Buffer) => { body += chunk.toString("utf8"); });
    request.on("end", () => {
      const path = request.url ?? "";
      this.received.push({ path, body });
      if (path === "/v1/jwks") {
        if (this.answers.keys === "hang") return;
        response.writeHead(this.answers.keys.status, { "Content-Type": this.answers.keys.contentType }).end(this.answers.keys.body);
      } else if (path === `/v1beta/projects/${this.project.id}:verifyAppCheckToken`) {
        if (this.answers.replay === "hang") return;
        const replay = this.consumed === undefined ? this.answers.replay : replayVerdict(this.consumed, body);
        response.writeHead(replay.status, { "Content-Type": "application/json" }).end(replay.body);
      } else {
        response.writeHead(404).end();
      }
    });
  }
}

/**
 * App Check's verdict on a replay check's request (firebase-admin sends `{ app_check_token }`):
 * whether the token is in `consumed`, which holds it from now on; a request without one is refused.
 */
function replayVerdict(consumed: Set<string>, body: string): { status: number; body: string } {
  let token: unknown;
  try {
    token = (JSON.parse(body) as { app_check_token?: unknown }).app_check_token;
  } catch {
    token = undefined;
  }
  if (typeof token !== "string") return { status: 400, body: JSON.stringify({ error: { code: 400, message: "no app_check_token", status: "INVALID_ARGUMENT" } }) };
  const alreadyConsumed = consumed.has(token);
  consumed.add(token);
  return { status: 200, body: JSON.stringify({ alreadyConsumed }) };
}
