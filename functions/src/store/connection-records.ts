import { z } from "zod";

/**
 * The persisted shapes of connections between users and of their devices, shared by every store
 * adapter (the session's are in records.ts). docs/connections.md draws the tree.
 */

/**
 * A participant by their place in the pair: `a` is the user id that sorts first, `b` the other.
 * State refers to participants this way, never by user id: a user id may hold characters a
 * database key may not (`.`, `#`, `$`, `/`, `[`, `]`).
 */
export const participantSchema = z.enum(["a", "b"]);
export type Participant = z.infer<typeof participantSchema>;

/** `pending`: asked, not answered; `accepted`: messages flow; `declined` and `ended` are final. */
export const connectionStatusSchema = z.enum(["pending", "accepted", "declined", "ended"]);
export type ConnectionStatus = z.infer<typeof connectionStatusSchema>;
export type ClosedStatus = Extract<ConnectionStatus, "declined" | "ended">;

/** The fields written once when a connection is created and never changed (`connections/{id}/meta`). */
export const connectionMetaSchema = z.object({
  user_a: z.string(),
  user_b: z.string(),
  requested_by: participantSchema,
  created_at: z.number(),
  /** The pair's key (`connectionPairs/{pair}`), where blocks and the pair's current connection are kept. */
  pair: z.string(),
});
export type ConnectionMeta = z.infer<typeof connectionMetaSchema>;

/** A token bucket: `tokens` left as of `refilled_at`. */
export const bucketSchema = z.object({ tokens: z.number(), refilled_at: z.number() });
export type Bucket = z.infer<typeof bucketSchema>;

/** Per participant, when set: who blocked, and since when. */
export const blocksSchema = z.object({ a: z.number().optional(), b: z.number().optional() });
export type Blocks = z.infer<typeof blocksSchema>;

/**
 * The small mutable part of a connection (`connections/{id}/state`): the only node transacted on,
 * per message and per change of status, so a message's key, its count and every status change are
 * decided in one order. Its journal (`pending`, messages committed and not yet copied to
 * `messages`) rides beside these fields and is read by the adapter, not by the rules.
 */
export const connectionStateSchema = z.object({
  status: connectionStatusSchema,
  /** Messages stored: the last one's key is `m` + this count, zero-padded to 9 digits. */
  message_count: z.number().int().min(0),
  /** The last message's timestamp, or the last change of status: never goes back. */
  last_activity: z.number(),
  accepted_at: z.number().optional(),
  /** When it was declined or ended, and by whom. */
  closed_at: z.number().optional(),
  closed_by: participantSchema.optional(),
  /** While either participant blocks the other, no message is taken from either. */
  blocked: blocksSchema.optional(),
  /** The pair's `block_version` whose blocks `blocked` copies: an older copy is never taken over a newer one. */
  block_version: z.number().int().min(0).optional(),
  /** Each participant's messages-per-minute bucket in this connection. */
  rate: z.object({ a: bucketSchema.optional(), b: bucketSchema.optional() }).optional(),
  /**
   * The `Idempotency-Key`s of the last keyed messages (their hashes), with the message count each
   * stored: a retry finds its message here, in the same transaction that would otherwise store it again.
   */
  recent_keys: z.record(z.string(), z.number().int().min(1)).optional(),
  /**
   * The `Idempotency-Key`s (their hashes) of the last keyed messages moderation flagged, never in
   * `recent_keys` too: a send with the same key (racing the flagged one, or a retry) is refused as
   * flagged in its own transaction, unless its text's `fingerprint` differs (the key reused). `at`:
   * when it was flagged, the order in which the oldest is forgotten. Absent in a state an older
   * version wrote; an older version drops it when it next writes the state.
   */
  flagged_keys: z.record(z.string(), z.object({ fingerprint: z.string(), at: z.number() })).optional(),
});
export type ConnectionState = z.infer<typeof connectionStateSchema>;

/** One message between the two users, as stored under `connections/{id}/messages/{m…}`. */
export const connectionMessageSchema = z.object({
  sender_id: z.string(),
  content: z.string(),
  timestamp: z.number(),
});
export type ConnectionMessage = z.infer<typeof connectionMessageSchema>;

/**
 * What two users have together (`connectionPairs/{pair}`, the key a hash of their ids): their
 * current connection (the one a request answers with, until it closes) and their blocks. Requests
 * and blocks are transactions here, so that one pair has one open connection however many
 * requests race.
 */
export const pairRecordSchema = z.object({
  /** Absent once one of them was erased: the record then keeps only the other's block (connections/erasure-rules.ts). */
  user_a: z.string().optional(),
  user_b: z.string().optional(),
  /**
   * In a record kept that way only: the user key of the one whose block it keeps, by which their
   * own erasure finds it (indexed) and removes it. Absent in a record an older version kept.
   */
  blocker_key: z.string().optional(),
  /** Everything its connection's node is created from: whoever finds it missing creates the very same node. */
  current: z.object({ id: z.string(), requested_by: participantSchema, created_at: z.number() }).optional(),
  /** The blocks that hold between the two: the source of truth their connections copy. */
  blocked: blocksSchema.optional(),
  /** Counts the changes of `blocked` (absent: none yet), so that a connection tells a newer copy of them from an older one. */
  block_version: z.number().int().min(0).optional(),
});
export type PairRecord = z.infer<typeof pairRecordSchema>;

/** One registered device: its FCM registration token and when it was last registered. */
export const deviceSchema = z.object({ token: z.string(), updated_at: z.number() });
export type Device = z.infer<typeof deviceSchema>;

/**
 * A user's devices (`userDevices/{userKey}`): their tokens by the token's hash, at most
 * MAX_DEVICES, the recipient's own preview setting with the claim time of the registration that
 * set it (`previews_at`: an older one landing late leaves it; absent in a record an older version
 * kept), the tokens released from them (`released`, by hash: the time of the claim that took each,
 * or of their unregistration, up to which an add of theirs landing late adds nothing; kept 60 days,
 * STALE_AFTER_MS, at most MAX_RELEASES, the newest), and the oldest time among the tokens and
 * releases, which the sweep of stale ones queries.
 */
export const deviceRecordSchema = z.object({
  tokens: z.record(z.string(), deviceSchema).optional(),
  previews: z.boolean().optional(),
  previews_at: z.number().optional(),
  released: z.record(z.string(), z.number()).optional(),
  oldest_at: z.number().optional(),
});
export type DeviceRecord = z.infer<typeof deviceRecordSchema>;

/**
 * Which user a token is registered to (`deviceTokens/{tokenHash}`): a token moves to the last user
 * who registers it (a token with no record gets one naming the user who unregisters it, which
 * orders their next claim after it: `unregisterToken`). The claim that moves it commits here
 * before the token leaves the former owner's devices (another record, another transaction), so
 * the record keeps each user the token is still to leave, with the time of the claim that took it
 * from them (`released_from`), until that removal is confirmed: a retry, a later registration or
 * the sweep finds it here and does it again. `releasing_since`, the earliest of those times, is
 * what the sweep queries (indexed).
 */
export const tokenOwnerSchema = z.object({
  user_key: z.string(),
  updated_at: z.number(),
  released_from: z.record(z.string(), z.number()).optional(),
  releasing_since: z.number().optional(),
});
export type TokenOwner = z.infer<typeof tokenOwnerSchema>;
