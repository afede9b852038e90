import type { Database, DataSnapshot, Query } from "firebase-admin/database";
import { z } from "zod";
import { conversationEntrySchema, type ConversationPosition, type ListedConversation, type PositionedMessage, type StoredConversation } from "../conversation-records";
import { StoreDataError } from "../errors";
import { positionOfMessageKey } from "../message-keys";
import { parseStored } from "../parse-stored";
import { chatMessageSchema, partialReplySchema, sessionStateSchema, sessionSummarySchema, ofCreation, type PartialReply } from "../records";
import { isRecord, parsePending, pendingMessages } from "./journal";
import { conversationOwnerKey, conversationPath, conversationsPath, messagePath, partialPath, SESSIONS, sessionPath, statePath, summaryPath } from "./paths";
import { sessionMetaOf } from "./session-meta";
import type { TransactionEngine } from "./transactions";

/**
 * Reads of a user's conversations as a whole: a page of their index, and their sessions read
 * whole (for an export or an erasure), by a query on `user_id` that finds every session the user
 * holds, those created before the index existed included.
 */
export class ConversationReads {
  constructor(
    private readonly db: Database,
    private readonly engine: TransactionEngine,
  ) {}

  /**
   * A page of the index, newest activity first: one query of `limit` entries on the owner's node,
   * ordered by `last_activity` (indexed there by database.rules.json), however many it holds.
   *
   * An entry without the fields its session's creation writes (`template_id`) is one a copy's
   * update wrote back after the entry was deleted (the copy of a message that raced an erasure,
   * landing after its first pass: the second pass deletes it): it names no session, and is left
   * out, the query going on past it so that the page still holds `limit` entries where there are.
   */
  async list(userId: string, limit: number, after: ConversationPosition | undefined): Promise<ListedConversation[]> {
    const owner = conversationOwnerKey(userId);
    const page: ListedConversation[] = [];
    let from = after;
    while (page.length < limit) {
      const wanted = limit - page.length;
      let query: Query = this.db.ref(conversationsPath(owner)).orderByChild("last_activity");
      if (from) query = query.endBefore(from.lastActivity, from.sessionId);
      const snapshot = await this.engine.read("list conversations", query.limitToLast(wanted));
      const found: { sessionId: string; value: unknown }[] = [];
      snapshot.forEach((child: DataSnapshot) => {
        if (child.key !== null) found.push({ sessionId: child.key, value: child.val() });
      });
      // The query answers oldest first.
      found.reverse();
      for (const { sessionId, value } of found) {
        if (!isStrayEntry(value)) page.push({ sessionId, entry: parseStored(conversationEntrySchema, value, conversationPath(owner, sessionId)) });
      }
      const oldest = found.at(-1);
      const lastActivity: unknown = isRecord(oldest?.value) ? oldest.value.last_activity : undefined;
      // Fewer than asked: the index holds no more. An entry without activity sorts oldest of all.
      if (found.length < wanted || !oldest || typeof lastActivity !== "number") break;
      from = { lastActivity, sessionId: oldest.sessionId };
    }
    return page;
  }

  /** The session's partial replies, by key. */
  async partials(sessionId: string): Promise<Record<string, PartialReply>> {
    const snapshot = await this.engine.read("read partial replies", this.db.ref(`${sessionPath(sessionId)}/partials`));
    const partials: Record<string, PartialReply> = {};
    snapshot.forEach((child: DataSnapshot) => {
      if (child.key !== null) partials[child.key] = parseStored(partialReplySchema, child.val(), partialPath(sessionId, child.key));
    });
    return partials;
  }

  /** Up to `limit` of the index's session ids after `after`, by id, with their creation times (0 when an entry has none). */
  async indexKeys(userId: string, after: string | undefined, limit: number): Promise<{ id: string; createdAt: number }[]> {
    if (limit <= 0) return [];
    let query: Query = this.db.ref(conversationsPath(conversationOwnerKey(userId))).orderByKey();
    if (after !== undefined) query = query.startAfter(after);
    const snapshot = await this.engine.read("scan conversation index", query.limitToFirst(limit));
    const keys: { id: string; createdAt: number }[] = [];
    snapshot.forEach((child: DataSnapshot) => {
      const createdAt: unknown = child.child("created_at").val();
      if (child.key !== null) keys.push({ id: child.key, createdAt: typeof createdAt === "number" ? createdAt : 0 });
    });
    return keys;
  }

  /**
   * Up to `limit` of the user's sessions after `after`, by id, each read whole by one query on
   * `user_id` (indexed by database.rules.json): memory holds one page of sessions at a time.
   */
  async userSessions(userId: string, after: string | undefined, limit: number): Promise<StoredConversation[]> {
    if (limit <= 0) return [];
    const byOwner = this.db.ref(SESSIONS).orderByChild("user_id");
    const query = after === undefined ? byOwner.equalTo(userId) : byOwner.startAfter(userId, after).endAt(userId);
    const snapshot = await this.engine.read("read user sessions", query.limitToFirst(limit));
    const sessions: StoredConversation[] = [];
    snapshot.forEach((child: DataSnapshot) => {
      if (child.key !== null) sessions.push(storedConversation(child.key, child.val()));
    });
    return sessions;
  }
}

/**
 * A session node read whole, as the store's records (the journal merged into the messages). An
 * export reads thousands of messages: each is parsed with its schema, and nothing else is copied
 * on the way (a record schema over a node copies it), which keeps the garbage, and so the peak
 * memory of an export, low.
 */
function storedConversation(id: string, raw: unknown): StoredConversation {
  const node = objectAt(raw, sessionPath(id));
  const meta = sessionMetaOf(id, (name) => node[name]);
  const stateNode = objectAt(node.state, statePath(id));
  const stored = objectAt(node.messages ?? {}, `${sessionPath(id)}/messages`);
  const journaled = new Map(pendingMessages(id, parsePending(id, stateNode.pending ?? null)));
  const keys = [...new Set([...Object.keys(stored), ...journaled.keys()])].sort();
  const state = parseStored(sessionStateSchema, stateNode, statePath(id));
  const messages: PositionedMessage[] = [];
  for (const key of keys) {
    // Each keeps its key's position, so that one missing leaves a gap rather than moving those
    // after it into its place. A key that is no message's (written by hand) holds no position
    // and is not one of the conversation's, as for every history read (history-reads.ts); nor is
    // one past the count, read in the same snapshot: an erased session's, a late copy's (history-reads.ts isPast).
    const position = positionOfMessageKey(key);
    if (position === undefined || position > 2 * state.message_count) continue;
    messages.push({ position, message: parseStored(chatMessageSchema, journaled.get(key) ?? stored[key], messagePath(id, key)) });
  }
  const partials = parseStored(z.record(z.string(), partialReplySchema), node.partials ?? {}, `${sessionPath(id)}/partials`);
  const summary = node.summary === undefined ? null : parseStored(sessionSummarySchema, node.summary, summaryPath(id));
  return {
    id,
    meta,
    state,
    messages,
    // One of another creation under the id (an erased session's, whose removal was lost or which
    // landed late) is none of this session's: no reader of it (the export) sees it.
    summary: summary && ofCreation(summary, meta.created_at) ? summary : null,
    partials,
  };
}

/** `value` as a node with children, or a StoreDataError naming `path`. */
function objectAt(value: unknown, path: string): Readonly<Record<string, unknown>> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new StoreDataError(path, "expected an object");
  return value as Readonly<Record<string, unknown>>;
}

/** An index entry a copy's update wrote back after the entry was deleted (see ConversationReads.list). */
function isStrayEntry(value: unknown): boolean {
  return isRecord(value) && value.template_id === undefined;
}
