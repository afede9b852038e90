import { randomUUID } from "node:crypto";
import type { IdentityVerifier } from "../auth/identity";
import type { Config } from "../config";
import type { ChatModel } from "../llm/chat-model";
import type { Log } from "../log/log";
import type { SessionPolicy } from "../session/session-rules";
import { runMaintenance } from "../session/maintenance";
import { SessionService } from "../session/session-service";
import type { SessionStore } from "../store/session-store";
import type { Runtime } from "./runtime";

export interface RuntimeParts {
  readonly config: Config;
  readonly store: SessionStore;
  readonly identity: IdentityVerifier;
  readonly model: () => ChatModel;
  readonly log: Log;
  readonly clock?: () => number;
  readonly newSessionId?: () => string;
}

/** Wires the session module to its adapters. */
export function createRuntime(parts: RuntimeParts): Runtime {
  const { config } = parts;
  const clock = parts.clock ?? Date.now;
  const sessions = new SessionService({
    store: parts.store,
    model: parts.model,
    clock,
    newSessionId: parts.newSessionId ?? randomUUID,
    defaultContextWindow: config.contextWindowMessages,
    policy: sessionPolicy(config),
    usage: {
      messagesPerMinute: config.limits.userMessagesPerMinute,
      maxActiveSessions: config.limits.userMaxActiveSessions,
      idleTtlMs: config.sessionIdleTtlMs,
    },
    keyLeaseMs: keyLeaseMs(config),
    cache: {
      templateTtlMs: config.templateCacheTtlMs,
      sessionTtlMs: config.sessionCacheTtlMs,
      maxSessions: config.sessionCacheMaxEntries,
    },
  });
  const maintain = (now: number = clock()) =>
    runMaintenance({
      store: parts.store,
      now,
      policy: sessionPolicy(config),
      retentionMs: config.sessionRetentionMs,
      createKeyTtlMs: CREATE_KEY_TTL_MS,
      batchSize: MAINTENANCE_BATCH,
      maxBatches: MAINTENANCE_MAX_BATCHES,
    });
  return { config, sessions, identity: parts.identity, log: parts.log, maintain };
}

/** The session rules' settings. */
export function sessionPolicy(config: Config): SessionPolicy {
  return { idleTtlMs: config.sessionIdleTtlMs, rememberedKeys: REMEMBERED_KEYS, maxExchanges: config.limits.sessionMaxExchanges };
}

/** The longest a model call can take: every attempt timing out, every retry waiting its most. */
export function modelBudgetMs(config: Config): number {
  const { timeoutMs, maxRetries, maxRetryWaitMs } = config.openai;
  return (maxRetries + 1) * timeoutMs + maxRetries * maxRetryWaitMs;
}

/**
 * How long a claimed `Idempotency-Key` holds off repeats: longer than the model call the claim
 * covers can take, so a live request is never overtaken; a dead one is overtaken after it.
 */
export function keyLeaseMs(config: Config): number {
  return Math.ceil(modelBudgetMs(config) * 1.5) + 1_000;
}

/** Latest exchanges whose `Idempotency-Key` a session remembers. */
const REMEMBERED_KEYS = 100;
/** How long a `createSession` Idempotency-Key is remembered. */
const CREATE_KEY_TTL_MS = 24 * 3_600_000;
/** Sessions per maintenance query (each downloads whole sessions) and queries per run. */
const MAINTENANCE_BATCH = 50;
const MAINTENANCE_MAX_BATCHES = 40;
