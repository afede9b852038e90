import type { Server } from "node:http";
import { isIPv6 } from "node:net";
import { integerSetting, messageTokensConsumed } from "../config";
import { functionsLog } from "../log/log";
import { OFFLINE_PUSH_LABEL } from "../notify/offline-sender";
import { createLocalInstance } from "./local-instance";
import { createLocalServer } from "./local-server";
import { APP_CHECK_SITE_KEY_VARIABLE, defaultProjectId, hostingRewrites, localDatabase, localSite } from "./project-files";

const REGION = "us-central1";

/** PORT: 5000 unless set; 0 asks the system for a free port. */
const LOCAL_PORT = { default: 5000, min: 0, max: 65_535 };

/** `npm start`: every function on one port, offline. */
async function main(): Promise<void> {
  const projectId = process.env.GCLOUD_PROJECT || defaultProjectId();
  // Read as the params are (config.ts): blank is the default, 0 any free port, anything else not a port is refused by name.
  const host = process.env.HOST?.trim() || "127.0.0.1";
  const port = integerSetting("PORT", process.env.PORT, LOCAL_PORT);
  const local = await createLocalInstance(projectId, functionsLog);
  const site = localSite(projectId, process.env.FIREBASE_AUTH_EMULATOR_HOST, {
    appCheckSiteKey: process.env[APP_CHECK_SITE_KEY_VARIABLE],
    // As the instance consumes the message calls' tokens: the page then sends each message a limited-use one.
    appCheckReplayProtection: messageTokensConsumed(local.instance.config),
    // The instances as the store was built from them (config.ts normalised them), so the page listens where connections are written.
    database: localDatabase(projectId, process.env.FIREBASE_DATABASE_EMULATOR_HOST, local.instance.config.databaseInstances),
  });
  const server = createLocalServer({ api: local.instance.api, maxBodyBytes: local.instance.config.maxBodyBytes, rewrites: hostingRewrites(), projectId, region: REGION, site });
  await listening(server, port, host);
  const address = server.address();
  // An IPv6 address goes in brackets in a URL (RFC 3986): http://[::1]:5000, not http://::1:5000.
  const base = `http://${isIPv6(host) ? `[${host}]` : host}:${typeof address === "object" && address ? address.port : port}`;
  const lines = [
    "Chatify Functions running locally",
    `  sessions: ${local.storeLabel}${local.seeded.length > 0 ? `; seeded templates: ${local.seeded.join(", ")}` : ""}`,
    `  model:    ${local.modelLabel}`,
    `  push:     ${OFFLINE_PUSH_LABEL} (notifications are logged, never sent)`,
    `  auth:     ${local.instance.config.requireAuth ? "ID token required (REQUIRE_AUTH=true)" : "ID token optional; without one the body's user_id is trusted (REQUIRE_AUTH=false)"}`,
    "",
    `  Chat page: ${base}/  (public/; Firebase Auth SDK at /__/firebase/: ${site.firebaseSdkDir ? "served from node_modules/firebase" : "not installed, run `npm test` once or `npm --prefix functions ci`"})`,
    "",
    `  Original routes (API base URL ${base}/api/v1):`,
    `    POST   ${base}/api/v1/chatbot/session`,
    `    POST   ${base}/api/v1/chatbot/session/{session_id}/message`,
    `    DELETE ${base}/api/v1/chatbot/session/{session_id}`,
    `    GET    ${base}/api/v1/chatbot/sessions · GET ${base}/api/v1/chatbot/session/{session_id}`,
    `    GET    ${base}/api/v1/chatbot/me/export · DELETE ${base}/api/v1/chatbot/me`,
    "  Function URLs:",
    `    POST   ${base}/${projectId}/${REGION}/createSession`,
    `    POST   ${base}/${projectId}/${REGION}/sendMessage/{session_id}`,
    `    DELETE ${base}/${projectId}/${REGION}/endSession/{session_id}`,
    `    GET    ${base}/${projectId}/${REGION}/listSessions · GET .../getSession/{session_id}`,
    `    GET    ${base}/${projectId}/${REGION}/exportUserData · DELETE .../eraseUserData`,
    "",
    "  Connections between users (docs/connections.md), original routes; function URLs as above:",
    `    GET, POST        ${base}/api/v1/connections                       (connections)`,
    `    GET, DELETE      ${base}/api/v1/connections/{connection_id}       (connection)`,
    `    POST             ${base}/api/v1/connections/{connection_id}/accept  (acceptConnection), /decline (declineConnection)`,
    `    POST, DELETE     ${base}/api/v1/connections/{connection_id}/block   (blockConnection)`,
    `    GET, POST        ${base}/api/v1/connections/{connection_id}/messages (connectionMessages)`,
    `    POST, DELETE     ${base}/api/v1/devices                           (devices)`,
    "",
  ];
  process.stdout.write(`${lines.join("\n")}\n`);
  const stop = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}

/**
 * Resolves once `server` listens on `port`; rejects with what stops it (listen reports that as an
 * 'error' event, which unhandled would end the process with a stack trace): a port taken, as by
 * the Hosting emulator, which listens on 5000 too, says which setting to change.
 */
function listening(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const failed = (error: NodeJS.ErrnoException) => {
      reject(error.code === "EADDRINUSE" ? new Error(`port ${port} is in use (set PORT)`) : error);
    };
    server.once("error", failed);
    server.listen(port, host, () => {
      server.off("error", failed);
      resolve();
    });
  });
}

main().catch((error: unknown) => {
  process.stderr.write(`Could not start: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
