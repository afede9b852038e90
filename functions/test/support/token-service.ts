import { silentLog } from "../../src/log/log";
import { randomUUID } from "node:crypto";
import type { ChatModel } from "../../src/llm/chat-model";
import { keyHash } from "../../src/session/idempotency";
import type { UsagePolicy } from "../../src/session/ledger/limits";
import { SessionService } from "../../src/session/session-service";
import type { UserUsage } from "../../src/store/records";
import type { SessionStore } from "../../src/store/session-store";
import { POLICY } from "./fixtures";

/** A session service for the token-ledger tests: no partials, short key polls, the given usage limits. */
export function tokenService(store: SessionStore, model: ChatModel, usage: UsagePolicy): SessionService {
  return new SessionService({
    store,
    log: silentLog,
    model,
    clock: Date.now,
    newSessionId: randomUUID,
    defaultContextWindow: 10,
    policy: POLICY,
    usage,
    keyLeaseMs: 10_000,
    keyWaitMs: 10_000,
    livePartials: false,
    keyPollMs: 5,
    cache: { templateTtlMs: 60_000, sessionTtlMs: 600_000, maxSessions: 100 },
  });
}

/** The user's usage record, as the store holds it. */
export function usageOf(store: SessionStore, userId: string): Promise<UserUsage | null> {
  return store.updateUsage<UserUsage | null>(keyHash("user", userId), (usage) => ({ outcome: usage }));
}
