import { userKey } from "../session/ledger/limits";
import { eachPage } from "../session/maintenance";
import type { ConnectionErasureStore } from "../store/connection-erasure-store";
import type { ConnectionMeta } from "../store/connection-records";
import type { ConnectionRef, DeviceStore } from "../store/connection-store";
import { releaseToken } from "./device-registry";
import { forgetDevices, forgetPairUser } from "./erasure-rules";

/** Connections an erasure deletes: by id, the key of the other user, whose list names it too. */
export type ErasedConnections = Readonly<Record<string, string>>;

/** What the erasure of a user's sessions lends this one (session/erasure/erasure-service.ts). */
export interface ErasureHooks {
  /** Records connections before they are deleted, so that the second pass deletes them again. */
  readonly record: (connections: ErasedConnections) => Promise<void>;
  /** The request's time is up: stop here, the sweep takes over. */
  readonly stopped: () => boolean;
}

/**
 * Erases what connections hold of a user (docs/connections.md, "Erasure"): every connection they
 * are part of, asked for up to `cutoff`, whole (both sides' messages: the node names both users)
 * with its entries in both users' lists; the pairs' records (the other user's block stays, without
 * either id, until the other's own erasure); their devices and the records of the tokens they hold.
 * Each step is harmless to repeat, as the erasure of their sessions is, and each paged one stops
 * between pages once `hooks.stopped` says so (`stopped: true`: the next run starts it again).
 */
export class ConnectionErasure {
  constructor(
    private readonly options: {
      readonly store: ConnectionErasureStore & DeviceStore;
      readonly batchSize: number;
      readonly clock: () => number;
      /** How long a registration's add can land after its claim (DeviceRegistryOptions), for the releases it does. */
      readonly addLandsWithinMs: number;
    },
  ) {}

  async erase(userId: string, cutoff: number, hooks: ErasureHooks): Promise<{ count: number; stopped: boolean }> {
    const { store, batchSize } = this.options;
    const key = userKey(userId);
    // The user's list first; then a query on their id, for a connection whose creator died before listing it.
    const sources = [
      (after: string | undefined) => store.scanListedConnections(key, after, batchSize),
      (after: string | undefined) => store.readUserConnections(userId, after, batchSize),
    ];
    let count = 0;
    for (const scan of sources) {
      const ran = await eachPage(batchSize, hooks.stopped, scan, (listed) => listed.id, async (page) => {
        // A connection asked for after the request is the user's to keep, as a session is; one listed but gone is a late write's.
        const erased = page.filter((listed) => listed.meta === null || listed.meta.created_at <= cutoff).map((listed) => [listed.id, listed.meta ? otherKey(listed.meta, userId) : key] as const);
        await hooks.record(Object.fromEntries(erased));
        await store.deleteConnections(erased.map(([id, other]) => refOf(id, key, other)));
        count += erased.length;
      });
      if (ran === "stopped") return { count, stopped: true };
    }
    if ((await this.forgetPairs(userId, key, cutoff, hooks.stopped)) === "stopped") return { count, stopped: true };
    await store.rewriteDevices(key, forgetDevices(cutoff));
    if ((await this.forgetTokenOwners(key, cutoff, hooks.stopped)) === "stopped") return { count, stopped: true };
    return { count, stopped: false };
  }

  /**
   * Removes the records of the tokens the user holds, registered up to `cutoff`, a page at a time
   * until `stopped`: a user may have registered any number of tokens (each leaves a record until
   * it moves to another user or goes stale, though their devices keep only the newest), and the
   * pass must not keep a run past its time. A pass that stops here is carried on by the next run, from the first
   * record left. Before its page's records go, it runs the removals still pending on the tokens
   * the user took from others (a handover whose removal from the former owner failed, or whose
   * request died), as the user's next registration or the sweep would (releaseToken). Their owner
   * record is the only trace of such a removal, and it names the user: it cannot outlive the
   * erasure, nor go before the removal, or the former owner's notifications would reach the phone
   * this user holds until their token went stale. A removal that fails throws, as every step here
   * does: the record stays (ownedUpTo), and the retry or the sweep's pass does both again.
   */
  private async forgetTokenOwners(key: string, cutoff: number, stopped: () => boolean): Promise<"done" | "stopped"> {
    const { store, clock, batchSize, addLandsWithinMs } = this.options;
    return eachPage(batchSize, stopped, (after) => store.findTokenOwners(key, after, batchSize), (found) => found.hash, async (page) => {
      // One registered after the request is the user's to keep, as their devices are.
      const held = page.filter(({ owner }) => owner.updated_at <= cutoff);
      await Promise.all(held.map(({ hash, owner }) => releaseToken(store, hash, owner.released_from ?? {}, clock(), addLandsWithinMs)));
      await store.deleteTokenOwners(key, cutoff, held.map(({ hash }) => hash));
    });
  }

  /** Deletes again connections an earlier pass recorded: a copy of a journal sent before may have landed after it. */
  async eraseRecorded(userId: string, recorded: ErasedConnections): Promise<void> {
    const key = userKey(userId);
    const refs = Object.entries(recorded).map(([id, other]) => refOf(id, key, other));
    for (let i = 0; i < refs.length; i += this.options.batchSize) await this.options.store.deleteConnections(refs.slice(i, i + this.options.batchSize));
  }

  /** The pairs' records naming the user, or keeping their block (forgetPairUser), a page at a time until `stopped`. */
  private async forgetPairs(userId: string, key: string, cutoff: number, stopped: () => boolean): Promise<"done" | "stopped"> {
    const { store, batchSize } = this.options;
    return eachPage(batchSize, stopped, (after) => store.findUserPairs(userId, key, after, batchSize), (pair) => pair, async (pairs) => {
      await Promise.all(pairs.map((pair) => store.rewritePair(pair, forgetPairUser(userId, cutoff))));
    });
  }
}

function otherKey(meta: ConnectionMeta, userId: string): string {
  return userKey(meta.user_a === userId ? meta.user_b : meta.user_a);
}

function refOf(id: string, key: string, other: string): ConnectionRef {
  return { id, userKeys: { a: key, b: other } };
}
