/** A request the boundary refuses before any business rule runs: wrong method, path, body. */
export class HttpError extends Error {
  override readonly name = "HttpError";
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Readonly<Record<string, string>> = {},
    readonly details?: readonly FieldIssue[],
  ) {
    super(message);
  }
}

export interface FieldIssue {
  readonly field: string;
  readonly message: string;
}
