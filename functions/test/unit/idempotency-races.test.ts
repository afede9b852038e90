import { recentMessages } from "../support/recent-messages";
import { silentLog } from "../../src/log/log";
import { randomUUID } from "node:crypto";
import type { ChatModel, Completion } from "../../src/llm/chat-model";
import { IdempotencyInProgressError } from "../../src/session/errors";
import { SessionService } from "../../src/session/session-service";
import { StoreUnavailableError } from "../../src/store/errors";
import { MemoryStore } from "../../src/store/memory-store";
import type { RuledWithKey, Ruled, StateRule, UsageRule } from "../../src/store/session-store";
import { POLICY, TEMPLATE } from "../support/fixtures";

/**
 * Races a review found in the message path (issue 7), replayed step by step on the embedded
 * store: a held release stands for one still on the wire, a throwing admission for a database fault.
 */
class SteppedStore extends MemoryStore {
  /** While set, releases (updateState outside a claim) wait for it. */
  releases: Promise<void> | undefined;
  failUsage = false;
  private claiming = false;

  override async updateStateReadingKey<O>(sessionId: string, rule: StateRule<O>, keyHash: string | undefined): Promise<RuledWithKey<O>> {
    this.claiming = true;
    try {
      return await super.updateStateReadingKey(sessionId, rule, keyHash);
    } finally {
      this.claiming = false;
    }
  }

  override async updateState<O>(sessionId: string, rule: StateRule<O>): Promise<Ruled<O>> {
    if (this.releases && !this.claiming) await this.releases;
    return super.updateState(sessionId, rule);
  }

  override async updateUsage<O>(userKey: string, rule: UsageRule<O>): Promise<O> {
    if (this.failUsage) throw new StoreUnavailableError("update usage");
    return super.updateUsage(userKey, rule);
  }
}

function service(store: MemoryStore, model: ChatModel, clock: () => number) {
  return new SessionService({
    store,
    log: silentLog,
    model,
    clock,
    newSessionId: randomUUID,
    defaultContextWindow: 6,
    policy: POLICY,
    usage: { messagesPerMinute: 1e6, maxActiveSessions: 1e6, idleTtlMs: POLICY.idleTtlMs, tokensPerDay: 0 },
    keyLeaseMs: 1_000,
    keyWaitMs: 0,
    livePartials: true,
    keyPollMs: 5,
    cache: { templateTtlMs: 60_000, sessionTtlMs: 600_000, maxSessions: 100 },
  });
}

const answer = (text: string): Completion => ({ text, truncated: false, model: "m" });

it("one Idempotency-Key, one exchange: a request that outlived its lease cannot commit on a repeat's passing claim", async () => {
  const store = new SteppedStore();
  await store.seedTemplates({ tester: TEMPLATE });
  let now = 1_000_000;
  const slow: ((completion: Completion) => void)[] = [];
  let first = true;
  const model: ChatModel = {
    name: "stepped",
    complete: () => {
      if (!first) return Promise.resolve(answer("answer-fast"));
      first = false;
      return new Promise((resolve) => slow.push(resolve));
    },
  };
  const sessions = service(store, model, () => now);
  const { sessionId } = await sessions.create({ userId: "u", templateId: "tester" });
  const send = () => sessions.send({ sessionId, message: "hi", idempotencyKey: "key-1" });

  const stalled = send();
  while (slow.length === 0) await new Promise((wake) => setImmediate(wake));
  now += 2_000; // the first request outlives its lease
  await expect(send()).resolves.toMatchObject({ replayed: false, exchangeCount: 1 }); // a repeat takes over and commits
  let releaseLanded!: () => void;
  store.releases = new Promise((land) => { releaseLanded = land; });
  // Another repeat claims the key, finds its record, replays; its release is still on the wire.
  await expect(send()).resolves.toMatchObject({ replayed: true, exchangeCount: 1, text: "answer-fast" });

  slow[0]?.(answer("answer-slow")); // the first request's reply comes back now
  await expect(stalled).rejects.toBeInstanceOf(IdempotencyInProgressError);
  releaseLanded();
  await expect(store.readSessionState(sessionId)).resolves.toMatchObject({ message_count: 1 });
  expect((await recentMessages(store, sessionId, 10)).map((message) => message.content)).toEqual(["hi", "answer-fast"]);
  await expect(send()).resolves.toMatchObject({ replayed: true, text: "answer-fast" });
});

it("a claim whose parallel usage admission failed is given back: a keyed retry runs at once", async () => {
  const store = new SteppedStore();
  await store.seedTemplates({ tester: TEMPLATE });
  const sessions = service(store, { name: "instant", complete: () => Promise.resolve(answer("ok")) }, Date.now);
  const { sessionId } = await sessions.create({ userId: "u", templateId: "tester" });
  store.failUsage = true;
  await expect(sessions.send({ sessionId, message: "hi", idempotencyKey: "k" })).rejects.toBeInstanceOf(StoreUnavailableError);
  expect((await store.readSessionState(sessionId))?.requests).toBeUndefined();
  store.failUsage = false;
  await expect(sessions.send({ sessionId, message: "hi", idempotencyKey: "k" })).resolves.toMatchObject({ replayed: false, exchangeCount: 1 });
});
