import type { SessionStatus } from "../store/records";

export class SessionNotFoundError extends Error {
  override readonly name = "SessionNotFoundError";
  constructor(readonly sessionId: string) {
    super("session not found");
  }
}

export class TemplateNotFoundError extends Error {
  override readonly name = "TemplateNotFoundError";
  constructor(readonly templateId: string) {
    super(`template "${templateId}" not found`);
  }
}

/** The session no longer accepts changes: it was ended or it expired. */
export class SessionClosedError extends Error {
  override readonly name = "SessionClosedError";
  constructor(readonly status: Exclude<SessionStatus, "active">) {
    super(`session has ${status}`);
  }
}
