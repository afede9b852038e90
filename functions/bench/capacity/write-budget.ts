import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import { deleteApp, initializeApp } from "firebase-admin/app";
import { getDatabase, type Database } from "firebase-admin/database";
import { silentLog } from "../../src/log/log";
import { composeInstance } from "../../src/runtime/instance";
import type { FakeOpenAiServer } from "../../test/support/fake-openai-server";
import { LocalServers } from "../../test/support/local-servers";
import { freshNamespace } from "../../test/support/rtdb";
import { NO_TOKENS, serviceConfig } from "../../test/support/service-env";
import { createSession, sendMessage } from "../shared/http-client";
import { countsSince, type RtdbWire, type WireCounts } from "../cost/rtdb-wire";

/**
 * One function instance with a given partial cadence (PARTIAL_MAX_INTERVAL_MS), on a database
 * namespace of its own so that rtdb-wire's counts are its own, with a warm session and a
 * firebase-admin app of the bench's own listening to that session as a page would.
 */
export interface CadenceCase {
  readonly name: string;
  readonly maxIntervalMs: number;
  readonly namespace: string;
  readonly sessionId: string;
  readonly baseUrl: string;
  readonly watcher: Database;
  close(): Promise<void>;
}

export async function startCadence(wire: RtdbWire, fake: FakeOpenAiServer, name: string, maxIntervalMs: number): Promise<CadenceCase> {
  const namespace = freshNamespace("capacity-w");
  await wire.seedTemplates(namespace);
  const config = serviceConfig(fake.baseUrl, { PARTIAL_MAX_INTERVAL_MS: String(maxIntervalMs), OPENAI_TIMEOUT_MS: "30000" });
  const app = initializeApp({ projectId: "demo-chatify", databaseURL: `https://${namespace}.firebaseio.com` }, randomUUID());
  const watcherApp = initializeApp({ projectId: "demo-chatify", databaseURL: `https://${namespace}.firebaseio.com` }, randomUUID());
  const servers = new LocalServers();
  const baseUrl = await servers.serve(composeInstance(config, { app, identity: NO_TOKENS, log: silentLog }));
  const sessionId = await createSession(baseUrl, "capacity-user");
  // Warm: the instance holds the session's state and the user's usage, as for every later message.
  for (let n = 0; n < 2; n += 1) await sendMessage(baseUrl, sessionId, `warm-up ${n}`);
  const entry = { name, maxIntervalMs, namespace, sessionId, baseUrl, watcher: getDatabase(watcherApp) };
  await storedMessages(entry, 4);
  return {
    ...entry,
    async close() {
      await servers.close();
      await Promise.all([deleteApp(app), deleteApp(watcherApp)]);
    },
  };
}

export interface MessageCost {
  readonly wire: WireCounts;
  /** UTF-16 units the instance sent to the database (its writes, listens and reads). */
  readonly unitsIn: number;
  /** ms from the model's first token to the first partial a listener saw (undefined: none seen). */
  readonly firstPartialMs: number | undefined;
}

/**
 * One message to the case's session, the model answering `chunks` `chunkDelayMs` apart: what it
 * cost on the wire, the copy after the answer included, and when a listener first saw its partial.
 */
export async function measureMessage(wire: RtdbWire, fake: FakeOpenAiServer, entry: CadenceCase, chunks: readonly string[], chunkDelayMs: number, sent: number): Promise<MessageCost> {
  let firstToken: number | undefined;
  let firstPartial: number | undefined;
  const partials = entry.watcher.ref(`userSessions/${entry.sessionId}/partials`);
  const seen = partials.on("value", (snapshot) => {
    if (firstPartial === undefined && snapshot.exists()) firstPartial = performance.now();
  });
  fake.enqueue({ kind: "stream", chunks, chunkDelayMs, onChunk: (index) => { if (index === 0) firstToken = performance.now(); } });
  const before = await wire.counts(entry.namespace);
  const inBefore = await wire.unitsIn(entry.namespace);
  await sendMessage(entry.baseUrl, entry.sessionId, `Message ${sent}: tell me a story.`);
  await storedMessages(entry, 2 * (sent + 2));
  partials.off("value", seen);
  const after = await wire.counts(entry.namespace);
  return {
    wire: countsSince(before, after),
    unitsIn: (await wire.unitsIn(entry.namespace)) - inBefore,
    firstPartialMs: firstPartial === undefined || firstToken === undefined ? undefined : firstPartial - firstToken,
  };
}

/** Resolves once the session holds `count` messages: the copy is sent after the answer, not awaited. */
function storedMessages(entry: { readonly watcher: Database; readonly sessionId: string }, count: number): Promise<void> {
  const messages = entry.watcher.ref(`userSessions/${entry.sessionId}/messages`);
  return new Promise((resolve) => {
    const listener = messages.on("value", (snapshot) => {
      if (snapshot.numChildren() < count) return;
      messages.off("value", listener);
      resolve();
    });
  });
}
