import { randomUUID } from "node:crypto";
import { createOpenAiModel } from "../../src/llm/openai-model";
import type { ChatModel } from "../../src/llm/chat-model";
import type { UsagePolicy } from "../../src/session/ledger/limits";
import { SUMMARY_CALL_TOKENS, SUMMARY_INSTRUCTIONS, SUMMARY_MAX_TOKENS, summaryPrompt } from "../../src/session/prompt/rolling-summary";
import { summaryIn } from "../support/summary-in";
import { estimatePromptTokens } from "../../src/session/prompt/token-estimate";
import { MemoryStore } from "../../src/store/memory-store";
import type { Template } from "../../src/store/records";
import { FakeOpenAiServer, type RecordedRequest } from "../support/fake-openai-server";
import { POLICY } from "../support/fixtures";
import { tokenService, usageOf } from "../support/token-service";

/**
 * Found in review of the token ledger (issue 10): each test states an invariant the issue asks
 * for, and each failed on the ledger as first written.
 */

/** Room for the long reply below: a provider's reply never passes max_tokens, though the fake's would. */
const MAX_TOKENS = 1_000;
const WIDE: Template = { name: "Wide", personalityPrompt: "You are wide.", context_window: 10, max_tokens: MAX_TOKENS };

const lastUser = (request: RecordedRequest) => request.body.messages.at(-1)?.content ?? "";

describe("token bounds of the ledger and the rolling summary", () => {
  let fake: FakeOpenAiServer;
  let model: ChatModel;
  beforeAll(async () => {
    fake = await FakeOpenAiServer.start();
    model = createOpenAiModel({ apiKey: "sk-test-key", baseUrl: fake.baseUrl, timeoutMs: 5_000 });
  });
  afterAll(async () => fake.stop());
  beforeEach(() => { fake.reset(); });

  const service = (store: MemoryStore, usage: UsagePolicy) => tokenService(store, model, usage);


  it("a message after two concurrent messages of one session reserves at least what it spends: the day's count never passes the limit", async () => {
    const store = new MemoryStore();
    await store.seedTemplates({ wide: WIDE });
    // Mutable on purpose: the limit is set, before the last message, to exactly what its reservation needs.
    const usage = { messagesPerMinute: 1_000_000, maxActiveSessions: 100, idleTtlMs: POLICY.idleTtlMs, tokensPerDay: 0 };
    const chat = service(store, usage);
    const userId = `user-${randomUUID()}`;
    const { sessionId } = await chat.create({ userId, templateId: "wide" });
    await chat.send({ sessionId, message: "hello" });

    // A and B, concurrent, both claim at message_count 1. A answers first with a long reply, B later:
    // the session's remembered context becomes B's call, which holds neither A's message nor A's reply.
    const longA = "Tell me everything about owls, their habits, their habitats and their diets. ".repeat(20);
    fake.chaos = (request, reply) => {
      const message = lastUser(request);
      if (message === longA) return { kind: "reply", text: "Owls are nocturnal birds of prey. ".repeat(60), delayMs: 20 };
      if (message === "B") return { kind: "reply", text: "short", delayMs: 300 };
      return reply();
    };
    await Promise.all([chat.send({ sessionId, message: longA }), chat.send({ sessionId, message: "B" })]);

    const before = (await usageOf(store, userId))!;
    const context = before.contexts?.[sessionId]?.tokens ?? 0;
    const need = estimatePromptTokens([{ role: "user", content: "C" }]) + MAX_TOKENS;
    // Exactly the reservation C makes: C is admitted, and the limit must hold after it settles.
    usage.tokensPerDay = before.daily!.tokens + context + need;
    const answer = await chat.send({ sessionId, message: "C" });
    const spentByC = answer.usage!.total_tokens;
    const after = (await usageOf(store, userId))!;

    expect(fake.requests.at(-1)?.body.messages.map((message) => message.content)).toContain(longA);
    expect(after.daily!.tokens).toBeLessThanOrEqual(usage.tokensPerDay);
    // Why: the reservation (the session's remembered context + the new need) was meant to bound the call.
    expect(spentByC).toBeLessThanOrEqual(context + need);
  });

  it("the summary call's prompt stays within SUMMARY_CALL_TOKENS, the bound the reservation counts on", () => {
    // A 4,000-character message (MAX_MESSAGE_CHARS' default) of symbols the estimate prices at 2 tokens each.
    const message = { role: "user" as const, content: "∑".repeat(4_000), timestamp: 1 };
    const { prompt, folded } = summaryPrompt({ text: "Earlier.", through: 2, updated_at: 1 }, [message]);
    expect(folded).toBe(1);
    // The call may use its prompt plus SUMMARY_MAX_TOKENS of reply.
    expect(estimatePromptTokens(prompt) + SUMMARY_MAX_TOKENS).toBeLessThanOrEqual(SUMMARY_CALL_TOKENS);
  });

  it("summary call: the earlier summary counts within the call's bound, however long it was stored", () => {
    const message = { role: "user" as const, content: "∑".repeat(4_000), timestamp: 1 };
    // Stored by a version that kept whatever the provider returned.
    const previous = { text: "word ".repeat(60_000), through: 2, updated_at: 1 };
    const { prompt } = summaryPrompt(previous, [message]);
    expect(estimatePromptTokens(prompt) + SUMMARY_MAX_TOKENS).toBeLessThanOrEqual(SUMMARY_CALL_TOKENS);
  });

  it("rolling summary: with every summary call finishing before its reply, each prompt holds every earlier message, in the summary or the window (no permanent gap)", async () => {
    const store = new MemoryStore();
    await store.seedTemplates({ rolling: { name: "Rolling", personalityPrompt: "You remember the gist.", context_window: 2, summary: true } });
    const chat = service(store, { messagesPerMinute: 1_000_000, maxActiveSessions: 100, idleTtlMs: POLICY.idleTtlMs, tokensPerDay: 0 });
    const isSummary = (request: RecordedRequest) => request.body.messages[0]?.content === SUMMARY_INSTRUCTIONS;
    // The summariser answers at once, echoing the earlier summary and the messages' words; replies take 50 ms.
    fake.chaos = (request) => {
      if (!isSummary(request)) return { kind: "reply", text: `reply-to-${lastUser(request)}`, delayMs: 50 };
      const body = request.body.messages[1]!.content;
      const earlier = body.startsWith("Earlier summary:\n") ? body.slice("Earlier summary:\n".length, body.indexOf("\n\nNew messages:")) : "";
      const lines = body.slice(body.indexOf("New messages:\n") + "New messages:\n".length).split("\n").map((line) => line.replace(/^(User|Assistant): /, ""));
      return { kind: "reply", text: [earlier, ...lines].filter(Boolean).join(" ") };
    };
    const { sessionId } = await chat.create({ userId: `user-${randomUUID()}`, templateId: "rolling" });
    const history: string[] = [];
    const missing: string[] = [];
    for (let i = 1; i <= 6; i += 1) {
      const before = fake.requests.length;
      const answer = await chat.send({ sessionId, message: `m${i}` });
      const prompt = fake.requests.slice(before).find((request) => !isSummary(request))!.body.messages;
      const summary = summaryIn(prompt);
      const seen = new Set([...summary.split(" "), ...prompt.slice(1, -1).map((message) => message.content)]);
      for (const earlier of history) if (!seen.has(earlier)) missing.push(`message ${i}'s prompt lacks ${earlier}`);
      history.push(`m${i}`, answer.text);
    }
    // Message 3 ("What is my name?") is answered without exchange 1, message 4 without exchange 2, ...
    expect(missing).toEqual([]);
  });
});
