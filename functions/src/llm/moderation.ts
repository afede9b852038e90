/** The port through which the session module has a user's message checked before it is kept. */
import { ConfigError } from "../config";
import type { ModelFailure } from "./errors";

/** What the moderation model said of a text. */
export interface ModerationVerdict {
  readonly flagged: boolean;
  /** The categories it flagged (`harassment`, `violence/graphic`...), for the logs: never the text. */
  readonly categories: readonly string[];
}

export interface Moderator {
  /** A label for logs: which adapter answered. */
  readonly name: string;
  /**
   * The verdict on `text`. Rejects with a ModerationUnavailableError when no verdict could be had
   * (the caller chooses to fail open or closed), a ModerationNotSupportedError when the server has
   * no moderation endpoint, a ModerationAbandonedError once `signal` aborts.
   */
  check(text: string, options?: { readonly signal?: AbortSignal }): Promise<ModerationVerdict>;
}

/**
 * Why no verdict came, in the model's terms: `timeout` (none within the deadline), `unavailable`
 * (unreachable, 429, 503), `bad_response` (another refusal, or an answer that is not a verdict).
 */
export type ModerationFailure = ModelFailure;

/** No verdict could be had: an outage, whichever way the caller then goes (open: logged; closed: 503). */
export class ModerationUnavailableError extends Error {
  override readonly name = "ModerationUnavailableError";
  /** The provider's HTTP status, when it answered with one. */
  readonly status: number | undefined;

  constructor(
    readonly failure: ModerationFailure,
    message: string,
    options: { readonly status?: number; readonly cause?: unknown } = {},
  ) {
    super(message, { cause: options.cause });
    this.status = options.status;
  }
}

/**
 * The OpenAI-compatible server has no moderation endpoint or model (it answered 404): a
 * configuration error, not an outage, whatever the outage choice; retrying will not help.
 * Named "ConfigError" in logs, as its base; the message says which setting.
 */
export class ModerationNotSupportedError extends ConfigError {}

/** The caller gave up on the check (its signal aborted): neither a verdict nor an outage. */
export class ModerationAbandonedError extends Error {
  override readonly name = "ModerationAbandonedError";
}

/**
 * A user's message the moderation model flagged: refused with 422, nothing stored. The session
 * module raises it; it lives beside the port whose verdict it carries.
 */
export class MessageFlaggedError extends Error {
  override readonly name = "MessageFlaggedError";

  constructor(readonly categories: readonly string[]) {
    super("the message was flagged by moderation");
  }
}
