import { generateKeyPairSync, randomUUID, type KeyObject } from "node:crypto";
import { AppCheckInvalidError, AppCheckRequiredError, AppCheckUnavailableError, appCheckTokenOf } from "../../src/auth/app-check";
import { firebaseAppCheck, type FirebaseAppCheckOptions } from "../../src/auth/firebase-app-check";
import { STALL_PAUSE_MS } from "../../src/auth/token-checks";
import { errorBody, toErrorAnswer } from "../../src/http/error-response";
import { APP_CHECK_HOST, APP_CHECK_KID, APP_CHECK_PROJECT, appCheckToken, LocalAppCheck, type GoogleAnswers } from "../support/local-app-check";
import { deeplyNested } from "../support/google-endpoints";
import { recordingLog, type Logged } from "../support/recording-log";

const PROJECT_ID = APP_CHECK_PROJECT.id;
const APP_ID = APP_CHECK_PROJECT.appId;

async function failure(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error("the token was accepted");
}

describe("appCheckTokenOf", () => {
  it.each([undefined, "", "   "])("refuses %p as a missing token: 401 APP_CHECK_REQUIRED", (header) => {
    const error = (() => { try { return appCheckTokenOf(header); } catch (caught) { return caught; } })();
    expect(error).toBeInstanceOf(AppCheckRequiredError);
    expect(toErrorAnswer(error)).toMatchObject({ status: 401, code: "APP_CHECK_REQUIRED" });
  });

  it("takes the header's token, trimmed", () => {
    expect(appCheckTokenOf(" abc.def.ghi ")).toBe("abc.def.ghi");
  });
});

describe("firebaseAppCheck, checking App Check tokens against locally served keys", () => {
  const signing = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const other = generateKeyPairSync("rsa", { modulusLength: 2048 });
  let google: LocalAppCheck;
  let answers: GoogleAnswers;
  /** The paths and bodies firebase-admin sent to the stand-in. */
  let received: { path: string; body: string }[];
  let logged: Logged[];

  beforeAll(async () => {
    google = await LocalAppCheck.start(signing.publicKey);
  });

  afterAll(async () => {
    await google.close();
  });

  beforeEach(() => {
    google.reset();
    ({ answers, received } = google);
    logged = [];
  });

  /** A fresh app each time (firebase-admin caches fetched keys per app), with a credential for the replay check. */
  function verifier(reach: "served" | "unreachable" | (() => boolean), options: Partial<FirebaseAppCheckOptions> = {}) {
    const { app, agent } = google.app(reach);
    return { appCheck: firebaseAppCheck(app, { log: recordingLog(logged).log, ...options }), agent };
  }

  it("accepts a token signed with a served key, naming its app (the setup the other cases change one thing of)", async () => {
    const { appCheck, agent } = verifier("served");
    await expect(appCheck.verify(appCheckToken(signing.privateKey))).resolves.toEqual({ appId: APP_ID });
    expect(agent.attempts).toEqual([APP_CHECK_HOST]);
    expect(received.map((request) => request.path)).toEqual(["/v1/jwks"]);
  });

  it.each<[string, () => string, string]>([
    ["a forged signature", () => appCheckToken(other.privateKey), "signature"],
    ["a key id the endpoint does not list", () => appCheckToken(signing.privateKey, { header: { kid: "unknown-key" } }), "unknown key"],
    ["an expiry in the past", () => appCheckToken(signing.privateKey, { claims: { iat: 1_000, exp: 2_000 } }), "expired"],
    ["no kid, signed with no served key", () => appCheckToken(other.privateKey, { header: { kid: undefined } }), "signature"],
  ])("answers 401 APP_CHECK_INVALID for %s once the keys are fetched", async (_name, make, reason) => {
    const { appCheck, agent } = verifier("served");
    const error = await failure(appCheck.verify(make()));
    expect(error).toBeInstanceOf(AppCheckInvalidError);
    expect(toErrorAnswer(error)).toMatchObject({ status: 401, code: "APP_CHECK_INVALID", headers: {} });
    // Only App Check's host; a kid-less token fetches the keys twice in firebase-admin 14.5.1
    // (lib/utils/jwt.js getKeyCallback reports the missing kid, then fetches all the same).
    expect(new Set(agent.attempts)).toEqual(new Set([APP_CHECK_HOST]));
    expect(logged).toEqual([{ level: "info", message: "app check token refused", fields: { reason } }]);
  });

  it("refuses an expired token with firebase-admin's own expiry code behind it", async () => {
    const { appCheck } = verifier("served");
    const error = await failure(appCheck.verify(appCheckToken(signing.privateKey, { claims: { iat: 1_000, exp: 2_000 } })));
    expect(error).toBeInstanceOf(AppCheckInvalidError);
    expect((error as Error).cause).toMatchObject({ code: "app-check/app-check-token-expired" });
  });

  const header = { alg: "RS256", kid: APP_CHECK_KID, typ: "JWT" };
  it.each<[string, (key: KeyObject) => string, string]>([
    ["another project's token", (key) => appCheckToken(key, { claims: { aud: ["projects/987654321", "projects/someone-else"] } }), "audience"],
    ["an audience that is a string, not a list", (key) => appCheckToken(key, { claims: { aud: `projects/${PROJECT_ID}` } }), "audience"],
    ["another issuer (an ID token, say)", (key) => appCheckToken(key, { claims: { iss: `https://securetoken.google.com/${PROJECT_ID}` } }), "issuer"],
    ["no subject", (key) => appCheckToken(key, { claims: { sub: undefined } }), "subject"],
    ["an empty subject", (key) => appCheckToken(key, { claims: { sub: "" } }), "subject"],
    ["HS256", (key) => appCheckToken(key, { header: { alg: "HS256" } }), "algorithm"],
    ["alg none", () => `${Buffer.from(JSON.stringify({ ...header, alg: "none" })).toString("base64url")}.${Buffer.from("{}").toString("base64url")}.`, "algorithm"],
    ["not a JWT", () => "not-a-token", "malformed"],
    ["three parts that are not JSON", () => "abc.def.ghi", "malformed"],
    // With typ JWT, jws 4.0.1 parses the payload: firebase-admin 14.5.1 then throws a TypeError
    // (null) or jws's SyntaxError (not JSON), with no code, before fetching any key.
    ["a payload that is null", () => `${Buffer.from(JSON.stringify(header)).toString("base64url")}.${Buffer.from("null").toString("base64url")}.c2ln`, "malformed"],
    ["a payload that is not JSON", () => `${Buffer.from(JSON.stringify(header)).toString("base64url")}.${Buffer.from("not json").toString("base64url")}.c2ln`, "malformed"],
    // firebase-admin 14.5.1 prints the algorithm and audience it refuses: a RangeError (stack) or TypeError, with no code.
    ["an audience that is a list nested 3,500 deep", (key) => appCheckToken(key, { claims: { aud: deeplyNested(3_500) } }), "malformed"],
    ["an algorithm that is a list nested 3,500 deep", (key) => appCheckToken(key, { header: { alg: deeplyNested(3_500) } }), "malformed"],
    ["an audience listing an object that cannot be made text", (key) => appCheckToken(key, { claims: { aud: [{ toString: 1 }] } }), "malformed"],
    ["a key id that is a list nested 3,500 deep", (key) => appCheckToken(key, { header: { kid: deeplyNested(3_500) } }), "malformed"],
  ])("answers 401 for %s even while the keys are out of reach, without fetching them", async (_name, make, reason) => {
    const { appCheck, agent } = verifier("unreachable");
    const error = await failure(appCheck.verify(make(signing.privateKey)));
    expect(error).toBeInstanceOf(AppCheckInvalidError);
    expect(toErrorAnswer(error).status).toBe(401);
    expect(agent.attempts).toEqual([]);
    expect(logged.map((entry) => entry.fields?.reason)).toEqual([reason]);
  });

  it("refuses a token whose key id is a list nested 3,500 deep as malformed while the keys are served, rather than as an outage", async () => {
    // firebase-admin 14.5.1 (lib/utils/jwt.js getKeyCallback) looks the kid up in the fetched keys: String() overflows the stack.
    const { appCheck } = verifier("served");
    const error = await failure(appCheck.verify(appCheckToken(signing.privateKey, { header: { kid: deeplyNested(3_500) } })));
    expect(error).toBeInstanceOf(AppCheckInvalidError);
    expect(logged).toEqual([{ level: "info", message: "app check token refused", fields: { reason: "malformed" } }]);
  });

  it("accepts another app of the same project by default, as Firebase's enforceAppCheck does, and names it", async () => {
    const { appCheck } = verifier("served");
    const otherApp = "1:123456789:android:ffffffffffff";
    await expect(appCheck.verify(appCheckToken(signing.privateKey, { claims: { sub: otherApp } }))).resolves.toEqual({ appId: otherApp });
  });

  it("refuses another app of the same project when the apps are listed, and accepts a listed one", async () => {
    const { appCheck } = verifier("served", { appIds: [APP_ID] });
    const error = await failure(appCheck.verify(appCheckToken(signing.privateKey, { claims: { sub: "1:123456789:ios:eeeeeeeeeeee" } })));
    expect(error).toBeInstanceOf(AppCheckInvalidError);
    expect(logged.map((entry) => entry.fields?.reason)).toEqual(["app"]);
    await expect(appCheck.verify(appCheckToken(signing.privateKey))).resolves.toEqual({ appId: APP_ID });
  });

  it("answers 503 APP_CHECK_UNAVAILABLE, not 401, when the key endpoint refuses the connection", async () => {
    const { appCheck, agent } = verifier("unreachable");
    const error = await failure(appCheck.verify(appCheckToken(signing.privateKey)));
    expect(error).toBeInstanceOf(AppCheckUnavailableError);
    // firebase-admin's own verdict, kept for the logs: the same code a forged token gets.
    expect((error as Error).cause).toMatchObject({ code: "app-check/invalid-argument", message: expect.stringMatching(/^Error fetching Json Web Keys: .*ECONNREFUSED/) });
    expect(agent.attempts).toEqual([APP_CHECK_HOST]);
    expect(toErrorAnswer(error)).toMatchObject({ status: 503, code: "APP_CHECK_UNAVAILABLE", headers: { "Retry-After": "1" } });
    expect(logged).toEqual([{ level: "warn", message: "app check unavailable", fields: { code: "app-check/invalid-argument", detail: expect.stringContaining("Error fetching Json Web Keys") } }]);
  });

  it("does not cache the outage: once the keys are back the same token is accepted", async () => {
    let reachable = false;
    const { appCheck } = verifier(() => reachable);
    const token = appCheckToken(signing.privateKey);
    expect(await failure(appCheck.verify(token))).toBeInstanceOf(AppCheckUnavailableError);
    reachable = true;
    await expect(appCheck.verify(token)).resolves.toEqual({ appId: APP_ID });
  });

  it.each<[string, GoogleAnswers["keys"]]>([
    ["a server error", { status: 500, contentType: "text/html", body: "<h1>Internal Server Error</h1>" }],
    ["a captive portal's page", { status: 200, contentType: "text/html", body: "<html>Sign in to the network</html>" }],
    ["a key set without keys", { status: 200, contentType: "application/json", body: '{"keys":[]}' }],
    ["an error object", { status: 400, contentType: "application/json", body: '{"error":"invalid_request"}' }],
  ])("answers 503 when the key endpoint answers %s instead of keys", async (_name, keys) => {
    answers.keys = keys;
    const { appCheck } = verifier("served");
    const error = await failure(appCheck.verify(appCheckToken(signing.privateKey)));
    expect(error).toBeInstanceOf(AppCheckUnavailableError);
    expect(toErrorAnswer(error).status).toBe(503);
  });

  it("answers 503 for an expired or keyless token too while the keys are out of reach: its signature could not be checked", async () => {
    const { appCheck } = verifier("unreachable");
    expect(await failure(appCheck.verify(appCheckToken(signing.privateKey, { claims: { iat: 1_000, exp: 2_000 } })))).toBeInstanceOf(AppCheckUnavailableError);
    expect(await failure(appCheck.verify(appCheckToken(signing.privateKey, { header: { kid: undefined } })))).toBeInstanceOf(AppCheckUnavailableError);
  });

  it("answers 503 within its deadline when the key endpoint accepts the request and never answers", async () => {
    answers.keys = "hang";
    const { appCheck } = verifier("served", { timeoutMs: 200 });
    const error = await failure(appCheck.verify(appCheckToken(signing.privateKey)));
    expect(error).toBeInstanceOf(AppCheckUnavailableError);
    expect((error as Error).cause).toMatchObject({ code: "timeout" });
    expect(received.map((request) => request.path)).toEqual(["/v1/jwks"]);
  });

  describe("with replay protection (consume)", () => {
    it("consumes a fresh token: App Check is asked once, with the token, and answers it was not used before", async () => {
      const { appCheck } = verifier("served");
      const token = appCheckToken(signing.privateKey);
      await expect(appCheck.verify(token, { consume: true })).resolves.toEqual({ appId: APP_ID });
      expect(received).toEqual([
        { path: "/v1/jwks", body: "" },
        { path: `/v1beta/projects/${PROJECT_ID}:verifyAppCheckToken`, body: JSON.stringify({ app_check_token: token }) },
      ]);
    });

    it("refuses a token App Check says was already used: 401 APP_CHECK_INVALID", async () => {
      answers.replay = { status: 200, body: JSON.stringify({ alreadyConsumed: true }) };
      const { appCheck } = verifier("served");
      const error = await failure(appCheck.verify(appCheckToken(signing.privateKey), { consume: true }));
      expect(error).toBeInstanceOf(AppCheckInvalidError);
      expect(logged.map((entry) => entry.fields?.reason)).toEqual(["replayed"]);
    });

    it("does not ask App Check without consume", async () => {
      answers.replay = { status: 200, body: JSON.stringify({ alreadyConsumed: true }) };
      const { appCheck } = verifier("served");
      await expect(appCheck.verify(appCheckToken(signing.privateKey))).resolves.toEqual({ appId: APP_ID });
      expect(received.map((request) => request.path)).toEqual(["/v1/jwks"]);
    });

    it.each([
      ["a server error", { status: 500, body: JSON.stringify({ error: { status: "INTERNAL", message: "backend error" } }) }],
      ["a refusal of our credentials", { status: 403, body: JSON.stringify({ error: { status: "PERMISSION_DENIED", message: "denied" } }) }],
      ["an INVALID_ARGUMENT of its own", { status: 400, body: JSON.stringify({ error: { status: "INVALID_ARGUMENT", message: "bad request" } }) }],
      ["a malformed verdict", { status: 200, body: JSON.stringify({ alreadyConsumed: "no" }) }],
    ])("answers 503 when the replay check answers %s", async (_name, replay) => {
      answers.replay = replay;
      const { appCheck } = verifier("served");
      const error = await failure(appCheck.verify(appCheckToken(signing.privateKey), { consume: true }));
      expect(error).toBeInstanceOf(AppCheckUnavailableError);
      expect(toErrorAnswer(error).status).toBe(503);
    });

    // firebase-admin 14.5.1 gives the replay check no timeout: each one left at its deadline would stay open as long as App Check is silent.
    describe("while App Check takes the replay check and never answers", () => {
      const replayChecks = () => received.filter((request) => request.path.endsWith(":verifyAppCheckToken")).length;

      it("leaves one replay check open, however many messages are answered 503 meanwhile", async () => {
        answers.replay = "hang";
        const { appCheck } = verifier("served", { timeoutMs: 100 });
        for (let message = 0; message < 10; message += 1) {
          const error = await failure(appCheck.verify(appCheckToken(signing.privateKey, { claims: { jti: randomUUID() } }), { consume: true }));
          expect(error).toBeInstanceOf(AppCheckUnavailableError);
          expect(toErrorAnswer(error)).toMatchObject({ status: 503, code: "APP_CHECK_UNAVAILABLE", headers: { "Retry-After": "1" } });
        }
        expect(replayChecks()).toBe(1);
      });

      it("still verifies the tokens of requests that consume none", async () => {
        answers.replay = "hang";
        const { appCheck } = verifier("served", { timeoutMs: 100 });
        expect(await failure(appCheck.verify(appCheckToken(signing.privateKey), { consume: true }))).toBeInstanceOf(AppCheckUnavailableError);
        await expect(appCheck.verify(appCheckToken(signing.privateKey))).resolves.toEqual({ appId: APP_ID });
      });

      it("asks App Check again once a pause has passed since the check left open, and consumes the token once it answers", async () => {
        answers.replay = "hang";
        let now = 1_000_000;
        const { appCheck } = verifier("served", { timeoutMs: 100, clock: () => now });
        const token = appCheckToken(signing.privateKey);
        expect(await failure(appCheck.verify(token, { consume: true }))).toBeInstanceOf(AppCheckUnavailableError);
        answers.replay = { status: 200, body: JSON.stringify({ alreadyConsumed: false }) };
        now += STALL_PAUSE_MS - 1;
        expect(await failure(appCheck.verify(token, { consume: true }))).toBeInstanceOf(AppCheckUnavailableError);
        expect(replayChecks()).toBe(1);
        now += 1;
        await expect(appCheck.verify(token, { consume: true })).resolves.toEqual({ appId: APP_ID });
        expect(replayChecks()).toBe(2);
      });

      // firebase-admin refuses another project's token on its audience before the replay check: that says nothing of App Check.
      it("leaves one more replay check open per pause, however many messages follow, when the try after the pause is another project's token", async () => {
        answers.replay = "hang";
        let now = 1_000_000;
        const { appCheck } = verifier("served", { timeoutMs: 100, clock: () => now });
        expect(await failure(appCheck.verify(appCheckToken(signing.privateKey), { consume: true }))).toBeInstanceOf(AppCheckUnavailableError);
        now += STALL_PAUSE_MS;
        const anotherProject = appCheckToken(signing.privateKey, { claims: { aud: ["projects/987654321", "projects/someone-else"] } });
        expect(await failure(appCheck.verify(anotherProject, { consume: true }))).toBeInstanceOf(AppCheckInvalidError);
        expect(replayChecks()).toBe(1);
        const errors = await Promise.all(Array.from({ length: 10 }, () => failure(appCheck.verify(appCheckToken(signing.privateKey, { claims: { jti: randomUUID() } }), { consume: true }))));
        for (const error of errors) expect(error).toBeInstanceOf(AppCheckUnavailableError);
        // The first of the ten is the try the refused token left its place to.
        expect(replayChecks()).toBe(2);
      });
    });
  });

  it("never puts a token into a log entry, an error message or an answer", async () => {
    const tokens: string[] = [];
    const outcomes: unknown[] = [];
    const attempt = async (verify: (token: string) => Promise<unknown>, token: string) => {
      tokens.push(token);
      outcomes.push(await verify(token).catch((error: unknown) => error));
    };
    const served = verifier("served").appCheck;
    const unreachable = verifier("unreachable").appCheck;
    await attempt((token) => served.verify(token), appCheckToken(signing.privateKey));
    await attempt((token) => served.verify(token), appCheckToken(other.privateKey));
    await attempt((token) => served.verify(token), appCheckToken(signing.privateKey, { claims: { iat: 1_000, exp: 2_000 } }));
    await attempt((token) => served.verify(token), appCheckToken(signing.privateKey, { claims: { aud: ["projects/1", "projects/other"] } }));
    await attempt((token) => unreachable.verify(token), appCheckToken(signing.privateKey));
    answers.replay = { status: 200, body: JSON.stringify({ alreadyConsumed: true }) };
    await attempt((token) => served.verify(token, { consume: true }), appCheckToken(signing.privateKey, { claims: { jti: randomUUID() } }));
    answers.replay = { status: 500, body: "{}" };
    await attempt((token) => served.verify(token, { consume: true }), appCheckToken(signing.privateKey, { claims: { jti: randomUUID() } }));

    expect(logged.map((entry) => entry.level)).toEqual(["info", "info", "info", "warn", "info", "warn"]);
    const failures = outcomes.filter((outcome) => outcome instanceof Error);
    expect(failures).toHaveLength(6);
    const visible = JSON.stringify(logged) + failures.map((error) => `${error.message} ${JSON.stringify(errorBody(toErrorAnswer(error)))}`).join("\n");
    for (const token of tokens) {
      const signature = token.split(".")[2] ?? "";
      expect(signature.length).toBeGreaterThan(100);
      expect(visible).not.toContain(signature);
      expect(visible).not.toContain(token);
    }
  });
});
