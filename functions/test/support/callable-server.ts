import { randomUUID } from "node:crypto";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import express from "express";
import { deleteApp, initializeApp, type FirebaseApp } from "firebase/app";
import { CustomProvider, initializeAppCheck } from "firebase/app-check";
import { connectFunctionsEmulator, getFunctions, type Functions } from "firebase/functions";
import { callableOptions } from "../../src/callable/callable-options";
import { CALLABLE_GROUP, CALLABLES, type CallableName } from "../../src/callable/callable-operations";
import { callableTrigger } from "../../src/callable/callable-trigger";
import { callableHandler } from "../../src/callable/cloud-callable";
import type { Instance } from "../../src/runtime/instance";

const PROJECT_ID = "demo-chatify";
const REGION = "us-central1";

export interface CallableServer {
  readonly port: number;
  close(): Promise<void>;
}

/**
 * An instance's callables behind firebase-functions' own `onCall` wrapper (token checks, the
 * callable protocol, streaming, heartbeats), made as index.ts makes them (callableTrigger), on
 * express as the Functions framework serves them: the body parsed as JSON with its raw bytes
 * kept, up to the platform's 10 MB. Each at the path the client SDK calls on an emulator
 * (`/{project}/{region}/chat-{name}`), so a real `firebase/functions` client reaches it through
 * `connectFunctionsEmulator`. `env` is what the triggers would read at load (REQUIRE_APP_CHECK,
 * CORS_ORIGINS...).
 */
export async function serveCallables(instance: Instance, env: Readonly<Record<string, string>> = {}): Promise<CallableServer> {
  const app = express();
  const body = express.json({ limit: "10mb", verify: (request, _response, raw) => { Object.assign(request, { rawBody: raw }); } });
  for (const name of Object.keys(CALLABLES) as CallableName[]) {
    const trigger = callableTrigger(callableOptions(CALLABLES[name].role, env), callableHandler(name, () => Promise.resolve(instance.callables)));
    app.all(`/${PROJECT_ID}/${REGION}/${CALLABLE_GROUP}-${name}`, body, (request, response) => {
      void trigger(Object.assign(request, { rawBody: Buffer.isBuffer((request as { rawBody?: unknown }).rawBody) ? (request as unknown as { rawBody: Buffer }).rawBody : Buffer.alloc(0) }), response);
    });
  }
  const server: Server = app.listen(0, "127.0.0.1");
  await new Promise((resolve) => server.once("listening", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

export interface CallableClient {
  readonly app: FirebaseApp;
  readonly functions: Functions;
  close(): Promise<void>;
}

/**
 * A Firebase web app (the `firebase` JS SDK, in Node) whose Functions client calls the server at
 * `host:port` as an emulator, optionally with App Check tokens from `appCheckToken` (a custom
 * provider: the debug provider needs Google).
 */
export function callableClient(host: string, port: number, options: { projectId?: string; appCheckToken?: () => string } = {}): CallableClient {
  const app = initializeApp({ projectId: options.projectId ?? PROJECT_ID, apiKey: "fake-api-key", appId: "1:123456789:web:0a1b2c3d4e5f" }, randomUUID());
  const { appCheckToken } = options;
  if (appCheckToken) {
    initializeAppCheck(app, {
      provider: new CustomProvider({ getToken: () => Promise.resolve({ token: appCheckToken(), expireTimeMillis: Date.now() + 3_600_000 }) }),
      isTokenAutoRefreshEnabled: false,
    });
  }
  const functions = getFunctions(app, REGION);
  connectFunctionsEmulator(functions, host, port);
  return { app, functions, close: () => deleteApp(app) };
}
