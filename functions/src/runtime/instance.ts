import { randomUUID } from "node:crypto";
import type { App } from "firebase-admin/app";
import type { AppCheckVerifier } from "../auth/app-check";
import { firebaseAppCheck } from "../auth/firebase-app-check";
import { firebaseIdentity } from "../auth/firebase-identity";
import type { IdentityVerifier } from "../auth/identity";
import { createCallableApi, type CallableApi } from "../callable/callable-api";
import type { Config } from "../config";
import { createApi, type Api } from "../http/api";
import type { ConnectionsContext } from "../http/connection-endpoints";
import { connectionBodies } from "../http/connection-schemas";
import type { ChatModel } from "../llm/chat-model";
import { modelFromConfig, moderatorFromConfig } from "../llm/model-from-config";
import type { Moderator } from "../llm/moderation";
import type { Log } from "../log/log";
import { messageModeration, type MessageModeration } from "../moderation/message-moderation";
import { MAINTENANCE_STEPS, MaintenanceSteps, runMaintenance, type MaintenanceReport } from "../session/maintenance";
import type { SessionPolicy } from "../session/session-rules";
import { SessionService } from "../session/session-service";
import { defaultDatabaseUrl, homeDatabase, instanceDatabases, rtdbSessionStore } from "../store/rtdb/instance-databases";
import { instancePositionOf, sessionPlacement } from "../sharding/session-ids";
import { CursorCodec } from "../http/cursor-codec";
import { querySchemas } from "../http/query-schemas";
import type { UserDataContext, UserDataLimits } from "../http/user-data-context";
import { ConversationService } from "../session/conversations/conversation-service";
import { ErasureService } from "../session/erasure/erasure-service";
import type { SessionStore } from "../store/session-store";
import { checkConnectionBudget, closingCopyLandsWithinMs, timeBudget, type TimeBudget } from "./time-budget";
import { getMessaging } from "firebase-admin/messaging";
import { ConnectionErasure } from "../connections/connection-erasure";
import { ConnectionExport } from "../connections/connection-export";
import { ConnectionService } from "../connections/connection-service";
import { DeviceRegistry } from "../connections/device-registry";
import { NO_DEVICE_SWEEP, sweepDevices, type DeviceSweepReport } from "../connections/device-sweep";
import { RecipientNotifier } from "../connections/recipient-notifier";
import { createFcmSender } from "../notify/fcm-sender";
import { createOfflineSender } from "../notify/offline-sender";
import type { PushSender } from "../notify/push-sender";
import type { ConnectionAdapter } from "../store/connection-erasure-store";
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
  /** Used only with REQUIRE_APP_CHECK. Default: App Check of `app`. */
  readonly appCheck?: AppCheckVerifier;
  /** Default: from config; the offline responder only where `allowOffline` and no key is set. */
  readonly model?: ChatModel;
  readonly allowOffline?: boolean;
  /** Used only with MODERATION on. Default: OpenAI's moderations through the model's base URL and key. */
  readonly moderator?: Moderator;
  readonly log: Log;
  readonly clock?: () => number;
  readonly newSessionId?: () => string;
  /** Default: the deployed function timeout. */
  readonly functionTimeoutMs?: number;
  /** The longest silence on a streamed answer (default 15 s; tests shorten it). */
  readonly heartbeatMs?: number;
  /** What one export part or erasure request may carry or take (tests shrink them). */
  readonly userDataLimits?: Partial<UserDataLimits>;
  /**
   * Connections and devices. Default: the Realtime Database of `app` when no `store` is given;
   * beside a given `store` (tests, benches), an embedded one of this instance's own.
   */
  readonly connectionStore?: ConnectionAdapter;
  /** Default: FCM through `app` deployed; where `allowOffline`, the offline sender, which logs what it would send. */
  readonly pushSender?: PushSender;
  readonly newConnectionId?: () => string;
  /**
   * The URL of each database instance sessions are placed on, in DATABASE_INSTANCES order, that
   * `createSession` answers as `database_url`. Default: DATABASE_INSTANCES, else the app's
   * default database; none without either (a given store's tests).
   */
  readonly databaseUrls?: readonly string[];
}

/** One function instance: built once, when it starts, and kept for its life (its caches with it). */
export interface Instance {
  readonly config: Config;
  readonly budget: TimeBudget;
  readonly sessions: SessionService;
  /** The functions' HTTP boundary. */
  readonly api: Api;
  /** The same operations as callable functions (`onCall`). */
  readonly callables: CallableApi;
  readonly log: Log;
  /**
   * The scheduled clean-up: expiry, retention, forgotten keys; erasures to finish; stale device
   * tokens. `runMs`: how long it may go on starting batches (the scheduled function's time:
   * time-budget.ts maintenanceRunMs); absent, only the batch budgets bound it.
   */
  readonly maintain: (now?: number, runMs?: number) => Promise<MaintenanceReport & DeviceSweepReport & { readonly erasuresFinished: number }>;
  /** Erasing a user's data (the `DELETE /me` route, and the Auth trigger for a deleted user). */
  readonly erasure: ErasureService;
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
  const functionTimeoutMs = parts.functionTimeoutMs ?? config.deploy.timeoutSeconds * 1000;
  const budget = timeBudget(config, functionTimeoutMs);
  const clock = parts.clock ?? Date.now;
  const store = parts.store ?? rtdbSessionStore(instanceDatabases(required(parts.app, "store"), config.databaseInstances), config.dbTimeoutMs, parts.log);
  const placement = sessionDatabases(config, parts, store);
  const identity = parts.identity ?? firebaseIdentity(required(parts.app, "identity"));
  const appCheck = config.requireAppCheck ? (parts.appCheck ?? firebaseAppCheck(required(parts.app, "appCheck"), { log: parts.log })) : undefined;
  const model = parts.model ?? modelFromConfig(config, { allowOffline: parts.allowOffline ?? false });
  const moderator = config.moderation.enabled ? (parts.moderator ?? moderatorFromConfig(config)) : undefined;
  // One moderation for every path that keeps a user's text, under the same params: the sessions' messages, and users' to each other.
  const moderation = moderator ? messageModeration(moderator, config.moderation.onOutage, parts.log) : undefined;
  const policy = sessionPolicy(config);
  const sessions = new SessionService({
    store,
    model,
    log: parts.log,
    clock,
    ...(parts.newSessionId ? { newSessionId: parts.newSessionId } : { newSessionId: placement.ids.next, giveBackSessionId: placement.ids.giveBack }),
    defaultContextWindow: config.contextWindowMessages,
    policy,
    usage: {
      messagesPerMinute: config.limits.userMessagesPerMinute,
      maxActiveSessions: config.limits.userMaxActiveSessions,
      idleTtlMs: config.sessionIdleTtlMs,
      tokensPerDay: config.limits.userTokensPerDay,
      serviceTokensPerDay: config.limits.serviceTokensPerDay,
      addressSessionsPerHour: config.limits.addressSessionsPerHour,
      requestTimeoutMs: functionTimeoutMs,
    },
    maxMessageChars: config.maxMessageChars,
    keyLeaseMs: budget.leaseMs,
    keyWaitMs: budget.keyWaitMs,
    claimWaitMs: budget.claimWaitMs,
    livePartials: config.livePartials,
    partialMaxIntervalMs: config.partialMaxIntervalMs,
    ...(moderation ? { moderation } : {}),
    cache: {
      templateTtlMs: config.templateCacheTtlMs,
      sessionTtlMs: config.sessionCacheTtlMs,
      maxSessions: config.sessionCacheMaxEntries,
    },
  });
  // A request writes nothing after its claim's lease (its timeout), nor a write it sent after one database deadline.
  const lateWritesMs = budget.leaseMs + config.dbTimeoutMs;
  const { connections, devices, connectionStore, pushSender } = composeConnections(config, parts, store, clock, moderation, functionTimeoutMs, lateWritesMs);
  const erasure = new ErasureService({
    store,
    clock,
    log: parts.log,
    messagesPerMinute: config.limits.userMessagesPerMinute,
    takeOverAfterMs: functionTimeoutMs,
    // Once no request that raced the erasure can still write.
    finalPassAfterMs: lateWritesMs,
    batchSize: ERASURE_BATCH,
    connections: new ConnectionErasure({ store: connectionStore, batchSize: ERASURE_BATCH, clock, addLandsWithinMs: lateWritesMs }),
  });
  const maintain = async (now: number = clock(), runMs?: number) => {
    // One set of steps for the whole run, the sessions' and those below, each settled on its own:
    // a failure of one (the home instance's query for due erasures, say) must not hold back the
    // others until it is mended; each with its share of the run's time.
    const steps = new MaintenanceSteps(parts.log, runMs === undefined ? undefined : { clock, deadline: clock() + runMs, steps: RUN_STEPS });
    const report = await runMaintenance({
      store,
      now,
      policy,
      retentionMs: config.sessionRetentionMs,
      closingCopyLandsWithinMs: closingCopyLandsWithinMs(config, functionTimeoutMs),
      createKeyTtlMs: CREATE_KEY_TTL_MS,
      batchSize: MAINTENANCE_BATCH,
      maxBatches: MAINTENANCE_MAX_BATCHES,
      log: parts.log,
    }, steps);
    const erasuresFinished = await steps.run("erasuresFinished", 0, (stopped) => erasure.finishDue(now, { maxBatches: MAINTENANCE_MAX_BATCHES, stopped }));
    const devices = await steps.run("staleDevices", NO_DEVICE_SWEEP, (stopped) =>
      sweepDevices({ store: connectionStore, now, batchSize: MAINTENANCE_BATCH, maxBatches: MAINTENANCE_MAX_BATCHES, stopped, log: parts.log, addLandsWithinMs: lateWritesMs }),
    );
    return { ...report, erasuresFinished, ...devices, ...steps.failures() };
  };
  const userData: UserDataContext = {
    conversations: new ConversationService({ store, clock, policy, partialStaleMs: functionTimeoutMs }),
    erasure,
    connections: new ConnectionExport(connectionStore),
    cursors: new CursorCodec(() => store.serviceSecret("cursor")),
    queries: querySchemas(),
    clock,
    limits: { ...USER_DATA_LIMITS, exportPartMs: Math.min(20_000, functionTimeoutMs / 3), eraseRequestMs: functionTimeoutMs / 2, ...parts.userDataLimits },
  };
  const connectionsContext: ConnectionsContext = { connections, devices, bodies: connectionBodies(config.maxMessageChars) };
  const { databaseUrl } = placement;
  const api = createApi({ sessions, connections: connectionsContext, identity, log: parts.log, config, userData, databaseUrl, ...(appCheck ? { appCheck } : {}), ...(parts.heartbeatMs === undefined ? {} : { heartbeatMs: parts.heartbeatMs }) });
  const callables = createCallableApi({ sessions, userData, connections: connectionsContext, log: parts.log, config, databaseUrl });
  return { config, budget, sessions, api, callables, log: parts.log, maintain, erasure, connections, devices, pushSender };
}

/**
 * Connections between users and their devices: the store (the Realtime Database of `app`, or
 * beside a given session store an embedded one), the push sender (FCM deployed, the offline
 * sender where FCM cannot be reached) and the services over them.
 */
function composeConnections(config: Config, parts: InstanceParts, store: SessionStore, clock: () => number, moderation: MessageModeration | undefined, functionTimeoutMs: number, lateWritesMs: number) {
  checkConnectionBudget(config, functionTimeoutMs);
  const connectionStore =
    parts.connectionStore ?? (parts.store === undefined ? new RtdbConnectionStore(homeDatabase(required(parts.app, "connection store"), config.databaseInstances), config.dbTimeoutMs) : new MemoryConnectionStore());
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
    ...(moderation ? { moderation } : {}),
  });
  return { connections, devices: new DeviceRegistry({ store: connectionStore, clock, addLandsWithinMs: lateWritesMs }), connectionStore, pushSender };
}

/**
 * Where new sessions go (round robin over the instances, sharding/session-ids.ts) and which
 * database URL a session's clients listen to: none where no client can (the embedded store).
 */
function sessionDatabases(config: Config, parts: InstanceParts, store: SessionStore) {
  const urls = parts.databaseUrls ?? (config.databaseInstances.length > 0 ? config.databaseInstances : parts.app ? [defaultDatabaseUrl(parts.app)] : []);
  return {
    ids: sessionPlacement(Math.max(1, config.databaseInstances.length)),
    databaseUrl: (sessionId: string): string | undefined => (store.partialsReadable ? urls[instancePositionOf(sessionId)] : undefined),
  };
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
/**
 * An export's part: 4 MiB of JSON or 20 s (at most a third of the function's timeout), whichever
 * comes first, read 2 sessions at a time (Hosting holds a whole answer before it sends it); an
 * erasure's first pass in a request: half the function's timeout.
 */
const USER_DATA_LIMITS = { exportPartBytes: 4 * 1024 * 1024, exportReadPage: 2 };
/** Sessions an erasure reads and deletes at once (each read whole, by the query that finds them). */
const ERASURE_BATCH = 25;
/** Sessions per maintenance query (each downloads whole sessions) and queries per kind of work in a run (per database instance, for the sessions'). */
const MAINTENANCE_BATCH = 50;
const MAINTENANCE_MAX_BATCHES = 40;
/** The steps of `maintain`, each given its share of the run's time: the sessions' (runMaintenance), the erasures', the device sweep. */
const RUN_STEPS = MAINTENANCE_STEPS + 2;
