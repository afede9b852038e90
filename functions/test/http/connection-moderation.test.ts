import { randomUUID } from "node:crypto";
import { resolveConfig } from "../../src/config";
import { silentLog } from "../../src/log/log";
import { createOfflineSender, type OfflineSender } from "../../src/notify/offline-sender";
import type { PushSender } from "../../src/notify/push-sender";
import { checkConnectionBudget } from "../../src/runtime/time-budget";
import { ApiUser, HOSTING_ROUTES } from "../support/connection-api";
import { describeEachStore, startHarness, type Harness } from "../support/http-harness";
import { recordingLog, type Logged } from "../support/recording-log";

const FLAGGED_TEXT = "a message between users the moderation model flags";

/**
 * MODERATION=true reaches user-to-user messages too: each is checked with the fake server's
 * /v1/moderations before it is stored (there is no model call to run beside). A flagged message is
 * refused with 422 MESSAGE_FLAGGED: nothing stored, nobody notified; an outage is the AI side's
 * choice (open: through, logged; closed: 503). A message the connection refuses anyway (ended,
 * blocked) gets that refusal whatever the check says.
 */
describeEachStore("moderation of messages between users", (kind) => {
  let harness: Harness;
  let closed: Harness;
  let pushes: OfflineSender;
  const logged: Logged[] = [];
  let alice: ApiUser;
  let bob: ApiUser;
  let connectionId: string;

  beforeAll(async () => {
    pushes = createOfflineSender(silentLog);
    harness = await startHarness({ store: kind, log: recordingLog(logged).log, pushSender: pushes, env: { MODERATION: "true" } });
    closed = await startHarness({ store: kind, env: { MODERATION: "true", MODERATION_ON_OUTAGE: "closed" } });
  });
  afterAll(async () => {
    await harness.close();
    await closed.close();
  });

  async function connected(on: Harness): Promise<void> {
    const tag = randomUUID().slice(0, 8);
    alice = new ApiUser(`alice-${tag}`, on.api, HOSTING_ROUTES);
    bob = new ApiUser(`bob-${tag}`, on.api, HOSTING_ROUTES);
    connectionId = await alice.connectWith(bob);
    await bob.register(`token-bob-${tag}`);
    on.fake.reset();
    logged.length = 0;
  }

  async function nothingKept(on: Harness): Promise<void> {
    expect(await on.api.connectionStore.readConnectionState(connectionId)).toMatchObject({ message_count: 0 });
    expect((await bob.read(connectionId)).body.messages).toEqual([]);
  }

  it("checks a clean message with omni-moderation-latest, then stores and notifies as before", async () => {
    await connected(harness);
    const sent = await alice.send(connectionId, "Hello Bob");
    expect(sent.status).toBe(201);
    expect(harness.fake.moderationRequests).toHaveLength(1);
    expect(harness.fake.moderationRequests[0]).toMatchObject({ path: "/v1/moderations", body: { model: "omni-moderation-latest", input: "Hello Bob" } });
    expect(pushes.recorded().filter((push) => push.notification.connectionId === connectionId)).toHaveLength(1);
  });

  it("refuses a flagged message with 422 MESSAGE_FLAGGED: nothing stored, nobody notified, the text never logged", async () => {
    await connected(harness);
    const before = pushes.recorded().length;
    harness.fake.enqueueModeration({ kind: "verdict", flagged: true, categories: ["harassment"] });
    const answer = await alice.send(connectionId, FLAGGED_TEXT);
    expect(answer.status).toBe(422);
    expect(answer.body).toEqual({ success: false, error: { code: "MESSAGE_FLAGGED", message: "The message was flagged by moderation and was not sent" } });
    await nothingKept(harness);
    expect(pushes.recorded().slice(before)).toEqual([]);
    expect(logged).toContainEqual({ level: "info", message: "message flagged", fields: { connection_id: connectionId, moderator: "openai", categories: "harassment" } });
    expect(JSON.stringify(logged)).not.toContain(FLAGGED_TEXT);
    // The next clean message takes the first place.
    expect((await alice.send(connectionId, "Sorry")).body).toMatchObject({ message: { position: 1, content: "Sorry" } });
  });

  it("lets a message through when moderation is down and the choice is open, and logs it", async () => {
    await connected(harness);
    harness.fake.enqueueModeration({ kind: "status", status: 503 });
    expect((await alice.send(connectionId, "Hello through an outage")).status).toBe(201);
    expect(logged.find((entry) => entry.message === "moderation unavailable, message let through unchecked")?.fields).toMatchObject({ connection_id: connectionId, status: 503 });
  });

  it("refuses with 503 MODERATION_UNAVAILABLE when moderation is down and the choice is closed, keeping nothing", async () => {
    await connected(closed);
    closed.fake.enqueueModeration({ kind: "status", status: 500 });
    const answer = await alice.send(connectionId, "Hello");
    expect({ status: answer.status, code: answer.body.error?.code, retry: answer.headers.get("retry-after") }).toEqual({ status: 503, code: "MODERATION_UNAVAILABLE", retry: "1" });
    await nothingKept(closed);
  });

  it("gives a keyed repeat of a stored message back when moderation is down and the choice is closed: its first send passed the check", async () => {
    await connected(closed);
    const headers = { "Idempotency-Key": `key-${randomUUID()}` };
    const first = await alice.send(connectionId, "Hello once", headers);
    expect(first.status).toBe(201);
    closed.fake.enqueueModeration({ kind: "status", status: 500 });
    const again = await alice.send(connectionId, "Hello once", headers);
    expect({ status: again.status, body: again.body, replayed: again.headers.get("idempotent-replayed") }).toEqual({ status: 201, body: first.body, replayed: "true" });
    // A new message in the same outage is still refused.
    closed.fake.enqueueModeration({ kind: "status", status: 500 });
    expect((await alice.send(connectionId, "Hello twice", { "Idempotency-Key": `key-${randomUUID()}` })).status).toBe(503);
  });

  it("answers a keyed retry of a flagged message 422 MESSAGE_FLAGGED during an outage when the choice is closed, not 503: the key's answer stands", async () => {
    await connected(closed);
    const headers = { "Idempotency-Key": `key-${randomUUID()}` };
    closed.fake.enqueueModeration({ kind: "verdict", flagged: true, categories: ["harassment"] }, { kind: "status", status: 500 });
    expect((await alice.send(connectionId, FLAGGED_TEXT, headers)).status).toBe(422);
    const again = await alice.send(connectionId, FLAGGED_TEXT, headers);
    expect({ status: again.status, code: again.body.error?.code, retry: again.headers.get("retry-after") }).toEqual({ status: 422, code: "MESSAGE_FLAGGED", retry: null });
    await nothingKept(closed);
  });

  it("answers a message to an ended connection 410 CONNECTION_ENDED, not the outage's 503 nor the flag's 422: no retry can store it", async () => {
    await connected(closed);
    expect((await bob.end(connectionId)).status).toBe(200);
    closed.fake.enqueueModeration({ kind: "status", status: 503 });
    const outage = await alice.send(connectionId, "Still there?");
    expect({ status: outage.status, code: outage.body.error?.code, retry: outage.headers.get("retry-after") }).toEqual({ status: 410, code: "CONNECTION_ENDED", retry: null });
    closed.fake.enqueueModeration({ kind: "verdict", flagged: true, categories: ["harassment"] });
    const flagged = await alice.send(connectionId, FLAGGED_TEXT);
    expect({ status: flagged.status, code: flagged.body.error?.code }).toEqual({ status: 410, code: "CONNECTION_ENDED" });
  });

  it("answers a message to a blocked connection 403 CONNECTION_BLOCKED during an outage, as its transaction would", async () => {
    await connected(closed);
    expect((await bob.block(connectionId)).status).toBe(200);
    closed.fake.enqueueModeration({ kind: "status", status: 503 });
    const outage = await alice.send(connectionId, "Hello?");
    expect({ status: outage.status, code: outage.body.error?.code }).toEqual({ status: 403, code: "CONNECTION_BLOCKED" });
  });

  it("answers a server without a moderations endpoint as a configuration error, keeping nothing", async () => {
    await connected(harness);
    harness.fake.enqueueModeration({ kind: "status", status: 404 });
    const answer = await alice.send(connectionId, "Hello");
    expect({ status: answer.status, code: answer.body.error?.code }).toEqual({ status: 500, code: "CONFIGURATION_ERROR" });
    await nothingKept(harness);
  });

  it("checks only a participant's message: another user's is refused as before, unchecked", async () => {
    await connected(harness);
    const mallory = new ApiUser(`mallory-${randomUUID().slice(0, 8)}`, harness.api, HOSTING_ROUTES);
    expect((await mallory.send(connectionId, "let me in")).status).toBe(403);
    expect(harness.fake.moderationRequests).toHaveLength(0);
  });
});

/**
 * A keyed message flagged while a send with the same key is still running: a client's retry, sent
 * while its first send's check hangs (an outage, let through at OPENAI_TIMEOUT_MS under the default
 * `open`). The flag is kept with the key in the connection's state, in a transaction, so the first
 * send's transaction, landing after it, is refused too: the key has one answer. A first send that
 * landed before the flag is the key's answer instead.
 */
describeEachStore("moderation of keyed messages between users, a retry racing its first send", (kind) => {
  let harness: Harness;
  let pushes: OfflineSender;
  let alice: ApiUser;
  let bob: ApiUser;
  let connectionId: string;

  beforeAll(async () => {
    pushes = createOfflineSender(silentLog);
    harness = await startHarness({ store: kind, pushSender: pushes, env: { MODERATION: "true", OPENAI_TIMEOUT_MS: "1000" } });
  });
  afterAll(async () => { await harness.close(); });

  beforeEach(async () => {
    const tag = randomUUID().slice(0, 8);
    alice = new ApiUser(`alice-${tag}`, harness.api, HOSTING_ROUTES);
    bob = new ApiUser(`bob-${tag}`, harness.api, HOSTING_ROUTES);
    connectionId = await alice.connectWith(bob);
    await bob.register(`token-bob-${tag}`);
    harness.fake.reset();
  });

  const notifiedOf = () => pushes.recorded().filter((push) => push.notification.connectionId === connectionId);
  const answerOf = (answer: { status: number; body: { error?: { code: string } } }) => ({ status: answer.status, code: answer.body.error?.code });

  it("refuses the first send too once its retry is flagged, though an outage let its check through: nothing stored, nobody notified, a later retry flagged", async () => {
    const headers = { "Idempotency-Key": `key-${randomUUID()}` };
    // The first send's check never answers (an outage: let through at its deadline); the retry's is flagged.
    harness.fake.enqueueModeration({ kind: "hang" }, { kind: "verdict", flagged: true, categories: ["harassment"] });
    const first = alice.send(connectionId, "are you there?", headers);
    await harness.fake.awaitModerationRequests(1);
    const retry = await alice.send(connectionId, "are you there?", headers);
    const firstAnswer = await first;
    expect({ retry: answerOf(retry), first: answerOf(firstAnswer) }).toEqual({
      retry: { status: 422, code: "MESSAGE_FLAGGED" },
      first: { status: 422, code: "MESSAGE_FLAGGED" },
    });
    expect((await bob.read(connectionId)).body.messages).toEqual([]);
    expect(await harness.api.connectionStore.readConnectionState(connectionId)).toMatchObject({ message_count: 0 });
    expect(notifiedOf()).toEqual([]);
    // A later retry whose check is let through again is the key's answer still; another text with the key is a reuse.
    harness.fake.enqueueModeration({ kind: "status", status: 503 }, { kind: "verdict", flagged: false });
    expect(answerOf(await alice.send(connectionId, "are you there?", headers))).toEqual({ status: 422, code: "MESSAGE_FLAGGED" });
    expect(answerOf(await alice.send(connectionId, "hello?", headers))).toEqual({ status: 422, code: "IDEMPOTENCY_KEY_REUSED" });
    // The next message, with a key of its own, takes the first place.
    harness.fake.enqueueModeration({ kind: "verdict", flagged: false });
    expect((await alice.send(connectionId, "Sorry", { "Idempotency-Key": `key-${randomUUID()}` })).body).toMatchObject({ message: { position: 1, content: "Sorry" } });
  }, 20_000);

  it("gives a flagged retry the message its first send stored before the flag, notifying no one again; another text with the key is a reuse", async () => {
    const headers = { "Idempotency-Key": `key-${randomUUID()}` };
    harness.fake.enqueueModeration({ kind: "status", status: 503 }, { kind: "verdict", flagged: true, categories: ["harassment"] }, { kind: "verdict", flagged: true, categories: ["harassment"] });
    const first = await alice.send(connectionId, "are you there?", headers);
    expect(first.status).toBe(201);
    const retry = await alice.send(connectionId, "are you there?", headers);
    expect({ status: retry.status, body: retry.body, replayed: retry.headers.get("idempotent-replayed") }).toEqual({ status: 201, body: first.body, replayed: "true" });
    expect(answerOf(await alice.send(connectionId, "something else", headers))).toEqual({ status: 422, code: "IDEMPOTENCY_KEY_REUSED" });
    expect(notifiedOf()).toHaveLength(1);
  });
});

/**
 * With MODERATION on, a user-to-user message waits for its check (up to OPENAI_TIMEOUT_MS) before
 * its transaction, then up to NOTIFICATION_DEADLINE_MS for its push: an instance starts only when
 * both fit the function's timeout beside its database calls, so a message never outlives the
 * function (killed after it is stored, with no answer). Scaled to a 3 s timeout, on the embedded
 * store (the database calls take their 100 ms deadlines at most).
 */
describe("a user-to-user message with MODERATION on, within the function timeout", () => {
  // 3 x 100 ms of database + 1000 ms for the check + 600 ms for the push + 1 s margin = 2.9 s of 3 s.
  const ENV = { MODERATION: "true", TIMEOUT_SECONDS: "3", OPENAI_TIMEOUT_MS: "1000", OPENAI_MAX_RETRIES: "0", DB_TIMEOUT_MS: "100", NOTIFICATION_DEADLINE_MS: "600" };
  let harness: Harness;
  // A push service slower than the notification's deadline (FCM retrying a 503): the answer waits the whole deadline.
  const slowPush: PushSender = { name: "slow", send: () => new Promise(() => undefined) };

  beforeAll(async () => {
    harness = await startHarness({ store: "memory", env: ENV, pushSender: slowPush });
  });
  afterAll(async () => { await harness.close(); });

  it("refuses to start when the check and the notification's deadline together outlive the function", () => {
    expect(() => { checkConnectionBudget(resolveConfig({ ...ENV, OPENAI_TIMEOUT_MS: "1500", NOTIFICATION_DEADLINE_MS: "1700" })); }).toThrow(/= 4500 ms; lower DB_TIMEOUT_MS, OPENAI_TIMEOUT_MS or NOTIFICATION_DEADLINE_MS/);
  });

  it("answers a message whose check takes most of OPENAI_TIMEOUT_MS and whose push waits its whole deadline before the 3 s timeout", async () => {
    const tag = randomUUID().slice(0, 8);
    const alice = new ApiUser(`alice-${tag}`, harness.api, HOSTING_ROUTES);
    const bob = new ApiUser(`bob-${tag}`, harness.api, HOSTING_ROUTES);
    const id = await alice.connectWith(bob);
    expect((await bob.register(`bob-device-${tag}`)).status).toBeLessThan(300);
    harness.fake.reset();
    harness.fake.enqueueModeration({ kind: "verdict", flagged: false, delayMs: 900 });
    const started = Date.now();
    const sent = await alice.send(id, "hello Bob");
    const elapsed = Date.now() - started;
    expect(sent.status).toBe(201);
    expect(harness.fake.moderationRequests).toHaveLength(1);
    // It did wait for both: the check's 900 ms, then the push's 600 ms deadline (a timer may fire a millisecond early).
    expect(elapsed).toBeGreaterThanOrEqual(1_490);
    expect(elapsed).toBeLessThan(3_000);
  }, 20_000);
});
