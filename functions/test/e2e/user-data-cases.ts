import type { Database } from "firebase-admin/database";
import { userKey } from "../../src/session/ledger/limits";
import { erasurePath } from "../../src/store/rtdb/paths";
import { bearer, signUp, type TestUser } from "../support/auth-emulator";
import type { EmulatorProject } from "../support/emulator-project";
import { call } from "../support/http-harness";
import { valueWhere } from "../support/rtdb";

const API = "/api/v1/chatbot";

/** What the cases run against: the built project on the emulators and its database. */
export interface EmulatedData {
  readonly projectId: string;
  readonly project: EmulatorProject;
  readonly db: Database;
}

/**
 * A user's conversations and data on the built project, on the Functions, Hosting and Auth
 * emulators (offline): the routes through Hosting's rewrites (one conversation's path reaching
 * `endSession`, which answers GET), and the 2nd gen `onUserDeleted` trigger erasing the data of
 * a user deleted from Auth. Run inside the emulator suite (emulators.test.ts), on the emulators
 * it started, as the callables' cases are: a second emulator project doubled the start-up.
 */
export function describeUserData(emulated: () => EmulatedData): void {
  describe("a user's data", () => {
    // A user of these cases' own: the other cases of the suite create sessions for theirs.
    let user: TestUser | undefined;
    const reader = async (): Promise<TestUser> => (user ??= await signUp(emulated().project.authHost, emulated().projectId));

    it("lists, reads and exports through Hosting's rewrites and the function URLs", async () => {
      const { project } = emulated();
      const auth = bearer((await reader()).idToken);
      const created = await call(project.hostingUrl, "POST", `${API}/session`, { template_id: "friendly-assistant" }, auth);
      const id = String(created.body.session_id);
      expect((await call(project.hostingUrl, "POST", `${API}/session/${id}/message`, { message: "Plan a picnic" }, auth)).status).toBe(200);

      const listed = await call(project.hostingUrl, "GET", `${API}/sessions`, undefined, auth);
      expect(listed.body.sessions).toEqual([expect.objectContaining({ session_id: id, title: "Plan a picnic", message_count: 1 })]);
      expect((await call(project.functionsUrl, "GET", "/listSessions", undefined, auth)).body.sessions).toEqual(listed.body.sessions);

      // Hosting sends /session/{id} to endSession whatever the method: GET reads it, DELETE still ends it.
      const read = await call(project.hostingUrl, "GET", `${API}/session/${id}`, undefined, auth);
      expect(read.body).toMatchObject({ success: true, session: { session_id: id, status: "active" } });
      expect((read.body.messages as unknown[]).length).toBe(2);
      expect((await call(project.functionsUrl, "GET", `/getSession/${id}`, undefined, auth)).body.session).toEqual(read.body.session);

      const exported = await call(project.hostingUrl, "GET", `${API}/me/export`, undefined, auth);
      expect(exported.body).toMatchObject({ format: "chatify-export", user_id: (await reader()).uid, complete: true, session_count: 1 });
      expect((await call(project.hostingUrl, "DELETE", `${API}/session/${id}`, undefined, auth)).body).toMatchObject({ message: "Session ended successfully" });
      // Each function starts cold on the emulator at its first request.
    }, 90_000);

    it("erases the data of a user deleted from Firebase Auth (onUserDeleted), keeping everyone else's", async () => {
      const { project, projectId, db } = emulated();
      const doomed = await signUp(project.authHost, projectId, true);
      const auth = bearer(doomed.idToken);
      const ids: string[] = [];
      for (const message of ["first words", "second words"]) {
        const created = await call(project.hostingUrl, "POST", `${API}/session`, { template_id: "socratic-tutor" }, auth);
        ids.push(String(created.body.session_id));
        expect((await call(project.hostingUrl, "POST", `${API}/session/${ids.at(-1)!}/message`, { message }, auth)).status).toBe(200);
      }
    
      const sessionsLeft = async () => (await Promise.all(ids.map(async (id) => (await db.ref(`userSessions/${id}/state`).once("value")).exists()))).filter(Boolean).length;
      expect(await sessionsLeft()).toBe(2);

      const deleted = await fetch(`http://${project.authHost}/identitytoolkit.googleapis.com/v1/accounts:delete?key=fake-api-key`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ idToken: doomed.idToken }),
      });
      expect(deleted.status).toBe(200);
      await Promise.all(ids.map((id) => valueWhere(db.ref(`userSessions/${id}/state`), (state) => state === null, `session ${id} erased`, 60_000)));
      expect(await sessionsLeft()).toBe(0);
      expect((await db.ref(`userConversations/${doomed.uid}`).once("value")).exists()).toBe(false);
      // The erasure is kept, and the user refused, until a second pass after the hour their ID tokens may still be used.
      const erasure = async () => (await db.ref(erasurePath(userKey(doomed.uid))).once("value")).val() as { phase?: string; due_at?: number } | null;
      await valueWhere(db.ref(erasurePath(userKey(doomed.uid))), (record) => (record as { phase?: string } | null)?.phase === "settling", "the erasure's first pass over", 60_000);
      expect((await erasure())?.due_at).toBeGreaterThan(Date.now() + 55 * 60_000);
      // The other user's conversation is untouched.
      expect((await call(project.hostingUrl, "GET", `${API}/sessions`, undefined, bearer((await reader()).idToken))).body.sessions).toHaveLength(1);
      expect(project.output()).toContain("eraseDeletedUser");
    }, 90_000);
  });
}
