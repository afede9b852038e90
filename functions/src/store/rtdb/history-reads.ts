import type { Database, DataSnapshot, Query } from "firebase-admin/database";
import { StoreDataError } from "../errors";
import { assistantMessageKey, messageKey, positionOfMessageKey, userMessageKey } from "../message-keys";
import { parseStored } from "../parse-stored";
import { chatMessageSchema, type ChatMessage, type Exchange } from "../records";
import type { HistoryWindow } from "../session-store";
import { parsePending, pendingMessages } from "./journal";
import { messagePath, messagesPath, sessionFieldPath, statePath } from "./paths";
import { readOnce, type TransactionEngine } from "./transactions";

/** Reads of a history that showed a gap before the newest messages are given up on: see `window`. */
const HISTORY_READ_ATTEMPTS = 3;

/** A session's messages as readers see them: `messages` merged with the exchanges still in the journal. */
export class HistoryReads {
  constructor(
    private readonly db: Database,
    private readonly engine: TransactionEngine,
  ) {}

  /** The last `limit` messages, oldest first, and the exchange they reach. */
  async window(sessionId: string, limit: number): Promise<HistoryWindow> {
    if (limit <= 0) return { messages: [], through: 0 };
    let keys: string[] = [];
    let byKey = new Map<string, unknown>();
    for (let attempt = 0; attempt < HISTORY_READ_ATTEMPTS; attempt += 1) {
      byKey = await this.acrossJournal(sessionId, "read history", (messages) => messages.orderByKey().limitToLast(limit));
      keys = [...byKey.keys()].sort().slice(-limit);
      // Instances copy their exchanges to `messages` independently, so a later exchange can land
      // there before an earlier one that was committed after the journal was read: a gap. The
      // earlier one is in the journal or in `messages` by the time a later copy is seen; read again.
      if (contiguousFrom(keys) === 0) break;
    }
    const window = keys.slice(contiguousFrom(keys));
    const last = window.at(-1);
    return {
      messages: window.map((key) => parseStored(chatMessageSchema, byKey.get(key), messagePath(sessionId, key))),
      through: last === undefined ? 0 : Math.floor(Number(last.slice(1)) / 2),
    };
  }

  /**
   * The messages at positions `first` to `last` (1-based, inclusive), oldest first: every one of
   * them the database holds (a caller numbers them from `first`), however far this instance's copy
   * of the state trails it. A position the session's count includes that is in neither `messages`
   * nor the journal is bad stored data (a message removed by hand): StoreDataError naming it. A
   * session deleted meanwhile reads as none.
   */
  async messages(sessionId: string, first: number, last: number): Promise<ChatMessage[]> {
    if (last < first || last < 1) return [];
    const start = Math.max(1, first);
    const [from, to] = [messageKey(start), messageKey(last)];
    const read = async () => {
      const byKey = await this.acrossJournal(sessionId, "read messages", (messages) => messages.orderByKey().startAt(from).endAt(to));
      return { byKey, keys: [...byKey.keys()].filter((key) => key >= from && key <= to).sort() };
    };
    let { byKey, keys } = await read();
    if (missingUpTo(keys, start, last) !== undefined) {
      // Positions past the session's end, or a copy that trails: an instance holding the state's
      // listener reads `pending` from its copy, which trails the database as far as its link is
      // slow, and `messages` from the server, so an exchange committed after that copy and not
      // copied yet is in neither read (a page before a position the reader was shown would stop
      // short of it, and the reader skip it). Once the read of `messages` is answered, the copy
      // holds every change the database made before answering it (it sends an instance's
      // answers and pushes in order), so the count read now says which positions exist; a read
      // again takes its journal from a copy at least this new.
      const reach = Math.min(last, 2 * (await this.exchangeCount(sessionId)));
      if (missingUpTo(keys, start, reach) !== undefined) {
        ({ byKey, keys } = await read());
        // No copy trails now: an exchange the count includes is in that journal, or left it only
        // once its copy in `messages` landed. Missing still, it was removed from `messages` since:
        // by a deletion under way, or by hand. Reading again would find the same, for ever.
        const missing = missingUpTo(keys, start, reach);
        if (missing !== undefined) {
          if (!(await this.sessionExists(sessionId))) return [];
          throw new StoreDataError(messagePath(sessionId, messageKey(missing)), "missing, though the session's message_count includes it");
        }
      }
    }
    return keys.map((key) => parseStored(chatMessageSchema, byKey.get(key), messagePath(sessionId, key)));
  }

  /** Exchange number `seq`, or null when it is not stored. */
  async exchange(sessionId: string, seq: number): Promise<Exchange | null> {
    if (!Number.isInteger(seq) || seq < 1) return null;
    const [userKey, assistantKey] = [userMessageKey(seq), assistantMessageKey(seq)];
    const byKey = await this.acrossJournal(sessionId, "read exchange", (messages) => messages.orderByKey().startAt(userKey).endAt(assistantKey));
    const [user, assistant] = [byKey.get(userKey), byKey.get(assistantKey)];
    if (user === undefined || assistant === undefined) return null;
    return { user: parseStored(chatMessageSchema, user, messagePath(sessionId, userKey)), assistant: parseStored(chatMessageSchema, assistant, messagePath(sessionId, assistantKey)) };
  }

  /** The session's `message_count` (0 for none), read as the journal is: from the listener's copy where one is held. */
  private async exchangeCount(sessionId: string): Promise<number> {
    const snapshot = await this.engine.read("read messages", this.db.ref(`${statePath(sessionId)}/message_count`));
    const count: unknown = snapshot.val();
    return typeof count === "number" ? count : 0;
  }

  /**
   * Whether the session still has its fields, read after a history read was answered (the
   * database answers an instance in order): a deletion that removed its history by then removed
   * them too, in the same update (retention's, RtdbStore.deleteSession, before the state; an
   * erasure's, with the whole node).
   */
  private async sessionExists(sessionId: string): Promise<boolean> {
    return (await this.engine.read("read messages", this.db.ref(sessionFieldPath(sessionId, "user_id")))).exists();
  }

  /**
   * Messages read with `query`, merged with the exchanges still journaled in `state/pending`.
   * The state is read first (both requests leave together, in this order, on one connection, and
   * a listened `state` answers from what the server last sent): an exchange leaves `pending`
   * only after its copy in `messages` landed, so it is seen on one side or the other, never on neither.
   * A message past the count read with it is left out: one committed since (read again, it is
   * counted), or one no exchange of this creation wrote, which only a late copy of an erased
   * session writes, under the id a keyed create's retry created the session again under
   * (docs/conversations.md, Writes racing an erasure).
   */
  private async acrossJournal(sessionId: string, operation: string, query: (messages: Query) => Query): Promise<Map<string, unknown>> {
    const stateRead = readOnce(this.db.ref(statePath(sessionId)));
    const [state, stored] = await this.engine.call(operation, Promise.all([stateRead, readOnce(query(this.db.ref(messagesPath(sessionId))))]));
    const count: unknown = state.child("message_count").val();
    const reach = typeof count === "number" ? 2 * count : 0;
    const byKey = new Map<string, unknown>();
    stored.forEach((child: DataSnapshot) => {
      if (child.key !== null && !isPast(child.key, reach)) byKey.set(child.key, child.val());
    });
    for (const [key, message] of pendingMessages(sessionId, parsePending(sessionId, state.child("pending").val()))) byKey.set(key, message);
    return byKey;
  }
}

/** Whether `key` is a message's whose position is past `reach` (a key that is no message's holds no position). */
export function isPast(key: string, reach: number): boolean {
  const position = positionOfMessageKey(key);
  return position !== undefined && position > reach;
}

/** The first position from `start` through `upTo` that `keys` (message keys from `start` on, sorted) lack; undefined when they hold them all. */
function missingUpTo(keys: readonly string[], start: number, upTo: number): number | undefined {
  let expected = start;
  for (const key of keys) {
    const position = positionOfMessageKey(key);
    // A key that is no message's (one written by hand) holds no position.
    if (position === undefined) continue;
    if (position > upTo) break;
    if (position !== expected) return expected;
    expected += 1;
  }
  return expected <= upTo ? expected : undefined;
}

/**
 * Where the run of consecutive message keys ending at the last one starts: 0 when `keys` (sorted)
 * has no gap. A gap left after every attempt falls out of the window, which keeps the messages
 * after it: a shorter window, but one that is a true stretch of the conversation (a page of a
 * connection's messages too: rtdb-connection-store.ts).
 */
export function contiguousFrom(keys: readonly string[]): number {
  for (let i = keys.length - 1; i > 0; i -= 1) {
    if (Number(keys[i]?.slice(1)) !== Number(keys[i - 1]?.slice(1)) + 1) return i;
  }
  return 0;
}
