import type { Database, DataSnapshot } from "firebase-admin/database";
import { erasureRecordSchema, type ErasureRecord, type ErasureRule } from "../conversation-records";
import { StoreDataError, StoreUnavailableError } from "../errors";
import { parseStored } from "../parse-stored";
import { createKeySchema, DATABASE_KEY, type CreateKey } from "../records";
import { isUnchangedCreateKey, refusedClaim, type ErasedSessions, type StoredCreateKey } from "../session-store";
import { conversationOwnerKey, conversationPath, CREATE_KEYS, createKeyPath, erasurePath, sessionFieldPath, sessionPath } from "./paths";
import { tidyCreatedAgain } from "./created-again";
import { updateAcross } from "./home-writes";
import { isRecord } from "./journal";
import type { TransactionEngine } from "./transactions";

/** The writes of an erasure beside the sessions' own: its record, and the deletions across the tree. */
export class ErasureWrites {
  constructor(
    private readonly db: Database,
    private readonly engine: TransactionEngine,
    /** Where the conversation index is (docs/sharding.md): `db` itself unless sharded. */
    private readonly home: Database = db,
    /** Transactions on `home` (`engine` itself when it is `db`). */
    private readonly homeEngine: TransactionEngine = engine,
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

  /** The record read whole (its ids and its cutoff at once): it is there only while its erasure runs. */
  async readSessions(userKey: string): Promise<ErasedSessions | null> {
    const path = erasurePath(userKey);
    const value: unknown = (await this.engine.read("read erased sessions", this.db.ref(path))).val();
    if (value === null) return null;
    const record = parseStored(erasureRecordSchema, value, path);
    return { requestedAt: record.requested_at, ids: new Set(Object.keys(record.sessions ?? {})) };
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

  /**
   * Each id on its own: its `created_at` read first (a session created after `cutoff` is left
   * untouched, its node never downloaded); otherwise the node and the index entry each removed in a
   * transaction that keeps it when its `created_at` says created after `cutoff` (a session or an
   * entry written since the read: the create of a keyed retry sends both, the entry first). What a
   * late write left (a partial, a copy of messages, an entry a copy wrote back) has no such field,
   * or the erased session's, and goes. Both at once, as deleteSessions: a failure fails the step.
   * Returns the ids whose node held a session created up to `cutoff`, unless their entry was kept:
   * one written ahead of its node, created after `cutoff`, is a keyed retry's whose node is on its way.
   * A session kept is rid of what late writes of the erased one left in it, its entry written
   * again from it (tidyCreatedAgain): nothing of the erased session outlives this pass.
   */
  async deleteSessionsUpTo(userId: string, sessionIds: readonly string[], cutoff: number): Promise<ReadonlySet<string>> {
    const owner = conversationOwnerKey(userId);
    const ids = sessionIds.filter((id) => DATABASE_KEY.test(id));
    const deleted = await Promise.all(
      ids.map(async (id) => {
        const createdAt: unknown = (await this.engine.read("read erased session's creation", this.db.ref(sessionFieldPath(id, "created_at")))).val();
        if (!createdAfter(createdAt, cutoff)) {
          const [session, entry] = await Promise.all([
            this.removeUnlessCreatedAfter(this.engine, sessionPath(id), cutoff, "delete erased session again"),
            this.removeUnlessCreatedAfter(this.homeEngine, conversationPath(owner, id), cutoff, "delete erased index entry again"),
          ]);
          if (session !== "kept") return session === "session" && entry !== "kept" ? id : undefined;
        }
        await tidyCreatedAgain({ db: this.db, engine: this.engine, homeEngine: this.homeEngine }, owner, id);
        return undefined;
      }),
    );
    return new Set(deleted.filter((id): id is string => id !== undefined));
  }

  /**
   * The node at `path` removed in a transaction, unless created after `cutoff` (then written back
   * as it is, for the server to confirm). Says what it found: a node created after `cutoff`
   * ("kept"), one created up to it ("session"), or anything else ("other": nothing, or a late
   * write's leftovers, with no `created_at`).
   */
  private async removeUnlessCreatedAfter(engine: TransactionEngine, path: string, cutoff: number, operation: string): Promise<"kept" | "session" | "other"> {
    const { decided, committed } = await engine.transact(path, operation, (current) => {
      const createdAt = isRecord(current) ? current.created_at : undefined;
      if (createdAfter(createdAt, cutoff)) return { decided: "kept" as const, write: current };
      return { decided: typeof createdAt === "number" ? ("session" as const) : ("other" as const), write: null };
    });
    if (!committed || decided === undefined) throw new StoreUnavailableError(operation);
    return decided;
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

/** Whether a stored `created_at` says created after `cutoff`: a number past it (anything else is no session's). */
function createdAfter(createdAt: unknown, cutoff: number): boolean {
  return typeof createdAt === "number" && createdAt > cutoff;
}

function withoutUndefined(record: ErasureRecord): Record<string, unknown> {
  return JSON.parse(JSON.stringify(record)) as Record<string, unknown>;
}
