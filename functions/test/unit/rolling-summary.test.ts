import { randomUUID } from "node:crypto";
import { SUMMARY_CALL_TOKENS, SUMMARY_MAX_TOKENS, summaryPrompt } from "../../src/session/prompt/rolling-summary";
import { estimatePromptTokens } from "../../src/session/prompt/token-estimate";
import { MemoryStore } from "../../src/store/memory-store";
import type { Template } from "../../src/store/records";
import { lastUser } from "../support/fake-openai-server";
import { isSummary, summaryIn } from "../support/summary-in";
import { tokenSuite, unlimitedUsage } from "../support/token-service";

/** A message's id: the text before its first ":" ("m3", "reply-to-m3"). */
const idOf = (content: string) => content.split(":")[0]!;

describe("the summary call's prompt (summaryPrompt)", () => {
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
});

/**
 * The rolling summary through the session service, with a summariser that answers at once and
 * echoes what it was given: docs/tokens.md's promise that each earlier message is in the summary
 * or in the window.
 */
describe("the rolling summary through the session service", () => {
  const suite = tokenSuite();

  /**
   * A sequential chat whose summariser answers at once (before the reply), echoing the ids of the
   * earlier summary and of the new messages: returns, per prompt, the earlier messages it lacks.
   */
  async function gapsOfChat(template: Template, messages: readonly string[]): Promise<string[]> {
    const store = new MemoryStore();
    await store.seedTemplates({ t: template });
    const chat = suite.service(store, unlimitedUsage());
    suite.fake.chaos = (request) => {
      if (!isSummary(request)) return { kind: "reply", text: `reply-to-${lastUser(request)}`, delayMs: 50 };
      const body = request.body.messages[1]!.content;
      const earlier = body.startsWith("Earlier summary:\n") ? body.slice("Earlier summary:\n".length, body.indexOf("\n\nNew messages:")) : "";
      const lines = body.slice(body.indexOf("New messages:\n") + "New messages:\n".length).split("\n").map((line) => idOf(line.replace(/^(User|Assistant): /, "")));
      return { kind: "reply", text: [earlier, ...lines].filter(Boolean).join(" ") };
    };
    const { sessionId } = await chat.create({ userId: `user-${randomUUID()}`, templateId: "t" });
    const history: string[] = [];
    const missing: string[] = [];
    for (const [i, message] of messages.entries()) {
      const before = suite.fake.requests.length;
      const answer = await chat.send({ sessionId, message });
      const prompt = suite.fake.requests.slice(before).find((request) => !isSummary(request))!.body.messages;
      const summary = summaryIn(prompt);
      const seen = new Set([...summary.split(" "), ...prompt.slice(1, -1).map((m) => idOf(m.content))]);
      for (const earlier of history) if (!seen.has(earlier)) missing.push(`message ${i + 1}'s prompt lacks ${earlier}`);
      history.push(idOf(message), idOf(answer.text));
    }
    return missing;
  }

  it("rolling summary: with every summary call finishing before its reply, each prompt holds every earlier message, in the summary or the window (no permanent gap)", async () => {
    const store = new MemoryStore();
    await store.seedTemplates({ rolling: { name: "Rolling", personalityPrompt: "You remember the gist.", context_window: 2, summary: true } });
    const chat = suite.service(store, unlimitedUsage());
    // The summariser answers at once, echoing the earlier summary and the messages' words; replies take 50 ms.
    suite.fake.chaos = (request) => {
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
      const before = suite.fake.requests.length;
      const answer = await chat.send({ sessionId, message: `m${i}` });
      const prompt = suite.fake.requests.slice(before).find((request) => !isSummary(request))!.body.messages;
      const summary = summaryIn(prompt);
      const seen = new Set([...summary.split(" "), ...prompt.slice(1, -1).map((message) => message.content)]);
      for (const earlier of history) if (!seen.has(earlier)) missing.push(`message ${i}'s prompt lacks ${earlier}`);
      history.push(`m${i}`, answer.text);
    }
    // Message 3 ("What is my name?") is answered without exchange 1, message 4 without exchange 2, ...
    expect(missing).toEqual([]);
  });

  it.each([0, 1])("rolling summary, context_window %i: with every summary call in time, each prompt holds every earlier message (docs/tokens.md: 'in the summary or in the window')", async (contextWindow) => {
    const missing = await gapsOfChat(
      { name: "Tiny", personalityPrompt: "You remember the gist.", context_window: contextWindow, summary: true },
      ["m1", "m2", "m3", "m4", "m5"],
    );
    // The exchange just before each message is summarised only beside the NEXT reply: with a window
    // of fewer than 2 messages it is in neither (window 1: its user message; window 0: both).
    expect(missing).toEqual([]);
  });

  it("rolling summary with context_tokens: with every summary call in time, each prompt holds every earlier message", async () => {
    // Each message ~75 estimated tokens; a budget that holds a few; the count window (20) never binds.
    const pad = (i: number) => `m${i}:${"lorem ipsum dolor sit amet ".repeat(10)}`;
    const missing = await gapsOfChat(
      { name: "Budget", personalityPrompt: "You remember the gist.", context_window: 20, context_tokens: 700, summary: true },
      Array.from({ length: 8 }, (_, i) => pad(i + 1)),
    );
    // backlog() predicts the next window's start from the COUNT window only: the token window moves on
    // by whatever the new exchange's tokens push out, and those messages are in neither.
    expect(missing).toEqual([]);
  });
});
