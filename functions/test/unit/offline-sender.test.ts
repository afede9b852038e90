import type { Log, LogFields } from "../../src/log/log";
import { createOfflineSender, OFFLINE_PUSH_LABEL } from "../../src/notify/offline-sender";
import { notificationPreview, type PushNotification } from "../../src/notify/push-notification";

const PREVIEW_TEXT = "meet me at the usual place";
const NOTIFICATION: PushNotification = { connectionId: "conn-7", kind: "message", preview: notificationPreview(PREVIEW_TEXT, 100)! };

function recordingLog() {
  const entries: { level: string; message: string; fields?: LogFields }[] = [];
  const log: Log = {
    info: (message, fields) => entries.push({ level: "info", message, fields }),
    warn: (message, fields) => entries.push({ level: "warn", message, fields }),
    error: (message, fields) => entries.push({ level: "error", message, fields }),
  };
  return { log, entries };
}

describe("the offline push sender", () => {
  it("takes every distinct token as delivered and records the send", async () => {
    const { log } = recordingLog();
    const sender = createOfflineSender(log);

    const results = await sender.send(NOTIFICATION, ["token-a", "token-b", "token-a"]);

    expect(results).toEqual([{ token: "token-a", outcome: "delivered" }, { token: "token-b", outcome: "delivered" }]);
    expect(sender.recorded()).toEqual([{ notification: NOTIFICATION, tokens: ["token-a", "token-b"] }]);
  });

  it("logs each send under its label with the connection id and the count, never the preview or a token", async () => {
    const { log, entries } = recordingLog();
    await createOfflineSender(log).send(NOTIFICATION, ["token-secret-1", "token-secret-2"]);

    expect(entries).toEqual([{ level: "info", message: `${OFFLINE_PUSH_LABEL} would notify 2 device(s)`, fields: { connectionId: "conn-7", devices: 2 } }]);
    const written = JSON.stringify(entries);
    expect(written).not.toContain("usual place");
    expect(written).not.toContain("token-secret");
  });

  it("sends, logs and records nothing for no tokens", async () => {
    const { log, entries } = recordingLog();
    const sender = createOfflineSender(log);

    expect(await sender.send(NOTIFICATION, [])).toEqual([]);
    expect(entries).toEqual([]);
    expect(sender.recorded()).toEqual([]);
  });

  it("keeps only the last sends, so a long `npm start` does not grow without bound", async () => {
    const sender = createOfflineSender(recordingLog().log, 3);
    for (const index of [1, 2, 3, 4, 5]) await sender.send({ connectionId: `conn-${index}`, kind: "request" }, ["token"]);

    expect(sender.recorded().map((record) => record.notification.connectionId)).toEqual(["conn-3", "conn-4", "conn-5"]);
  });
});
