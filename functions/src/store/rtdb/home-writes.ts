import type { Database } from "firebase-admin/database";
import { CONVERSATIONS } from "./paths";

/**
 * A multi-path update (paths from the root) of a session's instance that may touch its owner's
 * conversation index: with sharding (docs/sharding.md) the index is on the home instance and the
 * session on its own, so the update becomes two, each atomic on its own; on the home instance
 * itself it stays one. `index` is absent when the update names no index path, or when both are
 * one database (then `here` carries the whole update).
 */
export function updateAcross(here: Database, home: Database, update: Readonly<Record<string, unknown>>): { readonly here: Promise<void>; readonly index?: Promise<void> } {
  if (here === home) return { here: here.ref().update(update) };
  const local: Record<string, unknown> = {};
  const listed: Record<string, unknown> = {};
  for (const [path, value] of Object.entries(update)) {
    if (path.startsWith(`${CONVERSATIONS}/`)) listed[path] = value;
    else local[path] = value;
  }
  const index = Object.keys(listed).length === 0 ? undefined : home.ref().update(listed);
  return { here: Object.keys(local).length === 0 ? Promise.resolve() : here.ref().update(local), ...(index ? { index } : {}) };
}
