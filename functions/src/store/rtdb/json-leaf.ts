/**
 * A record stored as its JSON in one string leaf instead of a tree of fields. @firebase/database
 * (1.1.5, in firebase-admin 14.5) handles a transacted node leaf by leaf: it rebuilds it as a
 * sorted tree and hashes it child by child at every attempt, sends it whole, and does the same
 * with the copy the server sends back to the instance's listener. For a user's usage record
 * (the sessions, their context bounds, the day), transacted twice per message, that was about
 * 0.8 ms of a message's CPU in the cost bench's floor (issue 18); one string costs a fraction.
 * Only records that nothing queries by a field and no client reads can take this form.
 */

/** How a record is written: a tree of fields, or its JSON in one string leaf (either form is read). */
export type RecordForm = "tree" | "json";

/** What to write for `record`: its JSON (which leaves undefined fields out, as the database requires). */
export function toJsonLeaf(record: object): string {
  return JSON.stringify(record);
}

/**
 * The record in a value read: a string is parsed (a string that is not JSON is returned as it
 * is, for the schema to refuse); a tree, as records were stored before, is returned unchanged.
 */
export function fromJsonLeaf(value: unknown): unknown {
  if (typeof value !== "string") return value;
  try {
    return JSON.parse(value) as unknown;
  } catch {
    return value;
  }
}
