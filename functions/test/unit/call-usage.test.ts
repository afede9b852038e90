import { costUsd } from "../../src/llm/model-table";
import { callUsage } from "../../src/session/call-usage";

describe("a call's usage", () => {
  it("keeps the reported counts, priced as the model that answered", () => {
    const usage = callUsage({ text: "hi", truncated: false, model: "gpt-4o-mini-2024-07-18", usage: { prompt_tokens: 31, completion_tokens: 9 } }, 99);
    expect(usage).toEqual({ prompt_tokens: 31, completion_tokens: 9, total_tokens: 40, cost_usd: costUsd("gpt-4o-mini", 31, 9) });
  });

  it("estimates and says so when the provider reported none", () => {
    const usage = callUsage({ text: "a reply of a few words", truncated: false, model: "gpt-4o-mini" }, 42);
    expect(usage).toMatchObject({ prompt_tokens: 42, estimated: true });
    expect(usage.completion_tokens).toBeGreaterThan(0);
    expect(usage.total_tokens).toBe(42 + usage.completion_tokens);
  });

  it("gives no price for a model that answered under a name not listed (the offline responder, a compatible server's own model)", () => {
    expect(callUsage({ text: "hi", truncated: false, model: "offline" }, 10).cost_usd).toBeUndefined();
    expect(callUsage({ text: "hi", truncated: false, model: "llama3", usage: { prompt_tokens: 5, completion_tokens: 1 } }, 10).cost_usd).toBeUndefined();
  });
});
