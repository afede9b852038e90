import type { PushNotification } from "./push-notification";

/**
 * The port through which connections notify a recipient's devices. An adapter sends one
 * notification to a list of FCM registration tokens and says, for each token, what became of it.
 */

/**
 * - `delivered`: FCM accepted the message for the device;
 * - `token-gone`: the token will never work again; remove it;
 * - `failed`: not sent this time (rate limited, FCM unavailable, a network fault, a cause we
 *   cannot pin on the token); the token stays, and the same send may succeed later.
 */
export type TokenOutcome = "delivered" | "token-gone" | "failed";

export interface TokenResult {
  readonly token: string;
  readonly outcome: TokenOutcome;
  /** The SDK's error code when not delivered (`messaging/message-rate-exceeded`, say): for logs and counts. */
  readonly code?: string;
}

/**
 * The send failed as a whole, for a reason that no token is to blame for, and no token got an
 * answer from FCM:
 * - `auth`: the service's credential was refused or could not be obtained;
 * - `network`: FCM could not be reached;
 * - `config`: the SDK refused the call before sending anything (no project id, say).
 * Only `network` is worth retrying soon.
 */
export type PushFailure = "auth" | "network" | "config";

export class PushSendError extends Error {
  override readonly name = "PushSendError";
  readonly retryable: boolean;

  /** `code`: the SDK's error code, for logs; the SDK's message is not kept, as it may quote a server's answer. */
  constructor(
    readonly failure: PushFailure,
    readonly code: string,
  ) {
    super(`push notification failed as a whole (${failure}: ${code})`);
    this.retryable = failure === "network";
  }
}

export interface PushSender {
  /** A label for logs: which adapter sent. */
  readonly name: string;
  /**
   * Sends `notification` to each distinct token of `tokens` (a token listed twice is sent once)
   * and resolves with one result per distinct token, in their first order; nothing to send
   * resolves with none. A token's failure is its result, never a rejection: the promise rejects
   * only with a PushSendError, when no token got an answer for a reason of the whole call.
   * Any number of tokens: an adapter splits them into calls of at most FCM_MAX_TOKENS_PER_CALL.
   */
  send(notification: PushNotification, tokens: readonly string[]): Promise<readonly TokenResult[]>;
}

/** FCM's limit on one `sendEach` call (firebase-admin 14.5 rejects a longer list outright). */
export const FCM_MAX_TOKENS_PER_CALL = 500;
