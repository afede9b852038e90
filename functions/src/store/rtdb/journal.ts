import { z } from "zod";
import { StoreDataError } from "../errors";
import { assistantMessageKey, pendingExchangeKey, seqOfPendingKey, userMessageKey } from "../message-keys";
import { parseStored } from "../parse-stored";
import { chatMessageSchema, DATABASE_KEY, isDoneKey, keyRecordOf, requestEntrySchema, type ChatMessage, type Exchange, type SessionState } from "../records";
import { assertNextCountsOneMore } from "../session-store";
import { conversationPath, isOwnerKey, keyRecordChild, messageChild, partialChild, PARTIALS, pendingPath } from "./paths";

/*
 * The journal: how an exchange reaches `messages` without the session's `state` ever growing.
 *
 * Only `state` is transacted on, and it stays small however long the history and however many
 * keys: an exchange commits atomically into `state/pending` together with the new
 * `message_count` (and its key, done, in `state/requests`); right after, without waiting, the
 * exchange is copied to `messages` and the key to its record in one multi-path update; once that
 * is acknowledged, the next transaction on the state drops both from it. Readers merge `pending`
 * and `messages`, and a claim reads `state` and the key's record, so an instance dying between
 * the steps loses nothing: whoever next transacts on the session copies what is left, and a
 * session that closes has its journal copied before the close returns.
 *
 * Everything here is decided from plain values (the raw `state` node, what this instance knows
 * is copied, a rule's outcome); the adapter (rtdb-store.ts) only sends what is decided.
 */

/**
 * A journal entry: the exchange, the key of the partial reply it completes (removed when it is
 * copied, and written onto the reply in `messages`: pendingMessages), and on exchange 1 the head
 * of the conversation's index entry (copied there with it).
 */
const headSchema = z.object({ title: z.string(), template_id: z.string(), template_name: z.string(), created_at: z.number() });
const pendingSchema = z.record(z.string(), z.object({ user: chatMessageSchema, assistant: chatMessageSchema, partial: z.string().optional(), head: headSchema.optional() }));
export type Pending = z.infer<typeof pendingSchema>;
export type JournalEntry = Pending[string];

/**
 * The names of journal entries whose copy the server acknowledged, for one session: pending
 * exchanges by their key (`e…`), done keys as `keyEntry(hash)`.
 */
export type Copied = ReadonlySet<string>;

/**
 * The index of closed sessions whose copy is not known to have landed (see stateToWrite): a journal
 * left in the state, or, with none, the index entry's closing fields (see `markedUnflushed`).
 */
export const UNFLUSHED = "unflushed_since";
/**
 * How a marked closed session's index entry is named among the journal entries acknowledged as
 * copied: once a copy carrying the closing fields (every copy of a closed session does) is
 * acknowledged, the next transaction drops the mark.
 */
export const CLOSED_INDEX_ENTRY = "i:closed";
/** The index of sessions by their first claim's lease, for the sweep of claims left by requests that died (see stateToWrite). */
export const CLAIMS_LAPSE = "claims_lapse_at";
/**
 * Where the session is listed: the key of its owner's conversation index, written at creation and
 * carried by every transaction, so that each copy of the journal brings the entry up to date (in
 * an update of its own beside the copy: RtdbStore.copyJournal). Sessions created before the index
 * have none.
 */
export const CONVERSATION = "conversation";

/**
 * Which creation of the session a raw `state` node is: its `created_at`, undefined for a node
 * without one (an older version's) or none. What the entries known copied are known of
 * (JournalCopies): the journal of a session created again under an erased id names its entries as
 * the erased one's did.
 */
export function creationOf(node: unknown): number | undefined {
  const createdAt = isRecord(node) ? node.created_at : undefined;
  return typeof createdAt === "number" ? createdAt : undefined;
}

/** How a done key is named among the journal entries acknowledged as copied. */
export function keyEntry(hash: string): string {
  return `k:${hash}`;
}

/** The journal entry of an exchange; `partialKey` names the partial reply it completes, removed with its copy. */
export function journalEntry(exchange: Exchange, partialKey: string | undefined): JournalEntry {
  // The partial's key rides in the entry, so whoever copies the exchange (this instance or, after
  // a crash, the next one to transact) removes the partial in the same update.
  return partialKey === undefined ? exchange : { ...exchange, partial: partialKey };
}

/** The `state` node to write: the state (undefined fields left out at any depth, as RTDB requires) and the journal. */
export function stateNode(state: SessionState, pending: unknown): Record<string, unknown> {
  const journal = isRecord(pending) && Object.keys(pending).length > 0 ? { pending } : {};
  return withoutUndefined({ ...state, ...journal });
}

/**
 * The `state` node a transaction writes, from the raw node it read (`raw`, with its journal), the
 * state its rule read, the state the rule leaves (`next`; undefined: unchanged, which still drops
 * what is copied already, riding on the confirmation), and what this instance knows is copied.
 * `appended`: the exchange the rule counts, journaled under its number.
 */
export function nodeToWrite(
  raw: Readonly<Record<string, unknown>>,
  state: SessionState,
  next: SessionState | undefined,
  copied: Copied | undefined,
  appended?: JournalEntry,
): Record<string, unknown> {
  return withUnflushedKept(raw, withConversation(raw, nodeOfState(raw, state, next, copied, appended)), copied);
}

/**
 * The node with the sweep's mark (`UNFLUSHED`) the raw node had, while the session is closed and
 * no copy of its closing index fields is known to have landed: a mark set for them alone (an empty
 * journal) is not recomputed from the journal as stateToWrite does, so it is carried, until then.
 */
function withUnflushedKept(raw: Readonly<Record<string, unknown>>, node: Record<string, unknown>, copied: Copied | undefined): Record<string, unknown> {
  const mark: unknown = raw[UNFLUSHED];
  if (node[UNFLUSHED] === undefined && typeof mark === "number" && node.status !== "active" && !copied?.has(CLOSED_INDEX_ENTRY)) node[UNFLUSHED] = mark;
  return node;
}

/**
 * The node to write when a closed session's copy failed: marked for the sweep (findUnflushedSessions),
 * which sends the copy again, index entry included, and drops the mark once it landed. A journal left
 * in the state marks it already; with none, the closing index fields would otherwise never be sent again.
 */
export function markedUnflushed(node: Record<string, unknown>): Record<string, unknown> {
  if (node.status === "active" || node[UNFLUSHED] !== undefined) return node;
  const at: unknown = node.ended_at ?? node.last_activity;
  return typeof at === "number" ? { ...node, [UNFLUSHED]: at } : node;
}

/** Whether the state node as stored is marked for the sweep's flush. */
export function isMarkedUnflushed(value: unknown): boolean {
  return isRecord(value) && value[UNFLUSHED] !== undefined;
}

function nodeOfState(raw: Readonly<Record<string, unknown>>, state: SessionState, next: SessionState | undefined, copied: Copied | undefined, appended: JournalEntry | undefined): Record<string, unknown> {
  if (next === undefined) return stateToWrite(state, raw.pending, copied);
  if (appended === undefined) return stateToWrite(next, raw.pending, copied);
  assertNextCountsOneMore(state, next);
  const pending = isRecord(raw.pending) ? raw.pending : {};
  // Only exchange 1 heads the conversation's index entry: later entries need not carry it.
  const entry = next.message_count === 1 || appended.head === undefined ? appended : withoutHead(appended);
  return stateToWrite(next, { ...pending, [pendingExchangeKey(next.message_count)]: entry }, copied);
}

/** The node with the owner key the raw node had (the state's schema does not carry it). */
function withConversation(raw: Readonly<Record<string, unknown>>, node: Record<string, unknown>): Record<string, unknown> {
  const block: unknown = raw[CONVERSATION];
  if (block !== undefined) node[CONVERSATION] = block;
  return node;
}

function withoutHead(entry: JournalEntry): JournalEntry {
  const { head, ...rest } = entry;
  return rest;
}

/**
 * The state node to write: `next`, without what this instance knows is copied already (those
 * journal entries and done keys are in `messages` and `keys` now), and the rest of the journal.
 */
function stateToWrite(next: SessionState, pending: unknown, copied: Copied | undefined): Record<string, unknown> {
  const node =
    !copied || copied.size === 0
      ? stateNode(next, pending)
      : stateNode(withoutCopiedKeys(next, copied), isRecord(pending) ? Object.fromEntries(Object.entries(pending).filter(([key]) => !copied.has(key))) : {});
  // A closed session with a journal left (its copy failed when it closed) is indexed for the
  // sweep, which finishes the copy: no message will come to do it.
  if (next.status !== "active" && isRecord(node.pending)) node[UNFLUSHED] = next.ended_at ?? next.last_activity;
  // So is the first lease of a claim: a request that dies leaves its claim and partial behind,
  // and if no later message of the session drops them, the sweep does.
  const lapse = firstLease(next);
  if (lapse !== undefined) node[CLAIMS_LAPSE] = lapse;
  return node;
}

/** What a committed transaction on `state` left, as the adapter's transaction engine reports it. */
export interface Commit {
  /** The state node as stored now (null for none). */
  readonly value: unknown;
  /** Whether the rule's last run changed the state (and the server committed it). */
  readonly wrote: boolean;
  /** Partial replies of dropped claims, to remove with the copy (see StateRule). */
  readonly strayPartials: readonly string[];
}

/** The copy a commit calls for: an update of the session node, and one of its index entry beside it (see copyJournal). */
export interface CopyPlan {
  /** Paths relative to the session node: exchanges into `messages`, done keys into `keys`, partials removed (null). */
  readonly update: Record<string, unknown>;
  /** The session's entry in its owner's conversation index, as the commit left it (sessions that have one): its path from the root, and its fields. */
  readonly index?: IndexUpdate;
  /** The journal as committed: remembered as copied once the update is acknowledged (see `remember`). */
  readonly entries: Copied;
  /**
   * The session is closed: no message will follow to finish the copy, so it is awaited, and
   * when `entries` is not empty, one more transaction drops them from the state.
   */
  readonly closed: boolean;
}

/**
 * After a commit: what this instance still knows is copied (acknowledged entries the committed
 * journal no longer holds are forgotten; undefined when it knew nothing), and the copy to send,
 * if any. Most commits find it all copied already and call for none. The copy is sent and not
 * awaited (the next transaction drops what it acknowledged), unless the session is closed.
 */
export function planCopy(sessionId: string, commit: Commit, known: Copied | undefined): { known: Copied | undefined; copy?: CopyPlan } {
  if (!isRecord(commit.value)) return { known };
  const raw = commit.value;
  const doneKeys = Object.entries(isRecord(raw.requests) ? raw.requests : {}).filter(([, entry]) => isRecord(entry) && (typeof entry.seq === "number" || entry.flagged === true));
  const closed = raw.status !== "active";
  // A marked closed session's index entry counts as a journal entry: its copy is sent (every copy of
  // a closed session carries the closing fields) until acknowledged, then the mark is dropped.
  const marked = closed && raw[UNFLUSHED] !== undefined ? [CLOSED_INDEX_ENTRY] : [];
  const entries = new Set([...Object.keys(isRecord(raw.pending) ? raw.pending : {}), ...doneKeys.map(([hash]) => keyEntry(hash)), ...marked]);
  const stillKnown = known === undefined ? undefined : new Set([...known].filter((entry) => entries.has(entry)));
  const uncopied = [...entries].filter((entry) => !stillKnown?.has(entry));
  // This transaction closed the session: partials left by requests that died before their commit go too.
  const closing = closed && commit.wrote;
  if (uncopied.length === 0 && !(closed && entries.size > 0) && !closing && commit.strayPartials.length === 0) return { known: stillKnown };
  // Parsed only now, when there is something to copy.
  const pending = parsePending(sessionId, raw.pending ?? null);
  const update: Record<string, unknown> = {};
  for (const [key, message] of pendingMessages(sessionId, pending)) update[messageChild(key)] = message;
  // The partial each exchange completes leaves as the exchange arrives: a listener sees one or the other.
  if (closing) update[PARTIALS] = null;
  else {
    const completed = Object.values(pending).flatMap((entry) => (entry.partial === undefined ? [] : [entry.partial]));
    for (const key of [...completed, ...commit.strayPartials]) if (DATABASE_KEY.test(key)) update[partialChild(key)] = null;
  }
  // Each record stamped with the session's creation: a late copy's is told from the session created again under the id (records.ts keyRecordSchema).
  const createdAt = creationOf(raw);
  for (const [hash, entry] of doneKeys) {
    const record = requestEntrySchema.safeParse(entry);
    const kept = record.success ? keyRecordOf(record.data, createdAt) : undefined;
    if (kept) update[keyRecordChild(hash)] = kept;
  }
  const index = indexUpdate(sessionId, raw, pending);
  return { known: stillKnown, copy: { update, ...(index ? { index } : {}), entries, closed } };
}

/** An update of one index entry: each field on its own path, so the entry keeps what no copy writes. */
export interface IndexUpdate {
  readonly path: string;
  readonly fields: Record<string, unknown>;
}

/**
 * The index entry's fields as the committed state has them, and with exchange 1 its head. `status`
 * follows every copy, `closed` only those of a closed session and never leaves: an earlier copy
 * that lands late can set back the count or the activity until the next copy, never reopen a
 * closed conversation. A closed session has no next copy, so its copies also write the count and
 * activity it closed with where only they write (`closed_count`, `closed_activity`), which the list
 * shows; the late copy still sets back `last_activity`, the field the list is ordered by.
 */
function indexUpdate(sessionId: string, raw: Readonly<Record<string, unknown>>, pending: Pending): IndexUpdate | undefined {
  const owner: unknown = raw[CONVERSATION];
  if (typeof owner !== "string" || !isOwnerKey(owner) || !DATABASE_KEY.test(sessionId)) return undefined;
  const fields: Record<string, unknown> = { ...pending[pendingExchangeKey(1)]?.head };
  fields.last_activity = raw.last_activity;
  fields.message_count = raw.message_count;
  fields.status = raw.status;
  if (raw.status !== "active") {
    fields.closed = raw.status;
    fields.closed_count = raw.message_count;
    fields.closed_activity = raw.last_activity;
  }
  return { path: conversationPath(owner, sessionId), fields };
}

/** What is known to be copied once a copy of `entries` is acknowledged. */
export function remember(known: Copied | undefined, entries: Copied): Copied {
  return new Set([...(known ?? []), ...entries]);
}

/** The journal (`state/pending`) as read; null for none. */
export function parsePending(sessionId: string, raw: unknown): Pending {
  return raw === null ? {} : parseStored(pendingSchema, raw, pendingPath(sessionId));
}

/**
 * The messages of the journaled exchanges, by the keys they take in `messages`: the reply with the
 * key of the partial it completes, which the entry carries once (a reader of the journal and the
 * copy in `messages` both show it on the reply, where a client looks for it).
 */
export function* pendingMessages(sessionId: string, pending: Pending): Iterable<[string, ChatMessage]> {
  for (const [key, exchange] of Object.entries(pending)) {
    const seq = seqOfPendingKey(key);
    if (seq === undefined) throw new StoreDataError(`${pendingPath(sessionId)}/${key}`, "not an exchange key");
    yield [userMessageKey(seq), exchange.user];
    yield [assistantMessageKey(seq), exchange.partial === undefined ? exchange.assistant : { ...exchange.assistant, partial: exchange.partial }];
  }
}

/** When the first of the state's claims lapses; undefined when it holds none. */
function firstLease(state: SessionState): number | undefined {
  let first: number | undefined;
  for (const entry of Object.values(state.requests ?? {})) {
    if (entry.seq === undefined && entry.lease_until !== undefined && (first === undefined || entry.lease_until < first)) first = entry.lease_until;
  }
  return first;
}

/** The state without the done keys this instance knows are copied to their records. */
function withoutCopiedKeys(state: SessionState, copied: Copied): SessionState {
  const requests = Object.entries(state.requests ?? {}).filter(([hash, entry]) => !isDoneKey(entry) || !copied.has(keyEntry(hash)));
  const { requests: all, ...rest } = state;
  return requests.length > 0 ? { ...rest, requests: Object.fromEntries(requests) } : rest;
}

/** A copy without undefined fields at any depth (RTDB refuses them); cheaper than a JSON round trip on every transaction. */
export function withoutUndefined(value: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(value)) {
    if (item === undefined) continue;
    out[key] = isRecord(item) ? withoutUndefined(item) : item;
  }
  return out;
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
