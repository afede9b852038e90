import type { Database } from "firebase-admin/database";
import { CONVERSATIONS } from "./paths";
import type { TransactionEngine } from "./transactions";

/**
 * A multi-path update (paths from the root) of a session's instance that may touch its owner's
 * conversation index: with sharding (docs/sharding.md) the index is on the home instance and the
 * session on its own, so the update becomes two, each atomic on its own; on the home instance
 * itself it stays one. `index` is absent when the update names no index path, or when both are
 * one database (then `here` carries the whole update).
 */
export function updateAcross(here: Database, home: Database, update: Readonly<Record<string, unknown>>): { readonly here: Promise<void>; readonly index?: Promise<void> } {
  if (here === home) return { here: here.ref().update(update) };
  const { local, listed } = split(update);
  const index = Object.keys(listed).length === 0 ? undefined : home.ref().update(listed);
  return { here: Object.keys(local).length === 0 ? Promise.resolve() : here.ref().update(local), ...(index ? { index } : {}) };
}

/**
 * A deletion of sessions with their index entries (paths from the root), where no failure leaves
 * an entry behind for good. On one database, one update, atomic. Across two, the index entries
 * go first and the sessions only once they landed: sent together, an index half lost beside a
 * session half that landed would leave an entry naming a session that no longer exists, and no
 * later query finds the session to delete it again. In this order a failure leaves the session,
 * which the next run (retention's query on the session's instance) finds and deletes with its
 * entry. Each half under its own deadline (`engine.call`, named `operation`).
 */
export async function deleteAcross(here: Database, home: Database, engine: Pick<TransactionEngine, "call">, operation: string, update: Readonly<Record<string, null>>): Promise<void> {
  if (here === home) return engine.call(operation, here.ref().update(update));
  const { local, listed } = split(update);
  if (Object.keys(listed).length > 0) await engine.call(`${operation}: index entries`, home.ref().update(listed));
  if (Object.keys(local).length > 0) await engine.call(operation, here.ref().update(local));
}

/** `update`'s paths in the conversation index (`listed`), and the others. */
function split<V>(update: Readonly<Record<string, V>>): { readonly local: Record<string, V>; readonly listed: Record<string, V> } {
  const local: Record<string, V> = {};
  const listed: Record<string, V> = {};
  for (const [path, value] of Object.entries(update)) {
    if (path.startsWith(`${CONVERSATIONS}/`)) listed[path] = value;
    else local[path] = value;
  }
  return { local, listed };
}
