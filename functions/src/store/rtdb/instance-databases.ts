import { randomInt } from "node:crypto";
import type { App } from "firebase-admin/app";
import { getDatabase, getDatabaseWithUrl, type Database } from "firebase-admin/database";
import type { Log } from "../../log/log";
import { defaultDatabaseUrl as projectDefaultDatabaseUrl } from "../../sharding/database-instances";
import { ShardedStore } from "../sharded-store";
import type { SessionStore } from "../session-store";
import { HELD_NODES, RtdbStore } from "./rtdb-store";


/**
 * The databases of DATABASE_INSTANCES (normalised URLs, config.ts) for `app`, in list order;
 * none listed: the app's default database alone.
 *
 * An emulator's URL (`http://host:port?ns=name`) is honoured as given: with
 * FIREBASE_DATABASE_EMULATOR_HOST set, firebase-admin 14.5.1 (@firebase/database's
 * `repoManagerDatabaseFromApp`, when the database is created) sends every URL to that one host,
 * so a second local server named in the list would silently be the first. The variable is set
 * aside while such a database is created, and only then.
 */
export function instanceDatabases(app: App, urls: readonly string[]): Database[] {
  if (urls.length === 0) return [getDatabase(app)];
  return urls.map((url) => (url.startsWith("http:") ? withEmulatorHost(undefined, () => getDatabaseWithUrl(url, app)) : getDatabaseWithUrl(url, app)));
}

/**
 * The session store over `databases` (the first is the home instance), a ShardedStore even over
 * one: during the deploy that appends the second instance, a function instance still on the list
 * of one must refuse a write for an id an updated one issued for the second (a keyed create's
 * repeat), not store it on the only instance it knows, where no updated instance looks for it.
 * `log` gets what the sharded store reports (a clean-up query failing on one instance); its
 * clean-up queries start at a random instance (ShardedStore's `firstLead`).
 */
export function rtdbSessionStore(databases: readonly Database[], timeoutMs: number, log: Log): SessionStore {
  return new ShardedStore(instanceStores(databases, timeoutMs), log, randomInt(Math.max(1, databases.length)));
}

/**
 * One adapter per instance, each writing its sessions' index entries to the first (the home
 * instance), and each listening to its share of HELD_NODES: the function instance's listeners
 * stay within the bound the docs give however many database instances it serves, where each
 * adapter's own bound made it 512 per instance. The shares follow what each holds: every user's
 * usage record is on the home instance (the ledger's, ShardedStore), beside its own sessions'
 * states, so with sessions spread evenly and a user a session at most, the home adapter needs a
 * node for every session served and one for its share of them, the others one for theirs: of
 * 2n parts, n + 1 for the home, 1 each for the others (384 and 128 with two). Even shares filled
 * the home adapter first, a third of the other's left unused.
 */
export function instanceStores(databases: readonly Database[], timeoutMs: number): RtdbStore[] {
  const [home] = databases;
  if (home === undefined) throw new Error("no database");
  const share = Math.max(1, Math.floor(HELD_NODES / (2 * databases.length)));
  const homeShare = Math.max(share, HELD_NODES - (databases.length - 1) * share);
  return databases.map((db, position) => new RtdbStore(db, timeoutMs, { home, heldNodes: position === 0 ? homeShare : share }));
}

/**
 * Runs `create` (which makes a Database) with FIREBASE_DATABASE_EMULATOR_HOST set to `host`, or
 * unset for undefined, then puts the variable back: the database SDKs (firebase-admin 14.5.1, and
 * the web SDK's @firebase/database 1.1.5 in Node) read it only when a Database is created.
 */
export function withEmulatorHost<T>(host: string | undefined, create: () => T): T {
  const previous = process.env.FIREBASE_DATABASE_EMULATOR_HOST;
  if (host === undefined) delete process.env.FIREBASE_DATABASE_EMULATOR_HOST;
  else process.env.FIREBASE_DATABASE_EMULATOR_HOST = host;
  try {
    return create();
  } finally {
    if (previous === undefined) delete process.env.FIREBASE_DATABASE_EMULATOR_HOST;
    else process.env.FIREBASE_DATABASE_EMULATOR_HOST = previous;
  }
}

/** The home instance's database: every per-user record's (connections and devices too). */
export function homeDatabase(app: App, urls: readonly string[]): Database {
  const [home] = instanceDatabases(app, urls.slice(0, 1));
  if (home === undefined) throw new Error("no database");
  return home;
}

/** The URL of the app's default database, as firebase-admin derives it when the app names none. */
export function defaultDatabaseUrl(app: App): string {
  return app.options.databaseURL ?? projectDefaultDatabaseUrl(app.options.projectId ?? process.env.GCLOUD_PROJECT ?? "");
}
