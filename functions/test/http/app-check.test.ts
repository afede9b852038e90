import { generateKeyPairSync } from "node:crypto";
import { firebaseAppCheck } from "../../src/auth/firebase-app-check";
import { streamCall } from "../support/event-stream-client";
import { deeplyNested } from "../support/google-endpoints";
import { describeEachStore, ROUTES, startHarness, type Answer, type Harness } from "../support/http-harness";
import { appCheckToken, LocalAppCheck } from "../support/local-app-check";
import { recordingLog, type Logged } from "../support/recording-log";

const APP_CHECK = "X-Firebase-AppCheck";

/**
 * REQUIRE_APP_CHECK on the HTTP routes: the X-Firebase-AppCheck token verified by firebase-admin
 * against App Check's keys, served locally (test/support/local-app-check.ts), before the ID token,
 * the body, the database or the model are looked at.
 */
describeEachStore("App Check on the HTTP routes", (kind) => {
  const signing = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const other = generateKeyPairSync("rsa", { modulusLength: 2048 });
  let google: LocalAppCheck;
  let harness: Harness;
  let reachable = true;
  const logged: Logged[] = [];
  /** Every token sent in this suite, for the check that none reached a log. */
  const sent: string[] = [];

  const valid = () => remember(appCheckToken(signing.privateKey, { claims: { jti: String(sent.length) } }));
  const attested = (token: string = valid()) => ({ [APP_CHECK]: token });
  function remember(token: string): string {
    sent.push(token);
    return token;
  }

  beforeAll(async () => {
    google = await LocalAppCheck.start(signing.publicKey);
    const { log } = recordingLog(logged);
    harness = await startHarness({
      store: kind,
      log,
      env: { REQUIRE_APP_CHECK: "true", APP_CHECK_REPLAY_PROTECTION: "true" },
      appCheck: firebaseAppCheck(google.app(() => reachable).app, { log, timeoutMs: 2_000 }),
    });
  });
  afterAll(async () => {
    await harness.close();
    await google.close();
  });
  beforeEach(() => {
    reachable = true;
    google.reset();
    harness.fake.reset();
  });

  async function created(): Promise<string> {
    const answer = await harness.api.call("POST", ROUTES.create, { user_id: "user_app", template_id: "friendly-assistant" }, attested());
    expect(answer.status).toBe(201);
    return String(answer.body.session_id);
  }

  const refusal = (answer: Answer) => ({ status: answer.status, code: answer.body.error?.code, retryAfter: answer.headers.get("retry-after") });

  it("answers every route with 401 APP_CHECK_REQUIRED without a token, before the body, the database or the model", async () => {
    const id = await created();
    const before = await harness.api.store.readSessionState(id);
    const answers = await Promise.all([
      harness.api.call("POST", ROUTES.create, { user_id: "user_app", template_id: "friendly-assistant" }),
      // A body that would be refused (400) is never read.
      harness.api.call("POST", ROUTES.create, { template_id: 42 }),
      harness.api.call("POST", ROUTES.message(id), { message: "hi" }),
      harness.api.call("POST", ROUTES.directMessage(id), { message: "hi" }, { [APP_CHECK]: "   " }),
      harness.api.call("DELETE", ROUTES.end(id)),
      harness.api.call("DELETE", ROUTES.directEnd(id)),
    ]);
    for (const answer of answers) expect(refusal(answer)).toEqual({ status: 401, code: "APP_CHECK_REQUIRED", retryAfter: null });
    expect(harness.fake.requests).toHaveLength(0);
    expect(await harness.api.store.readSessionState(id)).toEqual(before);
  });

  it("refuses it before the ID token too: an unattested client learns nothing of the API", async () => {
    const strict = await startHarness({ store: "memory", env: { REQUIRE_APP_CHECK: "true", REQUIRE_AUTH: "true" }, appCheck: firebaseAppCheck(google.app().app, { log: recordingLog().log }) });
    try {
      const answer = await strict.api.call("POST", ROUTES.create, { template_id: "friendly-assistant" }, { Authorization: "Bearer not-a-token" });
      expect(refusal(answer)).toEqual({ status: 401, code: "APP_CHECK_REQUIRED", retryAfter: null });
      // Attested, the ID token is the next thing checked.
      const next = await strict.api.call("POST", ROUTES.create, { template_id: "friendly-assistant" }, { Authorization: "Bearer not-a-token", ...attested() });
      expect(next.body.error?.code).toBe("UNAUTHENTICATED");
    } finally {
      await strict.close();
    }
  });

  it.each<[string, () => string]>([
    ["a forged token (signed with a key App Check never served)", () => appCheckToken(other.privateKey)],
    ["an expired token", () => appCheckToken(signing.privateKey, { claims: { iat: 1_000, exp: 2_000 } })],
    ["another project's token", () => appCheckToken(signing.privateKey, { project: { id: "demo-someone-else", number: "987654321", appId: "1:987654321:web:ffff" } })],
    ["a token that is no JWT", () => "not-a-token"],
  ])("answers 401 APP_CHECK_INVALID to %s, storing nothing and calling no model", async (_name, make) => {
    const id = await created();
    const token = remember(make());
    const create = await harness.api.call("POST", ROUTES.create, { user_id: "user_forged", template_id: "friendly-assistant" }, attested(token));
    const message = await harness.api.call("POST", ROUTES.message(id), { message: "hi" }, attested(token));
    const end = await harness.api.call("DELETE", ROUTES.end(id), undefined, attested(token));
    for (const answer of [create, message, end]) expect(refusal(answer)).toEqual({ status: 401, code: "APP_CHECK_INVALID", retryAfter: null });
    expect(message.body.error?.message).toBe("The App Check token is not valid; get a fresh one from the Firebase App Check SDK");
    expect(harness.fake.requests).toHaveLength(0);
    expect(await harness.api.store.readSessionState(id)).toMatchObject({ status: "active", message_count: 0 });
  });

  it("answers a streamed request's refusal as JSON, with no stream opened", async () => {
    const id = await created();
    const answer = await streamCall(harness.api.baseUrl, ROUTES.message(id), { message: "hi" }, { headers: attested(remember(appCheckToken(other.privateKey))) });
    expect(answer.status).toBe(401);
    expect(answer.events).toEqual([]);
    expect(answer.json?.error?.code).toBe("APP_CHECK_INVALID");
  });

  it("serves a valid token on every route, consuming it on the message call only (replay protection on)", async () => {
    const id = await created();
    const message = await harness.api.call("POST", ROUTES.message(id), { message: "hi" }, attested());
    expect(message.status).toBe(200);
    const end = await harness.api.call("DELETE", ROUTES.end(id), undefined, attested());
    expect(end.status).toBe(200);
    const verifyCalls = google.received.filter((request) => request.path.endsWith(":verifyAppCheckToken"));
    expect(verifyCalls).toHaveLength(1);
    expect(verifyCalls[0]?.body).toBe(JSON.stringify({ app_check_token: sent.at(-2) }));
  });

  it("refuses a message whose token App Check says was used before: 401 APP_CHECK_INVALID, the model not called", async () => {
    const id = await created();
    google.answers.replay = { status: 200, body: JSON.stringify({ alreadyConsumed: true }) };
    const replayed = await harness.api.call("POST", ROUTES.message(id), { message: "hi" }, attested());
    expect(refusal(replayed)).toEqual({ status: 401, code: "APP_CHECK_INVALID", retryAfter: null });
    expect(harness.fake.requests).toHaveLength(0);
    // A session call does not consume: the same verdict does not concern it.
    expect((await harness.api.call("DELETE", ROUTES.end(id), undefined, attested())).status).toBe(200);
  });

  it("answers 503 APP_CHECK_UNAVAILABLE with Retry-After when App Check's keys cannot be fetched, and serves again once they can", async () => {
    const id = await created();
    reachable = false;
    // A fresh verifier: the harness's one has the keys cached by now, as a warm instance would.
    const cold = await startHarness({ store: "memory", env: { REQUIRE_APP_CHECK: "true" }, appCheck: firebaseAppCheck(google.app(() => reachable).app, { log: recordingLog(logged).log }) });
    try {
      const token = valid();
      const down = await cold.api.call("POST", ROUTES.create, { user_id: "user_app", template_id: "friendly-assistant" }, attested(token));
      expect(refusal(down)).toEqual({ status: 503, code: "APP_CHECK_UNAVAILABLE", retryAfter: "1" });
      reachable = true;
      expect((await cold.api.call("POST", ROUTES.create, { user_id: "user_app", template_id: "friendly-assistant" }, attested(token))).status).toBe(201);
    } finally {
      await cold.close();
    }
    // Cached keys verify through an outage.
    reachable = false;
    expect((await harness.api.call("DELETE", ROUTES.end(id), undefined, attested())).status).toBe(200);
  });

  it("answers 401 APP_CHECK_INVALID, logging no outage, to a forged token whose audience or algorithm is a list nested 3,500 deep, as to one naming another project", async () => {
    const deep = deeplyNested(3_500);
    const forged = [
      appCheckToken(other.privateKey, { claims: { aud: ["projects/someone-else"] } }),
      appCheckToken(other.privateKey, { claims: { aud: deep } }),
      appCheckToken(other.privateKey, { header: { alg: deep } }),
    ].map(remember);
    logged.length = 0;
    for (const token of forged) {
      // Well under Node's 16 KB header limit: any client can send it.
      expect(token.length).toBeLessThan(10_000);
      const answer = await harness.api.call("POST", ROUTES.create, { user_id: "user_app", template_id: "friendly-assistant" }, attested(token));
      expect(refusal(answer)).toEqual({ status: 401, code: "APP_CHECK_INVALID", retryAfter: null });
    }
    expect(logged.filter((entry) => entry.level === "warn" || entry.level === "error")).toEqual([]);
  });

  it("answers a preflight without a token, allowing the App Check header", async () => {
    const response = await fetch(`${harness.api.baseUrl}${ROUTES.create}`, {
      method: "OPTIONS",
      headers: { origin: "https://app.example.com", "access-control-request-method": "POST", "access-control-request-headers": "x-firebase-appcheck, content-type" },
    });
    expect(response.status).toBe(204);
    expect(response.headers.get("access-control-allow-headers")?.split(/,\s*/)).toContain("X-Firebase-AppCheck");
  });

  it("never writes a token into a log entry, whatever the verdict", async () => {
    logged.length = 0;
    const id = await created();
    const tokens = [valid(), remember(appCheckToken(other.privateKey)), remember(appCheckToken(signing.privateKey, { claims: { iat: 1_000, exp: 2_000 } }))];
    for (const token of tokens) await harness.api.call("POST", ROUTES.message(id), { message: "hi" }, attested(token));
    google.answers.replay = { status: 200, body: JSON.stringify({ alreadyConsumed: true }) };
    await harness.api.call("POST", ROUTES.message(id), { message: "hi" }, attested());
    google.answers.replay = { status: 500, body: "{}" };
    await harness.api.call("POST", ROUTES.message(id), { message: "hi" }, attested());
    expect(logged.map((entry) => entry.message)).toEqual(expect.arrayContaining(["app check token refused", "app check unavailable", "request"]));
    const text = JSON.stringify(logged);
    for (const token of sent) {
      expect(text).not.toContain(token);
      expect(text).not.toContain(token.split(".")[2] ?? token);
    }
  });
});
