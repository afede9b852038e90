import { randomUUID } from "node:crypto";
import type { App } from "firebase-admin/app";
import { getDatabase } from "firebase-admin/database";
import { firebaseIdentity } from "../auth/firebase-identity";
import type { IdentityVerifier } from "../auth/identity";
import type { Config } from "../config";
import { createApi, type Api } from "../http/api";
import type { ChatModel } from "../llm/chat-model";
import { modelFromConfig } from "../llm/model-from-config";
import type { Log } from "../log/log";
import { runMaintenance, type MaintenanceReport } from "../session/maintenance";
import type { SessionPolicy } from "../session/session-rules";
import { SessionService } from "../session/session-service";
import { RtdbStore } from "../store/rtdb/rtdb-store";
import type { SessionStore } from "../store/session-store";
import { checkConnectionBudget, timeBudget, type TimeBudget } from "./time-budget";
import { getMessaging } from "firebase-admin/messaging";
import { ConnectionService } from "../connections/connection-service";
import { DeviceRegistry } from "../connections/device-registry";
import { sweepDevices, type DeviceSweepReport } from "../connections/device-sweep";
import { RecipientNotifier } from "../connections/recipient-notifier";
import { createFcmSender } from "../notify/fcm-sender";
import { createOfflineSender } from "../notify/offline-sender";
import type { PushSender } from "../notify/push-sender";
import type { ConnectionStore, DeviceStore } from "../store/connection-store";
import { MemoryConnectionStore } from "../store/memory-connection-store";
import { RtdbConnectionStore } from "../store/rtdb/rtdb-connection-store";

/** The adapters of an instance. Each defaults to the production one, built from config and `app`. */
export interface InstanceParts {
  /** The firebase-admin app whose database and Auth the defaults use. */
  readonly app?: App;
  /** Default: the Realtime Database of `app`. */
  readonly store?: SessionStore;
  /** Default: Firebase Auth of `app`. */
  readonly identity?: IdentityVerifier;
  /** Default: from config; the offline responder only where `allowOffline` and no key is set. */
  readonly model?: ChatModel;
  readonly allowOffline?: boolean;
  readonly log: Log;
  readonly clock?: () => number;
  readonly newSessionId?: () => string;
  /** Default: the deployed function timeout. */
  readonly functionTimeoutMs?: number;
  /** The longest silence on a streamed answer (default 15 s; tests shorten it). */
  readonly heartbeatMs?: number;
  /**
   * Connections and devices. Default: the Realtime Database of `app` when no `store` is given;
   * beside a given `store` (tests, benches), an embedded one of this instance's own.
   */
  readonly connectionStore?: ConnectionStore & DeviceStore;
  /** Default: FCM through `app` deployed; where `allowOffline`, the offline sender, which logs what it would send. */
  readonly pushSender?: PushSender;
  readonly newConnectionId?: () => string;
}

/** One function instance: built once, when it starts, and kept for its life (its caches with it). */
export interface Instance {
  readonly config: Config;
  readonly budget: TimeBudget;
  readonly sessions: SessionService;
  /** The functions' HTTP boundary. */
  readonly api: Api;
  readonly log: Log;
  /** The scheduled clean-up: expiry, retention, forgotten keys; stale device tokens. */
  readonly maintain: (now?: number) => Promise<MaintenanceReport & DeviceSweepReport>;
  /** Connections between users, and their devices. */
  readonly connections: ConnectionService;
  readonly devices: DeviceRegistry;
  readonly pushSender: PushSender;
}

/**
 * The composition root: the one place where an instance is built from its config, used by the
 * deployed functions, the local server, the tests and the benches alike. It fails, with the
 * param's name and why, when the config does not fit the function's time budget.
 */
export function composeInstance(config: Config, parts: InstanceParts): Instance {
  const budget = timeBudget(config, parts.functionTimeoutMs);
  const clock = parts.clock ?? Date.now;
  const store = parts.store ?? new RtdbStore(getDatabase(required(parts.app, "store")), config.dbTimeoutMs);
  const identity = parts.identity ?? firebaseIdentity(required(parts.app, "identity"));
  const model = parts.model ?? modelFromConfig(config, { allowOffline: parts.allowOffline ?? false });
  const policy = sessionPolicy(config);
  const sessions = new SessionService({
    store,
    model,
    log: parts.log,
    clock,
    newSessionId: parts.newSessionId ?? randomUUID,
    defaultContextWindow: config.contextWindowMessages,
    policy,
    usage: {
      messagesPerMinute: config.limits.userMessagesPerMinute,
      maxActiveSessions: config.limits.userMaxActiveSessions,
      idleTtlMs: config.sessionIdleTtlMs,
      tokensPerDay: config.limits.userTokensPerDay,
      serviceTokensPerDay: config.limits.serviceTokensPerDay,
      addressSessionsPerHour: config.limits.addressSessionsPerHour,
    },
    maxMessageChars: config.maxMessageChars,
    keyLeaseMs: budget.leaseMs,
    keyWaitMs: budget.keyWaitMs,
    livePartials: config.livePartials,
    cache: {
      templateTtlMs: config.templateCacheTtlMs,
      sessionTtlMs: config.sessionCacheTtlMs,
      maxSessions: config.sessionCacheMaxEntries,
    },
  });
  const { connections, devices, connectionStore, pushSender } = composeConnections(config, parts, store, clock);
  const maintain = async (now: number = clock()) => ({
    ...(await runMaintenance({
      store,
      now,
      policy,
      retentionMs: config.sessionRetentionMs,
      createKeyTtlMs: CREATE_KEY_TTL_MS,
      batchSize: MAINTENANCE_BATCH,
      maxBatches: MAINTENANCE_MAX_BATCHES,
    })),
    ...(await sweepDevices({ store: connectionStore, now, batchSize: MAINTENANCE_BATCH, maxBatches: MAINTENANCE_MAX_BATCHES })),
  });
  const api = createApi({ sessions, connections, devices, identity, log: parts.log, config, ...(parts.heartbeatMs === undefined ? {} : { heartbeatMs: parts.heartbeatMs }) });
  return { config, budget, sessions, api, log: parts.log, maintain, connections, devices, pushSender };
}

/**
 * Connections between users and their devices: the store (the Realtime Database of `app`, or
 * beside a given session store an embedded one), the push sender (FCM deployed, the offline
 * sender where FCM cannot be reached) and the services over them.
 */
function composeConnections(config: Config, parts: InstanceParts, store: SessionStore, clock: () => number) {
  checkConnectionBudget(config, parts.functionTimeoutMs);
  const connectionStore =
    parts.connectionStore ?? (parts.store === undefined ? new RtdbConnectionStore(getDatabase(required(parts.app, "connection store")), config.dbTimeoutMs) : new MemoryConnectionStore());
  const pushSender = parts.pushSender ?? (parts.allowOffline === true ? createOfflineSender(parts.log) : createFcmSender(getMessaging(required(parts.app, "push sender"))));
  const notifier = new RecipientNotifier({
    devices: connectionStore,
    sender: pushSender,
    log: parts.log,
    clock,
    previewChars: config.notifications.previewChars,
    deadlineMs: config.notifications.deadlineMs,
  });
  const connections = new ConnectionService({
    store: connectionStore,
    ledger: store,
    notifier,
    log: parts.log,
    clock,
    newConnectionId: parts.newConnectionId ?? randomUUID,
    policy: { messagesPerMinute: config.connections.messagesPerMinute },
    requestsPerHour: config.connections.requestsPerHour,
    aiMessagesPerMinute: config.limits.userMessagesPerMinute,
    cache: { maxEntries: config.sessionCacheMaxEntries, ttlMs: config.sessionCacheTtlMs },
  });
  return { connections, devices: new DeviceRegistry({ store: connectionStore, clock }), connectionStore, pushSender };
}

/** The session rules' settings. */
export function sessionPolicy(config: Config): SessionPolicy {
  return { idleTtlMs: config.sessionIdleTtlMs, maxExchanges: config.limits.sessionMaxExchanges };
}

function required(app: App | undefined, part: string): App {
  if (!app) throw new Error(`an instance needs a firebase-admin app, or its ${part} given`);
  return app;
}

/** How long a `createSession` Idempotency-Key is remembered. */
const CREATE_KEY_TTL_MS = 24 * 3_600_000;
/** Sessions per maintenance query (each downloads whole sessions) and queries per run. */
const MAINTENANCE_BATCH = 50;
const MAINTENANCE_MAX_BATCHES = 40;
