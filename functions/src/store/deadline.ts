import { StoreUnavailableError } from "./errors";

/**
 * Realtime Database calls queue until a connection exists and may wait forever; every call
 * the service makes gets its own deadline so a request fails fast with a clear error instead.
 * The underlying call is not cancelled (the SDK cannot), so callers must only time out
 * operations whose late completion leaves the data consistent.
 */
export async function withDeadline<T>(operation: string, ms: number, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => { reject(new StoreUnavailableError(operation)); }, ms);
  });
  try {
    return await Promise.race([work, expired]);
  } catch (error) {
    if (error instanceof StoreUnavailableError) throw error;
    throw new StoreUnavailableError(operation, { cause: error });
  } finally {
    clearTimeout(timer);
  }
}
