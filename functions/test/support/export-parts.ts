import type { Answer, Harness } from "./http-harness";

/** Every part of a user's export at `path`, following its cursors (20 at most: a loop would be a bug). */
export async function allParts(harness: Harness, path: string, userId: string): Promise<Answer[]> {
  const parts: Answer[] = [];
  let cursor: string | null = null;
  do {
    const answer: Answer = await harness.api.call("GET", `${path}?user_id=${userId}${cursor ? `&cursor=${cursor}` : ""}`);
    expect(answer.status).toBe(200);
    parts.push(answer);
    cursor = answer.body.next_cursor as string | null;
  } while (cursor !== null && parts.length < 20);
  return parts;
}
