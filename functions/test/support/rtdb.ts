import { randomUUID } from "node:crypto";
import { deleteApp, initializeApp, type App } from "firebase-admin/app";
import { getDatabase, type Database, type DataSnapshot, type Reference } from "firebase-admin/database";
import { describeUnless } from "./visible-skip";
import { withEmulatorHost } from "../../src/store/rtdb/instance-databases";

/**
 * Whether a Realtime Database emulator answers, as probed once by the global setup. Suites
 * that need one run only then; otherwise they are skipped with the reason printed.
 */
export function rtdbSkipReason(): string | undefined {
  return process.env.CHATIFY_RTDB_SKIP_REASON || undefined;
}

/** `describe` when the database answers, else a visibly skipped `describe` that says why. */
export function describeWithRtdb(name: string, body: () => void): void {
  describeUnless(rtdbSkipReason(), name, body);
}

/** A fresh namespace: one database per suite, so suites never see each other's data. */
export function freshNamespace(prefix: string): string {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

/**
 * A firebase-admin app of its own (own connection, own cache), as a separate function
 * instance would have, on the database `namespace` of the emulator.
 */
export class RtdbInstances {
  private readonly apps: App[] = [];

  /** `host`: reach the emulator at another address (a proxy) instead of FIREBASE_DATABASE_EMULATOR_HOST. */
  constructor(
    readonly namespace: string,
    private readonly host?: string,
  ) {}

  database(): Database {
    const app = initializeApp({ projectId: "demo-chatify", databaseURL: `https://${this.namespace}.firebaseio.com` }, randomUUID());
    this.apps.push(app);
    if (this.host === undefined) return getDatabase(app);
    // firebase-admin reads the emulator address when the Database is created, and only from the environment.
    return withEmulatorHost(this.host, () => getDatabase(app));
  }

  async close(): Promise<void> {
    await Promise.all(this.apps.splice(0).map((app) => deleteApp(app)));
  }
}

/**
 * `database` as a slow link would be for some of its writes: every update sent from a node `held`
 * names waits until the returned release is called, then goes.
 */
export function holdingUpdates(database: Database, held: (path: string | undefined) => boolean): () => void {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  const ref = database.ref.bind(database);
  (database as { ref: Database["ref"] }).ref = (path?: string) => {
    const node = ref(path);
    if (held(path)) {
      const update = node.update.bind(node);
      node.update = (values: object) => gate.then(() => update(values));
    }
    return node;
  };
  return release;
}

/**
 * `database` as a connection that dropped would be for some of its writes: every update sent from
 * a node `lost` names is refused. `lost` is asked at each `ref(path)`, so it may lose only the first.
 */
export function losingUpdates(database: Database, lost: (path: string | undefined) => boolean): Database {
  const ref = database.ref.bind(database);
  (database as { ref: Database["ref"] }).ref = (path?: string) => {
    const node = ref(path);
    if (lost(path)) node.update = () => Promise.reject(new Error("connection lost"));
    return node;
  };
  return database;
}

/** The nodes a session's copy is sent from (RtdbStore.copyJournal): the session's, and its index entry's. */
export const copyOf = (sessionId: string) => (path: string | undefined) => path === `userSessions/${sessionId}` || path?.startsWith("userConversations/") === true;

/**
 * Stores of one adapter for a store contract: `instance()` opens one more on a shared fresh
 * namespace (instances of one deployment), `empty()` one on a namespace of its own; `settled`
 * waits for the copies they sent, `close` closes the stores and their databases.
 */
export function contractStores<S extends { copiesSettled(): Promise<void>; close(): void }>(prefix: string, open: (database: Database) => S) {
  const instances = new RtdbInstances(freshNamespace(prefix));
  const empties: RtdbInstances[] = [];
  const stores: S[] = [];
  const track = (store: S): S => {
    stores.push(store);
    return store;
  };
  return {
    instances,
    instance: () => track(open(instances.database())),
    empty: () => {
      const database = new RtdbInstances(freshNamespace(prefix));
      empties.push(database);
      return track(open(database.database()));
    },
    settled: async () => {
      await Promise.all(stores.map((store) => store.copiesSettled()));
    },
    close: async () => {
      for (const store of stores) store.close();
      await Promise.all([instances, ...empties].map((database) => database.close()));
    },
  };
}

/**
 * Resolves once the node at `ref` holds a value `accept` takes (at once if it does already), from
 * a listener: the database tells of each change, so a test waits for it instead of polling. Fails
 * after `timeoutMs`, saying `what` did not come.
 */
export function valueWhere(ref: Reference, accept: (value: unknown) => boolean, what: string, timeoutMs = 30_000): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const stop = (): void => {
      clearTimeout(timer);
      ref.off("value", onValue);
    };
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`not within ${String(timeoutMs)} ms: ${what}`));
    }, timeoutMs);
    const onValue = (snapshot: DataSnapshot): void => {
      if (!accept(snapshot.val())) return;
      stop();
      resolve();
    };
    ref.on("value", onValue, (error: Error) => {
      stop();
      reject(error);
    });
  });
}
