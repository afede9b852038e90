import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { assertFails, assertSucceeds } from "@firebase/rules-unit-testing";
import { deleteApp, initializeApp, type FirebaseApp } from "firebase/app";
import { connectDatabaseEmulator, get, getDatabase, onValue, ref, type Database } from "firebase/database";
import { createSession, ROUTES, startHarness, type Harness } from "../support/http-harness";
import { SessionWatcher } from "../support/session-watcher";
import { describeUnless } from "../support/visible-skip";

/**
 * The live partial reply's client contract (docs/api.md, live partial replies) under
 * database.rules.json: the service (the functions, firebase-admin, held to no rules) on a database
 * that enforces the project's rules; the session's owner, signed in with the web SDK, listens to
 * the session and sees the reply grow under `partials`, then the exchange land in `messages` and
 * the partial go; another signed-in user is denied the session, the partial included, while it
 * grows and after. test/http/partials.test.ts holds the rest of the contract with no rules loaded.
 * A database that does not enforce rules cannot run this: it skips, saying why.
 */

const RULES = readFileSync(join(__dirname, "..", "..", "..", "database.rules.json"), "utf8");
const ALICE = "alice";
const BOB = "bob";
const chunks = ["Once", " upon", " a", " time", " there", " was", " a", " reply", " that", " grew."];
const reply = chunks.join("");

/** Resolves with the first value a listen at `path` gets, or rejects with why it was cancelled. */
function listenOnce(database: Database, path: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    onValue(ref(database, path), (snapshot) => { resolve(snapshot.val()); }, reject, { onlyOnce: true });
  });
}

describeUnless(process.env.CHATIFY_RULES_SKIP_REASON || undefined, "live partial replies under the security rules", () => {
  let harness: Harness;
  const apps: FirebaseApp[] = [];

  /**
   * A page signed in as `uid`: a web SDK app of its own on the harness's database, sending a mock
   * ID token for `uid` (the emulator's way, as @firebase/rules-unit-testing's authenticatedContext does).
   */
  function signedIn(uid: string): Database {
    const app = initializeApp({ projectId: "demo-chatify", databaseURL: `https://${harness.namespace ?? ""}.firebaseio.com` }, randomUUID());
    apps.push(app);
    const database = getDatabase(app);
    const [host, port] = (process.env.FIREBASE_DATABASE_EMULATOR_HOST ?? "").split(":");
    connectDatabaseEmulator(database, host ?? "127.0.0.1", Number(port), { mockUserToken: { sub: uid } });
    return database;
  }

  beforeAll(async () => {
    harness = await startHarness({ store: "rtdb" });
    // The project's rules, loaded into the harness's database as the rules tests load them (the owner's token).
    const loaded = await fetch(`http://${process.env.FIREBASE_DATABASE_EMULATOR_HOST ?? ""}/.settings/rules.json?ns=${harness.namespace ?? ""}`, {
      method: "PUT",
      headers: { Authorization: "Bearer owner" },
      body: RULES,
    });
    expect(loaded.status).toBe(200);
  });
  afterAll(async () => {
    await Promise.all(apps.map((app) => deleteApp(app)));
    await harness.close();
  });

  it("shows the owner the reply growing under partials, then both messages in messages and the partial gone; another user is denied the session throughout", async () => {
    const id = await createSession(harness.api, "friendly-assistant", ALICE);
    const alice = signedIn(ALICE);
    const bob = signedIn(BOB);
    // The owner's read is allowed at once (were the rule tightened, this fails here, not on a watcher's timeout).
    await assertSucceeds(get(ref(alice, `userSessions/${id}`)));
    const watcher = new SessionWatcher(alice, id);
    await watcher.until(() => true);

    harness.fake.enqueue({ kind: "stream", chunks, chunkDelayMs: 150 });
    const sending = harness.api.call("POST", ROUTES.message(id), { message: "a story" });
    // Should an assertion below fail, the request ends after the harness closed: that must not crash the run.
    void sending.catch(() => undefined);
    await watcher.until((seen) => seen.partials.length === 1);
    // The partial at its own path while it grows: the owner reads it there...
    const writing = await assertSucceeds(get(ref(alice, `userSessions/${id}/partials`)));
    const [key, partial] = Object.entries((writing.val() ?? {}) as Record<string, { text: string; seq_after: number }>)[0] ?? ["", { text: "-", seq_after: -1 }];
    expect(reply.startsWith(partial.text)).toBe(true);
    expect(partial.seq_after).toBe(0);
    // ...and nobody else: not the session, its partials, this partial or its messages, by a read or a listen.
    for (const path of [`userSessions/${id}`, `userSessions/${id}/partials`, `userSessions/${id}/partials/${key}`, `userSessions/${id}/messages`]) {
      await assertFails(get(ref(bob, path)));
    }
    await assertFails(listenOnce(bob, `userSessions/${id}`));
    await assertFails(listenOnce(bob, `userSessions/${id}/partials`));

    expect((await sending).status).toBe(200);
    await watcher.until((seen) => seen.messages.length === 2 && seen.partials.length === 0);
    watcher.close();

    // Growing while the model wrote: each text a longer start of the reply.
    const texts = watcher.partialTexts();
    expect(texts.length).toBeGreaterThanOrEqual(2);
    for (const [index, text] of texts.entries()) {
      expect(reply.startsWith(text)).toBe(true);
      if (index > 0) expect(text.length).toBeGreaterThan(texts[index - 1]!.length);
    }
    // The exchange arrives and the partial leaves in one update: no event shows both, none neither.
    const firstStored = watcher.seen.findIndex((seen) => seen.messages.length > 0);
    expect(watcher.seen[firstStored - 1]?.partials.map((seen) => seen.key)).toEqual([key]);
    expect(watcher.seen.slice(firstStored).every((seen) => seen.partials.length === 0 && seen.messages.length === 2)).toBe(true);
    // Both messages, the reply naming the partial it completed.
    expect(watcher.seen.at(-1)?.stored.map((message) => [message.role, message.content, message.partial])).toEqual([
      ["user", "a story", undefined],
      ["assistant", reply, key],
    ]);
    // The stored exchange is the owner's alone too.
    await assertSucceeds(get(ref(alice, `userSessions/${id}/messages`)));
    await assertFails(get(ref(bob, `userSessions/${id}/messages`)));
    await assertFails(get(ref(bob, `userSessions/${id}`)));
  });
});
