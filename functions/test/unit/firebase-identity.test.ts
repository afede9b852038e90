import { generateKeyPairSync, randomUUID, type KeyObject } from "node:crypto";
import { once } from "node:events";
import { deleteApp, initializeApp, type App } from "firebase-admin/app";
import { firebaseIdentity } from "../../src/auth/firebase-identity";
import { IdentityUnavailableError, InvalidTokenError } from "../../src/auth/identity";
import { STALL_PAUSE_MS } from "../../src/auth/token-checks";
import { toErrorAnswer } from "../../src/http/error-response";
import { base64url, deeplyNested, LocalGoogleAgent, signedJwt, startLocalGoogle, type LocalGoogle } from "../support/google-endpoints";

const PROJECT_ID = "demo-identity";
const KID = "test-key-1";

/** What the stand-in key endpoint answers; "hang": it accepts the request and never answers. */
type KeyAnswer = { readonly status: number; readonly contentType: string; readonly body: string; readonly cacheControl?: string } | "hang";

/** The keys as Google serves them; with `cacheControl` (Google sends one), firebase-admin keeps them that long instead of fetching them for each token. */
function keysAnswer(keys: Record<string, KeyObject>, cacheControl?: string): KeyAnswer {
  const pems = Object.fromEntries(Object.entries(keys).map(([kid, key]) => [kid, key.export({ type: "spki", format: "pem" }).toString()]));
  return { status: 200, contentType: "application/json", body: JSON.stringify(pems), ...(cacheControl === undefined ? {} : { cacheControl }) };
}

/** An ID token as Firebase Auth issues them (RS256, kid, audience and issuer of the project), signed with `key`. */
function idToken(key: KeyObject, options: { header?: Record<string, unknown>; claims?: Record<string, unknown> } = {}): string {
  const now = Math.floor(Date.now() / 1000);
  return signedJwt(key, { alg: "RS256", kid: KID, typ: "JWT", ...options.header }, {
    iss: `https://securetoken.google.com/${PROJECT_ID}`,
    aud: PROJECT_ID,
    auth_time: now,
    sub: "user-1",
    iat: now,
    exp: now + 3600,
    ...options.claims,
  });
}

async function failure(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error("the token was accepted");
}

describe("firebaseIdentity, checking signatures against the public keys (no emulator)", () => {
  const signing = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const other = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const previousEmulator = process.env.FIREBASE_AUTH_EMULATOR_HOST;
  let google: LocalGoogle;
  let answer: KeyAnswer;
  const apps: App[] = [];

  beforeAll(async () => {
    // With the emulator, firebase-admin skips signatures and never fetches keys.
    delete process.env.FIREBASE_AUTH_EMULATOR_HOST;
    google = await startLocalGoogle((_request, response) => {
      if (answer === "hang") return;
      response.writeHead(answer.status, { "Content-Type": answer.contentType, ...(answer.cacheControl === undefined ? {} : { "Cache-Control": answer.cacheControl }) }).end(answer.body);
    });
  });

  afterAll(async () => {
    if (previousEmulator !== undefined) process.env.FIREBASE_AUTH_EMULATOR_HOST = previousEmulator;
    await Promise.all(apps.map((app) => deleteApp(app)));
    await google.close();
  });

  /** A fresh app each time: firebase-admin caches fetched keys per app. */
  function verifier(keys: "served" | "unreachable", timeoutMs?: number, clock?: () => number) {
    const agent = new LocalGoogleAgent(() => (keys === "served" ? google.port : google.closedPort));
    const app = initializeApp({ projectId: PROJECT_ID, httpAgent: agent }, randomUUID());
    apps.push(app);
    return { identity: firebaseIdentity(app, { ...(timeoutMs === undefined ? {} : { timeoutMs }), ...(clock === undefined ? {} : { clock }) }), agent };
  }

  beforeEach(() => {
    answer = keysAnswer({ [KID]: signing.publicKey });
  });

  it("accepts a token signed with a served key (the setup the outage cases cut)", async () => {
    const { identity, agent } = verifier("served");
    await expect(identity.verify(idToken(signing.privateKey))).resolves.toEqual({ uid: "user-1" });
    expect(agent.attempts).toEqual(["www.googleapis.com"]);
  });

  it("accepts the token of a user deleted since until it expires, without asking Auth (no round trip a request): eraseDeletedUser keeps that user refused meanwhile", async () => {
    const agent = new LocalGoogleAgent(() => google.port);
    // A credential of its own, offline: the lookup a revocation check makes would need one.
    const credential = { getAccessToken: async () => ({ access_token: "local", expires_in: 3600 }) };
    const app = initializeApp({ projectId: PROJECT_ID, httpAgent: agent, credential }, randomUUID());
    apps.push(app);
    const now = Math.floor(Date.now() / 1000);
    // Issued ten minutes before its user was deleted: still within its hour.
    const token = idToken(signing.privateKey, { claims: { sub: "deleted-user", iat: now - 600, auth_time: now - 600, exp: now + 3000 } });
    await expect(firebaseIdentity(app).verify(token)).resolves.toEqual({ uid: "deleted-user" });
    // Only the public keys were fetched: never identitytoolkit.googleapis.com's accounts:lookup.
    expect(agent.attempts).toEqual(["www.googleapis.com"]);
  });

  it("answers 503 AUTH_UNAVAILABLE, not 401, when the key endpoint refuses the connection", async () => {
    const { identity, agent } = verifier("unreachable");
    const error = await failure(identity.verify(idToken(signing.privateKey)));
    expect(error).toBeInstanceOf(IdentityUnavailableError);
    // firebase-admin's own verdict, kept for the logs: the same code a malformed token gets.
    expect((error as Error).cause).toMatchObject({ code: "auth/argument-error", message: expect.stringContaining("ECONNREFUSED") });
    expect(agent.attempts).toEqual(["www.googleapis.com"]);
    expect(toErrorAnswer(error)).toMatchObject({ status: 503, code: "AUTH_UNAVAILABLE", headers: { "Retry-After": "1" } });
  });

  it("answers 503 AUTH_UNAVAILABLE within its deadline when the key endpoint accepts the request and never answers", async () => {
    answer = "hang";
    const { identity, agent } = verifier("served", 200);
    const error = await failure(identity.verify(idToken(signing.privateKey)));
    expect(error).toBeInstanceOf(IdentityUnavailableError);
    expect((error as Error).cause).toMatchObject({ code: "timeout" });
    expect(agent.attempts).toEqual(["www.googleapis.com"]);
    expect(toErrorAnswer(error)).toMatchObject({ status: 503, code: "AUTH_UNAVAILABLE", headers: { "Retry-After": "1" } });
  });

  // firebase-admin 14.5.1 fetches the keys with no timeout and shares no fetch between verifications:
  // each one left at its deadline would leave its fetch open for as long as the endpoint stays silent.
  it("leaves one key fetch open while the key endpoint accepts and never answers, however many requests are answered 503 meanwhile", async () => {
    answer = "hang";
    const { identity, agent } = verifier("served", 100);
    const token = idToken(signing.privateKey);
    for (let request = 0; request < 10; request += 1) {
      const error = await failure(identity.verify(token));
      expect(error).toBeInstanceOf(IdentityUnavailableError);
      expect(toErrorAnswer(error)).toMatchObject({ status: 503, code: "AUTH_UNAVAILABLE", headers: { "Retry-After": "1" } });
    }
    expect(agent.attempts).toEqual(["www.googleapis.com"]);
  });

  it("fetches the keys again once a pause has passed since the fetch left open, and accepts the token once they are served", async () => {
    answer = "hang";
    let now = 1_000_000;
    const { identity, agent } = verifier("served", 100, () => now);
    const token = idToken(signing.privateKey);
    expect(await failure(identity.verify(token))).toBeInstanceOf(IdentityUnavailableError);
    answer = keysAnswer({ [KID]: signing.publicKey });
    now += STALL_PAUSE_MS - 1;
    expect(await failure(identity.verify(token))).toBeInstanceOf(IdentityUnavailableError);
    expect(agent.attempts).toEqual(["www.googleapis.com"]);
    now += 1;
    await expect(identity.verify(token)).resolves.toEqual({ uid: "user-1" });
    expect(agent.attempts).toEqual(["www.googleapis.com", "www.googleapis.com"]);
  });

  // docs/security.md: one fetch open per 30 s at most, whatever the traffic. firebase-admin refuses
  // another project's token on its claims before fetching any key: that says nothing of the endpoint.
  it("holds one more key fetch open per pause, however many requests follow, when the try after the pause is another project's token, refused before any fetch", async () => {
    answer = "hang";
    let now = 1_000_000;
    const { identity, agent } = verifier("served", 100, () => now);
    const token = idToken(signing.privateKey);
    expect(await failure(identity.verify(token))).toBeInstanceOf(IdentityUnavailableError);
    now += STALL_PAUSE_MS;
    const anotherProject = idToken(signing.privateKey, { claims: { aud: "another-project", iss: "https://securetoken.google.com/another-project" } });
    expect(await failure(identity.verify(anotherProject))).toBeInstanceOf(InvalidTokenError);
    expect(agent.attempts).toEqual(["www.googleapis.com"]);
    const errors = await Promise.all(Array.from({ length: 10 }, () => failure(identity.verify(token))));
    for (const error of errors) expect(error).toBeInstanceOf(IdentityUnavailableError);
    // The first of the ten is the try the refused token left its place to; the other nine fetch nothing.
    expect(agent.attempts).toEqual(["www.googleapis.com", "www.googleapis.com"]);
  });

  // One connection the endpoint never answers, the next ones answered: the keys are cached once a
  // later check fetched them, so a pause at the stuck check's deadline would only refuse everyone.
  it("accepts valid tokens after a key fetch was left at its deadline when a check started after it got the keys", async () => {
    answer = "hang";
    let now = 1_000_000;
    const { identity, agent } = verifier("served", 300, () => now);
    const token = idToken(signing.privateKey);
    const requested = once(google.server, "request");
    const stuck = failure(identity.verify(token));
    await requested;
    answer = keysAnswer({ [KID]: signing.publicKey }, "public, max-age=3600");
    await expect(identity.verify(token)).resolves.toEqual({ uid: "user-1" });
    const error = await stuck;
    expect(error).toBeInstanceOf(IdentityUnavailableError);
    expect((error as Error).cause).toMatchObject({ code: "timeout" });
    now += 1_000;
    await expect(identity.verify(token)).resolves.toEqual({ uid: "user-1" });
    expect(agent.attempts).toEqual(["www.googleapis.com", "www.googleapis.com"]);
  });

  it("does not cache the outage: once the keys are back the same token is accepted", async () => {
    let reachable = false;
    const agent = new LocalGoogleAgent(() => (reachable ? google.port : google.closedPort));
    const app = initializeApp({ projectId: PROJECT_ID, httpAgent: agent }, randomUUID());
    apps.push(app);
    const identity = firebaseIdentity(app);
    const token = idToken(signing.privateKey);
    expect(await failure(identity.verify(token))).toBeInstanceOf(IdentityUnavailableError);
    reachable = true;
    await expect(identity.verify(token)).resolves.toEqual({ uid: "user-1" });
  });

  it.each([
    ["a server error", { status: 500, contentType: "text/html", body: "<h1>Internal Server Error</h1>" }],
    ["a captive portal's page", { status: 200, contentType: "text/html", body: "<html>Sign in to the network</html>" }],
    ["an error object", { status: 400, contentType: "application/json", body: '{"error":"invalid_request","error_description":"nope"}' }],
  ])("answers 503 when the key endpoint answers %s instead of keys", async (_name, endpointAnswer) => {
    answer = endpointAnswer;
    const { identity } = verifier("served");
    const error = await failure(identity.verify(idToken(signing.privateKey)));
    expect(error).toBeInstanceOf(IdentityUnavailableError);
    expect(toErrorAnswer(error).status).toBe(503);
  });

  it("answers 503 for an expired token too while the keys are out of reach: its signature could not be checked", async () => {
    const { identity } = verifier("unreachable");
    const expired = idToken(signing.privateKey, { claims: { iat: 1_000, exp: 2_000, auth_time: 1_000 } });
    expect(await failure(identity.verify(expired))).toBeInstanceOf(IdentityUnavailableError);
  });

  const header = base64url({ alg: "RS256", kid: KID, typ: "JWT" });
  const signature = Buffer.from("signature").toString("base64url");
  it.each<[string, string]>([
    ["not a JWT", "not-a-token"],
    ["three parts that are not JSON", "abc.def.ghi"],
    ["a header only", `${header}..`],
    // With typ JWT, jws 4.0.1 parses the payload: firebase-admin 14.5.1 then throws a TypeError
    // (null) or jws's SyntaxError (not JSON), with no code, before fetching any key.
    ["a payload that is null", `${header}.${base64url(null)}.${signature}`],
    ["a payload that is not JSON", `${header}.${Buffer.from("not json").toString("base64url")}.${signature}`],
    // firebase-admin 14.5.1 tests such a token for a legacy custom token with `'uid' in payload.d`: a TypeError.
    ["a kid-less HS256 token whose d claim is null", `${base64url({ alg: "HS256", typ: "JWT" })}.${base64url({ v: 0, d: null })}.${signature}`],
    // firebase-admin 14.5.1 prints the algorithm, audience and issuer it refuses: a RangeError (stack) or TypeError, with no code.
    ["an algorithm that is a list nested 3,500 deep", `${base64url({ alg: deeplyNested(3_500), kid: KID, typ: "JWT" })}.${base64url({ sub: "user-1" })}.${signature}`],
    ["an audience that is a list nested 3,500 deep", idToken(other.privateKey, { claims: { aud: deeplyNested(3_500) } })],
    ["an issuer that is a list nested 3,500 deep", idToken(other.privateKey, { claims: { iss: deeplyNested(3_500) } })],
    ["an audience that is an object that cannot be made text", idToken(other.privateKey, { claims: { aud: { toString: 1 } } })],
    ["a key id that is a list nested 3,500 deep", idToken(other.privateKey, { header: { kid: deeplyNested(3_500) } })],
  ])("answers 401 for %s, a token firebase-admin is not given, even while the keys are out of reach", async (_name, token) => {
    const { identity, agent } = verifier("unreachable");
    const error = await failure(identity.verify(token));
    expect(error).toBeInstanceOf(InvalidTokenError);
    expect(toErrorAnswer(error)).toMatchObject({ status: 401, code: "UNAUTHENTICATED" });
    expect(agent.attempts).toEqual([]);
  });

  it.each<[string, (key: KeyObject) => string]>([
    ["no kid", (key) => idToken(key, { header: { kid: undefined } })],
    ["HS256", (key) => idToken(key, { header: { alg: "HS256" } })],
    ["another project's audience", (key) => idToken(key, { claims: { aud: "someone-else" } })],
    ["another issuer", (key) => idToken(key, { claims: { iss: "https://evil.example/" } })],
    ["no subject", (key) => idToken(key, { claims: { sub: undefined } })],
    ["a custom token", (key) => idToken(key, {
      header: { kid: undefined },
      claims: { aud: "https://identitytoolkit.googleapis.com/google.identity.identitytoolkit.v1.IdentityToolkit" },
    })],
  ])("answers 401 for %s even while the keys are out of reach, without fetching them", async (_name, make) => {
    const { identity, agent } = verifier("unreachable");
    const error = await failure(identity.verify(make(signing.privateKey)));
    expect(error).toBeInstanceOf(InvalidTokenError);
    expect((error as Error).cause).toMatchObject({ code: "auth/argument-error" });
    expect(toErrorAnswer(error)).toMatchObject({ status: 401, code: "UNAUTHENTICATED" });
    expect(agent.attempts).toEqual([]);
  });

  it("refuses a token whose key id is a list nested 3,500 deep while the keys are served, rather than as an outage", async () => {
    // firebase-admin 14.5.1 (lib/utils/jwt.js getKeyCallback) looks the kid up in the fetched keys: String() overflows the stack.
    const { identity } = verifier("served");
    const error = await failure(identity.verify(idToken(signing.privateKey, { header: { kid: deeplyNested(3_500) } })));
    expect(error).toBeInstanceOf(InvalidTokenError);
    expect(toErrorAnswer(error)).toMatchObject({ status: 401, code: "UNAUTHENTICATED" });
  });

  it.each<[string, () => string]>([
    ["a forged signature", () => idToken(other.privateKey)],
    ["a key id the endpoint does not list", () => idToken(signing.privateKey, { header: { kid: "unknown-key" } })],
    ["an expiry in the past", () => idToken(signing.privateKey, { claims: { iat: 1_000, exp: 2_000, auth_time: 1_000 } })],
  ])("answers 401 for %s once the keys are fetched", async (_name, make) => {
    const { identity, agent } = verifier("served");
    const error = await failure(identity.verify(make()));
    expect(error).toBeInstanceOf(InvalidTokenError);
    expect(toErrorAnswer(error).status).toBe(401);
    expect(agent.attempts).toEqual(["www.googleapis.com"]);
  });
});
