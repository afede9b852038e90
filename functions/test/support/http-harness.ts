import { randomUUID } from "node:crypto";
import { initializeApp } from "firebase-admin/app";
import type { Database } from "firebase-admin/database";
import type { AppCheckVerifier } from "../../src/auth/app-check";
import { firebaseIdentity } from "../../src/auth/firebase-identity";
import type { UserDataLimits } from "../../src/http/user-data-context";
import { seedTemplates } from "../../src/local/project-files";
import { silentLog, type Log } from "../../src/log/log";
import { composeInstance, type Instance as ServiceInstance } from "../../src/runtime/instance";
import { MemoryStore } from "../../src/store/memory-store";
import { RtdbStore } from "../../src/store/rtdb/rtdb-store";
import type { SessionStore } from "../../src/store/session-store";
import type { PushSender } from "../../src/notify/push-sender";
import { createOfflineSender } from "../../src/notify/offline-sender";
import { MemoryConnectionStore } from "../../src/store/memory-connection-store";
import type { ConnectionAdapter } from "../../src/store/connection-erasure-store";
import { RtdbConnectionStore } from "../../src/store/rtdb/rtdb-connection-store";
import { FakeOpenAiServer } from "./fake-openai-server";
import { LocalServers } from "./local-servers";
import { describeWithRtdb, freshNamespace, RtdbInstances, rtdbSkipReason } from "./rtdb";
import { ShardedRtdb, shardedSkipReason, type ShardedLayout } from "./sharded-rtdb";
import { describeUnless } from "./visible-skip";
import { serviceConfig } from "./service-env";

/** `rtdb-2-…`: sessions spread over two database instances (docs/sharding.md), as namespaces of one server or on two server processes. */
export type StoreKind = "memory" | "rtdb" | `rtdb-2-${ShardedLayout}`;

export interface Answer {
  readonly status: number;
  readonly headers: Headers;
  /** Parsed JSON, or the raw text when the body is not JSON. */
  readonly body: Record<string, unknown> & { error?: { code: string; message: string; details?: unknown } };
  readonly text: string;
}

/**
 * One "function instance": a runtime of its own (cache, database connection) behind the
 * local server, reached over real HTTP. Several instances can share one database.
 */
export interface Instance {
  readonly baseUrl: string;
  readonly runtime: ServiceInstance;
  /** The database itself, for assertions (not the wrapped store the instance uses). */
  readonly store: SessionStore;
  /** Its connections and devices, for assertions. */
  readonly connectionStore: ConnectionAdapter;
  /** This instance's own firebase-admin connection (database mode only), e.g. to cut it as a crash would. */
  readonly database?: Database;
  call(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<Answer>;
}

export interface Harness {
  readonly fake: FakeOpenAiServer;
  /**
   * The Realtime Database namespace the instances share (database mode only), so a test can
   * read it through a firebase-admin app of its own (`new RtdbInstances(namespace).database()`).
   */
  readonly namespace?: string;
  /** The database instances sessions are spread over (`rtdb-2-…` kinds), for assertions that read them directly. */
  readonly shards?: ShardedRtdb;
  /** The first instance. */
  readonly api: Instance;
  /** Starts another instance on the same database. */
  /** `env`: params of its own over the harness's (e.g. DATABASE_INSTANCES before an instance was added). */
  instance(env?: Record<string, string>): Promise<Instance>;
  close(): Promise<void>;
}

export interface HarnessOptions {
  readonly store: StoreKind;
  /** Wraps each instance's store, e.g. to inject faults. */
  readonly wrapStore?: (store: SessionStore) => SessionStore;
  /** Reach the database through this address (a proxy) instead of FIREBASE_DATABASE_EMULATOR_HOST. */
  readonly databaseHost?: string;
  /** The project whose ID tokens are accepted (default demo-chatify). */
  readonly projectId?: string;
  readonly env?: Record<string, string>;
  readonly clock?: () => number;
  readonly log?: Log;
  /** The function timeout the instances' time budget must fit (default: the deployed one). */
  readonly functionTimeoutMs?: number;
  /** The longest silence on a streamed answer (default: the deployed 15 s). */
  readonly heartbeatMs?: number;
  /** The App Check verifier the instances use with REQUIRE_APP_CHECK=true (test/support/local-app-check.ts serves its keys). */
  readonly appCheck?: AppCheckVerifier;
  /** What an export part or an erasure request may carry or take (default: the deployed ones). */
  readonly userDataLimits?: Partial<UserDataLimits>;
  /** Where the instances send push notifications (default: an offline sender per instance). */
  readonly pushSender?: PushSender;
}

export async function startHarness(options: HarnessOptions): Promise<Harness> {
  const fake = await FakeOpenAiServer.start();
  // As the local server: a token is optional unless a suite asks otherwise.
  const layout = options.store.startsWith("rtdb-2-") ? (options.store.slice("rtdb-2-".length) as ShardedLayout) : undefined;
  const shards = layout === undefined ? undefined : await ShardedRtdb.start(2, layout);
  const env = { OPENAI_TIMEOUT_MS: "3000", ...(shards ? { DATABASE_INSTANCES: shards.param } : {}), ...options.env };
  const servers = new LocalServers();
  const rtdb = options.store === "rtdb" ? new RtdbInstances(freshNamespace("http"), options.databaseHost) : undefined;
  const memory = new MemoryStore();
  const memoryConnections = new MemoryConnectionStore();

  async function instance(own?: Record<string, string>): Promise<Instance> {
    // Read here, where a refused config closes what was started (below).
    const config = serviceConfig(fake.baseUrl, own === undefined ? env : { ...env, ...own });
    const databases = shards?.databases(config.databaseInstances);
    const database = databases?.[0] ?? rtdb?.database();
    const base = databases ? shards!.store(config.dbTimeoutMs, databases) : database ? new RtdbStore(database, config.dbTimeoutMs) : memory;
    const connectionStore = database ? new RtdbConnectionStore(database, config.dbTimeoutMs) : memoryConnections;
    await base.seedTemplates(seedTemplates());
    const store = options.wrapStore ? options.wrapStore(base) : base;
    // Assertions read the database directly, past any fault-injecting wrapper.
    const runtime = composeInstance(config, {
      store,
      connectionStore,
      pushSender: options.pushSender ?? createOfflineSender(options.log ?? silentLog),
      // Tokens are checked on the Auth emulator when FIREBASE_AUTH_EMULATOR_HOST is set.
      identity: firebaseIdentity(initializeApp({ projectId: options.projectId ?? "demo-chatify" }, randomUUID())),
      log: options.log ?? silentLog,
      ...(options.clock ? { clock: options.clock } : {}),
      ...(options.functionTimeoutMs === undefined ? {} : { functionTimeoutMs: options.functionTimeoutMs }),
      ...(options.heartbeatMs === undefined ? {} : { heartbeatMs: options.heartbeatMs }),
      ...(options.appCheck ? { appCheck: options.appCheck } : {}),
      ...(options.userDataLimits === undefined ? {} : { userDataLimits: options.userDataLimits }),
      ...(shards ? { databaseUrls: config.databaseInstances } : rtdb ? { databaseUrls: [`https://${rtdb.namespace}.firebaseio.com`] } : {}),
    });
    const databaseHost = options.databaseHost ?? process.env.FIREBASE_DATABASE_EMULATOR_HOST;
    const baseUrl = await servers.serve(runtime, rtdb && databaseHost ? { host: databaseHost, namespace: rtdb.namespace } : undefined);
    return {
      baseUrl,
      runtime,
      store: base,
      connectionStore,
      ...(database ? { database } : {}),
      call: (method, path, body, headers) => call(baseUrl, method, path, body, headers),
    };
  }

  async function close(): Promise<void> {
    await servers.close();
    await fake.stop();
    await rtdb?.close();
    await shards?.close();
  }
  // A config the instance refuses at start (a param out of its range, a time budget that does not
  // fit) fails the suite's setup: what was started is closed, or the fake server keeps jest from exiting.
  const api = await instance().catch(async (error: unknown) => {
    await close();
    throw error;
  });
  return {
    fake,
    ...(rtdb ? { namespace: rtdb.namespace } : {}),
    ...(shards ? { shards } : {}),
    api,
    instance,
    close,
  };
}

/**
 * For the suite it is called in: a harness started with `options` before its tests, with a second
 * function instance on the same store (caches and connection of its own), both closed after. Its
 * fields are read in the tests.
 */
export function twoInstances(options: HarnessOptions): { readonly harness: Harness; readonly second: Instance } {
  let started: { readonly harness: Harness; readonly second: Instance } | undefined;
  beforeAll(async () => {
    const harness = await startHarness(options);
    started = { harness, second: await harness.instance() };
  });
  afterAll(async () => started?.harness.close());
  const get = () => {
    if (!started) throw new Error("the two instances are read in the suite's tests, once started");
    return started;
  };
  return {
    get harness() {
      return get().harness;
    },
    get second() {
      return get().second;
    },
  };
}

/** `body` is sent as JSON unless it is a string or bytes (sent as they are, for malformed input). */
export async function call(baseUrl: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  const init: RequestInit = { method, headers: { ...headers } };
  if (body !== undefined) {
    init.body = typeof body === "string" || body instanceof Uint8Array ? body : JSON.stringify(body);
    init.headers = { "content-type": "application/json", ...headers };
  }
  const response = await fetch(`${baseUrl}${path}`, init);
  const text = await response.text();
  let parsed: Answer["body"];
  try {
    parsed = text === "" ? {} : (JSON.parse(text) as Answer["body"]);
  } catch {
    parsed = { raw: text };
  }
  return { status: response.status, headers: response.headers, body: parsed, text };
}

export const ROUTES = {
  create: "/api/v1/chatbot/session",
  message: (id: string) => `/api/v1/chatbot/session/${id}/message`,
  end: (id: string) => `/api/v1/chatbot/session/${id}`,
  directCreate: "/demo-chatify/us-central1/createSession",
  directMessage: (id: string) => `/demo-chatify/us-central1/sendMessage/${id}`,
  directEnd: (id: string) => `/demo-chatify/us-central1/endSession/${id}`,
  // A user's conversations and data (issue 16): one conversation's Hosting path is endSession's.
  list: "/api/v1/chatbot/sessions",
  get: (id: string) => `/api/v1/chatbot/session/${id}`,
  exportData: "/api/v1/chatbot/me/export",
  erase: "/api/v1/chatbot/me",
  directList: "/demo-chatify/us-central1/listSessions",
  directGet: (id: string) => `/demo-chatify/us-central1/getSession/${id}`,
  directExport: "/demo-chatify/us-central1/exportUserData",
  directErase: "/demo-chatify/us-central1/eraseUserData",
} as const;

/** Creates a session through the API and returns its id. */
export async function createSession(api: Instance, templateId = "friendly-assistant", userId = "user_12345"): Promise<string> {
  const answer = await api.call("POST", ROUTES.create, { user_id: userId, template_id: templateId });
  if (answer.status !== 201 || typeof answer.body.session_id !== "string") throw new Error(`create failed: ${answer.status} ${answer.text}`);
  return answer.body.session_id;
}

/**
 * Runs `body` once per store: the embedded store always, the Realtime Database when it answers
 * (else a visible skip); `sharded`: also over two database instances, as namespaces of one server
 * and as two server processes (docs/sharding.md).
 */
export function describeEachStore(name: string, body: (kind: StoreKind) => void, options: { readonly sharded?: boolean } = {}): void {
  describe(`${name} [embedded store]`, () => { body("memory"); });
  describeWithRtdb(`${name} [Realtime Database]`, () => { body("rtdb"); });
  if (options.sharded !== true) return;
  for (const layout of ["namespaces", "processes"] as const) {
    describeUnless(rtdbSkipReason() ?? shardedSkipReason(layout), `${name} [2 database instances: ${layout}]`, () => { body(`rtdb-2-${layout}`); });
  }
}
