import type { CallableOptions } from "firebase-functions/v2/https";
import { corsOriginsParam } from "../config";
import { startingConfig } from "../runtime/cloud-instance";
import { httpsOptions, type FunctionRole } from "../function-options";
import { HEARTBEAT_MS } from "../http/event-stream";

/**
 * The options of a callable: the HTTP functions' own (the deploy knobs as params; the OpenAI key
 * for the callables that may call OpenAI, the warm instances for the message callable), App
 * Check enforced by the platform as the HTTP routes enforce it (and the token consumed on the
 * message callable with replay protection), CORS from CORS_ORIGINS, and a heartbeat as often as
 * the SSE route's.
 *
 * The App Check and CORS settings are read from the environment when the triggers load, as the
 * instance reads its config: deployed, the CLI has set every param there by then. Not the param
 * objects: firebase-functions 7.4 reads `enforceAppCheck` and `consumeAppCheckToken` with
 * `.value()` when `onCall` runs, warning at each deploy that it is "usually a mistake", and reads
 * REQUIRE_APP_CHECK=1 as false where the instance reads true; and it takes a string param for
 * `cors` as a single origin, not a list. Neither is in the manifest the CLI deploys.
 */
export function callableOptions(role: FunctionRole, env: Readonly<Record<string, string | undefined>> = process.env): CallableOptions {
  const read = callableSettings(env);
  return {
    ...httpsOptions(role),
    enforceAppCheck: read.requireAppCheck,
    ...(role === "message" ? { consumeAppCheckToken: read.requireAppCheck && read.replayProtection } : {}),
    cors: read.cors,
    heartbeatSeconds: HEARTBEAT_MS / 1000,
  };
}

/**
 * What the callables' options take from the config. With a config the instance will refuse at
 * start (startingConfig: every check of the params it makes), every call is answered CONFIGURATION_ERROR, as the HTTP routes answer it
 * (http/cloud-adapter.ts): App Check is not enforced, since firebase-functions would refuse a call
 * without a token `unauthenticated` before the instance could say what is wrong (a client told to
 * sign in again, the error never seen), and CORS_ORIGINS is read on its own, so a page of another
 * origin reads the answer (no origin when CORS_ORIGINS is itself unreadable).
 */
function callableSettings(env: Readonly<Record<string, string | undefined>>): { requireAppCheck: boolean; replayProtection: boolean; cors: boolean | string[] } {
  try {
    const config = startingConfig(env, env.FUNCTIONS_EMULATOR === "true");
    return {
      requireAppCheck: config.requireAppCheck,
      replayProtection: config.appCheckReplayProtection,
      cors: config.corsOrigins === "*" ? true : [...config.corsOrigins],
    };
  } catch {
    return { requireAppCheck: false, replayProtection: false, cors: corsOfUnstarted(env) };
  }
}

function corsOfUnstarted(env: Readonly<Record<string, string | undefined>>): boolean | string[] {
  try {
    const origins = corsOriginsParam(env);
    return origins === "*" ? true : [...origins];
  } catch {
    return false;
  }
}
