import { randomUUID } from "node:crypto";
import { deleteApp, initializeApp, type FirebaseApp } from "firebase/app";
import { CustomProvider, initializeAppCheck } from "firebase/app-check";
import { connectAuthEmulator, getAuth, signInAnonymously, type User } from "firebase/auth";
import { connectFunctionsEmulator, getFunctions, httpsCallable, type Functions } from "firebase/functions";
import { seedTemplates } from "../../src/local/project-files";
import { RtdbStore } from "../../src/store/rtdb/rtdb-store";
import { anyUsage } from "../support/any-usage";
import { FakeOpenAiServer } from "../support/fake-openai-server";
import { describeWithRtdb, RtdbInstances } from "../support/rtdb";
import { startEmulatorProject, type EmulatorProject } from "./emulator-project";

const PROJECT_ID = "demo-chatify-callables";

type Body = Record<string, unknown>;

/** A web app as a Firebase developer writes one: Auth and Functions on the emulators, App Check with a provider of its own. */
interface WebApp {
  readonly app: FirebaseApp;
  readonly functions: Functions;
  readonly user?: User;
}

/**
 * The callables of the built project on the Functions and Auth emulators, called as a Firebase
 * web app calls them: the real `firebase` JS SDK (Auth signed in anonymously on the Auth
 * emulator, `connectFunctionsEmulator`, `httpsCallable` and `.stream()`), no hand-written HTTP.
 * App Check is required here: the Functions emulator lets any non-empty token through (it does
 * not verify callables' App Check tokens), so the app's custom provider hands it a placeholder.
 */
describeWithRtdb("the callables on the Functions and Auth emulators", () => {
  let project: EmulatorProject | undefined;
  let fake: FakeOpenAiServer | undefined;
  const database = new RtdbInstances(PROJECT_ID);
  let store: RtdbStore;
  const apps: FirebaseApp[] = [];

  beforeAll(async () => {
    fake = await FakeOpenAiServer.start();
    store = new RtdbStore(database.database(), 10_000);
    await store.seedTemplates(seedTemplates());
    project = await startEmulatorProject({
      projectId: PROJECT_ID,
      only: ["functions", "auth"],
      env: { OPENAI_BASE_URL: fake.baseUrl, OPENAI_TIMEOUT_MS: "5000", OPENAI_MAX_RETRIES: "0", REQUIRE_APP_CHECK: "true" },
      secrets: { OPENAI_API_KEY: "sk-e2e-secret" },
    });
  }, 120_000);

  afterAll(async () => {
    await Promise.all(apps.map((app) => deleteApp(app)));
    await project?.stop();
    await fake?.stop();
    await database.close();
  }, 30_000);

  async function webApp(options: { signIn: boolean; appCheck: boolean }): Promise<WebApp> {
    const app = initializeApp({ projectId: PROJECT_ID, apiKey: "fake-api-key", appId: "1:123456789:web:0a1b2c3d4e5f" }, randomUUID());
    apps.push(app);
    if (options.appCheck) {
      // Any non-empty token: the Functions emulator does not verify it (a deployment would).
      initializeAppCheck(app, { provider: new CustomProvider({ getToken: () => Promise.resolve({ token: "emulator-accepts-any-token", expireTimeMillis: Date.now() + 3_600_000 }) }) });
    }
    const functionsUrl = new URL(project!.functionsUrl);
    const functions = getFunctions(app, "us-central1");
    connectFunctionsEmulator(functions, functionsUrl.hostname, Number(functionsUrl.port));
    if (!options.signIn) return { app, functions };
    const auth = getAuth(app);
    connectAuthEmulator(auth, `http://${project!.authHost}`, { disableWarnings: true });
    const { user } = await signInAnonymously(auth);
    return { app, functions, user };
  }

  const call = (from: WebApp, name: string, data: unknown) => httpsCallable<unknown, Body>(from.functions, `chat-${name}`)(data).then((result) => result.data);

  it("serves a signed-in user's whole session through the Functions SDK, the reply streamed as it is written", async () => {
    const alice = await webApp({ signIn: true, appCheck: true });
    const created = await call(alice, "createSession", { template_id: "friendly-assistant" });
    // The caller is the verified ID token's user: no user_id in the data.
    expect(created).toMatchObject({ success: true, user_id: alice.user?.uid, template_name: "Friendly Assistant" });
    const id = String(created.session_id);

    const chunks = ["Through", " the", " emulator,", " unbuffered."];
    fake!.enqueue({ kind: "stream", chunks, chunkDelayMs: 250 });
    const started = performance.now();
    const { stream, data } = await httpsCallable<unknown, Body, { text: string }>(alice.functions, "chat-sendMessage").stream({ session_id: id, message: "Hi" });
    const received: { text: string; at: number }[] = [];
    for await (const chunk of stream) received.push({ text: chunk.text, at: performance.now() - started });
    expect(received.map((chunk) => chunk.text).join("")).toBe(chunks.join(""));
    expect(received.at(-1)!.at - received[0]!.at).toBeGreaterThanOrEqual(500);
    expect(await data).toEqual({ success: true, response: chunks.join(""), session_id: id, message_count: 1, truncated: false, usage: anyUsage() });
    expect(fake!.requests.at(-1)?.headers.authorization).toBe("Bearer sk-e2e-secret");

    // Not streamed: the result alone.
    expect(await call(alice, "sendMessage", { session_id: id, message: "Again" })).toMatchObject({ success: true, message_count: 2 });
    expect(await call(alice, "endSession", { session_id: id })).toMatchObject({ success: true, status: "ended", message_count: 2 });
    expect(await store.readSessionState(id)).toMatchObject({ status: "ended", message_count: 2 });
    await expect(call(alice, "sendMessage", { session_id: id, message: "late" })).rejects.toMatchObject({ code: "functions/failed-precondition", details: { code: "SESSION_ENDED" } });
  });

  it("refuses another user's session with permission-denied, and a signed-out call with unauthenticated", async () => {
    const alice = await webApp({ signIn: true, appCheck: true });
    const bob = await webApp({ signIn: true, appCheck: true });
    const id = String((await call(alice, "createSession", { template_id: "socratic-tutor" })).session_id);
    await expect(call(bob, "sendMessage", { session_id: id, message: "mine?" })).rejects.toMatchObject({ code: "functions/permission-denied", details: { code: "FORBIDDEN" } });
    await expect(call(bob, "createSession", { user_id: alice.user?.uid, template_id: "socratic-tutor" })).rejects.toMatchObject({ code: "functions/permission-denied", details: { code: "FORBIDDEN" } });
    const nobody = await webApp({ signIn: false, appCheck: true });
    await expect(call(nobody, "createSession", { user_id: "someone", template_id: "socratic-tutor" })).rejects.toMatchObject({ code: "functions/unauthenticated", details: { code: "UNAUTHENTICATED" } });
  });

  it("refuses a call without an App Check token before the handler (unauthenticated), and lets any token through: the emulator does not verify them", async () => {
    const unattested = await webApp({ signIn: true, appCheck: false });
    await expect(call(unattested, "createSession", { template_id: "friendly-assistant" })).rejects.toMatchObject({ code: "functions/unauthenticated", details: undefined });
    const placeholder = await webApp({ signIn: true, appCheck: true });
    expect(await call(placeholder, "createSession", { template_id: "friendly-assistant" })).toMatchObject({ success: true });
  });

  it("keeps the secret out of the emulator logs", () => {
    expect(project!.output()).not.toContain("sk-e2e-secret");
  });
});
