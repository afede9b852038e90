import type { Page } from "playwright-core";
import type { Harness } from "./http-harness";

/** The reads of a list's older pages the page sends from now on (those of `route` with a `cursor`), with their status: pushed as each answers. */
export function olderPageReads(page: Page, route: string): { cursor: string; status: number }[] {
  const reads: { cursor: string; status: number }[] = [];
  page.on("response", (response) => {
    const cursor = new URL(response.url()).searchParams.get("cursor");
    if (response.url().includes(`${route}?`) && cursor !== null) reads.push({ cursor, status: response.status() });
  });
  return reads;
}

/** Deletes the cursor secret, as an operator would (docs/conversations.md, Cursors): every cursor given out so far is refused from then on. */
export async function deleteCursorSecret(harness: Harness): Promise<void> {
  const secret = harness.api.database?.ref("serviceSecrets/cursor");
  if (!secret) throw new Error("the cursor secret lives in the database: a harness on the Realtime Database");
  await secret.remove();
  expect((await secret.once("value")).val()).toBeNull();
}
