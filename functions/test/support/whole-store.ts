import type { Database } from "firebase-admin/database";
import type { Harness } from "./http-harness";
import { RtdbInstances } from "./rtdb";
import type { ShardedRtdb } from "./sharded-rtdb";
import { instancePositionOf } from "../../src/sharding/session-ids";

/**
 * Everything a store holds, as one JSON text to search: on the database, the whole tree read from
 * the root as the admin (every node of every path, keys included, on every database instance);
 * in the embedded store, every map it keeps. For checks that nothing anywhere holds a user's id or
 * words.
 */
export class WholeStore {
  private readonly instances: RtdbInstances | undefined;
  private readonly database: Database | undefined;
  /** With sharding (docs/sharding.md), every database instance's tree, not only the first's. */
  private readonly shardDatabases: readonly Database[];

  /**
   * `stores`: the embedded stores of the instance (its sessions', its connections'), read when
   * there is no database. `host`: the database's address when it is not
   * FIREBASE_DATABASE_EMULATOR_HOST (a stand-in of the suite's own).
   */
  constructor(
    private readonly stores: readonly object[],
    namespace: string | undefined,
    host?: string,
    shards?: ShardedRtdb,
  ) {
    this.instances = namespace === undefined ? undefined : new RtdbInstances(namespace, host);
    this.shardDatabases = shards?.databases() ?? [];
    this.database = this.instances?.database() ?? this.shardDatabases[0];
  }

  /** Everything a harness's stores hold, on every database instance. */
  static of(harness: Pick<Harness, "api" | "namespace" | "shards">): WholeStore {
    return new WholeStore([harness.api.store, harness.api.connectionStore], harness.namespace, undefined, harness.shards);
  }

  /** `without`: a top-level path of the database (the embedded store's map of the same content) left out. */
  async text(without?: { readonly path: string; readonly map: string }): Promise<string> {
    const databases = this.shardDatabases.length > 0 ? this.shardDatabases : this.database ? [this.database] : [];
    if (databases.length > 0) {
      const trees = await Promise.all(
        databases.map(async (database) => {
          const everything: unknown = (await database.ref().once("value")).val();
          return without && typeof everything === "object" && everything !== null ? Object.entries(everything).filter(([path]) => path !== without.path) : everything;
        }),
      );
      return JSON.stringify(trees);
    }
    // The embedded store's state is its maps: written out whole, keys and values.
    return JSON.stringify(this.stores, (key, value: unknown): unknown => (key === without?.map ? undefined : value instanceof Map ? (Object.fromEntries(value) as unknown) : value));
  }

  /** The needles found anywhere in the store. */
  async holding(needles: readonly string[]): Promise<string[]> {
    const text = await this.text();
    return needles.filter((needle) => text.includes(needle));
  }

  /**
   * The needles found anywhere but in the users' usage records, which outlive an erasure on
   * purpose (their counters keep the user's limits): for a user's key, which only they name.
   */
  async holdingBesideUsage(needles: readonly string[]): Promise<string[]> {
    const text = await this.text({ path: "userUsage", map: "usage" });
    return needles.filter((needle) => text.includes(needle));
  }

  /** For a test that writes what a late request would (database only): the first instance, where per-user records are. */
  get raw(): Database | undefined {
    return this.database;
  }

  /** The instance holding session `id` (the first unless sharded), for a late write to its nodes. */
  rawOf(id: string): Database | undefined {
    return this.shardDatabases[instancePositionOf(id)] ?? this.database;
  }

  async close(): Promise<void> {
    await this.instances?.close();
  }
}
