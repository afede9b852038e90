import { z } from "zod";
import { sessionStatusSchema, type ChatMessage, type PartialReply, type SessionMeta, type SessionState, type SessionSummary } from "./records";

/**
 * The persisted shapes of a user's conversations as a whole (issue 16): the per-user index the
 * listing reads, and the record that carries an erasure through to its end.
 */

/**
 * One conversation in its owner's index (`/userConversations/{user}/{sessionId}`): what a listing
 * shows of it, so that a page of the listing is one query of its own size, however many sessions
 * the user ever had. Written when the session is created, then by the copy of each commit
 * (store/rtdb/journal.ts): `status` as the last copy saw it, and `closed` once the session is
 * closed, which no later copy removes (a late copy of an earlier commit cannot reopen it). With
 * `closed`, `closed_count` and `closed_activity`: the count and the activity the session closed
 * with, written by closing copies only, so a late copy of an earlier commit cannot set them back as
 * it sets back `message_count` and `last_activity` (absent from entries closed before they existed).
 */
export const conversationEntrySchema = z.object({
  template_id: z.string(),
  template_name: z.string(),
  created_at: z.number(),
  last_activity: z.number(),
  message_count: z.number().int().min(0),
  status: sessionStatusSchema,
  closed: z.enum(["ended", "expired"]).optional(),
  closed_count: z.number().int().min(0).optional(),
  closed_activity: z.number().optional(),
  /** The first user message, cut short (session/conversations/title.ts); absent until exchange 1 is stored. */
  title: z.string().optional(),
});
export type ConversationEntry = z.infer<typeof conversationEntrySchema>;

/** The fields a closed session's entry carries beside its status (see conversationEntrySchema); none while it is active. */
export function closingFields(state: SessionState): Pick<ConversationEntry, "closed" | "closed_count" | "closed_activity"> {
  return state.status === "active" ? {} : { closed: state.status, closed_count: state.message_count, closed_activity: state.last_activity };
}

/**
 * A session's entry in its owner's index, from its fields and its state: what its creation writes,
 * the closing fields once it is closed, and its title when one is known. The database's copies keep
 * it so field by field (store/rtdb/journal.ts); the memory store and the reads that rebuild an
 * entry from the session derive it whole here.
 */
export function entryOf(meta: Pick<SessionMeta, "template_id" | "template_name" | "created_at">, state: SessionState, title?: string): ConversationEntry {
  return {
    template_id: meta.template_id,
    template_name: meta.template_name,
    created_at: meta.created_at,
    last_activity: state.last_activity,
    message_count: state.message_count,
    status: state.status,
    ...closingFields(state),
    ...(title === undefined ? {} : { title }),
  };
}

export interface ListedConversation {
  readonly sessionId: string;
  readonly entry: ConversationEntry;
}

/** A place in a listing, newest activity first: the entries after it are older, or as old with a smaller id. */
export interface ConversationPosition {
  readonly lastActivity: number;
  readonly sessionId: string;
}

/** A stored message with its position in the conversation (1-based: exchange n is 2n-1 and 2n). */
export interface PositionedMessage {
  readonly position: number;
  readonly message: ChatMessage;
}

/** Everything stored of one session that belongs to its user, as an export or an erasure reads it. */
export interface StoredConversation {
  readonly id: string;
  readonly meta: SessionMeta;
  /** Read at the same moment as `messages` (one snapshot of the session). */
  readonly state: SessionState;
  /**
   * Every stored exchange's messages (the journal's included), oldest first, each with the
   * position its key gives: a message missing from the store leaves a gap in the positions, and
   * the messages after it keep theirs.
   */
  readonly messages: readonly PositionedMessage[];
  readonly summary: SessionSummary | null;
  readonly partials: Readonly<Record<string, PartialReply>>;
}

/**
 * An erasure of one user's data, kept under their usage key (`/erasures/{userKey}`) from before
 * the first deletion until the last pass: so that a crash never leaves a user half-erased (the
 * sweep finishes what a request started), and so that the second pass knows what to delete
 * again. `user_id`, `sessions` and `connections` are needed by that pass and leave with the record.
 * `requested_at` is the cutoff: what the user created up to it is erased (for a user deleted from
 * Auth, when the last ID token they were issued expires, so it can lie ahead: erasure-service.ts).
 * - `erasing`: the first pass has not finished; `due_at` is when the sweep may take it over (the
 *   request that started it has ended by then, whatever became of it).
 * - `settling`: everything was deleted once; at `due_at` (the longest a request that raced the
 *   erasure can still write: a claim's lease) the second pass deletes it all again, then the record.
 */
export const erasureRecordSchema = z.object({
  user_id: z.string(),
  requested_at: z.number(),
  phase: z.enum(["erasing", "settling"]),
  due_at: z.number(),
  /** The sessions deleted so far, for the second pass. */
  sessions: z.record(z.string(), z.literal(true)).optional(),
  /** The connections deleted so far, each with the other user's key (their list names it too), for the second pass. */
  connections: z.record(z.string(), z.string()).optional(),
});
export type ErasureRecord = z.infer<typeof erasureRecordSchema>;

/** Decides an erasure record's next value (null: remove it) from the stored one; applied atomically. */
export type ErasureRule<O> = (record: ErasureRecord | null) => { readonly outcome: O; readonly next?: ErasureRecord | null };
