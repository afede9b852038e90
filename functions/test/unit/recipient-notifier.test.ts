import { registerDevice, releaseDevice, removeDevices, liveTokens, MAX_DEVICES, MAX_RELEASES, STALE_AFTER_MS, tokenHash } from "../../src/connections/device-rules";
import { RecipientNotifier, type Audience } from "../../src/connections/recipient-notifier";
import { returnRequest, takeRequest } from "../../src/connections/request-limit";
import type { Log, LogFields } from "../../src/log/log";
import type { PushNotification } from "../../src/notify/push-notification";
import { PushSendError, type PushSender, type TokenResult } from "../../src/notify/push-sender";
import { admitMessage } from "../../src/session/ledger/limits";
import type { DeviceRecord } from "../../src/store/connection-records";
import { MemoryConnectionStore } from "../../src/store/memory-connection-store";
import { ADD_LANDS_WITHIN_MS } from "../support/connection-fixtures";

const T = 1_700_000_000_000;

class RecordingLog implements Log {
  readonly entries: { level: string; message: string; fields: LogFields }[] = [];
  info = (message: string, fields: LogFields = {}) => { this.entries.push({ level: "info", message, fields }); };
  warn = (message: string, fields: LogFields = {}) => { this.entries.push({ level: "warn", message, fields }); };
  error = (message: string, fields: LogFields = {}) => { this.entries.push({ level: "error", message, fields }); };
}

/** A sender whose every send answers as `answer` says, recording what it was asked. */
function fakeSender(answer: (tokens: readonly string[]) => Promise<readonly TokenResult[]>): PushSender & { sent: { notification: PushNotification; tokens: readonly string[] }[] } {
  const sent: { notification: PushNotification; tokens: readonly string[] }[] = [];
  return {
    name: "fake",
    sent,
    send: (notification, tokens) => {
      sent.push({ notification, tokens });
      return answer(tokens);
    },
  };
}

describe("a user's devices", () => {
  const register = (record: DeviceRecord | null, index: number, at: number) => registerDevice(`h${String(index).padStart(2, "0")}`, `token-${index}`, at, undefined)(record);

  it("keeps at most MAX_DEVICES, the oldest dropped, and the oldest one's time for the sweep", () => {
    let record: DeviceRecord | null = null;
    for (let i = 0; i < MAX_DEVICES + 3; i += 1) record = register(record, i, T + i).next!;
    expect(Object.keys(record?.tokens ?? {})).toHaveLength(MAX_DEVICES);
    expect(record?.oldest_at).toBe(T + 3);
    // Registering a kept token again moves it to the newest: the list does not grow.
    const again = register(record, 3, T + 100);
    expect(again.outcome).toEqual({ count: MAX_DEVICES, removed: [] });
    expect(again.next?.oldest_at).toBe(T + 4);
  });

  it("drops stale tokens with any change, leaves them out of a send, and forgets a record's last token", () => {
    const record = register(register(null, 1, T).next!, 2, T + STALE_AFTER_MS - 1).next!;
    expect(liveTokens(record, T + STALE_AFTER_MS - 1).sort()).toEqual(["token-1", "token-2"]);
    expect(liveTokens(record, T + STALE_AFTER_MS)).toEqual(["token-2"]);
    const swept = removeDevices([], T + STALE_AFTER_MS)(record);
    expect(swept.outcome).toEqual({ count: 1, removed: ["h01"] });
    expect(removeDevices(["h02"], T + STALE_AFTER_MS)(swept.next!).next).toEqual({});
    expect(removeDevices(["nothing"], T)(null)).toEqual({ outcome: { count: 0, removed: [] } });
  });

  it("keeps the user's preview setting once set, until set again", () => {
    const off = registerDevice("h1", "token-1", T, false)(null).next!;
    expect(off.previews).toBe(false);
    expect(registerDevice("h2", "token-2", T + 1, undefined)(off).next?.previews).toBe(false);
    expect(registerDevice("h2", "token-2", T + 1, true)(off).next?.previews).toBe(true);
  });

  /** A release of `hash` up to `upTo`, done at `now`, as an unregistration or another user's claim does it. */
  const release = (record: DeviceRecord | null, hash: string, upTo: number, now = upTo) => releaseDevice(hash, upTo, now, ADD_LANDS_WITHIN_MS)(record);

  it("keeps a release, refusing the user's late add up to it, until an add it covers would be stale anyway", () => {
    const held = register(null, 1, T).next!;
    // Unregistered at T + 10: the token goes, and the removal is kept.
    const unregistered = release(held, "h01", T + 10).next!;
    expect(unregistered).toEqual({ released: { h01: T + 10 }, oldest_at: T + 10 });
    // Their registration claimed before it, its add landing only now (answered 503, still on the way), adds nothing.
    expect(registerDevice("h01", "token-1", T + 5, undefined)(unregistered).outcome).toEqual({ count: 0, removed: [] });
    // A release long past a request's lifetime keeps it beside its own: an add queued while its instance was cut off lands whenever it reconnects.
    const later = release(unregistered, "h02", T + 10 + 30 * ADD_LANDS_WITHIN_MS).next!;
    expect(later.released).toEqual({ h01: T + 10, h02: T + 10 + 30 * ADD_LANDS_WITHIN_MS });
    expect(registerDevice("h01", "token-1", T + 5, undefined)(later).outcome).toEqual({ count: 0, removed: [] });
    // Once an add it covers would be stale on landing, a change drops it.
    expect(release(later, "h03", T + 10 + STALE_AFTER_MS).next?.released).toEqual({ h02: T + 10 + 30 * ADD_LANDS_WITHIN_MS, h03: T + 10 + STALE_AFTER_MS });
    // A release done past a request's lifetime (the sweep's, a retry's) to a user with a record takes the token and is kept too.
    expect(release(register(null, 4, T).next!, "h04", T, T + ADD_LANDS_WITHIN_MS)).toEqual({ outcome: { count: 0, removed: ["h04"] }, next: { released: { h04: T }, oldest_at: T } });
    // To a user with no record (perhaps one an erasure deleted) it writes nothing; within that time it makes the record.
    expect(release(null, "h05", T, T + ADD_LANDS_WITHIN_MS)).toEqual({ outcome: { count: 0, removed: [] } });
    expect(release(null, "h05", T, T + ADD_LANDS_WITHIN_MS - 1).next).toEqual({ released: { h05: T }, oldest_at: T });
  });

  it("keeps at most MAX_RELEASES releases, the newest, however many tokens a user registers and unregisters", () => {
    const HOUR = 3_600_000;
    let record: DeviceRecord | null = null;
    for (let i = 0; i < MAX_RELEASES + 5; i += 1) record = release(register(record, i, T + HOUR * i).next!, `h${String(i).padStart(2, "0")}`, T + HOUR * i + 1).next!;
    const newest = Array.from({ length: MAX_RELEASES }, (_, k) => k + 5).map((i) => [`h${String(i).padStart(2, "0")}`, T + HOUR * i + 1]);
    expect(record).toEqual({ released: Object.fromEntries(newest), oldest_at: T + HOUR * 5 + 1 });
    // The oldest kept, a day old, still refuses a late add of its token; the one dropped for the 21st does not.
    expect(registerDevice("h05", "late", T + HOUR * 5, undefined)(record).outcome.count).toBe(0);
    expect(registerDevice("h04", "late", T + HOUR * 4, undefined)(record).outcome.count).toBe(1);
  });

  /**
   * A record as a version without MAX_RELEASES left it: one release (60 days each) for every token
   * its user registered and unregistered, `count` of them.
   */
  function grownRecord(count: number): DeviceRecord {
    const released: Record<string, number> = {};
    for (let i = 0; i < count; i += 1) released[`h${i}`] = T + i * 10;
    return { released, oldest_at: T };
  }

  it("still registers, unregisters and removes on a record that kept 130,000 releases, keeping the newest MAX_RELEASES", () => {
    const record = grownRecord(130_000);
    const now = T + 2_000_000;
    const hash = tokenHash("new-phone");
    // The newest MAX_RELEASES of the record, and their earliest time.
    const newest = Object.fromEntries(Array.from({ length: MAX_RELEASES }, (_, k) => 130_000 - MAX_RELEASES + k).map((i) => [`h${i}`, T + i * 10]));
    const newestAt = T + (130_000 - MAX_RELEASES) * 10;
    // Past about 125,000 entries a spread into Math.min threw RangeError: every change of this user's devices failed.
    expect(registerDevice(hash, "new-phone", now, undefined)(record)).toEqual({
      outcome: { count: 1, removed: [] },
      next: { tokens: { [hash]: { token: "new-phone", updated_at: now } }, released: newest, oldest_at: newestAt },
    });
    expect(removeDevices([], now)(record)).toEqual({ outcome: { count: 0, removed: [] }, next: { released: newest, oldest_at: newestAt } });
    // An unregistration keeps its own release, the newest, beside the newest MAX_RELEASES - 1 of the others.
    const besideIt = Object.fromEntries(Object.entries(newest).slice(1));
    expect(releaseDevice(hash, now, now, ADD_LANDS_WITHIN_MS)(record)).toEqual({
      outcome: { count: 0, removed: [] },
      next: { released: { ...besideIt, [hash]: now }, oldest_at: newestAt + 10 },
    });
  });
});

describe("a user's connection requests per hour", () => {
  it("takes one per request and gives back one a request did not use", () => {
    const first = takeRequest(T, 2, 20)(null);
    expect(first).toEqual({ outcome: { admitted: true }, next: { tokens: 20, refilled_at: T, connection_requests: { tokens: 1, refilled_at: T } } });
    const second = takeRequest(T, 2, 20)(first.next!);
    const refused = takeRequest(T, 2, 20)(second.next!).outcome;
    expect(refused.admitted).toBe(false);
    // Half an hour: one of two tokens an hour.
    expect(refused.admitted ? 0 : refused.retryAfterMs).toBeCloseTo(1_800_000, -1);
    expect(takeRequest(T, 2, 20)(returnRequest(2)(second.next!).next!).outcome).toEqual({ admitted: true });
  });

  it("survives an AI message's admission, which rewrites the same record", () => {
    const withRequest = takeRequest(T, 2, 20)(null).next!;
    const afterAiMessage = admitMessage("session-1", T + 1, { messagesPerMinute: 20, maxActiveSessions: 5, idleTtlMs: 3_600_000, tokensPerDay: 0 }, { fresh: 10, firstPrompt: 10 })(withRequest);
    expect(afterAiMessage.next?.connection_requests).toEqual({ tokens: 1, refilled_at: T });
  });
});

describe("the notifier", () => {
  const audience = (tokens: readonly string[], previews = true): Promise<Audience> => Promise.resolve({ recipientKey: "recipient", tokens, previews });
  const delivered = async (tokens: readonly string[]) => tokens.map((token) => ({ token, outcome: "delivered" as const }));

  function notifier(sender: PushSender, log: Log, options: { deadlineMs?: number; previewChars?: number; store?: MemoryConnectionStore } = {}) {
    return new RecipientNotifier({ devices: options.store ?? new MemoryConnectionStore(), sender, log, clock: () => T, previewChars: options.previewChars ?? 20, deadlineMs: options.deadlineMs ?? 1_000 });
  }

  it("sends the connection id, the kind and a bounded preview, and logs counts only", async () => {
    const log = new RecordingLog();
    const sender = fakeSender(delivered);
    const report = await notifier(sender, log).notify(audience(["secret-token-1", "secret-token-2"]), { connectionId: "c1", kind: "message", text: "a private message that runs long" });
    expect(report).toEqual({ outcome: "sent", delivered: 2, gone: 0, failed: 0 });
    expect(sender.sent).toEqual([{ notification: { connectionId: "c1", kind: "message", preview: "a private message t…" }, tokens: ["secret-token-1", "secret-token-2"] }]);
    expect(JSON.stringify(log.entries)).not.toMatch(/secret-token|private message/);
  });

  it("sends no preview when the recipient turned them off, or the deployment did", async () => {
    const sender = fakeSender(delivered);
    await notifier(sender, new RecordingLog()).notify(audience(["t"], false), { connectionId: "c1", kind: "message", text: "hello" });
    await notifier(sender, new RecordingLog(), { previewChars: 0 }).notify(audience(["t"]), { connectionId: "c1", kind: "message", text: "hello" });
    expect(sender.sent.map((sent) => sent.notification)).toEqual([{ connectionId: "c1", kind: "message" }, { connectionId: "c1", kind: "message" }]);
  });

  it("sends nothing to a recipient without devices, or whose devices could not be read", async () => {
    const sender = fakeSender(delivered);
    expect(await notifier(sender, new RecordingLog()).notify(audience([]), { connectionId: "c1", kind: "request" })).toEqual({ outcome: "no-devices" });
    expect(await notifier(sender, new RecordingLog()).notify(Promise.resolve(undefined), { connectionId: "c1", kind: "request" })).toEqual({ outcome: "unknown-devices" });
    expect(sender.sent).toEqual([]);
  });

  it("reads the audience less the sender's own tokens and the stale ones, and says nothing but the error's name when the read fails", async () => {
    const store = new MemoryConnectionStore();
    await store.updateDevices("recipient", registerDevice(tokenHash("shared"), "shared", T, undefined));
    await store.updateDevices("recipient", registerDevice(tokenHash("mine"), "mine", T, false));
    await store.updateDevices("recipient", registerDevice(tokenHash("old"), "old", T - STALE_AFTER_MS, undefined));
    await store.updateDevices("sender", registerDevice(tokenHash("shared"), "shared", T, undefined));
    const log = new RecordingLog();
    expect(await notifier(fakeSender(delivered), log, { store }).audience("recipient", "sender")).toEqual({ recipientKey: "recipient", tokens: ["mine"], previews: false });
    const failing = new RecipientNotifier({ devices: { prepareDevices: () => undefined, readDevices: () => Promise.reject(new Error("token-in-message")), updateDevices: () => Promise.reject(new Error("x")) }, sender: fakeSender(delivered), log, clock: () => T, previewChars: 0, deadlineMs: 0 });
    expect(await failing.audience("recipient", "sender")).toBeUndefined();
    expect(JSON.stringify(log.entries)).not.toContain("token-in-message");
  });

  it("answers at the deadline while a send hangs, and applies its results when it ends", async () => {
    let finish: (results: readonly TokenResult[]) => void = () => undefined;
    const store = new MemoryConnectionStore();
    await store.updateDevices("recipient", registerDevice(tokenHash("gone"), "gone", T, undefined));
    const log = new RecordingLog();
    const sender = fakeSender(() => new Promise((resolve) => { finish = resolve; }));
    const report = await notifier(sender, log, { deadlineMs: 20, store }).notify(audience(["gone"]), { connectionId: "c1", kind: "message", text: "hi" });
    expect(report).toEqual({ outcome: "late" });
    expect(log.entries).toContainEqual(expect.objectContaining({ level: "warn", fields: expect.objectContaining({ connection_id: "c1", deadline_ms: 20 }) }));
    finish([{ token: "gone", outcome: "token-gone", code: "messaging/registration-token-not-registered" }]);
    await new Promise((resolve) => setImmediate(resolve));
    expect((await store.readDevices("recipient"))?.tokens).toBeUndefined();
  });

  it.each([
    ["a whole-call failure", () => Promise.reject(new PushSendError("auth", "app/invalid-credential")), { outcome: "failed", failure: "auth" }],
    ["an unexpected error", () => Promise.reject(new Error("secret-token in a message")), { outcome: "failed", failure: "error" }],
  ])("never throws on %s, and logs its code only", async (_name, answer, report) => {
    const log = new RecordingLog();
    expect(await notifier(fakeSender(answer), log).notify(audience(["secret-token"]), { connectionId: "c1", kind: "message", text: "private" })).toEqual(report);
    expect(log.entries).toContainEqual(expect.objectContaining({ level: "warn", message: "notification failed" }));
    expect(JSON.stringify(log.entries)).not.toMatch(/secret-token|private/);
  });

  it("removes the tokens FCM no longer knows and keeps those that failed for now", async () => {
    const store = new MemoryConnectionStore();
    for (const token of ["ok", "gone", "busy"]) await store.updateDevices("recipient", registerDevice(tokenHash(token), token, T, undefined));
    const sender = fakeSender(async () => [
      { token: "ok", outcome: "delivered" },
      { token: "gone", outcome: "token-gone", code: "messaging/registration-token-not-registered" },
      { token: "busy", outcome: "failed", code: "messaging/message-rate-exceeded" },
    ]);
    const log = new RecordingLog();
    expect(await notifier(sender, log, { store }).notify(audience(["ok", "gone", "busy"]), { connectionId: "c1", kind: "message", text: "hi" })).toEqual({ outcome: "sent", delivered: 1, gone: 1, failed: 1 });
    expect(Object.values((await store.readDevices("recipient"))?.tokens ?? {}).map((device) => device.token).sort()).toEqual(["busy", "ok"]);
    expect(log.entries).toContainEqual(expect.objectContaining({ fields: expect.objectContaining({ codes: "messaging/message-rate-exceeded,messaging/registration-token-not-registered" }) }));
  });
});
