import fc from "fast-check";
import corpus from "../fixtures/o200k-corpus.json";
import {
  calibration,
  CALIBRATION_MARGIN,
  CALIBRATION_RANGE,
  ESTIMATE_MARGIN,
  estimateBound,
  estimateMessageTokens,
  estimatePromptTokens,
  estimateTokens,
  MAX_OVERCOUNT,
  MAX_TOKENS_PER_CHAR,
  REPLY_PRIMING_TOKENS,
  TOKENS_PER_MESSAGE,
} from "../../src/session/prompt/token-estimate";
import { SCRIPT_MESSAGES } from "../support/o200k-scripts";

// True counts: gpt-tokenizer 4.0.0, encoding o200k_base, measured once outside the project (test/fixtures/README.md).
const entries: readonly { kind: string; text: string; tokens: number }[] = corpus;

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

describe("estimateTokens against o200k_base counts", () => {
  it("has a varied corpus to check against", () => {
    expect(entries.length).toBeGreaterThanOrEqual(40);
    expect(new Set(entries.map((entry) => entry.kind)).size).toBeGreaterThanOrEqual(20);
  });

  it.each(entries)("never counts fewer tokens than o200k ($kind: $tokens tokens)", ({ text, tokens }) => {
    expect(estimateTokens(text) * ESTIMATE_MARGIN).toBeGreaterThanOrEqual(tokens);
  });

  it.each(SCRIPT_MESSAGES)("never counts fewer tokens than o200k for a message of 4,000 units in $script ($tokens tokens), nor more than MAX_OVERCOUNT times that", ({ text, tokens }) => {
    expect(text.length).toBeLessThanOrEqual(4_000);
    expect(estimateTokens(text)).toBeGreaterThanOrEqual(tokens);
    expect(estimateTokens(text)).toBeLessThanOrEqual(estimateBound(tokens, undefined));
  });

  // After a space, as people type them: " 🥺", " 🐶", " 🏆" cost a token more than alone, " 🈹" 3, a digit ("🄁"), a tag or private use one more.
  it.each([
    ["ok 🥺", 4],
    ["🥺 🥺 🥺 🥺 🥺", 14],
    ["miss you 🥺 🥺 🥺", 11],
    ["a 🐶", 4],
    ["we won 🏆", 5],
    ["home 🏠", 4],
    ["sale 🈹", 4],
    ["so  tired  🥺", 7],
    ["a\n 🐱", 5],
    ["a 🄁", 5],
    ["a \u{e0067}", 6],
    ["a \u{f0000}", 6],
  ])("never counts fewer tokens than o200k for a symbol beyond the BMP after a space: %j (%i tokens)", (text, tokens) => {
    expect(estimateTokens(text)).toBeGreaterThanOrEqual(tokens);
  });

  it("does not over-count grossly: median ratio at most 1.35, English prose at most 1.4 but one line of long words", () => {
    expect(median(entries.map(({ text, tokens }) => estimateTokens(text) / tokens))).toBeLessThanOrEqual(1.35);
    const prose = entries.filter((entry) => entry.kind === "prose").map(({ text, tokens }) => estimateTokens(text) / tokens);
    expect(prose.filter((ratio) => ratio > 1.4)).toHaveLength(1);
    expect(Math.max(...prose)).toBeLessThanOrEqual(2);
  });
});

describe("estimateTokens", () => {
  it("prices a text of n UTF-16 units at most MAX_TOKENS_PER_CHAR x n + 1 (the deployment cap's reservation counts on it)", () => {
    const priciest = fc.constantFrom("∑", "₀", "✈", "😀", "🥺", "🫠", "𠀀", "\u{e0067}", "\u0301", "\u0361", "é", "ž", "ѣ", "ሀ", "ᄀ", "㐀", "⸮", "\ue000", "a", "x", "!", "@", "\n", " ", "\t", "7", "中", "\ud83d");
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: "binary" }), fc.string({ unit: priciest, maxLength: 200 })), (text) => estimateTokens(text) <= MAX_TOKENS_PER_CHAR * text.length + 1),
      { numRuns: 5_000 },
    );
    expect(estimateTokens("\ue000".repeat(1_000))).toBe(MAX_TOKENS_PER_CHAR * 1_000);
  });

  it.each([["U+E000", "\ue000"], ["U+F8FF", "\uf8ff"]])("prices a text of private-use characters (%s) at most MAX_TOKENS_PER_CHAR x its units + 1", (_name, char) => {
    const text = char.repeat(4_000);
    expect(estimateTokens(text)).toBeLessThanOrEqual(MAX_TOKENS_PER_CHAR * text.length + 1);
  });

  it("is 0 for the empty text and 1 for a short word", () => {
    expect(estimateTokens("")).toBe(0);
    expect(estimateTokens("hi")).toBe(1);
    expect(estimateTokens(" hello")).toBe(1);
  });

  it("counts a surrogate pair as one code point, not two symbols", () => {
    // One astral emoji is priced once; its two UTF-16 halves priced apart would cost more.
    expect(estimateTokens("🫠")).toBe(3);
    expect(estimateTokens("😂")).toBe(2);
    expect(estimateTokens("🫠🫠")).toBe(6);
  });

  it("prices the space before an emoji in the emoji where o200k has a token with the space (\" 😂\"), and apart where it has none (\" 🥺\")", () => {
    expect(estimateTokens(" 😂")).toBe(estimateTokens("😂"));
    expect(estimateTokens(" 🥺")).toBe(estimateTokens("🥺") + 1);
    // The spaces before the last are a piece of their own: "a  🥺" is "a", " ", " " and the emoji.
    expect(estimateTokens("a  🥺")).toBe(estimateTokens("a 🥺") + 1);
    expect(estimateTokens("a  😂")).toBe(estimateTokens("a 😂") + 1);
  });

  it("prices a lone surrogate as a symbol rather than failing", () => {
    expect(estimateTokens("\ud83d")).toBe(1);
    expect(estimateTokens("a\udc00b")).toBeGreaterThanOrEqual(3);
  });

  it("counts CJK at least one token per character", () => {
    expect(estimateTokens("你好世界")).toBeGreaterThanOrEqual(4);
    expect(estimateTokens("こんにちは")).toBeGreaterThanOrEqual(5);
  });

  it("counts a combining mark beyond its base letter", () => {
    expect(estimateTokens("e\u0301")).toBeGreaterThan(estimateTokens("e"));
    expect(estimateTokens("e\u0301")).toBeGreaterThanOrEqual(2);
  });

  it("prices digits in runs of three, as o200k splits them", () => {
    expect(estimateTokens("123")).toBe(1);
    expect(estimateTokens("1234")).toBe(2);
    expect(estimateTokens("123456789")).toBe(3);
  });

  it("prices keys and hashes near a token per character", () => {
    const key = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";
    expect(estimateTokens(key)).toBe(key.length);
  });

  it("keeps long whitespace runs cheap but not free", () => {
    expect(estimateTokens(" ".repeat(200))).toBeGreaterThanOrEqual(2);
    expect(estimateTokens(" ".repeat(200))).toBeLessThan(20);
    expect(estimateTokens("\n".repeat(200))).toBeGreaterThanOrEqual(14);
  });

  it("is a whole number, 1 or more for any non-empty text", () => {
    fc.assert(
      fc.property(fc.string({ unit: "grapheme", minLength: 1 }), (text) => {
        const tokens = estimateTokens(text);
        expect(Number.isInteger(tokens)).toBe(true);
        expect(tokens).toBeGreaterThanOrEqual(1);
      }),
    );
  });

  it("never costs less for two texts joined by a line break than for the larger alone", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary" }), fc.string({ unit: "binary" }), (a, b) => {
        expect(estimateTokens(`${a}\n${b}`)).toBeGreaterThanOrEqual(Math.max(estimateTokens(a), estimateTokens(b)));
      }),
    );
  });
});

describe("estimatePromptTokens", () => {
  it("adds the chat format per message and the reply's priming", () => {
    const messages = [
      { role: "system", content: "You are a pirate." },
      { role: "user", content: "hi" },
    ];
    expect(estimatePromptTokens(messages)).toBe(REPLY_PRIMING_TOKENS + 2 * TOKENS_PER_MESSAGE + estimateTokens("You are a pirate.") + 1);
    expect(estimatePromptTokens([])).toBe(REPLY_PRIMING_TOKENS);
  });

  it("is the sum of estimateMessageTokens plus the priming", () => {
    expect(estimateMessageTokens("")).toBe(TOKENS_PER_MESSAGE);
    expect(estimatePromptTokens([{ role: "user", content: "one two" }])).toBe(REPLY_PRIMING_TOKENS + estimateMessageTokens("one two"));
  });
});

describe("calibration", () => {
  it("is the estimate's own margin without a previous call", () => {
    expect(calibration(undefined)).toBe(ESTIMATE_MARGIN);
  });

  it("scales by the provider's count over ours, with the safety margin on top", () => {
    expect(calibration({ prompt_tokens: 80, prompt_estimate: 100 })).toBeCloseTo(0.8 * CALIBRATION_MARGIN, 12);
    expect(calibration({ prompt_tokens: 100, prompt_estimate: 100 })).toBeCloseTo(CALIBRATION_MARGIN, 12);
  });

  it("clamps the ratio before the margin", () => {
    expect(calibration({ prompt_tokens: 10, prompt_estimate: 100 })).toBeCloseTo(CALIBRATION_RANGE.min * CALIBRATION_MARGIN, 12);
    expect(calibration({ prompt_tokens: 1000, prompt_estimate: 100 })).toBeCloseTo(CALIBRATION_RANGE.max * CALIBRATION_MARGIN, 12);
  });

  it("ignores a previous call that reported nothing usable", () => {
    for (const previous of [
      { prompt_tokens: 0, prompt_estimate: 100 },
      { prompt_tokens: 100, prompt_estimate: 0 },
      { prompt_tokens: Number.NaN, prompt_estimate: 100 },
      { prompt_tokens: -5, prompt_estimate: 100 },
      { prompt_tokens: 100, prompt_estimate: Number.POSITIVE_INFINITY },
    ]) {
      expect(calibration(previous)).toBe(ESTIMATE_MARGIN);
    }
  });

  it("keeps a calibrated estimate an upper bound when the next prompt is like the last", () => {
    // The provider counted 90 for our 120: the next, similar prompt of raw estimate 120 is planned at 99 >= 90.
    const factor = calibration({ prompt_tokens: 90, prompt_estimate: 120 });
    expect(120 * factor).toBeGreaterThanOrEqual(90);
    expect(120 * factor).toBeLessThan(120);
  });
});

describe("estimateBound: the most a text of so many true tokens is estimated at", () => {
  it("without a report, the estimate's own bound: no corpus text is estimated over MAX_OVERCOUNT times its true count", () => {
    for (const { text, tokens } of entries) expect(estimateTokens(text)).toBeLessThanOrEqual(estimateBound(tokens, undefined));
    expect(estimateBound(500, undefined)).toBe(Math.ceil(500 * MAX_OVERCOUNT));
  });

  it("with a report, the true count over the session's ratio, with the calibration's margin", () => {
    expect(estimateBound(500, { prompt_tokens: 80, prompt_estimate: 100 })).toBe(Math.ceil((500 * CALIBRATION_MARGIN) / 0.8));
  });

  it("in a session of English prose, bounds the estimate of every prose text of the corpus but the line of very long words", () => {
    const prose = entries.filter((entry) => entry.kind === "prose");
    // The session's previous prompt: all of that prose, reported at its true count.
    const previous = { prompt_tokens: prose.reduce((sum, { tokens }) => sum + tokens, 0), prompt_estimate: prose.reduce((sum, { text }) => sum + estimateTokens(text), 0) };
    const over = prose.filter(({ text, tokens }) => estimateTokens(text) > estimateBound(tokens, previous));
    expect(over.map(({ text, tokens }) => estimateTokens(text) / tokens)).toEqual([expect.any(Number)]);
    expect(estimateTokens(over[0]!.text) / over[0]!.tokens).toBeGreaterThan(1.9);
  });

  it("clamps the ratio as calibration does, and ignores a report with nothing usable", () => {
    expect(estimateBound(100, { prompt_tokens: 10, prompt_estimate: 100 })).toBe(Math.ceil((100 * CALIBRATION_MARGIN) / CALIBRATION_RANGE.min));
    expect(estimateBound(100, { prompt_tokens: 1000, prompt_estimate: 100 })).toBe(Math.ceil((100 * CALIBRATION_MARGIN) / CALIBRATION_RANGE.max));
    expect(estimateBound(100, { prompt_tokens: 0, prompt_estimate: 100 })).toBe(estimateBound(100, undefined));
  });
});
