import type { Response } from "express";
import { onInit } from "firebase-functions/v2/core";
import { HttpsError, onRequest, type CallableRequest, type CallableResponse, type Request } from "firebase-functions/v2/https";
import { onUserDeleted } from "firebase-functions/v2/identity";
import { setGlobalOptions } from "firebase-functions/v2/options";
import { onSchedule } from "firebase-functions/v2/scheduler";
import { callableOptions } from "./callable/callable-options";
import type { CallableName } from "./callable/callable-operations";
import { callableTrigger } from "./callable/callable-trigger";
import { deployParams, eventTimeoutSeconds, FUNCTION_MEMORY, httpsOptions, MAINTENANCE_TIMEOUT_SECONDS } from "./function-options";
import type { EndpointName } from "./http/endpoints";

// Triggers only: module load declares them and the params (config-params), nothing else, so a
// cold start and the CLI's discovery stay cheap. The app is imported on first use.
const app = () => import("./runtime/cloud-app.js");

setGlobalOptions({ maxInstances: deployParams.MAX_INSTANCES });

// The instance starts (config resolved and checked, adapters built) before its first request.
onInit(async () => {
  await (await app()).cloudInstance().catch(() => undefined);
});

const serve = (endpoint: EndpointName) => async (request: Request, response: Response) => {
  await (await app()).handlers[endpoint](request, response);
};

// CORS is answered by the shared HTTP boundary (CORS_ORIGINS), identically here and locally.
// The deploy knobs are params the CLI resolves at deploy (function-options.ts).
export const createSession = onRequest(httpsOptions("session"), serve("createSession"));
export const sendMessage = onRequest(httpsOptions("message"), serve("sendMessage"));
export const endSession = onRequest(httpsOptions("session"), serve("endSession"));
// The onCall wrapper here answers as errors only its own HttpsError class: the handler gets it.
const call = (name: CallableName) => async (request: CallableRequest<unknown>, response?: CallableResponse) =>
  (await app()).callables[name](request, response, HttpsError);

// The same operations as callable functions for the Functions client SDK, deployed as
// chat-createSession, chat-sendMessage, ... (callable/callable-operations.ts). Each is onCall's
// own, refusing data firebase-functions cannot decode (callable/callable-trigger.ts).
export const chat = {
  createSession: callableTrigger(callableOptions("session"), call("createSession")),
  sendMessage: callableTrigger(callableOptions("message"), call("sendMessage")),
  endSession: callableTrigger(callableOptions("session"), call("endSession")),
  listSessions: callableTrigger(callableOptions("session"), call("listSessions")),
  getSession: callableTrigger(callableOptions("session"), call("getSession")),
  exportUserData: callableTrigger(callableOptions("session"), call("exportUserData")),
  eraseUserData: callableTrigger(callableOptions("session"), call("eraseUserData")),
  requestConnection: callableTrigger(callableOptions("session"), call("requestConnection")),
  listConnections: callableTrigger(callableOptions("session"), call("listConnections")),
  getConnection: callableTrigger(callableOptions("session"), call("getConnection")),
  endConnection: callableTrigger(callableOptions("session"), call("endConnection")),
  acceptConnection: callableTrigger(callableOptions("session"), call("acceptConnection")),
  declineConnection: callableTrigger(callableOptions("session"), call("declineConnection")),
  blockConnection: callableTrigger(callableOptions("session"), call("blockConnection")),
  unblockConnection: callableTrigger(callableOptions("session"), call("unblockConnection")),
  sendConnectionMessage: callableTrigger(callableOptions("moderated"), call("sendConnectionMessage")),
  listConnectionMessages: callableTrigger(callableOptions("session"), call("listConnectionMessages")),
  registerDevice: callableTrigger(callableOptions("session"), call("registerDevice")),
  unregisterDevice: callableTrigger(callableOptions("session"), call("unregisterDevice")),
};

// Connections between users (docs/connections.md): one function per Hosting path, serving every method of it.
export const connections = onRequest(httpsOptions("session"), serve("connections"));
export const connection = onRequest(httpsOptions("session"), serve("connection"));
export const acceptConnection = onRequest(httpsOptions("session"), serve("acceptConnection"));
export const declineConnection = onRequest(httpsOptions("session"), serve("declineConnection"));
export const blockConnection = onRequest(httpsOptions("session"), serve("blockConnection"));
// Its POST moderates the message (MODERATION): the OpenAI key, as for chat-sendConnectionMessage.
export const connectionMessages = onRequest(httpsOptions("moderated"), serve("connectionMessages"));
export const devices = onRequest(httpsOptions("session"), serve("devices"));

// A fixed timeout (function-options.ts), which the run shares out among its steps.
export const expireSessions = onSchedule({ schedule: "every 15 minutes", timeoutSeconds: MAINTENANCE_TIMEOUT_SECONDS, memory: FUNCTION_MEMORY }, async () => {
  await (await app()).maintain();
});

// A user's conversations and data (issue 16). `getSession` is also served by `endSession` on the
// Hosting path `/api/v1/chatbot/session/{id}` (rewrites match paths only).
export const listSessions = onRequest(httpsOptions("session"), serve("listSessions"));
export const getSession = onRequest(httpsOptions("session"), serve("getSession"));
export const exportUserData = onRequest(httpsOptions("session"), serve("exportUserData"));
export const eraseUserData = onRequest(httpsOptions("session"), serve("eraseUserData"));
// 2nd gen, as every function here: a 1st gen `auth.user().onDelete` cannot run on nodejs24
// (docs/conversations.md, "A deleted Auth user"). Retried: the erasure is harmless to repeat.
// An event trigger: TIMEOUT_SECONDS capped at the 540 s such a function may have (function-options.ts).
export const eraseDeletedUser = onUserDeleted({ retry: true, timeoutSeconds: eventTimeoutSeconds, memory: deployParams.MEMORY_MIB }, async (event) => {
  await (await app()).eraseDeletedUser(event.data.uid, event.time);
});
