import { spawnSync } from "node:child_process";
import { deleteApp, initializeApp } from "firebase-admin/app";
import { getMessaging, type Messaging } from "firebase-admin/messaging";
import { createFcmSender } from "../../src/notify/fcm-sender";
import { notificationPreview, type PushNotification } from "../../src/notify/push-notification";
import { FCM_MAX_TOKENS_PER_CALL, PushSendError, type PushSender } from "../../src/notify/push-sender";
import { ACCEPT, fakeFcmMessaging, FakeFcmServer, fcmError, type FakeFcmMessaging, type FcmAnswer } from "../support/fake-fcm-server";
import { describeUnless } from "../support/visible-skip";

/**
 * The firebase-admin adapter against a local server that answers as FCM v1 does. firebase-admin
 * 14.5 sends over HTTP/2 to fcm.googleapis.com by default, which no local server can receive; these
 * tests run its legacy HTTP/1.1 transport (see fakeFcmMessaging). What they cover is the same in
 * production: the adapter's own code (the message it builds, the split into calls, how each
 * answer becomes a token's outcome, when a call fails as a whole) sees the same SendResponses
 * either way, because both transports share the SDK's request building, its retries and its
 * mapping of FCM's error bodies to codes. The one difference, how a dead connection is reported,
 * is tested on the HTTP/2 transport itself at the end of this file.
 */

const MESSAGE: PushNotification = { connectionId: "conn-1", kind: "message", preview: notificationPreview("Hello there", 100)! };
const tokens = (count: number, prefix = "device") => Array.from({ length: count }, (_, index) => `${prefix}-${index}`);
/** Answers `answers[token]` for those tokens, accepts the rest. */
const byToken = (answers: Readonly<Record<string, FcmAnswer>>) => (request: { readonly message: { readonly token?: string } }) =>
  answers[request.message.token ?? ""] ?? ACCEPT;

describe("the FCM sender (firebase-admin, legacy transport, against a fake FCM)", () => {
  let fake: FakeFcmServer;
  let fcm: FakeFcmMessaging;
  let sender: PushSender;

  beforeAll(async () => {
    fake = await FakeFcmServer.start({ projectId: "demo-chatify" });
    fcm = fakeFcmMessaging(fake);
    sender = createFcmSender(fcm.messaging);
  });
  afterEach(() => { fake.reset(); });
  afterAll(async () => {
    await fcm.close();
    await fake.stop();
  });

  it("sends each device the connection id, the kind and the preview, and nothing else", async () => {
    const results = await sender.send(MESSAGE, ["device-a", "device-b"]);

    expect(results).toEqual([{ token: "device-a", outcome: "delivered" }, { token: "device-b", outcome: "delivered" }]);
    expect(fake.requests.map((request) => request.path)).toEqual(["/v1/projects/demo-chatify/messages:send", "/v1/projects/demo-chatify/messages:send"]);
    expect(fake.requests.map((request) => request.authorization)).toEqual([`Bearer ${fake.accessToken}`, `Bearer ${fake.accessToken}`]);
    expect(fake.requests.map((request) => request.message).sort((a, b) => String(a.token).localeCompare(String(b.token)))).toEqual(
      ["device-a", "device-b"].map((token) => ({
        token,
        data: { connectionId: "conn-1", kind: "message" },
        notification: { title: "New message", body: "Hello there" },
      })),
    );
  });

  it("sends no body when previews are off, and names a request as such", async () => {
    await sender.send({ connectionId: "conn-2", kind: "request" }, ["device-a"]);

    expect(fake.requests.map((request) => request.message)).toEqual([
      { token: "device-a", data: { connectionId: "conn-2", kind: "request" }, notification: { title: "New connection request" } },
    ]);
  });

  it("sends nothing for no tokens, and a token listed twice once", async () => {
    expect(await sender.send(MESSAGE, [])).toEqual([]);
    expect(fake.requests).toHaveLength(0);

    const results = await sender.send(MESSAGE, ["device-b", "device-a", "device-b"]);
    expect(results.map((result) => result.token)).toEqual(["device-b", "device-a"]);
    expect(fake.requests).toHaveLength(2);
  });

  it("20 devices of which 5 are unregistered: all 20 sent, the 5 to remove", async () => {
    const devices = tokens(20);
    const gone = new Set(devices.filter((_, index) => index % 4 === 1));
    fake.respond = (request) => (gone.has(request.message.token ?? "") ? fcmError("UNREGISTERED") : ACCEPT);

    const results = await sender.send(MESSAGE, devices);

    expect(fake.requests).toHaveLength(20);
    expect(results).toEqual(
      devices.map((token) =>
        gone.has(token) ? { token, outcome: "token-gone", code: "messaging/registration-token-not-registered" } : { token, outcome: "delivered" },
      ),
    );
  });

  it("removes a token FCM calls an invalid argument while the same payload went to another", async () => {
    fake.respond = byToken({ "device-bad": fcmError("INVALID_ARGUMENT") });

    const results = await sender.send(MESSAGE, ["device-bad", "device-ok"]);

    expect(results).toEqual([
      { token: "device-bad", outcome: "token-gone", code: "messaging/invalid-argument" },
      { token: "device-ok", outcome: "delivered" },
    ]);
  });

  it("keeps every token when FCM calls the argument invalid for all of them: the payload may be at fault", async () => {
    fake.respond = () => fcmError("INVALID_ARGUMENT");

    const alone = await sender.send(MESSAGE, ["device-a"]);
    const both = await sender.send(MESSAGE, ["device-a", "device-b"]);

    expect(alone).toEqual([{ token: "device-a", outcome: "failed", code: "messaging/invalid-argument" }]);
    expect(both.map((result) => result.outcome)).toEqual(["failed", "failed"]);
  });

  it("keeps every token when the fake FCM itself rejects the payload, as FCM does a payload over 4 KiB", async () => {
    // A connection id is the caller's to bound; a runaway one makes every message too big.
    const results = await sender.send({ connectionId: "c".repeat(5000), kind: "message" }, ["device-a", "device-b"]);

    expect(results.map((result) => [result.outcome, result.code])).toEqual([
      ["failed", "messaging/invalid-argument"],
      ["failed", "messaging/invalid-argument"],
    ]);
    expect(fake.requests).toHaveLength(0);
  });

  it("a 429 is the token's failure (messaging/message-rate-exceeded), not retried by the SDK", async () => {
    fake.respond = byToken({ "device-busy": fcmError("QUOTA_EXCEEDED", { retryAfterSeconds: 30 }) });

    const results = await sender.send(MESSAGE, ["device-busy", "device-ok"]);

    expect(results).toEqual([
      { token: "device-busy", outcome: "failed", code: "messaging/message-rate-exceeded" },
      { token: "device-ok", outcome: "delivered" },
    ]);
    expect(fake.attempts("device-busy")).toBe(1);
  });

  it("a 503 is retried by the SDK at once: one more attempt, then delivered", async () => {
    fake.respond = (request) => (request.attempt === 1 ? fcmError("UNAVAILABLE") : ACCEPT);

    const results = await sender.send(MESSAGE, ["device-a"]);

    expect(results).toEqual([{ token: "device-a", outcome: "delivered" }]);
    expect(fake.attempts("device-a")).toBe(2);
  });

  it("503 on every attempt, or a cut connection: 5 attempts each (1 s + 2 s + 4 s of back-off), then failed tokens beside a delivered one", async () => {
    fake.respond = byToken({ "device-503": fcmError("UNAVAILABLE"), "device-cut": { kind: "drop" } });

    const results = await sender.send(MESSAGE, ["device-503", "device-cut", "device-ok"]);

    expect(results).toEqual([
      { token: "device-503", outcome: "failed", code: "messaging/server-unavailable" },
      { token: "device-cut", outcome: "failed", code: "app/network-error" },
      { token: "device-ok", outcome: "delivered" },
    ]);
    expect([fake.attempts("device-503"), fake.attempts("device-cut"), fake.attempts("device-ok")]).toEqual([5, 5, 1]);
  }, 20_000);

  it("a token of another project (SENDER_ID_MISMATCH) is that token's failure, even when it is the only one", async () => {
    fake.respond = () => fcmError("SENDER_ID_MISMATCH");

    expect(await sender.send(MESSAGE, ["device-other-project"])).toEqual([
      { token: "device-other-project", outcome: "failed", code: "messaging/mismatched-credential" },
    ]);
  });

  it("other per-token errors leave the token failed, not removed", async () => {
    fake.respond = byToken({ "device-500": fcmError("INTERNAL"), "device-other-project": fcmError("SENDER_ID_MISMATCH") });

    const results = await sender.send(MESSAGE, ["device-500", "device-other-project", "device-ok"]);

    expect(results).toEqual([
      { token: "device-500", outcome: "failed", code: "messaging/internal-error" },
      { token: "device-other-project", outcome: "failed", code: "messaging/mismatched-credential" },
      { token: "device-ok", outcome: "delivered" },
    ]);
  });

  it("splits 1,001 tokens into calls of 500, 500 and 1, one after another; an invalid argument in the first is removed for a success in the last", async () => {
    const devices = tokens(2 * FCM_MAX_TOKENS_PER_CALL + 1);
    const calls: { size: number; seenBefore: number }[] = [];
    const observed: Pick<Messaging, "sendEach"> = {
      sendEach: (messages) => {
        calls.push({ size: messages.length, seenBefore: fake.requests.length });
        return fcm.messaging.sendEach(messages);
      },
    };
    const last = devices.at(-1)!;
    fake.respond = (request) => (request.message.token === last ? ACCEPT : request.message.token === "device-0" ? fcmError("INVALID_ARGUMENT") : fcmError("UNREGISTERED"));

    const results = await createFcmSender(observed).send(MESSAGE, devices);

    expect(calls).toEqual([
      { size: 500, seenBefore: 0 },
      { size: 500, seenBefore: 500 },
      { size: 1, seenBefore: 1000 },
    ]);
    expect(results).toHaveLength(devices.length);
    expect(results[0]).toEqual({ token: "device-0", outcome: "token-gone", code: "messaging/invalid-argument" });
    expect(results.at(-1)).toEqual({ token: last, outcome: "delivered" });
    expect(results.filter((result) => result.outcome === "token-gone")).toHaveLength(devices.length - 1);
  }, 20_000);

  describe("failures of the whole call", () => {
    it("a credential that cannot get an access token: auth, and nothing reaches FCM", async () => {
      const broken = fakeFcmMessaging(fake, { credential: { getAccessToken: () => Promise.reject(new Error("metadata server unreachable")) } });
      try {
        const sending = createFcmSender(broken.messaging).send(MESSAGE, ["device-a", "device-b"]);
        await expect(sending).rejects.toEqual(expect.objectContaining({ name: "PushSendError", failure: "auth", code: "app/invalid-credential", retryable: false }));
        expect(fake.requests).toHaveLength(0);
      } finally {
        await broken.close();
      }
    });

    it("an access token FCM refuses (401 UNAUTHENTICATED): auth", async () => {
      const refused = fakeFcmMessaging(fake, { credential: { getAccessToken: async () => ({ access_token: "expired", expires_in: 3600 }) } });
      try {
        const sending = createFcmSender(refused.messaging).send(MESSAGE, ["device-a", "device-b"]);
        await expect(sending).rejects.toEqual(expect.objectContaining({ failure: "auth", code: "messaging/third-party-auth-error" }));
      } finally {
        await refused.close();
      }
    });

    it("FCM unreachable (connection refused): network, retryable", async () => {
      const closed = await FakeFcmServer.start({ projectId: "demo-chatify" });
      const unreachable = fakeFcmMessaging(closed);
      await closed.stop();
      try {
        const sending = createFcmSender(unreachable.messaging).send(MESSAGE, ["device-a", "device-b"]);
        await expect(sending).rejects.toEqual(expect.objectContaining({ failure: "network", code: "app/network-error", retryable: true }));
      } finally {
        await unreachable.close();
      }
    });

    it("no project id: config, before anything is sent", async () => {
      const app = initializeApp({ credential: { getAccessToken: async () => ({ access_token: "x", expires_in: 3600 }) } }, "fcm-no-project");
      const saved = { GOOGLE_CLOUD_PROJECT: process.env.GOOGLE_CLOUD_PROJECT, GCLOUD_PROJECT: process.env.GCLOUD_PROJECT };
      delete process.env.GOOGLE_CLOUD_PROJECT;
      delete process.env.GCLOUD_PROJECT;
      try {
        await expect(createFcmSender(getMessaging(app)).send(MESSAGE, ["device-a"])).rejects.toEqual(
          expect.objectContaining({ failure: "config", code: "messaging/invalid-argument" }),
        );
      } finally {
        Object.assign(process.env, Object.fromEntries(Object.entries(saved).filter(([, value]) => value !== undefined)));
        await deleteApp(app);
      }
    });

    it("throws a PushSendError, whose message carries no token", async () => {
      const broken = fakeFcmMessaging(fake, { credential: { getAccessToken: () => Promise.reject(new Error("nope")) } });
      try {
        const error: unknown = await createFcmSender(broken.messaging).send(MESSAGE, ["device-secret-token"]).catch((caught: unknown) => caught);
        expect(error).toBeInstanceOf(PushSendError);
        expect((error as Error).message).not.toContain("device-secret-token");
      } finally {
        await broken.close();
      }
    });
  });
});

/**
 * Production's transport, HTTP/2 to fcm.googleapis.com, reached where it cannot be: a dead
 * connection comes back from firebase-admin 14.5 as `messaging/unknown-error` wrapping the
 * session's `app/network-error`, which the adapter must still read as a network failure of the
 * whole call. Runs where the host does not resolve (this workplace, CI): elsewhere the request
 * would go to the real FCM.
 */
describeUnless(fcmHostResolves() ? "fcm.googleapis.com resolves here: this test would call the real FCM" : undefined, "the FCM sender on the default HTTP/2 transport, FCM unreachable", () => {
  it("fails as a whole, network, retryable", async () => {
    const app = initializeApp({ projectId: "demo-chatify", credential: { getAccessToken: async () => ({ access_token: "x", expires_in: 3600 }) } }, "fcm-http2");
    try {
      const sending = createFcmSender(getMessaging(app)).send(MESSAGE, ["device-a", "device-b"]);
      await expect(sending).rejects.toEqual(expect.objectContaining({ failure: "network", code: "app/network-error", retryable: true }));
    } finally {
      await deleteApp(app);
    }
  });
});

function fcmHostResolves(): boolean {
  const lookup = spawnSync(process.execPath, ["-e", "require('node:dns').lookup('fcm.googleapis.com', (error) => process.exit(error ? 1 : 0))"], { timeout: 10_000 });
  return lookup.status === 0;
}
