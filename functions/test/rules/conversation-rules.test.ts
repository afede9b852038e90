import { readFileSync } from "node:fs";
import { join } from "node:path";
import { assertFails, assertSucceeds, initializeTestEnvironment, type RulesTestEnvironment } from "@firebase/rules-unit-testing";
import { describeUnless } from "../support/visible-skip";

/**
 * database.rules.json for the nodes of a user's conversations (issue 16): a signed-in user reads
 * their own conversation index and nothing else of anyone's; erasure records and the
 * deployment's secrets are read by no client; only the functions (admin) write any of them.
 */

const RULES = readFileSync(join(__dirname, "..", "..", "..", "database.rules.json"), "utf8");
const ALICE = "alice";
const BOB = "bob";

const entry = (lastActivity: number) => ({ template_id: "friendly-assistant", template_name: "Friendly Assistant", created_at: 1, last_activity: lastActivity, message_count: 1, status: "active", title: "hi" });

describeUnless(process.env.CHATIFY_RULES_SKIP_REASON || undefined, "conversation index rules", () => {
  let env: RulesTestEnvironment;

  beforeAll(async () => {
    const [host, port] = (process.env.FIREBASE_DATABASE_EMULATOR_HOST ?? "").split(":");
    env = await initializeTestEnvironment({ projectId: "demo-chatify-conversation-rules", database: { host: host ?? "127.0.0.1", port: Number(port), rules: RULES } });
    await env.withSecurityRulesDisabled(async (context) => {
      await context.database().ref().set({
        userConversations: { [ALICE]: { "s-a1": entry(5), "s-a2": entry(9) }, [BOB]: { "s-b1": entry(7) }, "~f00d": { "s-x": entry(3) } },
        erasures: { h: { user_id: ALICE, requested_at: 1, phase: "settling", due_at: 2, sessions: { "s-a0": true } } },
        serviceSecrets: { cursor: "x".repeat(43) },
      });
    });
  });
  afterAll(async () => env.cleanup());

  const as = (uid?: string) => (uid === undefined ? env.unauthenticatedContext() : env.authenticatedContext(uid)).database();

  it("lets a signed-in user read their own index, whole, by entry, or newest first", async () => {
    await assertSucceeds(as(ALICE).ref(`userConversations/${ALICE}`).once("value"));
    await assertSucceeds(as(ALICE).ref(`userConversations/${ALICE}/s-a2/title`).once("value"));
    const newest = await assertSucceeds(as(ALICE).ref(`userConversations/${ALICE}`).orderByChild("last_activity").limitToLast(1).once("value"));
    expect(Object.keys((newest.val() ?? {}) as Record<string, unknown>)).toEqual(["s-a2"]);
  });

  it("denies another user's index, any index signed out, and the list of indexes", async () => {
    await assertFails(as(BOB).ref(`userConversations/${ALICE}`).once("value"));
    await assertFails(as(BOB).ref(`userConversations/${ALICE}/s-a1`).once("value"));
    await assertFails(as(BOB).ref(`userConversations/${ALICE}`).orderByChild("last_activity").limitToLast(1).once("value"));
    await assertFails(as().ref(`userConversations/${ALICE}`).once("value"));
    await assertFails(as(ALICE).ref("userConversations").once("value"));
    // A hashed owner (a user id that is no database key) is no one's uid.
    await assertFails(as("~f00d").ref("userConversations/~f00d").once("value"));
  });

  it("denies reading erasure records and the deployment's secrets to everyone", async () => {
    for (const path of ["erasures", "erasures/h", "erasures/h/sessions", "serviceSecrets", "serviceSecrets/cursor"]) {
      for (const uid of [ALICE, BOB, undefined]) await assertFails(as(uid).ref(path).once("value"));
    }
  });

  it.each([
    ["one's own index entry", `userConversations/${ALICE}/s-a1`, entry(99)],
    ["one's own index", `userConversations/${ALICE}`, null],
    ["a title in one's own index", `userConversations/${ALICE}/s-a1/title`, "mine now"],
    ["a new entry in one's own index", `userConversations/${ALICE}/s-new`, entry(1)],
    ["another user's index", `userConversations/${BOB}/s-b1`, entry(1)],
    ["an erasure record", "erasures/h", null],
    ["one's own erasure record", "erasures/mine", { user_id: ALICE, requested_at: 1, phase: "erasing", due_at: 1 }],
    ["a service secret", "serviceSecrets/cursor", "guessable"],
  ])("denies every client write: %s", async (_name, path, value) => {
    for (const uid of [ALICE, BOB, undefined]) await assertFails(as(uid).ref(path).set(value));
    await assertFails(as(ALICE).ref(path).remove());
  });
});
