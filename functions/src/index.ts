import { onInit } from "firebase-functions/v2/core";
import { onRequest, type HttpsOptions } from "firebase-functions/v2/https";
import { setGlobalOptions } from "firebase-functions/v2/options";
import { onSchedule } from "firebase-functions/v2/scheduler";
import { openaiApiKey } from "./config-params";
import { FUNCTION_CONCURRENCY, FUNCTION_MEMORY, FUNCTION_TIMEOUT_SECONDS, MAX_INSTANCES } from "./function-options";
import { cloudHandler } from "./http/cloud-adapter";
import { cloudInstance } from "./runtime/cloud-instance";
import { scheduledMaintenance } from "./runtime/scheduled-maintenance";

setGlobalOptions({ maxInstances: MAX_INSTANCES });

// The instance starts (config resolved and checked, adapters built) before its first request.
onInit(async () => {
  await cloudInstance().catch(() => undefined);
});

// CORS is answered by the shared HTTP boundary (CORS_ORIGINS), identically here and locally.
const options: HttpsOptions = { invoker: "public", timeoutSeconds: FUNCTION_TIMEOUT_SECONDS, memory: FUNCTION_MEMORY, concurrency: FUNCTION_CONCURRENCY };
const api = async () => (await cloudInstance()).api;

export const createSession = onRequest(options, cloudHandler("createSession", api));
export const sendMessage = onRequest({ ...options, secrets: [openaiApiKey] }, cloudHandler("sendMessage", api));
export const endSession = onRequest(options, cloudHandler("endSession", api));
export const expireSessions = onSchedule({ schedule: "every 15 minutes", timeoutSeconds: 300, memory: FUNCTION_MEMORY }, async () => {
  await scheduledMaintenance(await cloudInstance());
});
