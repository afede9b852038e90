import type { Database, DataSnapshot } from "firebase-admin/database";
import { erasureRecordSchema, type ErasureRecord, type ErasureRule } from "../conversation-records";
import { StoreDataError, StoreUnavailableError } from "../errors";
import { parseStored } from "../parse-stored";
import { createKeySchema, DATABASE_KEY, type CreateKey } from "../records";
import { isUnchangedCreateKey, refusedClaim, type StoredCreateKey } from "../session-store";
import { conversationOwnerKey, conversationPath, CREATE_KEYS, createKeyPath, erasurePath, sessionPath } from "./paths";
import { updateAcross } from "./home-writes";
import type { TransactionEngine } from "./transactions";

/** The writes of an erasure beside the sessions' own: its record, and the deletions across the tree. */
export class ErasureWrites {
  constructor(
    private readonly db: Database,
    private readonly engine: TransactionEngine,
    /** Where the conversation index is (docs/sharding.md): `db` itself unless sharded. */
    private readonly home: Database = db,
  ) {}

  /** Applies `rule` to the record in a transaction; a next of null removes it. */
  async update<O>(userKey: string, rule: ErasureRule<O>): Promise<O> {
    const path = erasurePath(userKey);
    const { decided, committed } = await this.engine.transact(path, "update erasure", (current) => {
      const record = current === null ? null : erasureRecordSchema.safeParse(current);
      if (record !== null && !record.success) throw new StoreDataError(path, record.error.issues[0]?.message ?? "invalid");
      const { outcome, next } = rule(record === null ? null : record.data);
      // "No change" writes the record back as it is, so the server confirms it (see TransactionEngine.transact).
      return { decided: outcome, write: next === undefined ? current : next === null ? null : withoutUndefined(next) };
    });
    if (!committed) throw new StoreUnavailableError("update erasure");
    return decided as O;
  }

  async readSessions(userKey: string): Promise<ReadonlySet<string>> {
    const snapshot = await this.engine.read("read erased sessions", this.db.ref(`${erasurePath(userKey)}/sessions`));
    const sessions = new Set<string>();
    snapshot.forEach((child: DataSnapshot) => {
      if (child.key !== null) sessions.add(child.key);
    });
    return sessions;
  }

  async recordSessions(userKey: string, sessionIds: readonly string[]): Promise<void> {
    const ids = sessionIds.filter((id) => DATABASE_KEY.test(id));
    if (ids.length === 0) return;
    // A transaction, so that ids never land under a record that is gone (they would make half a record).
    await this.update(userKey, (record) => (record ? { outcome: undefined, next: { ...record, sessions: { ...record.sessions, ...Object.fromEntries(ids.map((id) => [id, true as const])) } } } : { outcome: undefined }));
  }

  async deleteSessions(userId: string, sessionIds: readonly string[]): Promise<void> {
    const owner = conversationOwnerKey(userId);
    const update: Record<string, null> = {};
    for (const id of sessionIds) {
      // Ids come from the index or a query: a key that is not one cannot name a session.
      if (!DATABASE_KEY.test(id)) continue;
      update[sessionPath(id)] = null;
      update[conversationPath(owner, id)] = null;
    }
    if (Object.keys(update).length === 0) return;
    // Both halves at once, unlike retention's deleteAcross: a failure of either fails the erasure's
    // step, which stays due, and its next pass finds what is left (the index, entries whose session
    // is gone included, and the ids it recorded), so no half is left for good.
    const { here, index } = updateAcross(this.db, this.home, update);
    await this.engine.call("delete user sessions", Promise.all([here, index]));
  }

  /** The user's create keys after `after`, by the indexed query on `user_key` (in key order among equal values). */
  async readCreateKeys(userKey: string, after: string | undefined, limit: number): Promise<StoredCreateKey[]> {
    if (limit <= 0) return [];
    const byUser = this.db.ref(CREATE_KEYS).orderByChild("user_key");
    const query = after === undefined ? byUser.equalTo(userKey) : byUser.startAfter(userKey, after).endAt(userKey);
    const snapshot = await this.engine.read("read user create keys", query.limitToFirst(limit));
    const keys: StoredCreateKey[] = [];
    snapshot.forEach((child: DataSnapshot) => {
      if (child.key !== null) keys.push({ hash: child.key, key: parseStored(createKeySchema, child.val(), createKeyPath(child.key)) });
    });
    return keys;
  }

  /** A repeat's take-over landing since the read changes the record (`adopted_at`), and it stays. */
  deleteUnchangedCreateKey(hash: string, read: CreateKey): Promise<boolean> {
    return this.deleteCreateKeyWhile(hash, "delete unchanged create key", (stored) => isUnchangedCreateKey(stored, read));
  }

  /** Decided in a transaction, on the server's record; only the mark is added, fields this version does not know kept. */
  async refuseCreateKey(hash: string, read: CreateKey): Promise<boolean> {
    const path = createKeyPath(hash);
    const { decided, committed } = await this.engine.transact(path, "refuse create key", (current) => {
      const unchanged = current !== null && isUnchangedCreateKey(parseStored(createKeySchema, current, path), read);
      return { decided: unchanged, write: unchanged ? { ...(current as Record<string, unknown>), refused_at: refusedClaim(read).refused_at } : current };
    });
    if (!committed) throw new StoreUnavailableError("refuse create key");
    return decided === true;
  }

  /**
   * Removes the record under `hash` while `removable` says so of it, decided in a transaction on
   * the server's record: a delete that did not look could take away a claim or a take-over made
   * since. Kept, the record is written back as it is. True when it went.
   */
  async deleteCreateKeyWhile(hash: string, operation: string, removable: (stored: CreateKey) => boolean): Promise<boolean> {
    const path = createKeyPath(hash);
    const { decided, committed } = await this.engine.transact(path, operation, (current) => {
      const gone = current !== null && removable(parseStored(createKeySchema, current, path));
      return { decided: gone, write: gone ? null : current };
    });
    if (!committed) throw new StoreUnavailableError(operation);
    return decided === true;
  }
}

function withoutUndefined(record: ErasureRecord): Record<string, unknown> {
  return JSON.parse(JSON.stringify(record)) as Record<string, unknown>;
}
