import { conversationTitle, TITLE_MAX_CHARS } from "../../src/session/conversations/title";

describe("a conversation's title", () => {
  it.each([
    ["a short message as it is", "Hello there", "Hello there"],
    ["whitespace folded to one line", "  Plan\n\na   trip\tto Rome  ", "Plan a trip to Rome"],
    [
      "a long message cut at the last word that fits, with an ellipsis",
      "Could you explain how the moons of Jupiter were discovered and why they matter for astronomy?",
      "Could you explain how the moons of Jupiter were discovered…",
    ],
    ["punctuation before the cut dropped", `${"word ".repeat(11)}and, then more words follow here`, `${"word ".repeat(11)}and…`],
    ["one word longer than the limit cut inside it", "x".repeat(100), `${"x".repeat(TITLE_MAX_CHARS - 1)}…`],
  ])("keeps %s", (_case, message, title) => {
    expect(conversationTitle(message)).toBe(title);
    expect([...new Intl.Segmenter("en", { granularity: "grapheme" }).segment(conversationTitle(message))].length).toBeLessThanOrEqual(TITLE_MAX_CHARS);
  });

  it("never cuts a character a reader sees as one (an emoji with a skin tone, a flag)", () => {
    const title = conversationTitle(`${"👍🏽".repeat(40)} 🇫🇷`, 10);
    expect(title).toBe(`${"👍🏽".repeat(9)}…`);
    expect(title.isWellFormed()).toBe(true);
  });

  it.each([
    ["a letter with 3,999 combining marks (one character as a reader counts it)", `a${"\u0301".repeat(3_999)}`],
    ["4,000 Hangul leading jamo (one character too)", "\u1100".repeat(4_000)],
    ["60 words of a letter and 60 combining marks each", Array.from({ length: 60 }, () => `x${"\u0300".repeat(60)}`).join(" ")],
  ])("stays a short line, well-formed, for %s: at most 16 UTF-16 units a character", (_case, message) => {
    const title = conversationTitle(message);
    expect(title.length).toBeLessThanOrEqual(16 * TITLE_MAX_CHARS);
    expect(title.isWellFormed()).toBe(true);
  });

  it("keeps 60 emoji sequences whole, a family (11 units) or a couple with skin tones (15): within the units a title may take", () => {
    for (const emoji of ["👨‍👩‍👧‍👦", "👩🏽‍❤️‍💋‍👨🏿"]) expect(conversationTitle(emoji.repeat(TITLE_MAX_CHARS))).toBe(emoji.repeat(TITLE_MAX_CHARS));
  });
});
