import type { Response } from "express";
import { onInit } from "firebase-functions/v2/core";
import { onRequest, type HttpsOptions, type Request } from "firebase-functions/v2/https";
import { onUserDeleted } from "firebase-functions/v2/identity";
import { setGlobalOptions } from "firebase-functions/v2/options";
import { onSchedule } from "firebase-functions/v2/scheduler";
import { openaiApiKey } from "./config-params";
import { FUNCTION_CONCURRENCY, FUNCTION_MEMORY, FUNCTION_TIMEOUT_SECONDS, MAX_INSTANCES } from "./function-options";
import type { EndpointName } from "./http/endpoints";

// Triggers only: module load declares them and the params (config-params), nothing else, so a
// cold start and the CLI's discovery stay cheap. The app is imported on first use.
const app = () => import("./runtime/cloud-app.js");

setGlobalOptions({ maxInstances: MAX_INSTANCES });

// The instance starts (config resolved and checked, adapters built) before its first request.
onInit(async () => {
  await (await app()).cloudInstance().catch(() => undefined);
});

const serve = (endpoint: EndpointName) => async (request: Request, response: Response) => {
  await (await app()).handlers[endpoint](request, response);
};

// CORS is answered by the shared HTTP boundary (CORS_ORIGINS), identically here and locally.
const options: HttpsOptions = { invoker: "public", timeoutSeconds: FUNCTION_TIMEOUT_SECONDS, memory: FUNCTION_MEMORY, concurrency: FUNCTION_CONCURRENCY };

export const createSession = onRequest(options, serve("createSession"));
export const sendMessage = onRequest({ ...options, secrets: [openaiApiKey] }, serve("sendMessage"));
export const endSession = onRequest(options, serve("endSession"));
export const expireSessions = onSchedule({ schedule: "every 15 minutes", timeoutSeconds: 300, memory: FUNCTION_MEMORY }, async () => {
  await (await app()).maintain();
});

// A user's conversations and data (issue 16). `getSession` is also served by `endSession` on the
// Hosting path `/api/v1/chatbot/session/{id}` (rewrites match paths only).
export const listSessions = onRequest(options, serve("listSessions"));
export const getSession = onRequest(options, serve("getSession"));
export const exportUserData = onRequest(options, serve("exportUserData"));
export const eraseUserData = onRequest(options, serve("eraseUserData"));
// 2nd gen, as every function here: a 1st gen `auth.user().onDelete` cannot run on nodejs24
// (docs/conversations.md, "A deleted Auth user"). Retried: the erasure is harmless to repeat.
export const eraseDeletedUser = onUserDeleted({ retry: true, timeoutSeconds: FUNCTION_TIMEOUT_SECONDS, memory: FUNCTION_MEMORY }, async (event) => {
  await (await app()).eraseDeletedUser(event.data.uid);
});
