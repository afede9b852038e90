import { initializeApp } from "firebase-admin/app";
import { getDatabase } from "firebase-admin/database";
import { firebaseIdentity } from "../auth/firebase-identity";
import { resolveConfig } from "../config";
import { modelFromConfig } from "../llm/model-from-config";
import type { Log } from "../log/log";
import { createRuntime } from "../runtime/create-runtime";
import type { Runtime } from "../runtime/runtime";
import { MemoryStore } from "../store/memory-store";
import { RtdbStore } from "../store/rtdb-store";
import type { SessionStore } from "../store/session-store";
import { databaseNamespace, seedTemplates } from "./project-files";

type Env = Readonly<Record<string, string | undefined>>;

export interface LocalRuntime {
  readonly runtime: Runtime;
  /** Where sessions are kept, for the start-up banner. */
  readonly storeLabel: string;
  readonly modelLabel: string;
  /** Template ids the start-up wrote because the store did not have them. */
  readonly seeded: readonly string[];
}

/**
 * The runtime behind `npm start`: the Realtime Database through firebase-admin when
 * FIREBASE_DATABASE_EMULATOR_HOST names one (the production code path), else the embedded
 * store; both seeded with the templates of `emulator-data/`.
 */
export async function createLocalRuntime(projectId: string, log: Log, env: Env = process.env): Promise<LocalRuntime> {
  const config = resolveConfig(env, { requireAuth: false });
  const emulatorHost = env.FIREBASE_DATABASE_EMULATOR_HOST;
  // One app for the database and for tokens (checked on the Auth emulator when FIREBASE_AUTH_EMULATOR_HOST is set).
  const app = initializeApp({ projectId, databaseURL: `https://${databaseNamespace(projectId)}.firebaseio.com` }, `local-${Date.now()}`);
  let store: SessionStore;
  let storeLabel: string;
  if (emulatorHost) {
    store = new RtdbStore(getDatabase(app), config.dbTimeoutMs);
    storeLabel = `Realtime Database at ${emulatorHost} (namespace ${databaseNamespace(projectId)})`;
  } else {
    store = new MemoryStore();
    storeLabel = "embedded in-memory store (sessions vanish on exit)";
  }
  const seeded = await store.seedTemplates(seedTemplates());
  const { apiKey, baseUrl } = config.openai;
  const modelLabel =
    apiKey !== undefined || baseUrl !== undefined
      ? `OpenAI chat completions at ${baseUrl ?? "https://api.openai.com/v1"}`
      : "offline responder (set OPENAI_API_KEY for real replies)";
  const runtime = createRuntime({ config, store, log, identity: firebaseIdentity(app), model: modelFromConfig(config, { allowOffline: true }) });
  return { runtime, storeLabel, modelLabel, seeded };
}
