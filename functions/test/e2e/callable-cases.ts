import { randomUUID } from "node:crypto";
import { deleteApp, initializeApp, type FirebaseApp } from "firebase/app";
import { connectAuthEmulator, getAuth, signInAnonymously, type User } from "firebase/auth";
import { connectFunctionsEmulator, getFunctions, httpsCallable, type Functions } from "firebase/functions";
import type { RtdbStore } from "../../src/store/rtdb/rtdb-store";
import { anyUsage } from "../support/any-usage";
import type { FakeOpenAiServer } from "../support/fake-openai-server";
import type { EmulatorProject } from "../support/emulator-project";

type Body = Record<string, unknown>;

/** What the cases run against: the built project on the emulators, its model and its database. */
export interface EmulatedProject {
  readonly projectId: string;
  readonly project: EmulatorProject;
  readonly fake: FakeOpenAiServer;
  readonly store: RtdbStore;
}

/** A web app as a Firebase developer writes one: Auth and Functions on the emulators. */
interface WebApp {
  readonly functions: Functions;
  readonly user?: User;
}

/**
 * The callables of the built project on the Functions and Auth emulators, called as a Firebase
 * web app calls them: the real `firebase` JS SDK (Auth signed in anonymously on the Auth
 * emulator, `connectFunctionsEmulator`, `httpsCallable` and `.stream()`), no hand-written HTTP.
 * Run inside the emulator suite (emulators.test.ts), on the emulators it started: a second
 * emulator project beside it doubled the start-up and, run in parallel on two cores, timed its
 * first requests out.
 */
export function describeCallables(emulated: () => EmulatedProject): void {
  describe("the callables (chat-*) through the Firebase JS SDK", () => {
    const apps: FirebaseApp[] = [];
    afterAll(async () => {
      await Promise.all(apps.map((app) => deleteApp(app)));
    });

    async function webApp(signIn: boolean): Promise<WebApp> {
      const { projectId, project } = emulated();
      const app = initializeApp({ projectId, apiKey: "fake-api-key", appId: "1:123456789:web:0a1b2c3d4e5f" }, randomUUID());
      apps.push(app);
      const functionsUrl = new URL(project.functionsUrl);
      const functions = getFunctions(app, "us-central1");
      connectFunctionsEmulator(functions, functionsUrl.hostname, Number(functionsUrl.port));
      if (!signIn) return { functions };
      const auth = getAuth(app);
      connectAuthEmulator(auth, `http://${project.authHost}`, { disableWarnings: true });
      const { user } = await signInAnonymously(auth);
      return { functions, user };
    }

    const call = (from: WebApp, name: string, data: unknown) => httpsCallable<unknown, Body>(from.functions, `chat-${name}`)(data).then((result) => result.data);

    it("serves a signed-in user's whole session, the reply streamed as it is written", async () => {
      const { fake, store } = emulated();
      const alice = await webApp(true);
      const created = await call(alice, "createSession", { template_id: "friendly-assistant" });
      // The caller is the verified ID token's user: no user_id in the data.
      expect(created).toMatchObject({ success: true, user_id: alice.user?.uid, template_name: "Friendly Assistant" });
      const id = String(created.session_id);

      const chunks = ["Through", " the", " emulator,", " unbuffered."];
      fake.enqueue({ kind: "stream", chunks, chunkDelayMs: 250 });
      const started = performance.now();
      const { stream, data } = await httpsCallable<unknown, Body, { text: string }>(alice.functions, "chat-sendMessage").stream({ session_id: id, message: "Hi" });
      const received: { text: string; at: number }[] = [];
      for await (const chunk of stream) received.push({ text: chunk.text, at: performance.now() - started });
      expect(received.map((chunk) => chunk.text).join("")).toBe(chunks.join(""));
      expect(received.at(-1)!.at - received[0]!.at).toBeGreaterThanOrEqual(500);
      expect(await data).toEqual({ success: true, response: chunks.join(""), session_id: id, message_count: 1, truncated: false, usage: anyUsage() });
      expect(fake.requests.at(-1)?.headers.authorization).toBe("Bearer sk-e2e-secret");

      // Not streamed: the result alone.
      expect(await call(alice, "sendMessage", { session_id: id, message: "Again" })).toMatchObject({ success: true, message_count: 2 });
      expect(await call(alice, "endSession", { session_id: id })).toMatchObject({ success: true, status: "ended", message_count: 2 });
      expect(await store.readSessionState(id)).toMatchObject({ status: "ended", message_count: 2 });
      await expect(call(alice, "sendMessage", { session_id: id, message: "late" })).rejects.toMatchObject({ code: "functions/failed-precondition", details: { code: "SESSION_ENDED" } });
    }, 60_000);

    it("refuses another user's session with permission-denied, and a signed-out call with unauthenticated", async () => {
      const alice = await webApp(true);
      const bob = await webApp(true);
      const id = String((await call(alice, "createSession", { template_id: "socratic-tutor" })).session_id);
      await expect(call(bob, "sendMessage", { session_id: id, message: "mine?" })).rejects.toMatchObject({ code: "functions/permission-denied", details: { code: "FORBIDDEN" } });
      await expect(call(bob, "createSession", { user_id: alice.user?.uid, template_id: "socratic-tutor" })).rejects.toMatchObject({ code: "functions/permission-denied", details: { code: "FORBIDDEN" } });
      const nobody = await webApp(false);
      await expect(call(nobody, "createSession", { user_id: "someone", template_id: "socratic-tutor" })).rejects.toMatchObject({ code: "functions/unauthenticated", details: { code: "UNAUTHENTICATED" } });
      expect(emulated().project.output()).not.toContain("sk-e2e-secret");
    }, 60_000);

    // The deployed triggers are onCall's functions behind the refusal of data firebase-functions cannot decode (callable-trigger.ts).
    it("refuses data holding a typed value firebase-functions cannot decode with invalid-argument, where it failed internal", async () => {
      const alice = await webApp(true);
      await expect(call(alice, "createSession", { template_id: "friendly-assistant", extra: { "@type": "type.googleapis.com/example.Thing" } }))
        .rejects.toMatchObject({ code: "functions/invalid-argument", details: { code: "INVALID_REQUEST", fields: [{ field: "(data)" }] } });
      expect(emulated().project.output()).not.toContain("Unhandled error");
    }, 60_000);
  });
}
