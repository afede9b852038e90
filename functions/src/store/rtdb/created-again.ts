import { isDeepStrictEqual } from "node:util";
import type { Database, DataSnapshot } from "firebase-admin/database";
import { closingFields, entryOf } from "../conversation-records";
import { StoreUnavailableError } from "../errors";
import { messageKey, pendingExchangeKey } from "../message-keys";
import { parseStored } from "../parse-stored";
import { isKeyRecordOf, keyRecordSchema, sessionStateSchema, type SessionState } from "../records";
import { isPast } from "./history-reads";
import { isRecord, parsePending } from "./journal";
import { conversationPath, keyRecordChild, messageChild, partialChild, sessionPath, statePath } from "./paths";
import { readOnce, type TransactionEngine } from "./transactions";

/**
 * A session the erasure's second pass keeps (a keyed create's retry created it again, after the
 * cutoff, under an id the first pass erased) rid of what late writes of the erased one left in it:
 * a message's copy sent before the first pass and landing after it writes the erased exchange into
 * `messages`, its key's record into `keys`, and exchange 1's head (title, `created_at`), count and
 * activity into the index entry (docs/conversations.md, Writes racing an erasure). What lies past
 * the session's own state goes: messages past twice its count, key records of another creation
 * (unstamped: of exchanges past its count), partials of no claim it holds; and the entry is written
 * again from the session. A late copy's messages landing at positions the session had reached,
 * after its own copy, are not told apart.
 *
 * Each removal is a transaction that takes only what was read (a copy of the session's own
 * landing there since is kept), and what is removed is decided on a state read after the
 * leftovers were answered (the database answers an instance in order): an exchange whose copy
 * was read is counted in it, a claim whose partial was read is in it.
 */
export async function tidyCreatedAgain(
  on: { readonly db: Database; readonly engine: TransactionEngine; readonly homeEngine: TransactionEngine },
  owner: string,
  sessionId: string,
): Promise<void> {
  const { db, engine } = on;
  const node = db.ref(sessionPath(sessionId));
  const before = await engine.read("read kept session's state", node.child("state/message_count"));
  const countBefore: unknown = before.val();
  if (typeof countBefore !== "number") return;
  const [messages, keys, partials] = await engine.call(
    "read kept session's leftovers",
    Promise.all([readOnce(node.child("messages").orderByKey().startAfter(messageKey(2 * countBefore))), readOnce(node.child("keys")), readOnce(node.child("partials"))]),
  );
  const [stateRead, templateId, templateName, createdAt] = await engine.call(
    "read kept session",
    Promise.all([readOnce(db.ref(statePath(sessionId))), ...["template_id", "template_name", "created_at"].map((field) => readOnce(node.child(field)))]),
  );
  if (!stateRead.exists()) return;
  const state = parseStored(sessionStateSchema, stateRead.val(), statePath(sessionId));
  const claims = new Set(Object.values(state.requests ?? {}).flatMap((entry) => (entry.owner === undefined ? [] : [entry.owner])));
  const leftovers = [
    ...children(messages).filter(([key]) => isPast(key, 2 * state.message_count)).map(([key, value]) => [messageChild(key), value] as const),
    ...children(keys).filter(([, value]) => isLeftoverRecord(value, state)).map(([hash, value]) => [keyRecordChild(hash), value] as const),
    ...children(partials).filter(([key]) => !claims.has(key)).map(([key, value]) => [partialChild(key), value] as const),
  ];
  const meta: Record<string, unknown> = { template_id: templateId?.val(), template_name: templateName?.val(), created_at: createdAt?.val() };
  const entry = conversationPath(owner, sessionId);
  await Promise.all([
    ...leftovers.map(([child, read]) => removeIfUnchanged(engine, `${sessionPath(sessionId)}/${child}`, read)),
    typeof meta.template_id === "string" && typeof meta.template_name === "string" && typeof meta.created_at === "number"
      ? writeEntry(on.homeEngine, entry, { template_id: meta.template_id, template_name: meta.template_name, created_at: meta.created_at }, state, pendingTitle(sessionId, stateRead))
      : Promise.resolve(),
  ]);
  // A close committed since the state was read may have had its copy's closing fields taken back
  // by the entry written above; its commit came before its copy, so a state read now shows it.
  const now = await engine.read("read kept session's state", db.ref(statePath(sessionId)));
  if (!now.exists()) return;
  const closed = parseStored(sessionStateSchema, now.val(), statePath(sessionId));
  if (closed.status === "active") return;
  const { committed } = await on.homeEngine.transact(entry, "close kept session's index entry", (current) => ({ decided: undefined, write: isRecord(current) ? { ...current, status: closed.status, ...closingFields(closed) } : current }));
  if (!committed) throw new StoreUnavailableError("close kept session's index entry");
}

/** The children of a snapshot, by key. */
function children(snapshot: DataSnapshot): [string, unknown][] {
  const found: [string, unknown][] = [];
  snapshot.forEach((child: DataSnapshot) => {
    if (child.key !== null) found.push([child.key, child.val()]);
  });
  return found;
}

/** Whether a stored key record is not the session's (records.ts isKeyRecordOf). */
function isLeftoverRecord(value: unknown, state: SessionState): boolean {
  const record = keyRecordSchema.safeParse(value);
  return record.success && !isKeyRecordOf(record.data, state);
}

/** Exchange 1's title when its copy has not landed yet: its head, in the journal. */
function pendingTitle(sessionId: string, state: DataSnapshot): string | undefined {
  return parsePending(sessionId, state.child("pending").val() as unknown)[pendingExchangeKey(1)]?.head?.title;
}

/** The node at `path` removed in a transaction while it is what was read; otherwise written back as it is. */
async function removeIfUnchanged(engine: TransactionEngine, path: string, read: unknown): Promise<void> {
  const { committed } = await engine.transact(path, "remove late write", (current) => ({ decided: undefined, write: isDeepStrictEqual(current, read) ? null : current }));
  if (!committed) throw new StoreUnavailableError("remove late write");
}

/**
 * The index entry written again from the session, in a transaction (conversation-records.ts
 * entryOf: the fields its creation writes and its closing fields from its state); its title kept only where
 * the entry's `created_at` says this creation wrote it (its creation, or its exchange 1's copy,
 * which may land meanwhile), else exchange 1's head still in its journal, else none.
 */
async function writeEntry(
  engine: TransactionEngine,
  path: string,
  meta: { readonly template_id: string; readonly template_name: string; readonly created_at: number },
  state: SessionState,
  journaled: string | undefined,
): Promise<void> {
  const { committed } = await engine.transact(path, "write kept session's index entry", (current) => {
    // None: left so (a lost entry is written whole by the copy of exchange 1, and one deleted
    // meanwhile, with its session, must not come back).
    if (!isRecord(current)) return { decided: undefined, write: current };
    const title: unknown = current.created_at === meta.created_at ? (current.title ?? journaled) : journaled;
    return { decided: undefined, write: entryOf(meta, state, typeof title === "string" ? title : undefined) };
  });
  if (!committed) throw new StoreUnavailableError("write kept session's index entry");
}
