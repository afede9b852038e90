import { getApps, initializeApp } from "firebase-admin/app";
import { ConfigError, resolveConfig, type Config } from "../config";
import { functionsLog } from "../log/log";
import { emulatorUrlProblem } from "../sharding/database-instances";
import { composeInstance, type Instance } from "./instance";
import { checkConnectionBudget, timeBudget } from "./time-budget";

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
    const onEmulator = process.env.FUNCTIONS_EMULATOR === "true";
    const config = startingConfig(process.env, onEmulator);
    // The platform supplies project and database URL (FIREBASE_CONFIG); the emulator its own host.
    const app = getApps()[0] ?? initializeApp();
    return composeInstance(config, { app, log: functionsLog, allowOffline: onEmulator });
  } catch (error) {
    functionsLog.error("instance could not start", { error: error instanceof Error ? error.name : typeof error, detail: error instanceof Error ? error.message : String(error) });
    throw error;
  }
}

/**
 * The config a function instance starts with, from `env`, or the ConfigError its start fails
 * with: every check the start makes of the params alone (resolveConfig, deployedConfig, the time
 * budgets composeInstance checks again), so that what is read before the start (the callables'
 * options, callable-options.ts) knows whether the instance will refuse every request.
 */
export function startingConfig(env: Readonly<Record<string, string | undefined>>, onEmulator: boolean): Config {
  const config = deployedConfig(resolveConfig(env), onEmulator);
  timeBudget(config);
  checkConnectionBudget(config);
  return config;
}

/**
 * `config` as a function instance may run with it: on the Functions emulator (`onEmulator`) any,
 * deployed none whose DATABASE_INSTANCES names an emulator, whose server the deployed function
 * would call for every database read and write.
 */
export function deployedConfig(config: Config, onEmulator: boolean): Config {
  const problem = onEmulator ? undefined : emulatorUrlProblem(config.databaseInstances);
  if (problem !== undefined) throw new ConfigError(`DATABASE_INSTANCES: ${problem}`);
  return config;
}
