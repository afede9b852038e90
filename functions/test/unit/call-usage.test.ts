import { costUsd } from "../../src/llm/model-table";
import { callUsage, promptTokenBound, PROMPT_BOUND_FACTOR, PROMPT_BOUND_SLACK, tokenFloor, type CallBounds } from "../../src/session/ledger/call-usage";
import { modelFacts } from "../../src/llm/model-table";
import { estimateTokens } from "../../src/session/prompt/token-estimate";

/** What a call's report is held against: its prompt's estimate, 50 max_tokens, the model asked for. */
const bounds = (promptEstimate: number, model = "gpt-4o-mini"): CallBounds => ({ promptEstimate, maxTokens: 50, model });

describe("a call's usage", () => {
  it("keeps the reported counts, priced as the model that answered", () => {
    const usage = callUsage({ text: "hi", truncated: false, model: "gpt-4o-mini-2024-07-18", usage: { prompt_tokens: 31, completion_tokens: 9 } }, bounds(99)).usage;
    expect(usage).toEqual({ prompt_tokens: 31, completion_tokens: 9, total_tokens: 40, cost_usd: costUsd("gpt-4o-mini", 31, 9) });
  });

  it("estimates and says so when the provider reported none", () => {
    const usage = callUsage({ text: "a reply of a few words", truncated: false, model: "gpt-4o-mini" }, bounds(42)).usage;
    expect(usage).toMatchObject({ prompt_tokens: 42, estimated: true });
    expect(usage.completion_tokens).toBeGreaterThan(0);
    expect(usage.total_tokens).toBe(42 + usage.completion_tokens);
  });

  it("estimates a reply longer than max_tokens (a provider that ignores it) at max_tokens, reported or not", () => {
    const text = "lorem ipsum dolor sit amet ".repeat(40_000);
    expect(callUsage({ text, truncated: false, model: "gpt-4o-mini" }, bounds(42)).usage).toMatchObject({ prompt_tokens: 42, completion_tokens: 50, total_tokens: 92, estimated: true });
    expect(callUsage({ text, truncated: false, model: "gpt-4o-mini", usage: { prompt_tokens: 40, completion_tokens: 189_000 } }, bounds(42)).usage).toMatchObject({ completion_tokens: 50, estimated: true });
    // What its session's next prompts will carry is the whole text, charged or not.
    expect(callUsage({ text, truncated: false, model: "gpt-4o-mini" }, bounds(42)).carried).toBe(estimateTokens(text));
    expect(callUsage({ text: "hi", truncated: false, model: "gpt-4o-mini", usage: { prompt_tokens: 31, completion_tokens: 9 } }, bounds(99)).carried).toBe(9);
  });

  it("gives no price for a model that answered under a name not listed (the offline responder, a compatible server's own model)", () => {
    expect(callUsage({ text: "hi", truncated: false, model: "offline" }, bounds(10)).usage.cost_usd).toBeUndefined();
    expect(callUsage({ text: "hi", truncated: false, model: "llama3", usage: { prompt_tokens: 5, completion_tokens: 1 } }, bounds(10, "llama3")).usage.cost_usd).toBeUndefined();
  });
});

describe("a provider's usage report is believed only where it could be true", () => {
  const completion = (usage: { prompt_tokens: number; completion_tokens: number }, model = "gpt-4o-mini") => ({ text: "a short reply", truncated: false, model, usage });

  it("bounds a listed model's prompt by its context window and by the estimate's spread, whichever is lower", () => {
    expect(promptTokenBound("gpt-4o-mini", 100)).toBe(PROMPT_BOUND_FACTOR * 100 + PROMPT_BOUND_SLACK);
    expect(promptTokenBound("gpt-4o-mini", 1_000_000)).toBe(modelFacts("gpt-4o-mini")!.contextTokens);
    expect(promptTokenBound("llama3", 1_000_000)).toBe(PROMPT_BOUND_FACTOR * 1_000_000 + PROMPT_BOUND_SLACK);
  });

  it("keeps a report at its bounds", () => {
    const bound = promptTokenBound("gpt-4o-mini", 100);
    const { usage, refused } = callUsage(completion({ prompt_tokens: bound, completion_tokens: 50 }), bounds(100));
    expect(refused).toBeUndefined();
    expect(usage).toMatchObject({ prompt_tokens: bound, completion_tokens: 50 });
    expect(usage.estimated).toBeUndefined();
  });

  it("keeps a report at its floors: a quarter of the estimate, at least one token", () => {
    expect(tokenFloor(100)).toBe(100 / PROMPT_BOUND_FACTOR);
    expect(tokenFloor(2)).toBe(1);
    expect(tokenFloor(0)).toBe(0);
    const { usage, refused } = callUsage(completion({ prompt_tokens: tokenFloor(100), completion_tokens: 1 }), bounds(100));
    expect(refused).toBeUndefined();
    expect(usage).toMatchObject({ prompt_tokens: 25, completion_tokens: 1 });
    expect(usage.estimated).toBeUndefined();
  });

  it.each([
    ["a completion longer than max_tokens", { prompt_tokens: 20, completion_tokens: 51 }],
    ["a prompt past the estimate's spread", { prompt_tokens: PROMPT_BOUND_FACTOR * 100 + PROMPT_BOUND_SLACK + 1, completion_tokens: 5 }],
    ["counts near 2^53", { prompt_tokens: Number.MAX_SAFE_INTEGER, completion_tokens: Number.MAX_SAFE_INTEGER }],
    ["a trillion tokens", { prompt_tokens: 1e12, completion_tokens: 1e12 }],
    ["zero tokens (no prompt of a system prompt and a message is)", { prompt_tokens: 0, completion_tokens: 0 }],
    ["a prompt under a quarter of its estimate", { prompt_tokens: tokenFloor(100) - 1, completion_tokens: 3 }],
    ["no completion for a reply with text", { prompt_tokens: 80, completion_tokens: 0 }],
  ])("replaces %s by the estimate, marked estimated, and says what was refused", (_, reported) => {
    const { usage, refused } = callUsage(completion(reported), bounds(100));
    expect(usage.estimated).toBe(true);
    expect(usage.prompt_tokens).toBe(100);
    expect(usage.completion_tokens).toBeGreaterThan(0);
    expect(usage.completion_tokens).toBeLessThanOrEqual(10);
    expect(usage.cost_usd).toBeLessThan(0.001);
    expect(refused).toEqual({
      ...reported,
      prompt_floor: tokenFloor(100),
      prompt_bound: promptTokenBound("gpt-4o-mini", 100),
      completion_floor: tokenFloor(estimateTokens("a short reply")),
      completion_bound: 50,
    });
  });

  it("floors a reply's completion at max_tokens at most, so a report at max_tokens of a reply past it is kept", () => {
    const text = "lorem ipsum dolor sit amet ".repeat(100);
    expect(tokenFloor(estimateTokens(text))).toBeGreaterThan(50);
    const { usage, refused } = callUsage({ text, truncated: true, model: "gpt-4o-mini", usage: { prompt_tokens: 100, completion_tokens: 50 } }, bounds(100));
    expect(refused).toBeUndefined();
    expect(usage).toMatchObject({ prompt_tokens: 100, completion_tokens: 50 });
  });
});
