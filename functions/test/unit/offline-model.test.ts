import type { CompletionRequest } from "../../src/llm/chat-model";
import { createOfflineModel, OFFLINE_LABEL } from "../../src/llm/offline-model";

const REQUEST: CompletionRequest = {
  model: "gpt-test",
  messages: [
    { role: "system", content: "be kind" },
    { role: "user", content: "earlier" },
    { role: "assistant", content: "reply" },
    { role: "user", content: "hello  there" },
  ],
  temperature: 0.3,
  max_tokens: 42,
  presence_penalty: 0,
  frequency_penalty: 0,
};

describe("the offline responder", () => {
  it("answers at once, labelled, without a listener", async () => {
    const sleeps: number[] = [];
    const model = createOfflineModel({ sleep: async (ms) => { sleeps.push(ms); } });
    const completion = await model.complete(REQUEST);
    expect(completion).toEqual({ text: `${OFFLINE_LABEL} You said "hello  there" (2 earlier messages in context).`, truncated: false, model: "offline" });
    expect(sleeps).toEqual([]);
  });

  it("streams word by word, pausing between words; the words concatenate to the reply", async () => {
    const events: string[] = [];
    const model = createOfflineModel({ wordDelayMs: 7, sleep: async (ms) => { events.push(`sleep ${ms}`); } });
    const deltas: string[] = [];
    const completion = await model.complete(REQUEST, {
      write: (text) => {
        deltas.push(text);
        events.push("delta");
      },
    });
    expect(deltas.join("")).toBe(completion.text);
    expect(deltas[0]).toBe("[offline");
    // Each piece is one word with the spaces before it: double spaces survive.
    for (const delta of deltas) expect(delta).toMatch(/^\s*\S+$/);
    expect(deltas).toContain("  there\"");
    // A pause before every word but the first.
    expect(events).toEqual(deltas.flatMap((_, index) => (index === 0 ? ["delta"] : ["sleep 7", "delta"])));
  });

  it("really pauses by default, so a local run visibly streams", async () => {
    const model = createOfflineModel();
    const arrivals: number[] = [];
    const started = performance.now();
    await model.complete(REQUEST, { write: () => arrivals.push(performance.now() - started) });
    expect(arrivals.length).toBeGreaterThan(5);
    // 40 ms between words (a timer may fire a millisecond early).
    expect(arrivals.at(-1)! - arrivals[0]!).toBeGreaterThanOrEqual((arrivals.length - 1) * 39);
  });
});
