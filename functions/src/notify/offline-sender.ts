import type { Log } from "../log/log";
import type { PushNotification } from "./push-notification";
import type { PushSender, TokenResult } from "./push-sender";

export const OFFLINE_PUSH_LABEL = "[offline push sender: nothing sent to FCM]";

/** One send the offline sender took in place of FCM. */
export interface RecordedPush {
  readonly notification: PushNotification;
  readonly tokens: readonly string[];
}

export interface OfflineSender extends PushSender {
  /** The sends taken so far, oldest first: at most the last `keep`. */
  recorded(): readonly RecordedPush[];
}

/**
 * Stands in for FCM where it cannot be reached (`npm start`, offline): takes every send as
 * delivered, keeps the last `keep` (default 100) for a test or a developer to look at, and logs
 * each one under a label that nobody can mistake for a real delivery. The log has the connection
 * id and counts only: a preview is the user's text, and a token is a credential for the device.
 */
export function createOfflineSender(log: Log, keep = 100): OfflineSender {
  const records: RecordedPush[] = [];
  return {
    name: "offline",
    async send(notification: PushNotification, tokens: readonly string[]): Promise<readonly TokenResult[]> {
      const distinct = [...new Set(tokens)];
      if (distinct.length === 0) return [];
      records.push({ notification, tokens: distinct });
      if (records.length > keep) records.splice(0, records.length - keep);
      log.info(`${OFFLINE_PUSH_LABEL} would notify ${distinct.length} device(s)`, { connectionId: notification.connectionId, devices: distinct.length });
      return distinct.map((token) => ({ token, outcome: "delivered" }));
    },
    recorded: () => [...records],
  };
}
