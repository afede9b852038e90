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
});
