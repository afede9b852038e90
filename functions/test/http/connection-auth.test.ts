import { bearer, useAuthEmulator, type TestUser } from "../support/auth-emulator";
import { HOSTING_ROUTES as ROUTES_OF_CONNECTIONS } from "../support/connection-api";
import { ROUTES, startHarness, type Answer, type Harness } from "../support/http-harness";

const PROJECT_ID = "demo-chatify";

/** Connections with real ID tokens from the Auth emulator, verified by firebase-admin as deployed (REQUIRE_AUTH=true). */
describe("connections with Firebase Auth", () => {
  const authEmulator = useAuthEmulator(PROJECT_ID);
  let harness: Harness;
  let ann: TestUser;
  let ben: TestUser;
  let eve: TestUser;

  beforeAll(async () => {
    [ann, ben, eve] = await Promise.all([authEmulator().signUp(), authEmulator().signUp(true), authEmulator().signUp()]);
    harness = await startHarness({ store: "memory", env: { REQUIRE_AUTH: "true" } });
  }, 120_000);
  afterAll(async () => {
    await harness.close();
  }, 30_000);

  const as = (user: TestUser) => ({
    call: (method: string, path: string, body?: unknown): Promise<Answer> => harness.api.call(method, path, body, bearer(user.idToken)),
  });

  it("refuses every route without a token, with 401", async () => {
    const id = "6f1c1f0e-8a53-4a5e-9c8e-2f4f7f3b9a10";
    for (const [method, path, body] of [
      ["GET", ROUTES_OF_CONNECTIONS.connections, undefined],
      ["POST", ROUTES_OF_CONNECTIONS.connections, { user_id: ann.uid, other_user_id: ben.uid }],
      ["GET", ROUTES_OF_CONNECTIONS.connection(id), undefined],
      ["POST", ROUTES_OF_CONNECTIONS.accept(id), {}],
      ["POST", ROUTES_OF_CONNECTIONS.messages(id), { message: "hi" }],
      ["POST", ROUTES_OF_CONNECTIONS.devices, { token: "t" }],
    ] as const) {
      const answer = await harness.api.call(method, path, body);
      expect([answer.status, answer.body.error?.code]).toEqual([401, "UNAUTHENTICATED"]);
    }
  });

  it("acts for the token's user; a user_id naming anyone else is refused with 403", async () => {
    const asked = await as(ann).call("POST", ROUTES_OF_CONNECTIONS.connections, { other_user_id: ben.uid });
    expect(asked.status).toBe(201);
    const id = (asked.body.connection as { connection_id: string }).connection_id;
    expect((await as(ann).call("POST", ROUTES_OF_CONNECTIONS.accept(id), { user_id: ben.uid })).status).toBe(403);
    expect((await as(ben).call("POST", ROUTES_OF_CONNECTIONS.accept(id), { user_id: ben.uid })).status).toBe(200);
    const sent = await as(ben).call("POST", ROUTES_OF_CONNECTIONS.messages(id), { message: "from an anonymous user" });
    expect(sent.body.message).toMatchObject({ sender_id: ben.uid });
    expect((await as(eve).call("POST", ROUTES_OF_CONNECTIONS.connections, { user_id: ann.uid, other_user_id: ben.uid })).status).toBe(403);
  });

  it("checks a user_id in the query string of a DELETE that sends a body against the token's user", async () => {
    const token = `device-${ann.uid}`;
    expect((await as(ann).call("POST", ROUTES_OF_CONNECTIONS.devices, { token })).status).toBe(200);
    const others = await as(ann).call("DELETE", `${ROUTES_OF_CONNECTIONS.devices}?user_id=${ben.uid}`, { token });
    expect([others.status, others.body.error?.code]).toEqual([403, "FORBIDDEN"]);
    const own = await as(ann).call("DELETE", `${ROUTES_OF_CONNECTIONS.devices}?user_id=${ann.uid}`, { token });
    expect(own.body).toEqual({ success: true, removed: true, devices: 0 });
  });

  it("answers a signed-in stranger exactly as another user's session is answered", async () => {
    const asked = await as(ann).call("POST", ROUTES_OF_CONNECTIONS.connections, { other_user_id: ben.uid });
    const id = (asked.body.connection as { connection_id: string }).connection_id;
    const session = await as(ann).call("POST", ROUTES.create, { template_id: "friendly-assistant" });
    const othersSession = await as(eve).call("POST", ROUTES.message(String(session.body.session_id)), { message: "let me in" });
    expect(othersSession.status).toBe(403);
    for (const answer of [
      await as(eve).call("GET", ROUTES_OF_CONNECTIONS.connection(id)),
      await as(eve).call("GET", ROUTES_OF_CONNECTIONS.messages(id)),
      await as(eve).call("POST", ROUTES_OF_CONNECTIONS.messages(id), { message: "let me in" }),
      await as(eve).call("POST", ROUTES_OF_CONNECTIONS.accept(id), {}),
      await as(eve).call("DELETE", ROUTES_OF_CONNECTIONS.connection(id)),
      await as(eve).call("POST", ROUTES_OF_CONNECTIONS.block(id), {}),
    ]) {
      expect(answer.status).toBe(othersSession.status);
      expect(answer.body).toEqual(othersSession.body);
    }
  });
});
