import { createHash } from "node:crypto";

/**
 * Idempotency keys are chosen by clients: they are stored only as hashes (safe as database
 * keys, nothing a client typed ends up in a path) and scoped, so that two users' keys, or
 * one user's keys for two endpoints, never collide.
 */
export function keyHash(scope: string, key: string): string {
  return sha256(`${scope}\u0000${key}`).slice(0, 40);
}

/** What makes two requests "the same request" for a key: the fields the endpoint acts on. */
export function fingerprint(...fields: readonly string[]): string {
  return sha256(fields.join("\u0000"));
}

function sha256(text: string): string {
  return createHash("sha256").update(text, "utf8").digest("hex");
}
