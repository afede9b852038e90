import { defineInt, select, type IntParam } from "firebase-functions/params";
import type { HttpsOptions } from "firebase-functions/v2/https";
import { openaiApiKey } from "./config-params";

/** A deploy knob: an int param with its range (and, for memory, the sizes Cloud Run offers). */
export interface DeployParamSpec {
  readonly default: number;
  readonly min: number;
  /** What needs a value of at least `min`, when not the range alone: the error refusing a smaller one names it. */
  readonly minFor?: string;
  readonly max: number;
  readonly choices?: readonly number[];
  readonly description: string;
}

/**
 * What the platform gives each HTTPS function instance, as params: the Firebase CLI resolves them
 * at deploy (from `functions/.env.<project>`, or by asking) and sets each on the functions as an
 * environment variable, so an instance reads the very values it was deployed with (`resolveConfig`
 * checks them at start, and the time budget uses the timeout). One value for every function of
 * the codebase: params are global. No name may be one the CLI reserves (`FUNCTION_TIMEOUT_SEC`,
 * `FUNCTION_MEMORY_MB`: firebase-tools 15.34 lib/functions/env.js).
 */
export const DEPLOY_PARAMS = {
  MIN_INSTANCES: {
    default: 0,
    min: 0,
    max: 1_000,
    description:
      "Instances of the message function kept running while idle, so a message after a quiet spell meets no cold start. Each is billed all the time, idle or not (its memory and a share of its CPU); 0 keeps none.",
  },
  MAX_INSTANCES: {
    default: 10,
    min: 1,
    max: 1_000,
    description: "Most instances each function may run at once: a bound on the bill and on the database connections; past it requests wait, then fail with 429.",
  },
  CONCURRENCY: {
    default: 80,
    min: 1,
    max: 1_000,
    description: "Requests one instance serves at once. More needs more memory: 512 MiB was measured at 50 concurrent messages.",
  },
  /**
   * 512 MiB, not 256: at 50 concurrent messages on the database, a heap capped at 128 MiB (what
   * 256 MiB leaves) ran 120 full collections in 5 s at 4x the CPU per message and peaked at
   * 258 MiB of RSS, past the limit; capped at 256 MiB: 4 collections, 265 MiB (`npm run bench`, e).
   */
  MEMORY_MIB: {
    default: 512,
    min: 256,
    max: 32_768,
    choices: [256, 512, 1_024, 2_048, 4_096, 8_192, 16_384, 32_768],
    description: "Memory of each HTTPS function instance, in MiB (256 to 32768, a power of two). 512 is the measured default; 256 ran out at 50 concurrent messages.",
  },
  TIMEOUT_SECONDS: {
    default: 60,
    min: 1,
    max: 3_600,
    description:
      "Timeout of the HTTPS and callable functions, in seconds (the Auth trigger gets at most 540, an event trigger's limit). An instance refuses to start when a message's time budget (model attempts, retries, database calls) does not fit in it.",
  },
} as const satisfies Record<string, DeployParamSpec>;

export type DeployParamName = keyof typeof DEPLOY_PARAMS;

/** The knobs as Cloud Functions params, declared at load so the CLI discovers, asks for and documents them. */
export const deployParams = Object.fromEntries(
  Object.entries(DEPLOY_PARAMS).map(([name, spec]: [string, DeployParamSpec]) => [
    name,
    defineInt(name, { default: spec.default, description: spec.description, ...(spec.choices ? { input: select([...spec.choices]) } : {}) }),
  ]),
) as Record<DeployParamName, IntParam>;

/** The declared defaults, under the names the triggers and the time budget have used. */
export const FUNCTION_TIMEOUT_SECONDS = DEPLOY_PARAMS.TIMEOUT_SECONDS.default;
export const FUNCTION_MEMORY = `${DEPLOY_PARAMS.MEMORY_MIB.default}MiB` as const;
export const FUNCTION_CONCURRENCY = DEPLOY_PARAMS.CONCURRENCY.default;
export const MAX_INSTANCES = DEPLOY_PARAMS.MAX_INSTANCES.default;

/**
 * The scheduled clean-up's timeout (`expireSessions`): a fixed 300 s, within a scheduled function's
 * 1800 s limit (firebase-tools 15.34 validate.js), which the CLI also makes Cloud Scheduler's
 * attempt deadline (lib/gcp/cloudscheduler.js: 180 to 1800 s). The run shares it out among its
 * steps (runtime/time-budget.ts maintenanceRunMs).
 */
export const MAINTENANCE_TIMEOUT_SECONDS = 300;

/**
 * The longest timeout Cloud Functions gives an event-triggered function (2nd gen), below the
 * 3600 s that TIMEOUT_SECONDS may give the HTTPS functions: firebase-tools 15.34 refuses the whole
 * deploy when one trigger's timeout is above its type's limit (lib/deploy/functions/validate.js
 * validateTimeoutConfig, MAX_V2_EVENTS_TIMEOUT_SECONDS).
 */
export const EVENT_TIMEOUT_MAX_SECONDS = 540;

/**
 * An event trigger's timeout: TIMEOUT_SECONDS up to EVENT_TIMEOUT_MAX_SECONDS, as an expression
 * the CLI resolves at deploy (`{{ params.TIMEOUT_SECONDS <= 540 ? params.TIMEOUT_SECONDS : 540 }}`),
 * so that every TIMEOUT_SECONDS the param accepts deploys.
 */
export const eventTimeoutSeconds = deployParams.TIMEOUT_SECONDS.lessThanOrEqualTo(EVENT_TIMEOUT_MAX_SECONDS).thenElse(
  deployParams.TIMEOUT_SECONDS,
  EVENT_TIMEOUT_MAX_SECONDS,
);

/**
 * The timeout an event trigger really runs with, from the TIMEOUT_SECONDS its instance read (the
 * deploy sets the param, not the capped value, in the environment): what its deadlines must fit.
 */
export function eventTriggerTimeoutSeconds(timeoutSeconds: number): number {
  return Math.min(timeoutSeconds, EVENT_TIMEOUT_MAX_SECONDS);
}

/**
 * What a function does with OpenAI, which decides its options: `message` calls the model (and,
 * with MODERATION on, moderates the user's message beside it); `moderated` calls no model but
 * moderates a user's message to another user (with MODERATION on); `session` never reaches OpenAI.
 */
export type FunctionRole = "message" | "moderated" | "session";

/**
 * The options of an HTTPS or callable function, each knob the param itself (firebase-functions 7
 * takes an `Expression` for each: the manifest carries `{{ params.NAME }}` and the CLI resolves it
 * at deploy). The OpenAI key goes to the functions that may call OpenAI (`message`, `moderated`)
 * and to no other: Cloud Functions mounts a secret only on the functions that declare it, so one
 * that moderates without it answers every message 500 CONFIGURATION_ERROR, and one that never
 * calls OpenAI has no use for it. The warm instances (MIN_INSTANCES) go to `message` alone; the
 * others keep none, their cold start costing a user one wait at most per session.
 */
export function httpsOptions(role: FunctionRole): HttpsOptions {
  return {
    invoker: "public",
    timeoutSeconds: deployParams.TIMEOUT_SECONDS,
    memory: deployParams.MEMORY_MIB,
    concurrency: deployParams.CONCURRENCY,
    maxInstances: deployParams.MAX_INSTANCES,
    ...(role === "message" ? { minInstances: deployParams.MIN_INSTANCES } : {}),
    ...(role === "session" ? {} : { secrets: [openaiApiKey] }),
  };
}
