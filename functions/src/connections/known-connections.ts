import { ForbiddenError } from "../session/errors";
import { keyHash } from "../session/idempotency";
import { userKey } from "../session/ledger/limits";
import { WarmCache } from "../session/warm-cache";
import type { ConnectionMeta, Participant } from "../store/connection-records";
import type { ConnectionRef, ConnectionStore } from "../store/connection-store";
import { ConnectionNotFoundError } from "./errors";

/** A connection as an instance knows it between requests: its fixed fields and where its users' lists are. */
export interface KnownConnection {
  readonly ref: ConnectionRef;
  readonly meta: ConnectionMeta;
}

/** Two users as a pair: `a` the id that sorts first. */
export interface PairUsers {
  readonly a: string;
  readonly b: string;
}

export function pairOf(one: string, other: string): PairUsers {
  return one < other ? { a: one, b: other } : { a: other, b: one };
}

/** Where the pair's record is kept: a hash of both ids, the same whichever of them asks. */
export function pairKeyOf(users: PairUsers): string {
  return keyHash("pair", `${users.a}\u0000${users.b}`);
}

/** The connection as its fixed fields make it. */
export function knownFrom(id: string, meta: ConnectionMeta): KnownConnection {
  return { ref: { id, userKeys: { a: userKey(meta.user_a), b: userKey(meta.user_b) } }, meta };
}

/**
 * Which participant `userId` is; anyone else is refused as another user's session is (403
 * FORBIDDEN), and learns nothing more of the connection.
 */
export function participantOf(meta: ConnectionMeta, userId: string): Participant {
  if (userId === meta.user_a) return "a";
  if (userId === meta.user_b) return "b";
  throw new ForbiddenError("this connection belongs to other users");
}

export function userIdOf(meta: ConnectionMeta, participant: Participant): string {
  return participant === "a" ? meta.user_a : meta.user_b;
}

/** The connections this instance has served: fixed fields only (safe to keep: they never change). */
export class KnownConnections {
  private readonly cache: WarmCache<string, KnownConnection>;

  constructor(
    private readonly store: Pick<ConnectionStore, "readConnectionMeta">,
    cache: { readonly maxEntries: number; readonly ttlMs: number },
    clock: () => number,
  ) {
    this.cache = new WarmCache(cache.maxEntries, cache.ttlMs, clock);
  }

  async get(connectionId: string): Promise<KnownConnection> {
    const cached = this.cache.get(connectionId);
    if (cached) return cached;
    const meta = await this.store.readConnectionMeta(connectionId);
    if (!meta) throw new ConnectionNotFoundError(connectionId);
    const known = knownFrom(connectionId, meta);
    this.cache.set(connectionId, known);
    return known;
  }

  remember(known: KnownConnection): void {
    this.cache.set(known.ref.id, known);
  }

  /** For a connection found gone (erased): its fields never change, but they no longer stand for anything. */
  forget(connectionId: string): void {
    this.cache.delete(connectionId);
  }
}
