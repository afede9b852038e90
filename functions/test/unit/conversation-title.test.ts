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

  it.each([
    ["a list dash", `- ${"x".repeat(100)}`, `- ${"x".repeat(TITLE_MAX_CHARS - 3)}…`],
    ["an ellipsis", `... ${"https://example.com/".padEnd(100, "a")}`, `... ${"https://example.com/".padEnd(TITLE_MAX_CHARS - 5, "a")}…`],
    ["a heading mark", `# ${"y".repeat(100)}`, `# ${"y".repeat(TITLE_MAX_CHARS - 3)}…`],
    ["a short word", `Summarize ${"https://example.com/".padEnd(100, "b")}`, `Summarize ${"https://example.com/".padEnd(TITLE_MAX_CHARS - 11, "b")}…`],
  ])("cuts at the limit where the last word boundary keeps less than half the room: %s, then one long word", (_case, message, title) => {
    expect(conversationTitle(message)).toBe(title);
  });

  it("cuts a Chinese message with one space near its start near the limit, not after its first word", () => {
    // Written without spaces between words: the only space follows the greeting.
    const message = "你好！ 我想了解一下如何在家里种植番茄，需要注意哪些问题，比如浇水的频率、阳光的需求、土壤的选择以及施肥的时间安排？谢谢你的帮助";
    // One UTF-16 unit a character here.
    expect(conversationTitle(message)).toBe(`${message.slice(0, TITLE_MAX_CHARS - 1)}…`);
  });

  it("is never the ellipsis alone, for a message of punctuation", () => {
    expect(conversationTitle("-".repeat(100))).toBe(`${"-".repeat(TITLE_MAX_CHARS - 1)}…`);
  });

  it("drops control characters, and reads NEL (U+0085) as a line break", () => {
    expect(conversationTitle("Plan\u0085a\u0000 trip\u001b[31m to\u009b Rome\u007f")).toBe("Plan a trip[31m to Rome");
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
