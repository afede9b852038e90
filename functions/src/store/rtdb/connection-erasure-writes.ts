import type { Database, DataSnapshot } from "firebase-admin/database";
import type { z } from "zod";
import { ownedUpTo, type ErasingRule, type ListedForErasure } from "../connection-erasure-store";
import { connectionMetaSchema, tokenOwnerSchema, type ConnectionMeta, type TokenOwner } from "../connection-records";
import type { ConnectionRef } from "../connection-store";
import { StoreDataError, StoreUnavailableError } from "../errors";
import { parseStored } from "../parse-stored";
import { DATABASE_KEY } from "../records";
import { CONNECTION_PAIRS, CONNECTIONS, connectionMetaPath, connectionPath, DEVICE_TOKENS, listedConnectionPath, tokenOwnerPath, userConnectionsPath } from "./paths";
import type { TransactionEngine } from "./transactions";

/**
 * The Realtime Database's side of erasing a user's connections and devices (the port is
 * connection-erasure-store.ts): queries on the user's id over `connections` and `connectionPairs`
 * and on their key over `connectionPairs` (`blocker_key`) and `deviceTokens` (each indexed in
 * database.rules.json), and deletions in
 * multi-path updates or, where another user may be writing the same record, transactions.
 */
export class ConnectionErasureWrites {
  constructor(
    private readonly db: Database,
    private readonly engine: TransactionEngine,
  ) {}

  async scanListed(userKey: string, after: string | undefined, limit: number): Promise<ListedForErasure[]> {
    const byKey = this.db.ref(userConnectionsPath(userKey)).orderByKey();
    const snapshot = await this.engine.read("scan listed connections", (after === undefined ? byKey : byKey.startAfter(after)).limitToFirst(limit));
    const ids = keysOf(snapshot);
    return Promise.all(
      ids.map(async (id) => {
        // A list entry's key came from a write, not from a user: one that is no key cannot name a connection.
        if (!DATABASE_KEY.test(id)) return { id, meta: null };
        const path = connectionMetaPath(id);
        const meta = await this.engine.read("read listed connection", this.db.ref(path));
        return { id, meta: meta.exists() ? parseStored(connectionMetaSchema, meta.val(), path) : null };
      }),
    );
  }

  async readUserConnections(userId: string, after: string | undefined, limit: number): Promise<{ id: string; meta: ConnectionMeta }[]> {
    const found = await this.naming(CONNECTIONS, [["meta/user_a", userId], ["meta/user_b", userId]], after, limit, "find user connections");
    return found.map((child) => ({ id: child.key, meta: parseStored(connectionMetaSchema, child.val.meta, connectionMetaPath(child.key)) }));
  }

  async deleteConnections(connections: readonly ConnectionRef[]): Promise<void> {
    const update: Record<string, null> = {};
    for (const { id, userKeys } of connections) {
      if (!DATABASE_KEY.test(id)) continue;
      update[connectionPath(id)] = null;
      update[listedConnectionPath(userKeys.a, id)] = null;
      update[listedConnectionPath(userKeys.b, id)] = null;
    }
    if (Object.keys(update).length > 0) await this.engine.call("delete user connections", this.db.ref().update(update));
  }

  async findUserPairs(userId: string, userKey: string, after: string | undefined, limit: number): Promise<string[]> {
    const fields = [["user_a", userId], ["user_b", userId], ["blocker_key", userKey]] as const;
    return (await this.naming(CONNECTION_PAIRS, fields, after, limit, "find user pairs")).map((child) => child.key);
  }

  /** Applies `rule` to the record at `path` in a transaction; a next of null removes it. */
  async rewrite<R, O>(path: string, schema: z.ZodType<R>, operation: string, rule: ErasingRule<R, O>): Promise<O> {
    const { decided, committed } = await this.engine.transact(path, operation, (current) => {
      const record = current === null ? null : parseStored(schema, current, path);
      const { outcome, next } = rule(record);
      // "No change" writes the record back as it is, so the server confirms it (see TransactionEngine.transact).
      return { decided: outcome, write: next === undefined ? current : next === null ? null : (JSON.parse(JSON.stringify(next)) as unknown) };
    });
    if (!committed) throw new StoreUnavailableError(operation);
    return decided as O;
  }

  async findTokenOwners(userKey: string, after: string | undefined, limit: number): Promise<{ hash: string; owner: TokenOwner }[]> {
    const byUser = this.db.ref(DEVICE_TOKENS).orderByChild("user_key");
    const query = after === undefined ? byUser.equalTo(userKey) : byUser.startAfter(userKey, after).endAt(userKey);
    const snapshot = await this.engine.read("find user token owners", query.limitToFirst(limit));
    const found: { hash: string; owner: TokenOwner }[] = [];
    snapshot.forEach((child: DataSnapshot) => {
      if (child.key !== null) found.push({ hash: child.key, owner: parseStored(tokenOwnerSchema, child.val(), tokenOwnerPath(child.key)) });
    });
    return found;
  }

  /**
   * Removes the owner records of `hashes`, found by a query, each in a transaction of its own and
   * only while the user still holds it (ownedUpTo): a registration may have claimed the token again
   * since the query (the user's own, or another user's). Returns how many went. One failure fails
   * them all, unlike the sweep's removals (deleteStaleTokenOwner): an erasure must not go on as if
   * a record of the user were gone while it stays.
   */
  async deleteTokenOwners(userKey: string, cutoff: number, hashes: readonly string[]): Promise<number> {
    const removed = await Promise.all(
      hashes.map((hash) => this.rewrite(tokenOwnerPath(hash), tokenOwnerSchema, "release token owner", (owner) => (ownedUpTo(owner, userKey, cutoff) ? { outcome: 1, next: null } : { outcome: 0 }))),
    );
    return removed.reduce((sum, one) => sum + one, 0);
  }

  /**
   * Up to `limit` children of `path` of which any of `fields` equals its value, in key order after
   * `after`: one query per field, beside each other, merged.
   */
  private async naming(path: string, fields: readonly (readonly [field: string, value: string])[], after: string | undefined, limit: number, operation: string) {
    const snapshots = await Promise.all(
      fields.map(([field, value]) => {
        const ordered = this.db.ref(path).orderByChild(field);
        return this.engine.read(operation, (after === undefined ? ordered.equalTo(value) : ordered.startAfter(value, after).endAt(value)).limitToFirst(limit));
      }),
    );
    const byKey = new Map<string, Record<string, unknown>>();
    for (const snapshot of snapshots) {
      snapshot.forEach((child: DataSnapshot) => {
        const val: unknown = child.val();
        if (child.key === null) return;
        if (typeof val !== "object" || val === null) throw new StoreDataError(`${path}/${child.key}`, "not a record");
        byKey.set(child.key, val as Record<string, unknown>);
      });
    }
    return [...byKey]
      .sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0))
      .slice(0, limit)
      .map(([key, val]) => ({ key, val }));
  }
}

function keysOf(snapshot: DataSnapshot): string[] {
  const keys: string[] = [];
  snapshot.forEach((child: DataSnapshot) => {
    if (child.key !== null) keys.push(child.key);
  });
  return keys;
}
