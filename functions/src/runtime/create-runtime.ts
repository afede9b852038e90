import { randomUUID } from "node:crypto";
import type { Config } from "../config";
import type { ChatModel } from "../llm/chat-model";
import type { Log } from "../log/log";
import { SessionService } from "../session/session-service";
import type { SessionStore } from "../store/session-store";
import type { Runtime } from "./runtime";

export interface RuntimeParts {
  readonly config: Config;
  readonly store: SessionStore;
  readonly model: () => ChatModel;
  readonly log: Log;
  readonly clock?: () => number;
  readonly newSessionId?: () => string;
}

/** Wires the session module to its adapters. */
export function createRuntime(parts: RuntimeParts): Runtime {
  const { config } = parts;
  const sessions = new SessionService({
    store: parts.store,
    model: parts.model,
    clock: parts.clock ?? Date.now,
    newSessionId: parts.newSessionId ?? randomUUID,
    defaultContextWindow: config.contextWindowMessages,
    cache: {
      templateTtlMs: config.templateCacheTtlMs,
      sessionTtlMs: config.sessionCacheTtlMs,
      maxSessions: config.sessionCacheMaxEntries,
    },
  });
  return { config, sessions, log: parts.log };
}
