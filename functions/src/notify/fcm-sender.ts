import type { Message, Messaging, SendResponse } from "firebase-admin/messaging";
import type { NotificationKind, PushNotification } from "./push-notification";
import { FCM_MAX_TOKENS_PER_CALL, PushSendError, type PushFailure, type PushSender, type TokenResult } from "./push-sender";

/** What a device shows when the app does not render the notification itself; fixed words, never user content. */
const TITLES: Readonly<Record<NotificationKind, string>> = {
  message: "New message",
  request: "New connection request",
};

/**
 * The FCM v1 message for one device: the connection and the kind as data, the preview (if any) as
 * the body. Addressed by registration token: firebase-admin 14.5 marks token messages deprecated
 * in favour of Firebase Installation IDs, but sends them as before, and devices register tokens.
 */
export function fcmMessage(notification: PushNotification, token: string): Message {
  return {
    token,
    data: { connectionId: notification.connectionId, kind: notification.kind },
    notification: {
      title: TITLES[notification.kind],
      ...(notification.preview === undefined ? {} : { body: notification.preview }),
    },
  };
}

/** The token will never work again: FCM no longer knows it. */
const TOKEN_GONE = "messaging/registration-token-not-registered";
/** The token is malformed, or the payload is: only a success for another token with the same payload says which. */
const INVALID_ARGUMENT = "messaging/invalid-argument";

/**
 * Codes that blame the service, not a token: its credential was refused or could not be obtained.
 * Not `messaging/mismatched-credential`: firebase-admin 14.5 maps both FCM's 403 PERMISSION_DENIED
 * (the service account may not send) and SENDER_ID_MISMATCH (this token belongs to another
 * project) to it, and a token's fault must not fail the call; a service without the permission
 * shows as every token failed with that code.
 */
const AUTH_CODES = new Set([
  "app/invalid-credential",
  "messaging/authentication-error",
  // FCM's 401 UNAUTHENTICATED (a refused access token) maps here in firebase-admin 14.5, as do APNs and Web Push credential faults.
  "messaging/third-party-auth-error",
]);
const NETWORK_CODES = new Set(["app/network-error", "app/network-timeout"]);

function callFailureOf(code: string): Exclude<PushFailure, "config"> | undefined {
  if (AUTH_CODES.has(code)) return "auth";
  return NETWORK_CODES.has(code) ? "network" : undefined;
}

interface Answer extends TokenResult {
  /** Set when the token's failure is the whole call's (auth or network), not the token's own. */
  readonly callFailure?: Exclude<PushFailure, "config">;
}

/**
 * The FCM adapter: `sendEach` of firebase-admin's Messaging, in calls of at most 500 tokens, one
 * after another, so that a long list never has more than one call's requests in flight.
 *
 * Production runs firebase-admin's default transport, HTTP/2 to fcm.googleapis.com; the contract
 * test runs the legacy HTTP/1.1 transport against a local fake (FCM has no emulator). Both
 * transports share the SDK's request building, its retries and its mapping of FCM's answers to
 * error codes; they differ in how a dead connection is reported, which `errorCodeOf` reads.
 */
export function createFcmSender(messaging: Pick<Messaging, "sendEach">): PushSender {
  return {
    name: "fcm",
    async send(notification: PushNotification, tokens: readonly string[]): Promise<readonly TokenResult[]> {
      const distinct = [...new Set(tokens)];
      const answers: Answer[] = [];
      for (let start = 0; start < distinct.length; start += FCM_MAX_TOKENS_PER_CALL) {
        const chunk = distinct.slice(start, start + FCM_MAX_TOKENS_PER_CALL);
        let responses: readonly SendResponse[];
        try {
          // sendEach itself rejects only before sending (a bad argument, no project id or no way to find it); each token's fault is in its response.
          responses = (await messaging.sendEach(chunk.map((token) => fcmMessage(notification, token)))).responses;
        } catch (error) {
          const code = errorCodeOf(error);
          throw new PushSendError(callFailureOf(code) ?? "config", code);
        }
        answers.push(...chunk.map((token, index) => answerOf(token, responses[index])));
        const whole = wholeCallFailure(answers);
        if (whole) throw whole;
      }
      // A payload FCM took for one device is a valid payload: an invalid argument elsewhere is that token's.
      const payloadAccepted = answers.some((answer) => answer.outcome === "delivered");
      return answers.map(({ callFailure, ...result }) => (result.code === INVALID_ARGUMENT && payloadAccepted ? { ...result, outcome: "token-gone" } : result));
    },
  };
}

function answerOf(token: string, response: SendResponse | undefined): Answer {
  if (response?.success) return { token, outcome: "delivered" };
  const code = response?.error ? errorCodeOf(response.error) : "messaging/unknown-error";
  if (code === TOKEN_GONE) return { token, outcome: "token-gone", code };
  const callFailure = callFailureOf(code);
  return callFailure ? { token, outcome: "failed", code, callFailure } : { token, outcome: "failed", code };
}

/**
 * The PushSendError to throw when every token so far failed for a reason of the whole call
 * (auth before network: a refused credential is the one to fix), else undefined. Once any token
 * got an answer of its own, the call is not failed as a whole: each result says what happened.
 */
function wholeCallFailure(answers: readonly Answer[]): PushSendError | undefined {
  if (!answers.every((answer) => answer.callFailure !== undefined)) return undefined;
  const first = answers.find((answer) => answer.callFailure === "auth") ?? answers[0];
  return first?.callFailure ? new PushSendError(first.callFailure, first.code ?? "") : undefined;
}

/**
 * The error's code, looking through firebase-admin's HTTP/2 wrapper: with the default transport
 * (firebase-admin 14.5), when the connection to FCM fails every stream's error is
 * `messaging/unknown-error` whose cause is an AggregateError of the stream's error and the
 * session's, each `app/network-error` (or `app/network-timeout`); the legacy transport reports
 * the `app/network-*` error itself.
 */
function errorCodeOf(error: unknown): string {
  const code = codeProperty(error) ?? "unknown";
  if (code === "messaging/unknown-error" && error instanceof Error && error.cause instanceof AggregateError) {
    const causes: unknown[] = error.cause.errors;
    const network = causes.map(codeProperty).find((inner) => inner !== undefined && NETWORK_CODES.has(inner));
    if (network !== undefined) return network;
  }
  return code;
}

function codeProperty(error: unknown): string | undefined {
  if (typeof error !== "object" || error === null || !("code" in error)) return undefined;
  return typeof error.code === "string" ? error.code : undefined;
}
