import { getApps, initializeApp } from "firebase-admin/app";
import { resolveConfig } from "../config";
import { functionsLog } from "../log/log";
import { composeInstance, type Instance } from "./instance";

let started: Promise<Instance> | undefined;

/**
 * The instance of a deployed (or emulated) function, started once: params and secrets are in
 * the environment by then, not at deploy-time discovery. A bad param is logged at start with
 * its name and why, and every request of this instance then answers 500 CONFIGURATION_ERROR.
 */
export function cloudInstance(): Promise<Instance> {
  started ??= start();
  return started;
}

async function start(): Promise<Instance> {
  try {
    const config = resolveConfig();
    // The platform supplies project and database URL (FIREBASE_CONFIG); the emulator its own host.
    const app = getApps()[0] ?? initializeApp();
    return composeInstance(config, { app, log: functionsLog, allowOffline: process.env.FUNCTIONS_EMULATOR === "true" });
  } catch (error) {
    functionsLog.error("instance could not start", { error: error instanceof Error ? error.name : typeof error, detail: error instanceof Error ? error.message : String(error) });
    throw error;
  }
}

