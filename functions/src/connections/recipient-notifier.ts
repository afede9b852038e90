import type { Log } from "../log/log";
import { notificationPreview, type NotificationKind, type PushNotification } from "../notify/push-notification";
import { PushSendError, type PushSender, type TokenResult } from "../notify/push-sender";
import type { DeviceStore } from "../store/connection-store";
import { liveTokens, removeDevices, tokenHash } from "./device-rules";

export interface NotifierOptions {
  readonly devices: Pick<DeviceStore, "prepareDevices" | "readDevices" | "updateDevices">;
  readonly sender: PushSender;
  /** Counts, codes and the connection id only: never a token or a text. */
  readonly log: Log;
  readonly clock: () => number;
  /** NOTIFICATION_PREVIEW_CHARS: the longest preview; 0 sends none. */
  readonly previewChars: number;
  /** NOTIFICATION_DEADLINE_MS: the longest an answer waits for its notification's send. */
  readonly deadlineMs: number;
}

/** Whom a notification goes to: the recipient's live tokens, never one of the sender's, and whether they want previews. */
export interface Audience {
  readonly recipientKey: string;
  readonly tokens: readonly string[];
  readonly previews: boolean;
}

/** What became of a notification by the time the answer stopped waiting for it. */
export type NotifyReport =
  | { readonly outcome: "no-devices" | "unknown-devices" }
  | { readonly outcome: "sent"; readonly delivered: number; readonly gone: number; readonly failed: number }
  | { readonly outcome: "failed"; readonly failure: string }
  /** Still sending at the deadline: the answer went on without it (its results are applied when it ends). */
  | { readonly outcome: "late" };

export interface NotificationRequest {
  readonly connectionId: string;
  readonly kind: NotificationKind;
  /** The message, for its preview. */
  readonly text?: string;
}

/**
 * Notifies a recipient's devices of a message or a request, for the connections service. The
 * answer waits for the send at most NOTIFICATION_DEADLINE_MS: once a deployed instance has
 * answered it gets no CPU, so nothing can be sent after the answer, and firebase-admin's
 * `sendEach` cannot be cancelled or told to stop retrying (docs/notifications.md). Whatever
 * happens here, the message stands: a failure is logged (counts and codes, never a text or a
 * token) and never thrown.
 */
export class RecipientNotifier {
  constructor(private readonly options: NotifierOptions) {}

  /** Starts listening to the devices `audience` will read (beside a commit, so that the read after it costs no round trip). */
  prepare(recipientKey: string, senderKey: string): void {
    this.options.devices.prepareDevices(recipientKey);
    this.options.devices.prepareDevices(senderKey);
  }

  /**
   * Starts reading who would be notified: the recipient's devices, less any token the sender also
   * holds (a device never hears of its own user's message). Read once the message (or request) has landed;
   * resolves undefined when the devices cannot be read (logged).
   */
  audience(recipientKey: string, senderKey: string): Promise<Audience | undefined> {
    const { devices, clock, log } = this.options;
    return Promise.all([devices.readDevices(recipientKey), devices.readDevices(senderKey)]).then(
      ([recipient, sender]) => {
        const now = clock();
        const own = new Set(liveTokens(sender, now));
        return { recipientKey, tokens: liveTokens(recipient, now).filter((token) => !own.has(token)), previews: recipient?.previews !== false };
      },
      (error: unknown) => {
        log.warn("notification skipped: devices unreadable", { error: error instanceof Error ? error.name : typeof error });
        return undefined;
      },
    );
  }

  /** Sends the notification to the audience, waiting at most the deadline; never throws. */
  async notify(audience: Promise<Audience | undefined>, request: NotificationRequest): Promise<NotifyReport> {
    const { deadlineMs, log } = this.options;
    const to = await audience;
    if (!to) return { outcome: "unknown-devices" };
    if (to.tokens.length === 0) return { outcome: "no-devices" };
    const sending = this.send(to, request);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<NotifyReport>((resolve) => {
      timer = setTimeout(() => { resolve({ outcome: "late" }); }, deadlineMs);
    });
    const report = await Promise.race([sending, late]);
    clearTimeout(timer);
    if (report.outcome === "late") log.warn("notification still sending at the deadline; the answer goes on", { connection_id: request.connectionId, kind: request.kind, devices: to.tokens.length, deadline_ms: deadlineMs });
    return report;
  }

  /** One send and what follows it: gone tokens removed, the outcome logged. Settles, never rejects. */
  private async send(to: Audience, request: NotificationRequest): Promise<NotifyReport> {
    const { sender, log } = this.options;
    const fields = { connection_id: request.connectionId, kind: request.kind, devices: to.tokens.length, sender: sender.name };
    let results: readonly TokenResult[];
    try {
      results = await sender.send(this.notification(to, request), to.tokens);
    } catch (error) {
      const failure = error instanceof PushSendError ? error.failure : "error";
      log.warn("notification failed", { ...fields, failure, code: error instanceof PushSendError ? error.code : error instanceof Error ? error.name : typeof error });
      return { outcome: "failed", failure };
    }
    const gone = results.filter((result) => result.outcome === "token-gone");
    const failed = results.filter((result) => result.outcome === "failed");
    if (gone.length > 0) await this.removeGone(to.recipientKey, gone.map((result) => tokenHash(result.token)));
    const codes = [...new Set([...gone, ...failed].flatMap((result) => (result.code === undefined ? [] : [result.code])))].sort().join(",");
    const counts = { delivered: results.length - gone.length - failed.length, gone: gone.length, failed: failed.length };
    if (failed.length > 0) log.warn("notification not delivered to every device", { ...fields, ...counts, codes });
    else log.info("notification sent", { ...fields, ...counts, ...(codes === "" ? {} : { codes }) });
    return { outcome: "sent", ...counts };
  }

  /** The notification: the preview only as the deployment and the recipient allow. */
  private notification(to: Audience, request: NotificationRequest): PushNotification {
    const preview = to.previews && request.text !== undefined ? notificationPreview(request.text, this.options.previewChars) : undefined;
    return { connectionId: request.connectionId, kind: request.kind, ...(preview === undefined ? {} : { preview }) };
  }

  /** Removes tokens FCM says will never work again; a failure is logged: a token left behind costs one more failed send. */
  private async removeGone(recipientKey: string, hashes: readonly string[]): Promise<void> {
    const { devices, clock, log } = this.options;
    await devices.updateDevices(recipientKey, removeDevices(hashes, clock())).catch((error: unknown) => {
      log.warn("gone tokens not removed", { tokens: hashes.length, error: error instanceof Error ? error.name : typeof error });
    });
  }
}
