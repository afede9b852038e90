import { randomUUID } from "node:crypto";
import type { Message, Messaging } from "firebase-admin/messaging";
import { silentLog, type Log, type LogFields } from "../../src/log/log";
import { createFcmSender } from "../../src/notify/fcm-sender";
import { ApiUser, HOSTING_ROUTES } from "../support/connection-api";
import { ACCEPT, fakeFcmMessaging, FakeFcmServer, fcmError, type FakeFcmMessaging, type FcmAnswer } from "../support/fake-fcm-server";
import { describeEachStore, type Harness, startHarness } from "../support/http-harness";
import { userKey } from "../../src/session/ledger/limits";
import { DeviceRegistry } from "../../src/connections/device-registry";
import { createOfflineSender } from "../../src/notify/offline-sender";
import { RtdbConnectionStore } from "../../src/store/rtdb/rtdb-connection-store";
import { describeWithRtdb, RtdbInstances } from "../support/rtdb";
import { parseHost, TcpProxy } from "../support/tcp-proxy";
import { ADD_LANDS_WITHIN_MS } from "../support/connection-fixtures";

/** Every log entry an instance wrote, to check what a failure logs and what it never does. */
class RecordingLog implements Log {
  readonly entries: { level: string; message: string; fields: LogFields }[] = [];
  info = (message: string, fields: LogFields = {}) => { this.entries.push({ level: "info", message, fields }); };
  warn = (message: string, fields: LogFields = {}) => { this.entries.push({ level: "warn", message, fields }); };
  error = (message: string, fields: LogFields = {}) => { this.entries.push({ level: "error", message, fields }); };
  text(): string {
    return JSON.stringify(this.entries);
  }
}

const DEADLINE_MS = 400;
const TEXT = "a secret the logs must never hold";
const tokens = (count: number, prefix: string) => Array.from({ length: count }, (_, index) => `${prefix}-${index}-${randomUUID()}`);

/**
 * The notifications a message sends through the firebase-admin adapter (legacy transport) to a
 * fake FCM, answered every way FCM answers: what the devices get, what is removed, what the
 * answer waits for and what is logged. The message stands whatever FCM does.
 */
describeEachStore("notifications of user-to-user messages, through firebase-admin to a fake FCM", (kind) => {
  let fake: FakeFcmServer;
  let fcm: FakeFcmMessaging;
  let harness: Harness;
  let log: RecordingLog;
  /** What the sender sends through: the fake's Messaging, or one with a refused credential. */
  let messaging: Pick<Messaging, "sendEach">;
  /** Tokens per sendEach call. */
  const calls: number[] = [];

  beforeAll(async () => {
    fake = await FakeFcmServer.start({ projectId: "demo-chatify" });
    fcm = fakeFcmMessaging(fake);
    messaging = fcm.messaging;
    log = new RecordingLog();
    const sender = createFcmSender({
      sendEach: (messages: Message[]) => {
        calls.push(messages.length);
        return messaging.sendEach(messages);
      },
    });
    // A clock that moves on at every reading: registrations one after another get times in their
    // order, so "the oldest" a full device list drops is the first registered (the embedded store
    // answers within the same millisecond, where the list breaks ties by the token's hash).
    let last = 0;
    const clock = () => (last = Math.max(Date.now(), last + 1));
    harness = await startHarness({ store: kind, pushSender: sender, log, clock, env: { NOTIFICATION_DEADLINE_MS: String(DEADLINE_MS), NOTIFICATION_PREVIEW_CHARS: "40" } });
  });
  afterEach(() => {
    fake.reset();
    calls.length = 0;
  });
  afterAll(async () => {
    await harness.close();
    await fcm.close();
    await fake.stop();
  });

  async function pair(): Promise<{ alice: ApiUser; bob: ApiUser; id: string }> {
    const tag = randomUUID().slice(0, 8);
    const alice = new ApiUser(`alice-${tag}`, harness.api, HOSTING_ROUTES);
    const bob = new ApiUser(`bob-${tag}`, harness.api, HOSTING_ROUTES);
    const id = await alice.connectWith(bob);
    return { alice, bob, id };
  }

  async function bobsTokens(bob: ApiUser): Promise<string[]> {
    const record = await harness.api.connectionStore.readDevices(userKey(bob.id));
    return Object.values(record?.tokens ?? {}).map((device) => device.token).sort();
  }

  it("sends to all 20 of the recipient's devices in one call, removes the 5 FCM no longer knows, and keeps the rest", async () => {
    const { alice, bob, id } = await pair();
    const devices = tokens(20, "bob");
    for (const token of devices) await bob.register(token);
    const gone = new Set(devices.slice(0, 5));
    fake.respond = (request) => (gone.has(request.message.token ?? "") ? fcmError("UNREGISTERED") : ACCEPT);

    const sent = await alice.send(id, TEXT);
    expect(sent.status).toBe(201);
    expect(calls).toEqual([20]);
    expect(new Set(fake.requests.map((request) => request.message.token))).toEqual(new Set(devices));
    expect(fake.requests[0]?.message).toMatchObject({ data: { connectionId: id, kind: "message" }, notification: { title: "New message", body: "a secret the logs must never hold" } });
    expect(await bobsTokens(bob)).toEqual(devices.slice(5).sort());
  });

  it("never grows a recipient's devices past 20, and never sends to the sender's own device", async () => {
    const { alice, bob, id } = await pair();
    const devices = tokens(25, "bob");
    for (const token of devices) await bob.register(token);
    expect(await bobsTokens(bob)).toEqual(devices.slice(5).sort());
    // A device now signed in as Alice: it was Bob's, and is hers alone now.
    const shared = devices[24]!;
    await alice.register(shared);
    await alice.send(id, "hello");
    expect(calls).toEqual([19]);
    expect(fake.requests.map((request) => request.message.token)).not.toContain(shared);
    fake.reset();
    await bob.send(id, "hello back");
    expect(fake.requests.map((request) => request.message.token)).toEqual([shared]);
  });

  it("answers a message at the deadline while FCM keeps failing (503 retried inside firebase-admin), logging no text and no token", async () => {
    const { alice, bob, id } = await pair();
    const [token] = tokens(1, "bob");
    await bob.register(token!);
    fake.respond = () => fcmError("UNAVAILABLE");
    const sent = await alice.send(id, TEXT);
    expect(sent.status).toBe(201);
    // Answered while the SDK still retries: it makes 5 attempts over about 7 s.
    expect(fake.attempts(token!)).toBeLessThan(5);
    expect(log.entries).toContainEqual(expect.objectContaining({ level: "warn", message: expect.stringContaining("deadline"), fields: expect.objectContaining({ connection_id: id }) }));
    await fake.awaitRequests(5);
    expect(log.text()).not.toContain(TEXT);
    expect(log.text()).not.toContain(token);
  }, 20_000);

  it("answers at the deadline when FCM never answers", async () => {
    const { alice, bob, id } = await pair();
    await bob.register(tokens(1, "bob")[0]!);
    fake.respond = () => ({ kind: "hang" });
    const sent = await alice.send(id, TEXT);
    expect(sent.status).toBe(201);
    expect((await alice.read(id)).body.messages).toEqual([expect.objectContaining({ content: TEXT })]);
  });

  it.each<[string, FcmAnswer, string]>([
    ["a rate limit (429)", fcmError("QUOTA_EXCEEDED"), "messaging/message-rate-exceeded"],
    ["an internal error (500)", fcmError("INTERNAL"), "messaging/internal-error"],
    ["another project's token (403 SENDER_ID_MISMATCH)", fcmError("SENDER_ID_MISMATCH"), "messaging/mismatched-credential"],
    ["an invalid argument for every token (the payload may be at fault)", fcmError("INVALID_ARGUMENT"), "messaging/invalid-argument"],
  ])("stores the message and keeps every token when FCM refuses with %s, logging the code", async (_name, answer, code) => {
    const { alice, bob, id } = await pair();
    const devices = tokens(3, "bob");
    for (const token of devices) await bob.register(token);
    fake.respond = () => answer;
    const sent = await alice.send(id, TEXT);
    expect(sent.status).toBe(201);
    expect(await bobsTokens(bob)).toEqual([...devices].sort());
    expect(log.entries).toContainEqual(expect.objectContaining({ level: "warn", fields: expect.objectContaining({ connection_id: id, failed: 3, codes: code }) }));
    expect(log.text()).not.toContain(TEXT);
    for (const token of devices) expect(log.text()).not.toContain(token);
  });

  it("removes a token with an invalid argument when the same payload was accepted for another", async () => {
    const { alice, bob, id } = await pair();
    const [good, bad] = tokens(2, "bob");
    await bob.register(good!);
    await bob.register(bad!);
    fake.respond = (request) => (request.message.token === bad ? fcmError("INVALID_ARGUMENT") : ACCEPT);
    expect((await alice.send(id, TEXT)).status).toBe(201);
    expect(await bobsTokens(bob)).toEqual([good]);
  });

  it("stores the message when the service's credential is refused, logged as the whole call's failure", async () => {
    const { alice, bob, id } = await pair();
    await bob.register(tokens(1, "bob")[0]!);
    const refused = fakeFcmMessaging(fake, { credential: { getAccessToken: async () => ({ access_token: "revoked", expires_in: 3600 }) } });
    messaging = refused.messaging;
    try {
      const sent = await alice.send(id, TEXT);
      expect(sent.status).toBe(201);
      expect(log.entries).toContainEqual(expect.objectContaining({ level: "warn", message: "notification failed", fields: expect.objectContaining({ connection_id: id, failure: "auth" }) }));
    } finally {
      messaging = fcm.messaging;
      await refused.close();
    }
  });

  it("stores the message when FCM cannot be reached at all", async () => {
    const { alice, bob, id } = await pair();
    await bob.register(tokens(1, "bob")[0]!);
    fake.respond = () => ({ kind: "drop" });
    const sent = await alice.send(id, TEXT);
    expect(sent.status).toBe(201);
    expect((await alice.read(id)).body.messages).toEqual([expect.objectContaining({ content: TEXT })]);
  });

  it("sends no preview to a recipient who turned previews off, and the connection id and kind only", async () => {
    const { alice, bob, id } = await pair();
    await bob.register(tokens(1, "bob")[0]!, false);
    await alice.send(id, TEXT);
    expect(fake.requests.map((request) => request.message)).toEqual([
      expect.objectContaining({ data: { connectionId: id, kind: "message" }, notification: { title: "New message" } }),
    ]);
  });

  it("cuts a preview at NOTIFICATION_PREVIEW_CHARS", async () => {
    const { alice, bob, id } = await pair();
    await bob.register(tokens(1, "bob")[0]!);
    await alice.send(id, "x".repeat(500));
    expect(fake.requests[0]?.message.notification?.body).toBe(`${"x".repeat(39)}…`);
  });
});

/**
 * A message's audience comes from the instance's listener copy of the recipient's devices, which
 * may trail the database (the instance's link is slow): read once the message's commit has
 * landed, the copy holds every device change made before it, so a message stored after a phone
 * changed hands, or after a device was removed, never reaches that phone.
 */
describeWithRtdb("a message's audience, on an instance whose copy of the devices trails the database", () => {
  let proxy: TcpProxy;
  let harness: Harness;
  let other: RtdbInstances;
  const pushes = createOfflineSender(silentLog);

  beforeAll(async () => {
    proxy = await TcpProxy.start(parseHost(process.env.FIREBASE_DATABASE_EMULATOR_HOST ?? ""));
    harness = await startHarness({ store: "rtdb", databaseHost: proxy.address, pushSender: pushes });
    other = new RtdbInstances(harness.namespace!);
  });
  afterAll(async () => {
    proxy.resume();
    await harness.close();
    await other.close();
    await proxy.stop();
  });

  /** Carol and Alice connected on the (proxied) instance, Alice's phone registered and notified once, so the instance holds her devices. */
  async function setUp() {
    const tag = randomUUID().slice(0, 8);
    const carol = new ApiUser(`carol-${tag}`, harness.api, HOSTING_ROUTES);
    const alice = new ApiUser(`alice-${tag}`, harness.api, HOSTING_ROUTES);
    const phone = `phone-${randomUUID()}`;
    const id = await carol.connectWith(alice);
    expect((await alice.register(phone)).status).toBe(200);
    expect((await carol.send(id, "first")).status).toBe(201);
    expect(pushes.recorded().at(-1)?.tokens).toEqual([phone]);
    return { carol, alice, phone, id, tag };
  }

  /**
   * Sends Carol's message while the instance's link is stalled, resuming it once the message's
   * commit is on its way: what the instance holds of the devices until then is its stale copy.
   */
  async function sendWhileStalled(carol: ApiUser, id: string, text: string) {
    const store = harness.api.connectionStore;
    if (!(store instanceof RtdbConnectionStore)) throw new Error("the harness's connection store is not the database's");
    const original = store.appendMessage.bind(store);
    let committing!: () => void;
    const commitSent = new Promise<void>((resolve) => (committing = resolve));
    const wrapped: typeof original = (connection, rule) => {
      const result = original(connection, rule);
      committing();
      return result;
    };
    store.appendMessage = wrapped;
    try {
      const before = pushes.recorded().length;
      const sending = carol.send(id, text);
      await commitSent;
      proxy.resume();
      const sent = await sending;
      return { status: sent.status, pushed: pushes.recorded().slice(before) };
    } finally {
      Reflect.deleteProperty(store, "appendMessage");
    }
  }

  it("never pushes a message stored after the phone changed hands to the phone's new user", async () => {
    const { carol, alice, phone, id, tag } = await setUp();
    proxy.stall();
    // Another instance (its own link): Bob signs in on Alice's former phone. Answered: the token is Bob's alone.
    const elsewhere = new RtdbConnectionStore(other.database(), 5_000);
    await new DeviceRegistry({ store: elsewhere, clock: Date.now, addLandsWithinMs: ADD_LANDS_WITHIN_MS }).register(`bob-${tag}`, phone, undefined);
    const alicesDevices = await elsewhere.readDevices(userKey(alice.id));
    expect(Object.values(alicesDevices?.tokens ?? {}).map((device) => device.token)).not.toContain(phone);

    // Only now does Carol write to Alice: her message is stored after the handover.
    const { status, pushed } = await sendWhileStalled(carol, id, "for Alice's eyes only");
    expect(status).toBe(201);
    const toPhone = pushed.filter((push) => push.tokens.includes(phone)).map((push) => push.notification.preview);
    expect(toPhone).toEqual([]);
  });

  it("never pushes a message stored after a device was unregistered to that device", async () => {
    const { carol, alice, phone, id } = await setUp();
    proxy.stall();
    // Alice signs out on her phone, through another instance: answered, the token is gone from her devices.
    const elsewhere = new RtdbConnectionStore(other.database(), 5_000);
    const after = await new DeviceRegistry({ store: elsewhere, clock: Date.now, addLandsWithinMs: ADD_LANDS_WITHIN_MS }).unregister(alice.id, phone);
    expect(after.removed).toBe(true);

    const { status, pushed } = await sendWhileStalled(carol, id, "after sign-out");
    expect(status).toBe(201);
    expect(pushed.filter((push) => push.tokens.includes(phone))).toEqual([]);
  });
});
