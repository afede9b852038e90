import { bearer, useAuthEmulator, type TestUser } from "../support/auth-emulator";
import { describeEachStore, ROUTES, startHarness, type Harness } from "../support/http-harness";

const PROJECT_ID = "demo-chatify";

/**
 * Ownership of a user's conversations with real ID tokens (the Auth emulator, offline): with
 * REQUIRE_AUTH every new route answers only for the caller's own data, and another user's
 * session gets the very answer today's routes give it, revealing nothing more.
 */
describe("a user's conversations with Firebase Auth", () => {
  const authEmulator = useAuthEmulator(PROJECT_ID);
  let alice: TestUser;
  let bob: TestUser;

  beforeAll(async () => {
    [alice, bob] = [await authEmulator().signUp(), await authEmulator().signUp(true)];
  });

  describeEachStore("with REQUIRE_AUTH=true", (kind) => {
    let harness: Harness;
    beforeAll(async () => {
      harness = await startHarness({ store: kind, env: { REQUIRE_AUTH: "true" } });
    });
    afterAll(async () => harness.close());

    const as = (user: TestUser, method: string, path: string, body?: unknown) => harness.api.call(method, path, body, bearer(user.idToken));

    async function sessionOf(user: TestUser, message?: string): Promise<string> {
      const created = await as(user, "POST", ROUTES.create, { template_id: "friendly-assistant" });
      const id = String(created.body.session_id);
      if (message !== undefined) expect((await as(user, "POST", ROUTES.message(id), { message })).status).toBe(200);
      return id;
    }

    it("refuses every new route without a token, with 401", async () => {
      for (const [method, path] of [
        ["GET", ROUTES.list],
        ["GET", ROUTES.get("6f1c1f0e-8a53-4a5e-9c8e-2f4f7f3b9a10")],
        ["GET", ROUTES.exportData],
        ["DELETE", ROUTES.erase],
        ["GET", `${ROUTES.list}?user_id=${alice.uid}`],
        ["DELETE", `${ROUTES.directErase}?user_id=${alice.uid}`],
      ] as const) {
        const answer = await harness.api.call(method, path);
        expect({ path, status: answer.status, code: answer.body.error?.code }).toEqual({ path, status: 401, code: "UNAUTHENTICATED" });
      }
    });

    it("lists, reads and exports the caller's own data only, and names no other user", async () => {
      const mine = await sessionOf(alice, "alice's question");
      const theirs = await sessionOf(bob, "bob's question");
      for (const path of [ROUTES.list, ROUTES.directList]) {
        const listed = await as(alice, "GET", path);
        expect(listed.body.user_id).toBe(alice.uid);
        expect((listed.body.sessions as { session_id: string }[]).map((session) => session.session_id)).toContain(mine);
        expect(listed.text).not.toContain(theirs);
      }
      expect((await as(alice, "GET", ROUTES.get(mine))).body.session).toMatchObject({ session_id: mine, title: "alice's question" });
      const exported = await as(alice, "GET", ROUTES.exportData);
      expect(exported.body).toMatchObject({ user_id: alice.uid, complete: true });
      expect(exported.text).toContain(mine);
      expect(exported.text).not.toContain(theirs);
      expect(exported.text).not.toContain("bob's question");
    });

    it("answers another user's session exactly as sendMessage and endSession do: 403, whatever its state", async () => {
      const open = await sessionOf(bob, "private");
      const ended = await sessionOf(bob);
      expect((await as(bob, "DELETE", ROUTES.end(ended))).status).toBe(200);
      const today = await as(alice, "POST", ROUTES.message(open), { message: "let me in" });
      expect(today.status).toBe(403);
      for (const path of [ROUTES.get(open), ROUTES.get(ended), ROUTES.directGet(open), `${ROUTES.get(open)}?limit=100`]) {
        const answer = await as(alice, "GET", path);
        expect({ path, status: answer.status, body: answer.body }).toEqual({ path, status: 403, body: today.body });
        expect(answer.text).not.toContain("private");
      }
      // A cursor bob was given for his session does not get alice in either.
      const cursor = (await as(bob, "GET", `${ROUTES.get(open)}?limit=1`)).body.next_before as string;
      expect((await as(alice, "GET", `${ROUTES.get(open)}?before=${cursor}`)).body).toEqual(today.body);
    });

    it("refuses a user_id that is not the caller's, as createSession refuses one in its body", async () => {
      const created = await as(alice, "POST", ROUTES.create, { user_id: bob.uid, template_id: "friendly-assistant" });
      for (const [method, path] of [
        ["GET", `${ROUTES.list}?user_id=${bob.uid}`],
        ["GET", `${ROUTES.exportData}?user_id=${bob.uid}`],
        ["DELETE", `${ROUTES.erase}?user_id=${bob.uid}`],
      ] as const) {
        const answer = await as(alice, method, path);
        expect({ path, status: answer.status, body: answer.body }).toEqual({ path, status: 403, body: created.body });
      }
      // Naming oneself is fine.
      expect((await as(alice, "GET", `${ROUTES.list}?user_id=${alice.uid}`)).status).toBe(200);
    });

    it("erases the caller's data only, and keeps their Auth account: the same token works afterwards", async () => {
      const mine = await sessionOf(alice, "to be erased");
      const theirs = await sessionOf(bob, "to be kept");
      const erased = await as(alice, "DELETE", ROUTES.erase);
      expect(erased.body).toMatchObject({ status: "erased", user_id: alice.uid });
      expect((await as(alice, "GET", ROUTES.get(mine))).status).toBe(404);
      expect((await as(bob, "GET", ROUTES.get(theirs))).body.session).toMatchObject({ message_count: 1 });
      expect((await as(alice, "GET", ROUTES.list)).body.sessions).toEqual([]);
      expect((await as(alice, "POST", ROUTES.create, { template_id: "friendly-assistant" })).status).toBe(201);
    });
  });
});
