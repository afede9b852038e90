/** The user's data is being erased: nothing new is stored for them until it is (then retry). */
export class ErasureInProgressError extends Error {
  override readonly name = "ErasureInProgressError";
  constructor(readonly retryAfterSeconds: number) {
    super("this user's data is being erased");
  }
}
