import { randomUUID } from "node:crypto";
import type { LogFields } from "../../src/log/log";
import { keyHash } from "../../src/session/idempotency";
import type { UserUsage } from "../../src/store/records";
import type { SessionStore } from "../../src/store/session-store";
import type { FakeUsage } from "../support/fake-openai-server";
import { describeEachStore, ROUTES, startHarness, type Harness } from "../support/http-harness";

/** The user's usage record, as the database holds it. */
async function usageOf(store: SessionStore, userId: string): Promise<UserUsage | null> {
  return store.updateUsage(keyHash("user", userId), (usage) => ({ outcome: usage }));
}

interface Usage { prompt_tokens: number; completion_tokens: number; total_tokens: number; estimated?: boolean; cost_usd?: number }

/**
 * What a broken or hostile provider can do to the ledger through the usage it reports: nothing a
 * true report could not. Each report the call could not have produced is replaced by the estimate.
 */
describeEachStore("a provider's absurd usage reports", (kind) => {
  let harness: Harness;
  const warnings: { message: string; fields?: LogFields }[] = [];

  beforeAll(async () => {
    const log = { info: () => undefined, error: () => undefined, warn: (message: string, fields?: LogFields) => { warnings.push({ message, ...(fields ? { fields } : {}) }); } };
    harness = await startHarness({ store: kind, log });
  });
  afterAll(async () => harness.close());
  beforeEach(() => {
    harness.fake.reset();
    warnings.length = 0;
  });

  async function session(user: string): Promise<string> {
    const answer = await harness.api.call("POST", ROUTES.create, { user_id: user, template_id: "friendly-assistant" });
    expect(answer.status).toBe(201);
    return String(answer.body.session_id);
  }

  function reportEvery(usage: FakeUsage): void {
    harness.fake.chaos = (request) => ({ kind: "reply", text: `reply to ${request.body.messages.at(-1)?.content ?? ""}`, usage });
  }

  it("keeps a session working when the provider reports 2^53-1 tokens per count: later messages and the end answer, totals stay safe integers", async () => {
    const user = `user-${randomUUID()}`;
    const id = await session(user);
    reportEvery({ prompt_tokens: Number.MAX_SAFE_INTEGER, completion_tokens: Number.MAX_SAFE_INTEGER });
    for (const message of ["one", "two", "three"]) {
      const answer = await harness.api.call("POST", ROUTES.message(id), { message });
      expect(answer.status).toBe(200);
      const usage = answer.body.usage as Usage;
      expect(usage.estimated).toBe(true);
      expect(usage.total_tokens).toBeLessThan(1_000);
    }
    const ended = await harness.api.call("DELETE", ROUTES.end(id));
    expect(ended.status).toBe(200);
    const totals = ended.body.usage as Usage;
    expect(Number.isSafeInteger(totals.total_tokens)).toBe(true);
    expect(totals.total_tokens).toBeLessThan(3_000);
    const daily = (await usageOf(harness.api.store, user))?.daily;
    expect(daily?.tokens).toBeLessThan(3_000);
    // The refusal is logged with the figures, never the text.
    const logged = warnings.filter((warning) => warning.message === "provider usage out of bounds, estimated instead");
    expect(logged).toHaveLength(3);
    expect(logged[0]?.fields).toMatchObject({ session_id: id, call: "reply", prompt_tokens: Number.MAX_SAFE_INTEGER, completion_bound: 50 });
    expect(JSON.stringify(warnings)).not.toContain("reply to");
  });

  it("does not charge a user a trillion tokens, nor lock them out, on a provider's word", async () => {
    const user = `user-${randomUUID()}`;
    const id = await session(user);
    reportEvery({ prompt_tokens: 1e12, completion_tokens: 1e12 });
    const first = await harness.api.call("POST", ROUTES.message(id), { message: "hello" });
    expect(first.status).toBe(200);
    const usage = first.body.usage as Usage;
    expect(usage.estimated).toBe(true);
    expect(usage.cost_usd ?? 0).toBeLessThan(0.01);
    const daily = (await usageOf(harness.api.store, user))?.daily;
    expect(daily?.cost_usd ?? 0).toBeLessThan(0.01);
    // Still within the day's limit (USER_TOKENS_PER_DAY 200,000): the next message is admitted.
    harness.fake.chaos = undefined;
    const next = await harness.api.call("POST", ROUTES.message(id), { message: "again" });
    expect(next.status).toBe(200);
    expect((next.body.usage as Usage).estimated).toBeUndefined();
  });

  it("believes a report within the call's bounds", async () => {
    const id = await session(`user-${randomUUID()}`);
    reportEvery({ prompt_tokens: 40, completion_tokens: 50 });
    const answer = await harness.api.call("POST", ROUTES.message(id), { message: "hello" });
    expect(answer.body.usage).toMatchObject({ prompt_tokens: 40, completion_tokens: 50, total_tokens: 90 });
    expect((answer.body.usage as Usage).estimated).toBeUndefined();
    expect(warnings).toEqual([]);
  });
});
