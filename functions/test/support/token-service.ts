import { silentLog } from "../../src/log/log";
import { randomUUID } from "node:crypto";
import type { ChatModel } from "../../src/llm/chat-model";
import { keyHash } from "../../src/session/idempotency";
import type { UsagePolicy } from "../../src/session/ledger/limits";
import { SessionService } from "../../src/session/session-service";
import type { UserUsage } from "../../src/store/records";
import type { SessionStore } from "../../src/store/session-store";
import { createOpenAiModel } from "../../src/llm/openai-model";
import { FakeOpenAiServer } from "./fake-openai-server";
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

/** Usage limits out of the way (the daily token limit off, still counted): for tests about something else. */
export function unlimitedUsage(): UsagePolicy {
  return { messagesPerMinute: 1_000_000, maxActiveSessions: 100, idleTtlMs: POLICY.idleTtlMs, tokensPerDay: 0 };
}

/**
 * For a describe block of tests through the session service: a fake OpenAI server started before
 * them, reset before each and stopped after, and `service(store, usage)` on a model it serves.
 */
export function tokenSuite(): { readonly fake: FakeOpenAiServer; service(store: SessionStore, usage: UsagePolicy): SessionService } {
  let fake: FakeOpenAiServer | undefined;
  let model: ChatModel | undefined;
  beforeAll(async () => {
    fake = await FakeOpenAiServer.start();
    model = createOpenAiModel({ apiKey: "sk-test-key", baseUrl: fake.baseUrl, timeoutMs: 5_000 });
  });
  afterAll(async () => fake?.stop());
  beforeEach(() => { fake?.reset(); });
  const started = <T>(value: T | undefined): T => {
    if (value === undefined) throw new Error("the fake model starts in beforeAll");
    return value;
  };
  return {
    get fake() {
      return started(fake);
    },
    service: (store, usage) => tokenService(store, started(model), usage),
  };
}
