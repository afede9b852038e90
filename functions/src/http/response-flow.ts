import type { Writable } from "node:stream";

/**
 * What both adapters (the function's express response, the local server's) share of a request's
 * URL and a response's flow.
 */

/** The query string of a request target (`/path?a=1` gives `a=1`), undefined without one. */
export function queryOf(url: string | undefined): string | undefined {
  const at = url?.indexOf("?") ?? -1;
  return url !== undefined && at >= 0 ? url.slice(at + 1) : undefined;
}

/** Resolves when `response` can take more (its buffer below its high-water mark), or is gone. */
export function drainedOf(response: Writable): Promise<void> {
  if (!response.writableNeedDrain || response.destroyed || response.writableEnded) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      response.off("drain", done);
      response.off("close", done);
      resolve();
    };
    response.on("drain", done);
    response.on("close", done);
  });
}
