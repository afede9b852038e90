import { randomUUID } from "node:crypto";
import type { App } from "firebase-admin/app";
import { getDatabase } from "firebase-admin/database";
import type { AppCheckVerifier } from "../auth/app-check";
import { firebaseAppCheck } from "../auth/firebase-app-check";
import { firebaseIdentity } from "../auth/firebase-identity";
import type { IdentityVerifier } from "../auth/identity";
import { createCallableApi, type CallableApi } from "../callable/callable-api";
import type { Config } from "../config";
import { createApi, type Api } from "../http/api";
import type { ChatModel } from "../llm/chat-model";
import { modelFromConfig, moderatorFromConfig } from "../llm/model-from-config";
import type { Moderator } from "../llm/moderation";
import type { Log } from "../log/log";
import { messageModeration } from "../moderation/message-moderation";
import { runMaintenance, type MaintenanceReport } from "../session/maintenance";
import type { SessionPolicy } from "../session/session-rules";
import { SessionService } from "../session/session-service";
import { RtdbStore } from "../store/rtdb/rtdb-store";
import type { SessionStore } from "../store/session-store";
import { timeBudget, type TimeBudget } from "./time-budget";

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
}

/** One function instance: built once, when it starts, and kept for its life (its caches with it). */
export interface Instance {
  readonly config: Config;
  readonly budget: TimeBudget;
  readonly sessions: SessionService;
  /** The three functions' HTTP boundary. */
  readonly api: Api;
  /** The same operations as callable functions (`onCall`). */
  readonly callables: CallableApi;
  readonly log: Log;
  /** The scheduled clean-up: expiry, retention, forgotten keys. */
  readonly maintain: (now?: number) => Promise<MaintenanceReport>;
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
  const appCheck = config.requireAppCheck ? (parts.appCheck ?? firebaseAppCheck(required(parts.app, "appCheck"), { log: parts.log })) : undefined;
  const model = parts.model ?? modelFromConfig(config, { allowOffline: parts.allowOffline ?? false });
  const moderator = config.moderation.enabled ? (parts.moderator ?? moderatorFromConfig(config)) : undefined;
  // One moderation for every path that keeps a user's text, under the same params: the sessions' messages here.
  const moderation = moderator ? messageModeration(moderator, config.moderation.onOutage, parts.log) : undefined;
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
    partialMaxIntervalMs: config.partialMaxIntervalMs,
    ...(moderation ? { moderation } : {}),
    cache: {
      templateTtlMs: config.templateCacheTtlMs,
      sessionTtlMs: config.sessionCacheTtlMs,
      maxSessions: config.sessionCacheMaxEntries,
    },
  });
  const maintain = (now: number = clock()) =>
    runMaintenance({
      store,
      now,
      policy,
      retentionMs: config.sessionRetentionMs,
      createKeyTtlMs: CREATE_KEY_TTL_MS,
      batchSize: MAINTENANCE_BATCH,
      maxBatches: MAINTENANCE_MAX_BATCHES,
    });
  const api = createApi({ sessions, identity, log: parts.log, config, ...(appCheck ? { appCheck } : {}), ...(parts.heartbeatMs === undefined ? {} : { heartbeatMs: parts.heartbeatMs }) });
  const callables = createCallableApi({ sessions, log: parts.log, config });
  return { config, budget, sessions, api, callables, log: parts.log, maintain };
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
