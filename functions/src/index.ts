import { setGlobalOptions } from "firebase-functions/v2";
import { onRequest, type HttpsOptions } from "firebase-functions/v2/https";
import { onSchedule } from "firebase-functions/v2/scheduler";
import { openaiApiKey } from "./config";
import { cloudHandler } from "./http/cloud-adapter";
import { ENDPOINTS } from "./http/endpoints";
import { cloudRuntime } from "./runtime/cloud-runtime";
import { scheduledMaintenance } from "./runtime/scheduled-maintenance";

setGlobalOptions({ maxInstances: 10 });

// CORS is answered by the shared HTTP boundary (CORS_ORIGINS), identically here and locally.
const options: HttpsOptions = { invoker: "public", timeoutSeconds: 60, memory: "256MiB", concurrency: 80 };

export const createSession = onRequest(options, cloudHandler(ENDPOINTS.createSession, cloudRuntime));
export const sendMessage = onRequest({ ...options, secrets: [openaiApiKey] }, cloudHandler(ENDPOINTS.sendMessage, cloudRuntime));
export const endSession = onRequest(options, cloudHandler(ENDPOINTS.endSession, cloudRuntime));
export const expireSessions = onSchedule({ schedule: "every 15 minutes", timeoutSeconds: 300, memory: "256MiB" }, scheduledMaintenance(cloudRuntime));
