import { z } from "zod";
import { connectionMessageSchema, type ConnectionMessage, type ConnectionState } from "../connection-records";
import type { ConnectionRef } from "../connection-store";
import { messageKey } from "../message-keys";
import { parseStored } from "../parse-stored";
import { isRecord, withoutUndefined, type Copied } from "./journal";
import { connectionMessageChild, connectionPendingPath, listedConnectionChild } from "./paths";

/*
 * A connection's journal: the sessions' protocol (journal.ts) for one message at a time. A message
 * commits into `state/pending/{m…}` together with the new `message_count`, in the one transaction
 * that decides its key; right after, without waiting, it is copied to `messages/{m…}` and, in a
 * second update, the connection moves to its last activity in both users' lists; once both are
 * acknowledged, the next transaction on the state drops it from `pending`. Readers
 * merge `pending` and `messages`, so an instance dying between the steps loses nothing: the next
 * transaction on the connection copies what is left.
 */

const pendingSchema = z.record(z.string(), connectionMessageSchema);
export type PendingMessages = z.infer<typeof pendingSchema>;

/**
 * The `state` node a transaction writes: the state the rule leaves (`next`, or the one read when
 * unchanged), without the journal entries this instance knows are copied, and with `appended`
 * journaled under the new count.
 */
export function connectionNodeToWrite(
  raw: Readonly<Record<string, unknown>>,
  state: ConnectionState,
  next: ConnectionState | undefined,
  copied: Copied | undefined,
  appended?: ConnectionMessage,
): Record<string, unknown> {
  const base = next ?? state;
  const kept = Object.entries(isRecord(raw.pending) ? raw.pending : {}).filter(([key]) => !copied?.has(key));
  if (appended !== undefined) kept.push([messageKey(base.message_count), appended]);
  return withoutUndefined({ ...base, ...(kept.length > 0 ? { pending: Object.fromEntries(kept) } : {}) });
}

/** The copy a commit calls for: the messages from the connection's node, the users' list entries from theirs (see RtdbConnectionStore.copyJournal). */
export interface ConnectionCopy {
  /** Paths from the connection's node: journaled messages into `messages`. */
  readonly messages: Record<string, unknown>;
  /** Paths from the users' lists (`userConnections`): the connection's place in both. */
  readonly listed: Record<string, unknown>;
  /** The journal as committed: remembered as copied once the update is acknowledged. */
  readonly entries: Copied;
  /** The connection is closed: no message will follow to drop the copied entries, so the copy is awaited and they are dropped at once. */
  readonly closed: boolean;
}

/**
 * After a commit (`value`: the state node as stored now; `wrote`: the rule changed it): what this
 * instance still knows is copied, and the copy to send, if any: the journal entries not known to be
 * copied and, when the state changed, the connection's last activity in both users' lists.
 */
export function planConnectionCopy(
  connection: ConnectionRef,
  commit: { readonly value: unknown; readonly wrote: boolean },
  known: Copied | undefined,
): { known: Copied | undefined; copy?: ConnectionCopy } {
  if (!isRecord(commit.value)) return { known };
  const raw = commit.value;
  const pending = parseConnectionPending(connection.id, raw.pending ?? null);
  const entries = new Set(Object.keys(pending));
  const stillKnown = known === undefined ? undefined : new Set([...known].filter((entry) => entries.has(entry)));
  const uncopied = [...entries].filter((entry) => !stillKnown?.has(entry));
  const closed = raw.status === "declined" || raw.status === "ended";
  if (uncopied.length === 0 && !commit.wrote && !(closed && entries.size > 0)) return { known: stillKnown };
  const messages: Record<string, unknown> = {};
  for (const key of uncopied) messages[connectionMessageChild(key)] = pending[key];
  const listed: Record<string, unknown> = {};
  if (commit.wrote && typeof raw.last_activity === "number") {
    for (const userKey of [connection.userKeys.a, connection.userKeys.b]) listed[listedConnectionChild(userKey, connection.id)] = raw.last_activity;
  }
  return { known: stillKnown, copy: { messages, listed, entries, closed } };
}

/** The journal (`state/pending`) as read; null for none. */
export function parseConnectionPending(connectionId: string, raw: unknown): PendingMessages {
  return raw === null ? {} : parseStored(pendingSchema, raw, connectionPendingPath(connectionId));
}
