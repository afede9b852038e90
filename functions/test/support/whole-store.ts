import type { Database } from "firebase-admin/database";
import type { SessionStore } from "../../src/store/session-store";
import { RtdbInstances } from "./rtdb";

/**
 * Everything a store holds, as one JSON text to search: on the database, the whole tree read from
 * the root as the admin (every node of every path, keys included); in the embedded store, every
 * map it keeps. For checks that nothing anywhere holds a user's id or words.
 */
export class WholeStore {
  private readonly instances: RtdbInstances | undefined;
  private readonly database: Database | undefined;

  /** `host`: the database's address when it is not FIREBASE_DATABASE_EMULATOR_HOST (a stand-in of the suite's own). */
  constructor(
    private readonly store: SessionStore,
    namespace: string | undefined,
    host?: string,
  ) {
    this.instances = namespace === undefined ? undefined : new RtdbInstances(namespace, host);
    this.database = this.instances?.database();
  }

  async text(): Promise<string> {
    if (this.database) {
      const everything: unknown = (await this.database.ref().once("value")).val();
      return JSON.stringify(everything);
    }
    // The embedded store's state is its maps: written out whole, keys and values.
    return JSON.stringify(this.store, (_key, value: unknown): unknown => (value instanceof Map ? (Object.fromEntries(value) as unknown) : value));
  }

  /** The needles found anywhere in the store. */
  async holding(needles: readonly string[]): Promise<string[]> {
    const text = await this.text();
    return needles.filter((needle) => text.includes(needle));
  }

  /** For a test that writes what a late request would (database only). */
  get raw(): Database | undefined {
    return this.database;
  }

  async close(): Promise<void> {
    await this.instances?.close();
  }
}
