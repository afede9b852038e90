import { bearer, useAuthEmulator, withClaims, type TestUser } from "../support/auth-emulator";
import { deeplyNested } from "../support/google-endpoints";
import { createSession, ROUTES, startHarness, type Harness } from "../support/http-harness";
import { keyHash } from "../../src/session/idempotency";

const PROJECT_ID = "demo-chatify";

/**
 * Identity against the Auth emulator (pure Node, offline): real ID tokens from it, verified
 * by firebase-admin exactly as deployed, except that the emulator's tokens carry no signature.
 */
describe("Firebase Auth", () => {
  const authEmulator = useAuthEmulator(PROJECT_ID);
  let alice: TestUser;
  let bob: TestUser;

  beforeAll(async () => {
    [alice, bob] = [await authEmulator().signUp(), await authEmulator().signUp()];
  });

  describe("with REQUIRE_AUTH=true", () => {
    let harness: Harness;
    beforeAll(async () => {
      harness = await startHarness({ store: "memory", env: { REQUIRE_AUTH: "true" } });
    });
    afterAll(async () => harness.close());
    beforeEach(() => { harness.fake.reset(); });

    it("refuses every endpoint without a token, with 401 and WWW-Authenticate", async () => {
      const id = await createSessionAs(harness, alice);
      for (const [method, path, body] of [
        ["POST", ROUTES.create, { user_id: alice.uid, template_id: "friendly-assistant" }],
        ["POST", ROUTES.message(id), { message: "hi" }],
        ["DELETE", ROUTES.end(id), undefined],
      ] as const) {
        const answer = await harness.api.call(method, path, body);
        expect(answer.status).toBe(401);
        expect(answer.body.error?.code).toBe("UNAUTHENTICATED");
        expect(answer.headers.get("www-authenticate")).toMatch(/^Bearer/);
      }
      expect(harness.fake.requests).toHaveLength(0);
    });

    it("creates the session for the token's user, with or without a matching user_id", async () => {
      const implicit = await harness.api.call("POST", ROUTES.create, { template_id: "friendly-assistant" }, bearer(alice.idToken));
      expect(implicit.status).toBe(201);
      expect(implicit.body.user_id).toBe(alice.uid);
      const explicit = await harness.api.call("POST", ROUTES.create, { user_id: alice.uid, template_id: "friendly-assistant" }, bearer(alice.idToken));
      expect(explicit.status).toBe(201);
      expect(await harness.api.store.readSessionMeta(String(explicit.body.session_id))).toMatchObject({ user_id: alice.uid });
    });

    it("takes a user_id naming the token's user whose uid has spaces around it (any text, from a custom token), as the id is read", async () => {
      const uid = " padded-user ";
      // The emulator's tokens are unsigned: one of that user, who exists.
      await authEmulator().createUser(uid);
      const token = withClaims(alice.idToken, { sub: uid, user_id: uid });
      const named = await harness.api.call("POST", ROUTES.create, { user_id: uid, template_id: "friendly-assistant" }, bearer(token));
      const listed = await harness.api.call("GET", `${ROUTES.list}?user_id=${encodeURIComponent(uid)}`, undefined, bearer(token));
      // Named as the id reads (the spaces around it dropped), it is the same user.
      const read = await harness.api.call("POST", ROUTES.create, { user_id: uid.trim(), template_id: "friendly-assistant" }, bearer(token));
      expect({ create: named.status, owner: named.body.user_id, list: listed.status, read: read.status }).toEqual({ create: 201, owner: uid, list: 200, read: 201 });
    });

    it.each([
      ["a control character", "bot\u0007 7"],
      ["nothing but spaces", "   "],
    ])("takes a user_id that is the token's uid exactly, on every route that reads one, when the uid holds %s (any text, from a custom token)", async (_what, uid) => {
      await authEmulator().createUser(uid);
      const token = withClaims(alice.idToken, { sub: uid, user_id: uid });
      const named = encodeURIComponent(uid);
      const answers = {
        create: await harness.api.call("POST", ROUTES.create, { user_id: uid, template_id: "friendly-assistant" }, bearer(token)),
        list: await harness.api.call("GET", `${ROUTES.list}?user_id=${named}`, undefined, bearer(token)),
        export: await harness.api.call("GET", `${ROUTES.exportData}?user_id=${named}`, undefined, bearer(token)),
        connections: await harness.api.call("GET", `/api/v1/connections?user_id=${named}`, undefined, bearer(token)),
        device: await harness.api.call("POST", "/api/v1/devices", { user_id: uid, token: "device-token-1" }, bearer(token)),
      };
      expect(Object.fromEntries(Object.entries(answers).map(([route, answer]) => [route, `${answer.status} ${answer.body.error?.code ?? ""}`]))).toEqual({
        create: "201 ",
        list: "200 ",
        export: "200 ",
        connections: "200 ",
        device: "200 ",
      });
      // Made for the token's user, as one naming no one is.
      expect({ owner: answers.create.body.user_id, listed: answers.list.body.user_id }).toEqual({ owner: uid, listed: uid });
    });

    it("refuses a body user_id that differs from the token's user with 403", async () => {
      const answer = await harness.api.call("POST", ROUTES.create, { user_id: bob.uid, template_id: "friendly-assistant" }, bearer(alice.idToken));
      expect(answer.status).toBe(403);
      expect(answer.body.error?.code).toBe("FORBIDDEN");
    });

    it("lets only the owner send to or end a session, revealing nothing to others", async () => {
      const open = await createSessionAs(harness, alice);
      const ended = await createSessionAs(harness, alice);
      await harness.api.call("DELETE", ROUTES.end(ended), undefined, bearer(alice.idToken));

      const toOpen = await harness.api.call("POST", ROUTES.message(open), { message: "let me in" }, bearer(bob.idToken));
      const toEnded = await harness.api.call("POST", ROUTES.message(ended), { message: "let me in" }, bearer(bob.idToken));
      const endOpen = await harness.api.call("DELETE", ROUTES.end(open), undefined, bearer(bob.idToken));
      // The same answer whatever the state of alice's session: 403, never 410.
      for (const answer of [toOpen, toEnded, endOpen]) {
        expect(answer.status).toBe(403);
        expect(answer.body).toEqual(toOpen.body);
      }
      expect(harness.fake.requests).toHaveLength(0);
      expect(await harness.api.store.readSessionState(open)).toMatchObject({ status: "active", message_count: 0 });

      expect((await harness.api.call("POST", ROUTES.message(open), { message: "mine" }, bearer(alice.idToken))).status).toBe(200);
      expect((await harness.api.call("DELETE", ROUTES.end(open), undefined, bearer(alice.idToken))).status).toBe(200);
    });

    it.each([
      ["a forged token for another project", () => withClaims(alice.idToken, { aud: "demo-other", iss: "https://securetoken.google.com/demo-other" })],
      ["an expired token", () => withClaims(alice.idToken, { iat: 1_600_000_000, exp: 1_600_003_600, auth_time: 1_600_000_000 })],
      ["a token for a forged user", () => withClaims(alice.idToken, { sub: "", user_id: "" })],
      ["a malformed token", () => "not.a.jwt"],
      // firebase-admin 14.5.1 prints the audience and issuer it refuses: these overflowed the stack, a 503.
      ["a forged token whose audience is a list nested 3,500 deep", () => withClaims(alice.idToken, { aud: deeplyNested(3_500) })],
      ["a forged token whose issuer is a list nested 3,500 deep", () => withClaims(alice.idToken, { iss: deeplyNested(3_500) })],
      ["random text", () => "hello"],
    ])("refuses %s with 401, and the token never appears in the answer", async (_name, token) => {
      const forged = token();
      const answer = await harness.api.call("POST", ROUTES.create, { template_id: "friendly-assistant" }, bearer(forged));
      expect(answer.status).toBe(401);
      expect(answer.body.error?.code).toBe("UNAUTHENTICATED");
      expect(answer.text).not.toContain(forged);
    });

    it.each([
      ["another scheme", "Basic dXNlcjpwYXNz"],
      ["a bare Bearer", "Bearer"],
      ["two tokens", "Bearer a b"],
    ])("refuses an Authorization header with %s with 401", async (_name, header) => {
      const answer = await harness.api.call("POST", ROUTES.create, { template_id: "friendly-assistant" }, { Authorization: header });
      expect(answer.status).toBe(401);
    });
  });

  describe("sessions per network address (ADDRESS_SESSIONS_PER_HOUR)", () => {
    let harness: Harness;
    beforeAll(async () => {
      harness = await startHarness({ store: "memory", env: { REQUIRE_AUTH: "true", ADDRESS_SESSIONS_PER_HOUR: "2" } });
    });
    afterAll(async () => harness.close());

    it("limits anonymous users, whom anyone can mint, by their address; users with a real sign-in are not", async () => {
      for (let i = 0; i < 2; i += 1) {
        const anonymous = await authEmulator().signUp(true);
        expect((await harness.api.call("POST", ROUTES.create, { template_id: "friendly-assistant" }, bearer(anonymous.idToken))).status).toBe(201);
      }
      const third = await authEmulator().signUp(true);
      const refused = await harness.api.call("POST", ROUTES.create, { template_id: "friendly-assistant" }, bearer(third.idToken));
      expect(refused.status).toBe(429);
      expect(refused.body.error?.code).toBe("ADDRESS_RATE_LIMITED");
      expect(Number(refused.headers.get("retry-after"))).toBeGreaterThan(0);
      // The refusal took no session slot from the anonymous user.
      const usage = await harness.api.store.updateUsage(keyHash("user", third.uid), (record) => ({ outcome: record }));
      expect(usage?.sessions ?? {}).toEqual({});
      for (let i = 0; i < 3; i += 1) {
        expect((await harness.api.call("POST", ROUTES.create, { template_id: "friendly-assistant" }, bearer(alice.idToken))).status).toBe(201);
      }
    });
  });

  describe("with REQUIRE_AUTH=false (the local default)", () => {
    let harness: Harness;
    beforeAll(async () => {
      harness = await startHarness({ store: "memory" });
    });
    afterAll(async () => harness.close());

    it("trusts the body user_id without a token", async () => {
      const answer = await harness.api.call("POST", ROUTES.create, { user_id: "anyone", template_id: "friendly-assistant" });
      expect(answer.status).toBe(201);
      expect(answer.body.user_id).toBe("anyone");
      const id = String(answer.body.session_id);
      expect((await harness.api.call("POST", ROUTES.message(id), { message: "hi" })).status).toBe(200);
    });

    it("still verifies a token that is sent, and lets it win", async () => {
      expect((await harness.api.call("POST", ROUTES.create, { template_id: "friendly-assistant" }, bearer("garbage"))).status).toBe(401);
      const mismatch = await harness.api.call("POST", ROUTES.create, { user_id: "someone-else", template_id: "friendly-assistant" }, bearer(alice.idToken));
      expect(mismatch.status).toBe(403);
      const id = await createSessionAs(harness, alice);
      expect((await harness.api.call("POST", ROUTES.message(id), { message: "hi" }, bearer(bob.idToken))).status).toBe(403);
      // Without a token, nothing is checked: what this mode does not protect.
      expect((await harness.api.call("POST", ROUTES.message(id), { message: "hi" })).status).toBe(200);
    });

    it("still needs user_id without a token", async () => {
      const answer = await harness.api.call("POST", ROUTES.create, { template_id: "friendly-assistant" });
      expect(answer.status).toBe(400);
      expect(answer.body.error?.details).toEqual([{ field: "user_id", message: "is required" }]);
      expect(await createSession(harness.api)).toEqual(expect.any(String));
    });
  });
});

async function createSessionAs(harness: Harness, user: TestUser): Promise<string> {
  const answer = await harness.api.call("POST", ROUTES.create, { template_id: "friendly-assistant" }, bearer(user.idToken));
  if (answer.status !== 201) throw new Error(`create failed: ${answer.status} ${answer.text}`);
  return String(answer.body.session_id);
}
