import type { ModerationOnOutage } from "../config";
import { MessageFlaggedError, ModerationUnavailableError, type Moderator } from "../llm/moderation";
import type { Log, LogFields } from "../log/log";

/**
 * What a path that keeps a user's text asks of moderation (MODERATION): whether the text may go
 * on, the outage choice applied. The one seam every such path goes through: the AI session's
 * message (session/message/moderated-reply.ts, beside the model call), and user-to-user messages
 * (connections/connection-service.ts, before the transaction that stores one), under the same params.
 */
export interface MessageModeration {
  /**
   * Resolves when `text` may go on: not flagged, or no verdict and the outage choice is `open`
   * (logged). Rejects with a MessageFlaggedError (422), a ModerationUnavailableError when no
   * verdict came and the choice is `closed` (503), a ModerationNotSupportedError (the server
   * cannot moderate: a configuration error), or a ModerationAbandonedError once `signal` aborts.
   * `fields` name the message in the logs (a session id, say): never its text.
   */
  admit(text: string, fields: LogFields, signal?: AbortSignal): Promise<void>;
}

export function messageModeration(moderator: Moderator, onOutage: ModerationOnOutage, log: Log): MessageModeration {
  return {
    async admit(text, fields, signal) {
      let verdict;
      try {
        verdict = await moderator.check(text, signal ? { signal } : {});
      } catch (error) {
        if (!(error instanceof ModerationUnavailableError)) throw error;
        const outage = { ...fields, moderator: moderator.name, failure: error.failure, status: error.status, detail: error.message };
        if (onOutage === "closed") {
          log.warn("moderation unavailable, message refused", outage);
          throw error;
        }
        log.warn("moderation unavailable, message let through unchecked", outage);
        return;
      }
      if (!verdict.flagged) return;
      log.info("message flagged", { ...fields, moderator: moderator.name, categories: verdict.categories.join(",") });
      throw new MessageFlaggedError(verdict.categories);
    },
  };
}
