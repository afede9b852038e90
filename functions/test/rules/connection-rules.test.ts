import { readFileSync } from "node:fs";
import { join } from "node:path";
import { assertFails, assertSucceeds, initializeTestEnvironment, type RulesTestEnvironment } from "@firebase/rules-unit-testing";
import { describeUnless } from "../support/visible-skip";

/**
 * database.rules.json for connections between users and their devices: the two participants, and
 * only they, read (and so listen to) their connection, its state with the journal and the flagged
 * keys, and its messages; nobody reads the pairs, the lists or the devices, nor queries the
 * connections; every write goes through the functions (admin). A database that does not enforce
 * rules cannot run these: they skip, saying why.
 */

const RULES = readFileSync(join(__dirname, "..", "..", "..", "database.rules.json"), "utf8");
const ALICE = "alice";
const BOB = "bob";
const MALLORY = "mallory";
const ID = "6f1c1f0e-8a53-4a5e-9c8e-2f4f7f3b9a10";
const message = (sender: string, content: string, timestamp: number) => ({ sender_id: sender, content, timestamp });

const connection = {
  meta: { user_a: ALICE, user_b: BOB, requested_by: "a", created_at: 1, pair: "pairhash" },
  state: {
    status: "accepted",
    message_count: 2,
    last_activity: 3,
    accepted_at: 2,
    rate: { a: { tokens: 29, refilled_at: 2 }, b: { tokens: 29, refilled_at: 3 } },
    recent_keys: { "9c1185a5c5e9fc54612808977ee8f548b2258d31": 2 },
    flagged_keys: { "4e07408562bedb8b60ce05c1decfe3ad16b72230": { fingerprint: "f", at: 3 } },
    pending: { m000000002: message(BOB, "hi Alice", 3) },
  },
  messages: { m000000001: message(ALICE, "hi Bob", 2) },
};

describeUnless(process.env.CHATIFY_RULES_SKIP_REASON || undefined, "connection security rules", () => {
  let env: RulesTestEnvironment;

  beforeAll(async () => {
    const [host, port] = (process.env.FIREBASE_DATABASE_EMULATOR_HOST ?? "").split(":");
    env = await initializeTestEnvironment({ projectId: "demo-chatify-connection-rules", database: { host: host ?? "127.0.0.1", port: Number(port), rules: RULES } });
    await env.withSecurityRulesDisabled(async (context) => {
      await context.database().ref().set({
        connections: { [ID]: connection },
        // The second record: a block Bob set on a user since erased, kept under Bob's key.
        connectionPairs: { pairhash: { user_a: ALICE, user_b: BOB, current: { id: ID, requested_by: "a", created_at: 1 } }, keptpair: { blocked: { b: 1 }, blocker_key: "bobkey" } },
        userConnections: { alicekey: { [ID]: 3 }, bobkey: { [ID]: 3 } },
        // With a token released from Alice's devices, kept to refuse a late add of it.
        userDevices: { alicekey: { tokens: { tokenhash: { token: "fcm-token-of-alice", updated_at: 1 } }, previews: false, previews_at: 1, released: { oldhash: 1 }, oldest_at: 1 } },
        // Registered by Bob before Alice: the token is still to leave Bob's devices.
        deviceTokens: { tokenhash: { user_key: "alicekey", updated_at: 1, released_from: { bobkey: 1 }, releasing_since: 1 } },
      });
    });
  });
  afterAll(async () => env.cleanup());

  const as = (uid?: string) => (uid === undefined ? env.unauthenticatedContext() : env.authenticatedContext(uid)).database();

  it.each([ALICE, BOB])("lets participant %s read the connection, its state with the journal, and its messages", async (uid) => {
    for (const path of [`connections/${ID}`, `connections/${ID}/messages`, `connections/${ID}/messages/m000000001`, `connections/${ID}/state`, `connections/${ID}/state/pending`, `connections/${ID}/meta`]) {
      await assertSucceeds(as(uid).ref(path).once("value"));
    }
  });

  it("lets a participant listen to the messages live: a message added by the functions arrives", async () => {
    const db = as(BOB);
    const arrived = new Promise<unknown>((resolve) => {
      db.ref(`connections/${ID}/messages/m000000003`).on("value", (snapshot) => {
        if (snapshot.exists()) resolve(snapshot.val());
      });
    });
    await env.withSecurityRulesDisabled(async (context) => {
      await context.database().ref(`connections/${ID}/messages/m000000003`).set(message(ALICE, "live", 4));
    });
    expect(await arrived).toEqual(message(ALICE, "live", 4));
    db.ref(`connections/${ID}/messages/m000000003`).off();
  });

  it("denies every read of a connection to anyone else, signed in or not", async () => {
    for (const uid of [MALLORY, undefined]) {
      for (const path of [`connections/${ID}`, `connections/${ID}/messages`, `connections/${ID}/state`, `connections/${ID}/state/pending`, `connections/${ID}/state/flagged_keys`, `connections/${ID}/meta`]) {
        await assertFails(as(uid).ref(path).once("value"));
      }
    }
  });

  it("denies listing connections, and reading the pairs, the lists, the devices and the token owners, to everyone", async () => {
    const devices = ["userDevices", "userDevices/alicekey", "userDevices/alicekey/previews_at", "userDevices/alicekey/released", "deviceTokens", "deviceTokens/tokenhash", "deviceTokens/tokenhash/released_from"];
    for (const uid of [ALICE, BOB, MALLORY, undefined]) {
      for (const path of ["connections", "connectionPairs", "connectionPairs/pairhash", "connectionPairs/keptpair", "connectionPairs/keptpair/blocker_key", "userConnections", "userConnections/alicekey", ...devices]) {
        await assertFails(as(uid).ref(path).once("value"));
      }
      // Nor by the keys an erasure finds them by, one's own included.
      await assertFails(as(uid).ref("connectionPairs").orderByChild("blocker_key").equalTo("bobkey").once("value"));
      await assertFails(as(uid).ref("connections").orderByChild("meta/user_a").equalTo(ALICE).once("value"));
      await assertFails(as(uid).ref("connections").orderByChild("meta/user_b").equalTo(BOB).once("value"));
    }
  });

  it.each([
    ["a message into one's own connection", `connections/${ID}/messages/m000000009`, message(ALICE, "forged", 9)],
    ["a message under a push id", `connections/${ID}/messages/-Nabc`, message(ALICE, "forged", 9)],
    ["one's connection's state", `connections/${ID}/state/status`, "ended"],
    ["its message count", `connections/${ID}/state/message_count`, 0],
    ["its journal", `connections/${ID}/state/pending/m000000009`, message(ALICE, "forged", 9)],
    ["its fields", `connections/${ID}/meta/user_b`, MALLORY],
    ["its blocks", `connections/${ID}/state/blocked`, { a: 9 }],
    ["its message rate buckets", `connections/${ID}/state/rate`, { a: { tokens: 1000, refilled_at: 9 } }],
    ["its recent keys", `connections/${ID}/state/recent_keys`, { "0000000000000000000000000000000000000000": 1 }],
    ["its flagged keys", `connections/${ID}/state/flagged_keys`, { "0000000000000000000000000000000000000000": { fingerprint: "f", at: 9 } }],
    ["who closed it", `connections/${ID}/state/closed_by`, "b"],
    ["a new connection", "connections/new-one", connection],
    ["a pair's record", "connectionPairs/pairhash/blocked", { b: 1 }],
    ["a pair's current connection", "connectionPairs/pairhash/current", { id: "new-one", requested_by: "b", created_at: 9 }],
    ["whose block a pair's record keeps", "connectionPairs/keptpair/blocker_key", "mallorykey"],
    ["a block kept after an erasure", "connectionPairs/keptpair/blocked", { b: 9 }],
    ["a user's list", "userConnections/alicekey/other", 5],
    ["a device token", "userDevices/alicekey/tokens/other", { token: "mine", updated_at: 2 }],
    ["a user's preview setting", "userDevices/alicekey/previews", true],
    ["when a user's preview setting was set", "userDevices/alicekey/previews_at", 9_999_999_999_999],
    ["the tokens released from a user's devices", "userDevices/alicekey/released", { tokenhash: 9_999_999_999_999 }],
    ["the oldest registration of a user's devices", "userDevices/alicekey/oldest_at", 9_999_999_999_999],
    ["a token's owner", "deviceTokens/tokenhash", { user_key: "mallorykey", updated_at: 2 }],
    ["the users a token is still to leave", "deviceTokens/tokenhash/released_from", { mallorykey: 2 }],
    ["since when a token is being released", "deviceTokens/tokenhash/releasing_since", 9_999_999_999_999],
  ])("denies every client write: %s", async (_name, path, value) => {
    for (const uid of [ALICE, BOB, MALLORY, undefined]) {
      await assertFails(as(uid).ref(path).set(value));
    }
    await assertFails(as(ALICE).ref(path).remove());
  });
});
