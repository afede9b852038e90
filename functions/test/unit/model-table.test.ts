import { costUsd, modelFacts } from "../../src/llm/model-table";

describe("model table", () => {
  it("knows a model by its name and by a dated snapshot's, the longest listed name winning", () => {
    expect(modelFacts("gpt-4o-mini")?.contextTokens).toBe(128_000);
    expect(modelFacts("gpt-4o-mini-2024-07-18")).toEqual(modelFacts("gpt-4o-mini"));
    expect(modelFacts("gpt-4o-2024-08-06")).toEqual(modelFacts("gpt-4o"));
    expect(modelFacts("gpt-4o-mini-2024-07-18")).not.toEqual(modelFacts("gpt-4o"));
  });

  it("knows nothing of an unlisted model, nor of a listed name with another suffix", () => {
    expect(modelFacts("llama3")).toBeUndefined();
    expect(modelFacts("gpt-4o-audio-preview")).toBeUndefined();
    expect(costUsd("llama3", 1_000, 1_000)).toBeUndefined();
  });

  it("prices prompt and completion tokens at their own rates, to a millionth of a dollar", () => {
    // gpt-4o-mini: $0.15 per million prompt tokens, $0.60 per million completion tokens.
    expect(costUsd("gpt-4o-mini", 1_000_000, 0)).toBe(0.15);
    expect(costUsd("gpt-4o-mini", 0, 1_000_000)).toBe(0.6);
    expect(costUsd("gpt-4o-mini", 31, 9)).toBe(0.00001);
    expect(costUsd("gpt-4o-mini", 1, 0)).toBe(0);
  });

  it("knows nothing of a name Object.prototype holds, which a provider may answer with", () => {
    for (const name of ["constructor", "toString", "__proto__", "hasOwnProperty"]) {
      expect(modelFacts(name)).toBeUndefined();
      expect(costUsd(name, 1_000, 1_000)).toBeUndefined();
    }
  });
});
