import { initializeApp } from "firebase-admin/app";
import { resolveConfig } from "../config";
import type { Log } from "../log/log";
import { composeInstance, type Instance } from "../runtime/instance";
import { MemoryStore } from "../store/memory-store";
import { homeDatabase, instanceDatabases, rtdbSessionStore } from "../store/rtdb/instance-databases";
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
  const seeded = await store.seedTemplates(seedTemplates());
  const { apiKey, baseUrl } = config.openai;
  const modelLabel =
    apiKey !== undefined || baseUrl !== undefined
      ? `OpenAI chat completions at ${baseUrl ?? "https://api.openai.com/v1"}`
      : "offline responder (set OPENAI_API_KEY for real replies)";
  return { instance, storeLabel, modelLabel, seeded };
}
