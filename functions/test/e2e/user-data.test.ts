import { setTimeout as sleep } from "node:timers/promises";
import { seedTemplates } from "../../src/local/project-files";
import { RtdbStore } from "../../src/store/rtdb/rtdb-store";
import { bearer, signUp, type TestUser } from "../support/auth-emulator";
import { FakeOpenAiServer } from "../support/fake-openai-server";
import { call } from "../support/http-harness";
import { describeWithRtdb, RtdbInstances } from "../support/rtdb";
import { startEmulatorProject, type EmulatorProject } from "../support/emulator-project";

const PROJECT_ID = "demo-chatify-userdata";
const API = "/api/v1/chatbot";

/**
 * A user's conversations and data on the built project, on the Functions, Hosting and Auth
 * emulators (offline): the routes through Hosting's rewrites (one conversation's path reaching
 * `endSession`, which answers GET), and the 2nd gen `onUserDeleted` trigger erasing the data of
 * a user deleted from Auth.
 */
describeWithRtdb("a user's data on the Firebase emulators", () => {
  let project: EmulatorProject | undefined;
  let fake: FakeOpenAiServer | undefined;
  const database = new RtdbInstances(PROJECT_ID);
  let user: TestUser;

  beforeAll(async () => {
    fake = await FakeOpenAiServer.start();
    await new RtdbStore(database.database(), 10_000).seedTemplates(seedTemplates());
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

  it("lists, reads and exports through Hosting's rewrites and the function URLs", async () => {
    const auth = bearer(user.idToken);
    const created = await call(project!.hostingUrl, "POST", `${API}/session`, { template_id: "friendly-assistant" }, auth);
    const id = String(created.body.session_id);
    expect((await call(project!.hostingUrl, "POST", `${API}/session/${id}/message`, { message: "Plan a picnic" }, auth)).status).toBe(200);

    const listed = await call(project!.hostingUrl, "GET", `${API}/sessions`, undefined, auth);
    expect(listed.body.sessions).toEqual([expect.objectContaining({ session_id: id, title: "Plan a picnic", message_count: 1 })]);
    expect((await call(project!.functionsUrl, "GET", "/listSessions", undefined, auth)).body.sessions).toEqual(listed.body.sessions);

    // Hosting sends /session/{id} to endSession whatever the method: GET reads it, DELETE still ends it.
    const read = await call(project!.hostingUrl, "GET", `${API}/session/${id}`, undefined, auth);
    expect(read.body).toMatchObject({ success: true, session: { session_id: id, status: "active" } });
    expect((read.body.messages as unknown[]).length).toBe(2);
    expect((await call(project!.functionsUrl, "GET", `/getSession/${id}`, undefined, auth)).body.session).toEqual(read.body.session);

    const exported = await call(project!.hostingUrl, "GET", `${API}/me/export`, undefined, auth);
    expect(exported.body).toMatchObject({ format: "chatify-export", user_id: user.uid, complete: true, session_count: 1 });
    expect((await call(project!.hostingUrl, "DELETE", `${API}/session/${id}`, undefined, auth)).body).toMatchObject({ message: "Session ended successfully" });
    // Each function starts cold on the emulator at its first request.
  }, 90_000);

  it("erases the data of a user deleted from Firebase Auth (onUserDeleted), keeping everyone else's", async () => {
    const doomed = await signUp(project!.authHost, PROJECT_ID, true);
    const auth = bearer(doomed.idToken);
    const ids: string[] = [];
    for (const message of ["first words", "second words"]) {
      const created = await call(project!.hostingUrl, "POST", `${API}/session`, { template_id: "socratic-tutor" }, auth);
      ids.push(String(created.body.session_id));
      expect((await call(project!.hostingUrl, "POST", `${API}/session/${ids.at(-1)!}/message`, { message }, auth)).status).toBe(200);
    }
    const db = database.database();
    const sessionsLeft = async () => (await Promise.all(ids.map(async (id) => (await db.ref(`userSessions/${id}/state`).once("value")).exists()))).filter(Boolean).length;
    expect(await sessionsLeft()).toBe(2);

    const deleted = await fetch(`http://${project!.authHost}/identitytoolkit.googleapis.com/v1/accounts:delete?key=fake-api-key`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ idToken: doomed.idToken }),
    });
    expect(deleted.status).toBe(200);
    const deadline = Date.now() + 60_000;
    while ((await sessionsLeft()) > 0 && Date.now() < deadline) await sleep(250);
    expect(await sessionsLeft()).toBe(0);
    expect((await db.ref(`userConversations/${doomed.uid}`).once("value")).exists()).toBe(false);
    // The other user's conversation is untouched.
    expect((await call(project!.hostingUrl, "GET", `${API}/sessions`, undefined, bearer(user.idToken))).body.sessions).toHaveLength(1);
    expect(project!.output()).toContain("eraseDeletedUser");
  }, 90_000);
});
