/** The database did not answer in time or refused the connection; the request may be retried. */
export class StoreUnavailableError extends Error {
  override readonly name = "StoreUnavailableError";
  constructor(
    readonly operation: string,
    options?: { cause?: unknown },
  ) {
    super(`database unavailable during ${operation}`, options);
  }
}

/** A stored node does not have the shape the service wrote: an operator must look at it. */
export class StoreDataError extends Error {
  override readonly name = "StoreDataError";
  constructor(readonly path: string, detail: string) {
    super(`unexpected data at ${path}: ${detail}`);
  }
}
