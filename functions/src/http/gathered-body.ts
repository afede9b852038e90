import type { StreamedResult } from "./endpoints";

/**
 * A body produced in pieces, gathered whole: for a boundary that cannot stream one (an adapter
 * without a sink, a callable). Held in memory, so only where no stream can be had.
 */
export async function gatheredBody(result: StreamedResult): Promise<Record<string, unknown>> {
  const pieces: string[] = [];
  await result.produce({ write: async (text) => void pieces.push(text) });
  return JSON.parse(pieces.join("")) as Record<string, unknown>;
}
