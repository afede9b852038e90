import { ERROR_CODES, type ErrorCode } from "./error-codes";

/** A request the boundary refuses before any business rule runs: wrong method, path, body. */
export class HttpError extends Error {
  override readonly name = "HttpError";
  /** The code's, from the shared list. */
  readonly status: number;
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly headers: Readonly<Record<string, string>> = {},
    readonly details?: readonly FieldIssue[],
  ) {
    super(message);
    this.status = ERROR_CODES[code].status;
  }
}

export interface FieldIssue {
  readonly field: string;
  readonly message: string;
}
