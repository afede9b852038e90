import type { ClosedStatus } from "../store/connection-records";

export class ConnectionNotFoundError extends Error {
  override readonly name = "ConnectionNotFoundError";
  constructor(readonly connectionId: string) {
    super("connection not found");
  }
}

/** The connection was asked for and not accepted yet: no message can be sent in it. */
export class ConnectionPendingError extends Error {
  override readonly name = "ConnectionPendingError";
  constructor() {
    super("the connection is not accepted yet");
  }
}

/** A decline of a connection that was accepted: it can only be ended now. */
export class ConnectionNotPendingError extends Error {
  override readonly name = "ConnectionNotPendingError";
  constructor() {
    super("the connection is not a pending request");
  }
}

/** The connection was declined or ended: final; its history stays readable. */
export class ConnectionClosedError extends Error {
  override readonly name = "ConnectionClosedError";
  constructor(readonly status: ClosedStatus) {
    super(`connection ${status}`);
  }
}

/** One of the two users blocks the other: no request, message or notification between them. */
export class ConnectionBlockedError extends Error {
  override readonly name = "ConnectionBlockedError";
  constructor() {
    super("connection blocked");
  }
}

/** The user asked for too many connections this hour (CONNECTION_REQUESTS_PER_HOUR). */
export class ConnectionRequestLimitError extends Error {
  override readonly name = "ConnectionRequestLimitError";
  constructor(readonly retryAfterSeconds: number) {
    super("connection request limit reached");
  }
}
