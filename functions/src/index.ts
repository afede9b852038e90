import type { Response } from "express";
import { onInit } from "firebase-functions/v2/core";
import { onRequest, type HttpsOptions, type Request } from "firebase-functions/v2/https";
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
// Connections between users (docs/connections.md): one function per Hosting path, serving every method of it.
export const connections = onRequest(options, serve("connections"));
export const connection = onRequest(options, serve("connection"));
export const acceptConnection = onRequest(options, serve("acceptConnection"));
export const declineConnection = onRequest(options, serve("declineConnection"));
export const blockConnection = onRequest(options, serve("blockConnection"));
export const connectionMessages = onRequest(options, serve("connectionMessages"));
export const devices = onRequest(options, serve("devices"));
export const expireSessions = onSchedule({ schedule: "every 15 minutes", timeoutSeconds: 300, memory: FUNCTION_MEMORY }, async () => {
  await (await app()).maintain();
});
