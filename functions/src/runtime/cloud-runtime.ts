import { getApps, initializeApp } from "firebase-admin/app";
import { getDatabase } from "firebase-admin/database";
import { firebaseIdentity } from "../auth/firebase-identity";
import { resolveConfig } from "../config";
import { modelFromConfig } from "../llm/model-from-config";
import { functionsLog } from "../log/log";
import { RtdbStore } from "../store/rtdb-store";
import { createRuntime } from "./create-runtime";
import type { Runtime } from "./runtime";

let instance: Runtime | undefined;

/**
 * The runtime of a deployed (or emulated) function instance, built on its first request:
 * params and secrets resolve at runtime, not at import. It lives as long as the instance,
 * which is what keeps the session module's cache warm between requests.
 */
export function cloudRuntime(): Runtime {
  if (instance) return instance;
  const config = resolveConfig();
  // The platform supplies project and database URL (FIREBASE_CONFIG); the emulator its own host.
  const app = getApps()[0] ?? initializeApp();
  instance = createRuntime({
    config,
    store: new RtdbStore(getDatabase(app), config.dbTimeoutMs),
    identity: firebaseIdentity(app),
    model: modelFromConfig(config, { allowOffline: process.env.FUNCTIONS_EMULATOR === "true" }),
    log: functionsLog,
  });
  return instance;
}
