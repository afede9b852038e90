import { z } from "zod";

/**
 * The persisted shapes, shared by every store adapter. Data read back from a database is
 * parsed with these schemas, so a hand-edited or corrupted node surfaces as a clear error
 * instead of flowing into a prompt as `undefined`.
 */

/** A key safe to use as one Realtime Database path segment (no `/ . # $ [ ]`, no `..`). */
export const DATABASE_KEY = /^[A-Za-z0-9_-]{1,64}$/;

export const roleSchema = z.enum(["user", "assistant"]);
export type Role = z.infer<typeof roleSchema>;

/**
 * A token count. One stored past the safe integer range (an earlier version summed whatever a
 * provider reported) reads as the largest safe one: the session works again, and its next write
 * stores the bounded value.
 */
const tokenCount = z
  .number()
  .min(0)
  .refine(Number.isInteger, "must be an integer")
  .transform((count) => Math.min(count, Number.MAX_SAFE_INTEGER));

/**
 * What one model call used: the tokens as the provider reported them, or, when it reported none,
 * an estimate marked `estimated`; `cost_usd` where the model's price is known (llm/model-table.ts).
 */
export const tokenUsageSchema = z.object({
  prompt_tokens: tokenCount,
  completion_tokens: tokenCount,
  total_tokens: tokenCount,
  estimated: z.literal(true).optional(),
  cost_usd: z.number().min(0).optional(),
});
export type TokenUsage = z.infer<typeof tokenUsageSchema>;

/**
 * A reply's model call, kept with the exchange: its usage, the service's own estimate of the
 * prompt it sent (`prompt_estimate`, which calibrates the next estimates of the session), where
 * the prompt's history began (`window_from`: the next one never reaches back past it), and the summary
 * call that ran beside it, if one was kept or abandoned.
 */
export const replyUsageSchema = tokenUsageSchema.extend({
  prompt_estimate: tokenCount.optional(),
  /** With a token budget or a summary: the position of the first history message the prompt sent (the new message's when none). */
  window_from: z.number().int().min(1).optional(),
  summary: tokenUsageSchema.optional(),
});
export type ReplyUsage = z.infer<typeof replyUsageSchema>;

export const chatMessageSchema = z.object({
  role: roleSchema,
  content: z.string(),
  timestamp: z.number(),
  /** On a reply the model stopped at the token limit. */
  truncated: z.literal(true).optional(),
  /** On a reply: what its model call (and a summary call beside it) used. */
  usage: replyUsageSchema.optional(),
  /**
   * On a reply written as a live partial: that partial's key (its request's random claim owner),
   * stored with the exchange that completes it, so that a client hides the partial once the reply
   * that completes it is stored, whatever other exchanges landed first (docs/api.md, live partial replies).
   */
  partial: z.string().optional(),
});
export type ChatMessage = z.infer<typeof chatMessageSchema>;

/** Optional per-template overrides of the generation defaults. */
export const generationOverridesSchema = z.object({
  model: z.string().min(1).max(200).optional(),
  temperature: z.number().min(0).max(2).optional(),
  max_tokens: z.number().int().min(1).max(100_000).optional(),
  presence_penalty: z.number().min(-2).max(2).optional(),
  frequency_penalty: z.number().min(-2).max(2).optional(),
  /** History messages sent with each request. */
  context_window: z.number().int().min(0).max(200).optional(),
  /** The prompt's token budget: system prompt, summary, history and the new message together. */
  context_tokens: z.number().int().min(1).max(2_000_000).optional(),
  /** Keep a rolling summary of the messages that left the window, sent after the system prompt. */
  summary: z.boolean().optional(),
});

export const templateSchema = generationOverridesSchema.extend({
  name: z.string().min(1),
  personalityPrompt: z.string().min(1),
});
export type Template = z.infer<typeof templateSchema>;

export const generationSettingsSchema = z.object({
  model: z.string().min(1),
  temperature: z.number(),
  max_tokens: z.number().int(),
  presence_penalty: z.number(),
  frequency_penalty: z.number(),
  context_window: z.number().int().min(0),
  context_tokens: z.number().int().min(1).optional(),
  summary: z.boolean().optional(),
});
export type GenerationSettings = z.infer<typeof generationSettingsSchema>;

/** The fields written once when a session is created and never changed afterwards. */
export const sessionMetaSchema = z.object({
  user_id: z.string(),
  template_id: z.string(),
  template_name: z.string(),
  system_prompt: z.string(),
  settings: generationSettingsSchema,
  created_at: z.number(),
});
export type SessionMeta = z.infer<typeof sessionMetaSchema>;

export const sessionStatusSchema = z.enum(["active", "ended", "expired"]);
export type SessionStatus = z.infer<typeof sessionStatusSchema>;

/**
 * A message request a session knows of: one that holds a slot while its model call runs (a claim:
 * `owner` until `lease_until`), or, for a request with an `Idempotency-Key` (stored under the key's
 * hash), what it came to, kept for replays: the exchange it produced (`seq`), or `flagged` when
 * moderation refused it (a repeat gets the same refusal, without a model call). `fingerprint`
 * identifies the body.
 */
export const requestEntrySchema = z.object({
  fingerprint: z.string(),
  seq: z.number().int().min(1).optional(),
  flagged: z.literal(true).optional(),
  owner: z.string().optional(),
  lease_until: z.number().optional(),
});
export type RequestEntry = z.infer<typeof requestEntrySchema>;

/** A key whose request is over and answered for good (an exchange stored, or flagged): kept for replays, never a claim. */
export function isDoneKey(entry: RequestEntry): boolean {
  return entry.seq !== undefined || entry.flagged === true;
}

/**
 * A done `Idempotency-Key` moved out of the state, beside the session
 * (`/userSessions/{id}/keys/{hash}`): the exchange it produced, or that moderation flagged its
 * message, kept for replays. `created_at`: its session's creation (the state's `created_at` when
 * the key moved), as a summary's: a late copy of an erased session's can land under the id a keyed
 * create's retry created the session again under, and is not the new one's (ofCreation). Absent in
 * records older versions wrote, and when the state had none.
 */
export const keyRecordSchema = z.union([
  z.object({ fingerprint: z.string(), seq: z.number().int().min(1), created_at: z.number().optional() }),
  z.object({ fingerprint: z.string(), flagged: z.literal(true), created_at: z.number().optional() }),
]);
export type KeyRecord = z.infer<typeof keyRecordSchema>;

/** The record a done key's state entry moves to, stamped with `createdAt` (its state's); undefined for an entry still a claim. */
export function keyRecordOf(entry: RequestEntry, createdAt: number | undefined): KeyRecord | undefined {
  const stamp = createdAt === undefined ? {} : { created_at: createdAt };
  if (entry.seq !== undefined) return { fingerprint: entry.fingerprint, seq: entry.seq, ...stamp };
  return entry.flagged === true ? { fingerprint: entry.fingerprint, flagged: true, ...stamp } : undefined;
}

/**
 * The small mutable part of a session: the only node transacted on while the session lasts (its
 * deletion ends with a transaction on the session's node, by then holding little more than this).
 */
export const sessionStateSchema = z.object({
  status: sessionStatusSchema,
  message_count: z.number().int().min(0),
  last_activity: z.number(),
  /** `last_activity` while active, absent once closed: the index the expiry sweep queries. */
  idle_since: z.number().optional(),
  ended_at: z.number().optional(),
  /**
   * On an expiry, when it was recorded (the time of the transaction that expired the session; its
   * `ended_at` is when the TTL ran out, possibly long before): retention waits for the copies sent
   * as it closed (session/session-rules.ts `retentionRule`). An end is recorded at its `ended_at`.
   * Absent in states older versions wrote.
   */
  closed_at: z.number().optional(),
  requests: z.record(z.string(), requestEntrySchema).optional(),
  /** What the session's model calls used so far, summary calls included. */
  usage: tokenUsageSchema.optional(),
  /**
   * The session's `created_at`, written into its state at creation: which creation of the id the
   * state is. A keyed create's retry can create a session again under an id an erasure deleted, and
   * what an instance keeps of the earlier one (its fields and history warm, the journal entries it
   * knows copied) must not pass for the new one's; the claim and the commit read the state anyway,
   * so they tell at no cost (ofCreation, rtdb/journal-copies.ts).
   * Absent in states older versions wrote (they also drop it when they write a state): such a
   * state cannot be told apart.
   */
  created_at: z.number().optional(),
});
export type SessionState = z.infer<typeof sessionStateSchema>;

/** One user message and the model's reply, stored together or not at all. */
export interface Exchange {
  readonly user: ChatMessage;
  readonly assistant: ChatMessage;
  /** On an exchange that may be its session's first (its claim saw none stored): what exchange 1 tells the owner's conversation index. */
  readonly head?: ConversationHead;
}

/**
 * What a conversation's first exchange gives its entry in the owner's index: its title (the first
 * user message cut short, session/conversations/title.ts) and the fields fixed at creation, written
 * again with it (so an entry whose creation was lost is whole from the first exchange on).
 */
export interface ConversationHead {
  readonly title: string;
  readonly template_id: string;
  readonly template_name: string;
  readonly created_at: number;
}

/** What a `createSession` with an `Idempotency-Key` left behind, under the key's hash. */
export const createKeySchema = z.object({
  fingerprint: z.string(),
  session_id: z.string(),
  created_at: z.number(),
  /** The owner's usage key (a hash of the user id), so that an erasure finds the user's keys. */
  user_key: z.string().optional(),
  /**
   * A repeat took the claim over (found it, its session not there yet, and went on to create that
   * session): the request that claimed it no longer gives it back. Absent in records of older versions.
   */
  adopted: z.literal(true).optional(),
  /**
   * When a repeat last took the claim over (that request's time), written by every take-over: the
   * record changes with each, so that the erasure's conditional delete of a key it found dead
   * (`isUnchangedCreateKey`) leaves one a repeat took over since, whose create may be running.
   * Absent in records of older versions.
   */
  adopted_at: z.number().optional(),
  /**
   * The claim or take-over (its time: `adopted_at`, else `created_at`) that was refused for its
   * user's erasure (`409 ERASURE_IN_PROGRESS`), written by that request once refused. Only such a
   * key, still as its refused request left it (`isRefusedCreateKey`), is one the erasure's second
   * pass may delete: any other key with no session may be a create whose fate is unknown, which its
   * retry needs. A later take-over moves `adopted_at` past it. Absent in records of older versions.
   */
  refused_at: z.number().optional(),
});
export type CreateKey = z.infer<typeof createKeySchema>;

/**
 * One user's use of the service, kept in the database so that limits hold across instances:
 * a token bucket for messages, and the sessions counted as active (by last activity).
 */
export const userUsageSchema = z.object({
  tokens: z.number(),
  refilled_at: z.number(),
  sessions: z.record(z.string(), z.number()).optional(),
  /** Model tokens used or reserved on `day` (UTC, YYYY-MM-DD), and their cost where known. */
  // A cost that is not a number reads as none: a record a version before 2026-12-07 wrote with a NaN
  // cost (a model named "constructor" priced from Object.prototype) holds `null`, and the user's
  // limits must still be read; the day's cost only informs.
  daily: z.object({ day: z.string(), tokens: z.number().min(0), cost_usd: z.number().min(0).optional().catch(undefined) }).optional(),
  /**
   * Per live session, what bounds its next prompt when its tokens are reserved (see session/ledger/limits.ts):
   * the bound, the reservations open (admitted, not settled) as of `at` (its last admission), and
   * the highest claim count (plus one) of a settled message. `held`: each open reservation, with
   * when it was admitted, its tokens and the day whose count holds it (`day`: absent in records of
   * older versions, taken as the day of `at`), so that each lapses on its own; a record an older version wrote has none, its `open`
   * reservations all counted as admitted at `at`. `unanchored`: the bound was started from the
   * session's first prompt and no settlement has set it to a real call's since (it may miss
   * history). `answered`: the latest answer of the session's settled messages (never before its
   * own arrival). `since`: the session's last activity that no reservation in `held` accounts for
   * (its creation, a settled answer, or an admission forgotten unsettled), 0 for a session not
   * counted before them. A refund puts the session's count back to the latest of `since`,
   * `answered` and the admissions still in `held`. `unanchored`, `answered` and `since` are absent
   * in records of older versions.
   */
  contexts: z
    .record(
      z.string(),
      z.object({
        tokens: z.number().min(0),
        open: z.number().int().min(0),
        landed: z.number().int().min(0),
        at: z.number(),
        held: z.record(z.string(), z.object({ at: z.number(), tokens: z.number().min(0), day: z.string().optional() })).optional(),
        unanchored: z.literal(true).optional(),
        answered: z.number().optional(),
        since: z.number().optional(),
      }),
    )
    .optional(),
  /**
   * The user's open reservations that no session's context holds any more: those of a session whose
   * count was released (ended, given back) while a message of it ran, entries as in `held`, keyed
   * apart from any session, until each settles or lapses (session/ledger/limits.ts heldApart).
   * Absent in records of older versions, and dropped by them when they write the record.
   */
  released_held: z.record(z.string(), z.object({ at: z.number(), tokens: z.number().min(0), day: z.string().optional() })).optional(),
  /** Sessions ended within the last few minutes, with when: a message admitted after the end is refused, a keyed create's repeat counts nothing (session/ledger/limits.ts releaseEnded). */
  ended: z.record(z.string(), z.number()).optional(),
  /** Since when the user's data is being erased: new sessions and messages are refused until it is (see session/erasure/). */
  erasing: z.number().optional(),
  /** The user's requests for connections to other users: a token bucket refilled over an hour (connections/request-limit.ts). */
  connection_requests: z.object({ tokens: z.number(), refilled_at: z.number() }).optional(),
});
export type UserUsage = z.infer<typeof userUsageSchema>;

/**
 * One shard of the deployment's model tokens counted on `day` (UTC, YYYY-MM-DD), and their cost
 * where known (`/serviceUsage/{shard}`; see session/ledger/service-cap.ts).
 */
export const serviceUsageSchema = z.object({
  day: z.string(),
  tokens: z.number().min(0),
  cost_usd: z.number().min(0).optional(),
  /**
   * Of `tokens`, what reservations not yet settled hold, and when the last of them lapses (a request
   * cannot run longer): what makes a refusal's Retry-After short. Absent (an older version's shard): none.
   */
  held: z.number().min(0).optional(),
  held_until: z.number().optional(),
});
export type ServiceUsage = z.infer<typeof serviceUsageSchema>;

/**
 * The sessions a network address may still create: a token bucket, refilled over an hour, and
 * the keyed sessions it paid for within the hour, by a hash of their id, with when (`/addressUsage/{hash}`; see
 * session/ledger/address-limit.ts).
 */
export const addressUsageSchema = z.object({ tokens: z.number(), refilled_at: z.number(), sessions: z.record(z.string(), z.number()).optional() });
export type AddressUsage = z.infer<typeof addressUsageSchema>;

/**
 * A reply being written, kept beside the session (`/userSessions/{id}/partials/{key}`, the key
 * being the writing request's random claim owner) so that a client listening to the session sees
 * it grow. `seq_after`: the `message_count` its request's claim saw, so the exchange it becomes is
 * numbered later (a client drops the partial once a stored reply carries its key, or, for replies
 * stored before they carried keys, once one without a key is stored past it). `updated_at`: when
 * the text was last written (epoch ms, the instance's clock): a partial not updated for longer
 * than a claim's lease belongs to a request that died and never completes.
 */
export const partialReplySchema = z.object({
  text: z.string(),
  seq_after: z.number().int().min(0),
  updated_at: z.number(),
});
export type PartialReply = z.infer<typeof partialReplySchema>;

/**
 * A session's rolling summary, beside it (`/userSessions/{id}/summary`), never in `state`: the
 * gist of its messages 1 to `through` (message positions: exchange n is 2n-1 and 2n), which left
 * the context window. Replaced only by a summary that reaches further.
 */
export const sessionSummarySchema = z.object({
  text: z.string().min(1),
  through: z.number().int().min(1),
  updated_at: z.number(),
  /**
   * The `created_at` of the session it summarises: an erased id created again by a keyed create's
   * retry is another session, which neither reads nor keeps it. Absent in summaries older versions
   * wrote: taken as the session's.
   */
  created_at: z.number().optional(),
});
export type SessionSummary = z.infer<typeof sessionSummarySchema>;

/**
 * Whether a record stamped with its session's creation (its state, its summary) is of the session
 * created at `createdAt` (its fields' `created_at`), not of another created under its id since: a
 * keyed create's retry can create a session again under an id an erasure deleted
 * (docs/conversations.md, Writes racing an erasure), and what was kept of the deleted one (its
 * history, its fields, its summary) is not the new one's, though its exchange count may be the
 * same. A record older versions wrote carries no stamp and cannot be told apart: taken as it.
 */
export function ofCreation(record: { readonly created_at?: number | undefined }, createdAt: number): boolean {
  return record.created_at === undefined || record.created_at === createdAt;
}

/**
 * Whether a key record is the session's whose state is `state`, not an erased session's that a
 * late copy wrote under the id a keyed create's retry created the session again under
 * (docs/conversations.md, Writes racing an erasure): stamped with the state's creation (a record or
 * a state without a stamp is taken as the session's: ofCreation), and, for a record older versions
 * wrote without one, naming no exchange past the state's count (a record of the session's never
 * does: it is written once its exchange is counted; a flagged one names none).
 */
export function isKeyRecordOf(record: KeyRecord, state: SessionState): boolean {
  if (state.created_at !== undefined && !ofCreation(record, state.created_at)) return false;
  return !("seq" in record && record.seq > state.message_count);
}

/**
 * Whether `summary` takes the place of `stored`: one that reaches further, of the same creation.
 * Of two creations of one id, the later one's always stands: an erased session's summary landing
 * on the session created again under its id is replaced by that session's first, and never
 * replaces one of it. Summaries without a stamp are compared by their reach alone.
 */
export function replacesSummary(stored: SessionSummary | null, summary: SessionSummary): boolean {
  if (!stored) return true;
  if (stored.created_at !== undefined && summary.created_at !== undefined && stored.created_at !== summary.created_at) return summary.created_at > stored.created_at;
  return summary.through > stored.through;
}
