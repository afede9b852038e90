import type { ConnectionMeta, DeviceRecord, PairRecord, TokenOwner } from "./connection-records";
import type { ConnectionRef, ConnectionStore, DeviceStore } from "./connection-store";

/*
 * What erasing a user's data reaches of connections and devices (docs/connections.md, "Erasure"):
 * the connections naming the user, the pairs' records, the user's devices and the records of which
 * user holds a token. Both adapters (memory-connection-store.ts, rtdb/rtdb-connection-store.ts)
 * implement it beside ConnectionStore and DeviceStore; the rules are connections/erasure-rules.ts.
 */

/** One entry of a user's list of connections, with its connection's fields (null: the connection is gone). */
export interface ListedForErasure {
  readonly id: string;
  readonly meta: ConnectionMeta | null;
}

/**
 * A rule deciding from a record (null for none) an outcome and, to change it, the next record;
 * a next of null removes it. Applied atomically, as a LedgerRule is.
 */
export type ErasingRule<R, O> = (record: R | null) => { readonly outcome: O; readonly next?: R | null };

export interface ConnectionErasureStore {
  /** Up to `limit` entries of the user's list in id order after `after` (exclusive), each with its connection's fields. */
  scanListedConnections(userKey: string, after: string | undefined, limit: number): Promise<ListedForErasure[]>;

  /**
   * Up to `limit` connections whose fields name `userId` on either side, in id order after `after`
   * (exclusive): listed or not, since a request that dies between writing a connection and listing it
   * leaves one nobody lists.
   */
  readUserConnections(userId: string, after: string | undefined, limit: number): Promise<{ readonly id: string; readonly meta: ConnectionMeta }[]>;

  /**
   * Removes the connections (every node under each: fields, state with its journal, messages) and
   * their entries in both users' lists, in one atomic update; harmless for ids already gone. Nothing
   * is read first: a node brought back by a late write (a copy of the journal) names no user.
   */
  deleteConnections(connections: readonly ConnectionRef[]): Promise<void>;

  /**
   * Up to `limit` pair keys whose record names `userId` on either side, or `userKey` as the user
   * whose block it keeps once the other was erased (`blocker_key`), in key order after `after` (exclusive).
   */
  findUserPairs(userId: string, userKey: string, after: string | undefined, limit: number): Promise<string[]>;

  /** Atomically applies `rule` to the pair's record; a next of null removes it. */
  rewritePair<O>(pairKey: string, rule: ErasingRule<PairRecord, O>): Promise<O>;

  /** Atomically applies `rule` to the user's devices; a next of null removes them. */
  rewriteDevices<O>(userKey: string, rule: ErasingRule<DeviceRecord, O>): Promise<O>;

  /**
   * Up to `limit` of the records naming `userKey` as a token's holder, whenever registered, by the
   * token's hash, in hash order after `after` (exclusive): a page at a time, so that a user holding
   * any number of them is erased page by page, within the pass's time. Those whose former owners
   * the token is still to leave (`released_from`) have those removals run before
   * `deleteTokenOwners` may remove them.
   */
  findTokenOwners(userKey: string, after: string | undefined, limit: number): Promise<{ readonly hash: string; readonly owner: TokenOwner }[]>;

  /**
   * Removes the records of `hashes` that name `userKey` as a token's holder and were last
   * registered at or before `cutoff`, each only while it still does (a token another user took is
   * theirs) and names no former owner the token is still to leave; returns how many.
   */
  deleteTokenOwners(userKey: string, cutoff: number, hashes: readonly string[]): Promise<number>;
}

/**
 * The check both adapters apply when an erasure removes a token's owner record. A record that
 * still names former owners (`released_from`: a handover whose removal from their devices is not
 * confirmed) stays: it is how the owner's next registration and the sweep find that removal, and
 * without it the former owner's notifications would reach the phone until their token went stale.
 * The erasure runs those removals first (connection-erasure.ts); a record that still names one
 * here stays for the erasure's next pass, which runs them again and then removes it.
 */
export function ownedUpTo(owner: TokenOwner | null, userKey: string, cutoff: number): boolean {
  return owner?.user_key === userKey && owner.updated_at <= cutoff && Object.keys(owner.released_from ?? {}).length === 0;
}

/** Every role of connections and devices: what one adapter (the database, the embedded store) implements. */
export type ConnectionAdapter = ConnectionStore & DeviceStore & ConnectionErasureStore;
