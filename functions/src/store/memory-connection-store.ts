import { ownedUpTo, type ConnectionErasureStore, type ErasingRule, type ListedForErasure } from "./connection-erasure-store";
import type { ConnectionMessage, ConnectionMeta, ConnectionState, DeviceRecord, PairRecord, TokenOwner } from "./connection-records";
import { assertAppendsOne, type ConnectionRef, type ConnectionRule, type ConnectionStore, type DeviceStore, type ListCursor, type ListedConnection, type MessageRule, type NewConnection, type RuledConnection, type StoredMessage } from "./connection-store";
import { applyLedger, stored as kept } from "./memory-store";
import type { LedgerRule } from "./session-store";
import { pageOfRecords, type SweepCursor, type SweepPage } from "./sweep-page";

interface StoredConnection {
  readonly meta: ConnectionMeta;
  readonly userKeys: ConnectionRef["userKeys"];
  state: ConnectionState;
  readonly messages: ConnectionMessage[];
}

/**
 * The embedded store's connections and devices (`npm start` without a database), and the
 * reference adapter of their contract. Each method completes within one turn of the event loop,
 * which makes it atomic; what it keeps is frozen (memory-store.ts `stored`). Lists are kept per user, so a page costs
 * what it holds plus a sort of that user's entries: meant for one developer's users, not production.
 */
export class MemoryConnectionStore implements ConnectionStore, DeviceStore, ConnectionErasureStore {
  private readonly pairs = new Map<string, PairRecord>();
  private readonly connections = new Map<string, StoredConnection>();
  /** Per user key: connection id -> last activity. */
  private readonly lists = new Map<string, Map<string, number>>();
  private readonly devices = new Map<string, DeviceRecord>();
  private readonly owners = new Map<string, TokenOwner>();

  async updatePair<O>(pairKey: string, rule: LedgerRule<PairRecord, O>): Promise<O> {
    return applyLedger(this.pairs, pairKey, rule);
  }

  async createConnection(connection: NewConnection): Promise<"created" | "exists"> {
    if (this.connections.has(connection.id)) return "exists";
    this.connections.set(connection.id, { meta: kept(connection.meta), userKeys: { ...connection.userKeys }, state: kept(connection.state), messages: [] });
    this.list(connection.id);
    return "created";
  }

  async readConnectionMeta(connectionId: string): Promise<ConnectionMeta | null> {
    return kept(this.connections.get(connectionId)?.meta ?? null);
  }

  async readConnectionState(connectionId: string): Promise<ConnectionState | null> {
    return kept(this.connections.get(connectionId)?.state ?? null);
  }

  async updateConnection<O>(connection: ConnectionRef, rule: ConnectionRule<O>): Promise<RuledConnection<O>> {
    const stored = this.connections.get(connection.id);
    if (!stored) return { found: false };
    const { outcome, next } = rule(kept(stored.state));
    if (next) {
      stored.state = kept(next);
      this.list(connection.id);
    }
    return { found: true, outcome, state: kept(stored.state) };
  }

  async appendMessage<O>(connection: ConnectionRef, rule: MessageRule<O>): Promise<RuledConnection<O>> {
    const stored = this.connections.get(connection.id);
    if (!stored) return { found: false };
    const { outcome, next, message } = rule(kept(stored.state));
    if (next) {
      stored.messages.push(kept(assertAppendsOne(stored.state, next, message)));
      stored.state = kept(next);
      this.list(connection.id);
    }
    return { found: true, outcome, state: kept(stored.state) };
  }

  async readConnectionMessages(connectionId: string, page: { readonly before?: number; readonly limit: number }): Promise<StoredMessage[] | null> {
    const stored = this.connections.get(connectionId);
    // Gone (or never made): told apart from a connection with no messages, as the port asks.
    if (!stored) return null;
    const { messages } = stored;
    const end = Math.min(messages.length, (page.before ?? messages.length + 1) - 1);
    const start = Math.max(0, end - Math.max(0, page.limit));
    return messages.slice(start, Math.max(start, end)).map((message, index) => ({ position: start + index + 1, message: kept(message) }));
  }

  async readConnectionMessage(connectionId: string, position: number): Promise<ConnectionMessage | null> {
    const message = position >= 1 ? this.connections.get(connectionId)?.messages[position - 1] : undefined;
    return kept(message ?? null);
  }

  async listConnections(userKey: string, page: { readonly limit: number; readonly after?: ListCursor }): Promise<ListedConnection[]> {
    const { after } = page;
    return [...(this.lists.get(userKey) ?? [])]
      .map(([id, lastActivity]) => ({ id, lastActivity }))
      .sort(newestFirst)
      .filter((entry) => after === undefined || newestFirst(entry, after) > 0)
      .slice(0, Math.max(0, page.limit));
  }

  async unlistConnection(userKey: string, connectionId: string): Promise<void> {
    this.lists.get(userKey)?.delete(connectionId);
    if (this.lists.get(userKey)?.size === 0) this.lists.delete(userKey);
  }

  async relistConnection(userKey: string, connectionId: string, lastActivity: number): Promise<void> {
    const list = this.lists.get(userKey);
    const listed = list?.get(connectionId);
    if (list && listed !== undefined && listed < lastActivity) list.set(connectionId, lastActivity);
  }

  async readListed(connection: ConnectionRef): Promise<{ readonly a: boolean; readonly b: boolean }> {
    return { a: this.lists.get(connection.userKeys.a)?.has(connection.id) === true, b: this.lists.get(connection.userKeys.b)?.has(connection.id) === true };
  }

  async listConnection(connection: ConnectionRef, lastActivity: number): Promise<boolean> {
    let wrote = false;
    for (const userKey of [connection.userKeys.a, connection.userKeys.b]) {
      const list = this.lists.get(userKey) ?? new Map<string, number>();
      const listed = list.get(connection.id);
      wrote ||= listed === undefined;
      if (listed === undefined || listed < lastActivity) list.set(connection.id, lastActivity);
      this.lists.set(userKey, list);
    }
    return wrote;
  }

  prepareConnection(): void {
    // Nothing to fetch: the state is in memory.
  }

  guessConnection(): () => void {
    // Nothing to fetch, so nothing to withdraw.
    return () => undefined;
  }

  prepareDevices(): void {
    // Nothing to fetch: the record is in memory.
  }

  async readDevices(userKey: string): Promise<DeviceRecord | null> {
    return kept(this.devices.get(userKey) ?? null);
  }

  async updateDevices<O>(userKey: string, rule: LedgerRule<DeviceRecord, O>): Promise<O> {
    return applyLedger(this.devices, userKey, rule);
  }

  async updateTokenOwner<O>(tokenHash: string, rule: LedgerRule<TokenOwner, O>): Promise<O> {
    return applyLedger(this.owners, tokenHash, rule);
  }

  async readTokenOwner(tokenHash: string): Promise<TokenOwner | null> {
    return kept(this.owners.get(tokenHash) ?? null);
  }

  async findStaleDevices(cutoff: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage> {
    return pageOfRecords(this.devices, (record) => record.oldest_at, cutoff, after, limit);
  }

  async findPendingReleases(upTo: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage> {
    return pageOfRecords(this.owners, (owner) => owner.releasing_since, upTo, after, limit);
  }

  async findStaleTokenOwners(cutoff: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage> {
    return pageOfRecords(this.owners, (owner) => owner.updated_at, cutoff, after, limit);
  }

  async deleteStaleTokenOwner(tokenHash: string, cutoff: number): Promise<boolean> {
    const owner = this.owners.get(tokenHash);
    return owner !== undefined && owner.updated_at <= cutoff && this.owners.delete(tokenHash);
  }

  async scanListedConnections(userKey: string, after: string | undefined, limit: number): Promise<ListedForErasure[]> {
    return afterInOrder([...(this.lists.get(userKey)?.keys() ?? [])], after, limit).map((id) => ({ id, meta: kept(this.connections.get(id)?.meta ?? null) }));
  }

  async readUserConnections(userId: string, after: string | undefined, limit: number): Promise<{ id: string; meta: ConnectionMeta }[]> {
    const naming = new Map([...this.connections].filter(([, stored]) => stored.meta.user_a === userId || stored.meta.user_b === userId).map(([id, stored]) => [id, stored.meta]));
    return afterInOrder([...naming.keys()], after, limit).flatMap((id) => {
      const meta = naming.get(id);
      return meta ? [{ id, meta: kept(meta) }] : [];
    });
  }

  async deleteConnections(connections: readonly ConnectionRef[]): Promise<void> {
    for (const { id, userKeys } of connections) {
      this.connections.delete(id);
      for (const userKey of [userKeys.a, userKeys.b]) {
        this.lists.get(userKey)?.delete(id);
        if (this.lists.get(userKey)?.size === 0) this.lists.delete(userKey);
      }
    }
  }

  async findUserPairs(userId: string, userKey: string, after: string | undefined, limit: number): Promise<string[]> {
    const naming = [...this.pairs].filter(([, pair]) => pair.user_a === userId || pair.user_b === userId || pair.blocker_key === userKey);
    return afterInOrder(naming.map(([key]) => key), after, limit);
  }

  async rewritePair<O>(pairKey: string, rule: ErasingRule<PairRecord, O>): Promise<O> {
    return applyRewrite(this.pairs, pairKey, rule);
  }

  async rewriteDevices<O>(userKey: string, rule: ErasingRule<DeviceRecord, O>): Promise<O> {
    return applyRewrite(this.devices, userKey, rule);
  }

  async findTokenOwners(userKey: string, after: string | undefined, limit: number): Promise<{ hash: string; owner: TokenOwner }[]> {
    const held = [...this.owners].filter(([, owner]) => owner.user_key === userKey).map(([hash]) => hash);
    return afterInOrder(held, after, limit).flatMap((hash) => {
      const owner = this.owners.get(hash);
      return owner ? [{ hash, owner: kept(owner) }] : [];
    });
  }

  async deleteTokenOwners(userKey: string, cutoff: number, hashes: readonly string[]): Promise<number> {
    const owned = [...new Set(hashes)].filter((hash) => ownedUpTo(this.owners.get(hash) ?? null, userKey, cutoff));
    for (const hash of owned) this.owners.delete(hash);
    return owned.length;
  }

  /** Puts the connection at its last activity in both users' lists. */
  private list(connectionId: string): void {
    const stored = this.connections.get(connectionId);
    if (!stored) return;
    for (const userKey of [stored.userKeys.a, stored.userKeys.b]) {
      const list = this.lists.get(userKey) ?? new Map<string, number>();
      list.set(connectionId, stored.state.last_activity);
      this.lists.set(userKey, list);
    }
  }
}

function applyRewrite<R, O>(records: Map<string, R>, key: string, rule: ErasingRule<R, O>): O {
  const { outcome, next } = rule(kept(records.get(key) ?? null));
  if (next === null) records.delete(key);
  else if (next !== undefined) records.set(key, kept(next));
  return outcome;
}

/** Up to `limit` of `keys` after `after`, in order. */
function afterInOrder(keys: readonly string[], after: string | undefined, limit: number): string[] {
  return [...keys]
    .sort()
    .filter((key) => after === undefined || key > after)
    .slice(0, Math.max(0, limit));
}

/** Newest activity first; between equals, the greater id first (the database's order, read backwards). */
function newestFirst(x: ListedConnection, y: ListedConnection): number {
  return y.lastActivity - x.lastActivity || (x.id < y.id ? 1 : x.id > y.id ? -1 : 0);
}
