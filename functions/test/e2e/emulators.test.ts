import { recentMessages } from "../support/recent-messages";
import { ERROR_CODES } from "../../src/http/error-codes";
import { localSite, seedTemplates } from "../../src/local/project-files";
import { pageOrigins, pagePolicy } from "../../src/page/page-policy";
import { RtdbStore } from "../../src/store/rtdb/rtdb-store";
import { bearer, signUp, type TestUser } from "../support/auth-emulator";
import { FakeOpenAiServer } from "../support/fake-openai-server";
import { call } from "../support/http-harness";
import { describeWithRtdb, RtdbInstances } from "../support/rtdb";
import { startEmulatorProject, type EmulatorProject } from "../support/emulator-project";
import { describeCallables } from "./callable-cases";
import { describeUserData } from "./user-data-cases";
import { anyUsage } from "../support/any-usage";
import { startSiteServer } from "../support/site-server";

const PROJECT_ID = "demo-chatify-e2e";
const ROUTE = "/api/v1/chatbot/session";

/**
 * The deployable artifact end to end: the built functions (index.ts, the onRequest wrapper,
 * params and the secret) on the Functions emulator, reached through the Hosting emulator's
 * rewrites from firebase.json, storing in the Realtime Database the environment names, and
 * requiring ID tokens (the deployed default) issued by the Auth emulator.
 */
describeWithRtdb("the built project on the Firebase emulators", () => {
  // Undefined when beforeAll failed half-way: afterAll still cleans up what started.
  let project: EmulatorProject | undefined;
  let fake: FakeOpenAiServer | undefined;
  const database = new RtdbInstances(PROJECT_ID);
  let store: RtdbStore;
  let user: TestUser;

  beforeAll(async () => {
    fake = await FakeOpenAiServer.start();
    store = new RtdbStore(database.database(), 10_000);
    await store.seedTemplates(seedTemplates());
    project = await startEmulatorProject({
      projectId: PROJECT_ID,
      only: ["functions", "hosting", "auth"],
      env: { OPENAI_BASE_URL: fake.baseUrl, OPENAI_TIMEOUT_MS: "5000", OPENAI_MAX_RETRIES: "0" },
      secrets: { OPENAI_API_KEY: "sk-e2e-secret" },
    });
    user = await signUp(project.authHost, PROJECT_ID);
  }, 120_000);

  afterAll(async () => {
    await project?.stop();
    await fake?.stop();
    await database.close();
  }, 30_000);

  it("serves the original routes through Hosting and the function URLs directly", async () => {
    const auth = bearer(user.idToken);
    const created = await call(project!.hostingUrl, "POST", ROUTE, { user_id: user.uid, template_id: "friendly-assistant" }, auth);
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ success: true, message: "Session created successfully" });
    const id = String(created.body.session_id);

    const first = await call(project!.hostingUrl, "POST", `${ROUTE}/${id}/message`, { message: "Hi" }, auth);
    expect(first.body).toEqual({ success: true, response: "reply #1 to: Hi", session_id: id, message_count: 1, truncated: false, usage: anyUsage() });
    expect(fake!.requests[0]?.headers.authorization).toBe("Bearer sk-e2e-secret");
    expect(fake!.requests[0]?.body.messages[0]).toEqual({ role: "system", content: seedTemplates()["friendly-assistant"]!.personalityPrompt });

    const second = await call(project!.functionsUrl, "POST", `/sendMessage/${id}`, { message: "Again" }, auth);
    expect(second.body).toMatchObject({ success: true, message_count: 2 });

    const ended = await call(project!.hostingUrl, "DELETE", `${ROUTE}/${id}`, undefined, auth);
    expect(ended.body).toMatchObject({ success: true, message: "Session ended successfully", message_count: 2 });
    expect((await call(project!.hostingUrl, "POST", `${ROUTE}/${id}/message`, { message: "late" }, auth)).status).toBe(410);

    expect(await store.readSessionState(id)).toMatchObject({ status: "ended", message_count: 2 });
    expect((await recentMessages(store, id, 10)).map((message) => message.content)).toEqual([
      "Hi",
      "reply #1 to: Hi",
      "Again",
      "reply #2 to: Again",
    ]);
    // Each function starts cold on the emulator at its first request: on a loaded machine, past the default 20 s.
  }, 60_000);

  it("requires an ID token when deployed", async () => {
    const anonymous = await call(project!.hostingUrl, "POST", ROUTE, { user_id: "user_12345", template_id: "friendly-assistant" });
    expect(anonymous.status).toBe(401);
    expect(anonymous.body.error?.code).toBe("UNAUTHENTICATED");
    const other = await signUp(project!.authHost, PROJECT_ID);
    const created = await call(project!.hostingUrl, "POST", ROUTE, { template_id: "socratic-tutor" }, bearer(user.idToken));
    const id = String(created.body.session_id);
    expect((await call(project!.hostingUrl, "POST", `${ROUTE}/${id}/message`, { message: "mine?" }, bearer(other.idToken))).status).toBe(403);
  });

  it("answers bad input with 4xx", async () => {
    const auth = bearer(user.idToken);
    const missing = await call(project!.hostingUrl, "POST", ROUTE, { user_id: user.uid }, auth);
    expect(missing.status).toBe(400);
    expect(missing.body.error?.code).toBe("INVALID_REQUEST");
    expect((await call(project!.hostingUrl, "GET", ROUTE)).status).toBe(405);
    expect((await call(project!.functionsUrl, "DELETE", "/endSession/not-a-session", undefined, auth)).status).toBe(404);
    // Malformed JSON never reaches the function: the platform's body parser answers 400 itself.
    expect((await call(project!.hostingUrl, "POST", ROUTE, "{oops", { "content-type": "application/json" })).status).toBe(400);
  });

  it("serves the page with the headers written for the project, as `npm start` does for it, on every answer", async () => {
    // The project's origins, and the Auth emulator this run started (a demo- project's page signs in there).
    const expected = pagePolicy(PROJECT_ID, pageOrigins(PROJECT_ID, ["us-central1"], { authEmulatorHost: project!.authHost })).headers;
    const named = (answer: Response) => Object.fromEntries(Object.keys(expected).map((name) => [name, answer.headers.get(name)]));
    // `npm start` for the same project, checking tokens on the same emulator.
    const local = await startSiteServer(localSite(PROJECT_ID, project!.authHost));
    try {
      for (const path of ["/", "/app.js", "/__/firebase/init.js"]) {
        const hosted = await fetch(`${project!.hostingUrl}${path}`);
        const served = await fetch(`${local.baseUrl}${path}`);
        expect({ path, status: hosted.status, headers: named(hosted) }).toEqual({ path, status: 200, headers: expected });
        expect({ path, status: served.status, headers: named(served) }).toEqual({ path, status: 200, headers: expected });
      }
    } finally {
      await local.close();
    }
    // Hosting applies them to what its rewrites answer too, as the local server does.
    const created = await fetch(`${project!.hostingUrl}${ROUTE}`, { method: "POST", headers: { "content-type": "application/json", ...bearer(user.idToken) }, body: JSON.stringify({ template_id: "friendly-assistant" }) });
    expect({ status: created.status, headers: named(created) }).toEqual({ status: 201, headers: expected });
    expect(await (await fetch(`${project!.hostingUrl}/api-bases.json`)).json()).toEqual({ project: PROJECT_ID, apiBases: [`https://us-central1-${PROJECT_ID}.cloudfunctions.net`] });
    expect(await (await fetch(`${project!.hostingUrl}/error-codes.json`)).json()).toEqual({ errorCodes: ERROR_CODES });
  });

  it("keeps the secret out of the emulator logs", () => {
    expect(project!.output()).not.toContain("sk-e2e-secret");
  });

  describeCallables(() => ({ projectId: PROJECT_ID, project: project!, fake: fake!, store }));
  describeUserData(() => ({ projectId: PROJECT_ID, project: project!, db: database.database() }));
});
