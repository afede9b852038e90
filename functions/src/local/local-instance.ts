import { initializeApp } from "firebase-admin/app";
import { resolveConfig } from "../config";
import type { Log } from "../log/log";
import { composeInstance, type Instance } from "../runtime/instance";
import { MemoryStore } from "../store/memory-store";
import { homeDatabase, instanceDatabases, rtdbSessionStore } from "../store/rtdb/instance-databases";
import { StoreUnavailableError } from "../store/errors";
import type { SessionStore } from "../store/session-store";
import type { ConnectionAdapter } from "../store/connection-erasure-store";
import { MemoryConnectionStore } from "../store/memory-connection-store";
import { RtdbConnectionStore } from "../store/rtdb/rtdb-connection-store";
import { databaseNamespace, seedTemplates } from "./project-files";

type Env = Readonly<Record<string, string | undefined>>;

export interface LocalInstance {
  readonly instance: Instance;
  /** Where sessions are kept, for the start-up banner. */
  readonly storeLabel: string;
  readonly modelLabel: string;
  /** Template ids the start-up wrote because the store did not have them. */
  readonly seeded: readonly string[];
}

/**
 * The instance behind `npm start`: the Realtime Database through firebase-admin when
 * FIREBASE_DATABASE_EMULATOR_HOST names one (the production code path), else the embedded
 * store; both seeded with the templates of `emulator-data/`.
 */
export async function createLocalInstance(projectId: string, log: Log, env: Env = process.env): Promise<LocalInstance> {
  const config = resolveConfig(env, { requireAuth: false });
  const emulatorHost = env.FIREBASE_DATABASE_EMULATOR_HOST;
  // One app for the database and for tokens (checked on the Auth emulator when FIREBASE_AUTH_EMULATOR_HOST is set).
  const app = initializeApp({ projectId, databaseURL: `https://${databaseNamespace(projectId)}.firebaseio.com` }, `local-${Date.now()}`);
  let store: SessionStore;
  let connectionStore: ConnectionAdapter;
  let storeLabel: string;
  if (emulatorHost) {
    // DATABASE_INSTANCES, when set, spreads sessions over those namespaces or servers (docs/sharding.md).
    store = rtdbSessionStore(instanceDatabases(app, config.databaseInstances), config.dbTimeoutMs, log);
    connectionStore = new RtdbConnectionStore(homeDatabase(app, config.databaseInstances), config.dbTimeoutMs);
    storeLabel =
      config.databaseInstances.length > 0
        ? `Realtime Database instances ${config.databaseInstances.join(", ")}`
        : `Realtime Database at ${emulatorHost} (namespace ${databaseNamespace(projectId)})`;
  } else {
    store = new MemoryStore();
    connectionStore = new MemoryConnectionStore();
    storeLabel = "embedded in-memory store (sessions and connections vanish on exit)";
  }
  // The push sender is the offline one (allowOffline): it logs what it would send, clearly labelled.
  const instance = composeInstance(config, { app, store, connectionStore, log, allowOffline: true });
  // The seeding is the first call to the database: when it finds none, the variable that chose it is named, not the call.
  const seeded = await store.seedTemplates(seedTemplates()).catch((error: unknown) => {
    throw emulatorHost && error instanceof StoreUnavailableError ? noDatabaseAnswered(emulatorHost, config.databaseInstances, config.dbTimeoutMs, error) : error;
  });
  const { apiKey, baseUrl } = config.openai;
  const modelLabel =
    apiKey !== undefined || baseUrl !== undefined
      ? `OpenAI chat completions at ${baseUrl ?? "https://api.openai.com/v1"}`
      : "offline responder (set OPENAI_API_KEY for real replies)";
  return { instance, storeLabel, modelLabel, seeded };
}

/**
 * What stops `npm start` when the Realtime Database it was told to use did not answer: where it
 * looked, for how long, and that the embedded store needs FIREBASE_DATABASE_EMULATOR_HOST unset
 * (often left exported from work on the emulators). The templates go to the home instance, the
 * first of DATABASE_INSTANCES when set: an emulator's http:// URL is its own server, any other
 * reaches the emulator host (instance-databases.ts).
 */
function noDatabaseAnswered(emulatorHost: string, instances: readonly string[], timeoutMs: number, cause: StoreUnavailableError): Error {
  const [home] = instances;
  const where =
    home === undefined
      ? `FIREBASE_DATABASE_EMULATOR_HOST=${emulatorHost}`
      : `${home.startsWith("http:") ? home : `FIREBASE_DATABASE_EMULATOR_HOST=${emulatorHost}, for ${home}`} (the first of DATABASE_INSTANCES)`;
  return new Error(
    `no Realtime Database answered at ${where} within DB_TIMEOUT_MS (${timeoutMs} ms), while seeding the templates: ` +
      "start one there (`firebase emulators:start --only database` listens on 127.0.0.1:9000), or unset FIREBASE_DATABASE_EMULATOR_HOST to keep sessions in the embedded store",
    { cause },
  );
}
