import fc from "fast-check";
import { notificationPreview, PREVIEW_MAX_CHARS } from "../../src/notify/push-notification";

describe("notificationPreview", () => {
  it("is off at 0 characters, and for text with nothing printable", () => {
    expect(notificationPreview("Hello", 0)).toBeUndefined();
    expect(notificationPreview(" \n\t\u2028 ", 50)).toBeUndefined();
    expect(notificationPreview("", 50)).toBeUndefined();
  });

  it("keeps a short text as it is", () => {
    expect(notificationPreview("See you at 6?", 50)).toBe("See you at 6?");
  });

  it("makes one line: controls, line and paragraph separators and runs of white space become one space", () => {
    expect(notificationPreview("  first line\r\nsecond\u2028third\u0000\u0007end\t\t ", 50)).toBe("first line second third end");
  });

  it("removes bidirectional controls, which could make a preview read as something else", () => {
    expect(notificationPreview("pay \u202egnp.exe\u202c now \u2066x\u2069", 50)).toBe("pay gnp.exe now x");
    // Unicode's Bidi_Control set whole: the marks ALM, LRM and RLM too.
    expect(notificationPreview("pay \u200fexe.gnp\u200e now \u061c", 50)).toBe("pay exe.gnp now");
  });

  it("cuts a long text at the bound, the ellipsis included", () => {
    expect(notificationPreview("abcdefghij", 6)).toBe("abcde…");
    expect(notificationPreview("abcdefghij", 10)).toBe("abcdefghij");
    expect(notificationPreview("abcd efghij", 6)).toBe("abcd…");
  });

  it("never splits a grapheme: emoji sequences, flags and combining marks stay whole or go whole", () => {
    const family = "👨‍👩‍👧‍👦"; // 11 UTF-16 units
    expect(notificationPreview(`ab${family}cd`, 12)).toBe("ab…");
    expect(notificationPreview(`ab${family}cd`, 14)).toBe(`ab${family}…`);
    expect(notificationPreview("🇫🇷🇩🇪🇮🇹", 6)).toBe("🇫🇷…");
    expect(notificationPreview("e\u0301e\u0301e\u0301e\u0301", 6)).toBe("e\u0301e\u0301…");
  });

  it("clamps the bound to PREVIEW_MAX_CHARS", () => {
    expect(notificationPreview("x".repeat(5000), 10_000)).toBe(`${"x".repeat(PREVIEW_MAX_CHARS - 1)}…`);
  });

  it("is off for a bound that is not a number (NaN, as a parse of a missing value gives), which no comparison would hold to", () => {
    expect(notificationPreview("x".repeat(4_000), Number.NaN)).toBeUndefined();
  });

  it("any text, any bound: within the bound, one line, well-formed, the text's own characters from its start", () => {
    // Any code points; and long texts of what a preview must handle with care, to reach the cut.
    // fast-check's "binary" unit costs 2 s to set up; any scalar value, as a string, is the same.
    const codePoint = fc.integer({ min: 0, max: 0x10ffff }).filter((code) => code < 0xd800 || code > 0xdfff).map((code) => String.fromCodePoint(code));
    const tricky = fc.constantFrom("a", "b", " ", "\n", "\t", "\u0000", "é", "e\u0301", "👨‍👩‍👧‍👦", "🇫🇷", "\u202e", "\u2066", "…");
    const texts = fc.oneof(fc.string({ unit: "grapheme", maxLength: 120 }), fc.string({ unit: codePoint, maxLength: 60 }), fc.string({ unit: tricky, maxLength: 300 }));
    // What a preview may drop or change: white space, controls, bidi controls.
    const significant = (value: string) => value.replace(/[\s\p{Cc}\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/gu, "");
    fc.assert(
      fc.property(texts, fc.integer({ min: -5, max: 400 }), (text, maxChars) => {
        const preview = notificationPreview(text, maxChars);
        if (preview === undefined) {
          expect(maxChars <= 0 || significant(text) === "").toBe(true);
          return;
        }
        expect(preview.length).toBeLessThanOrEqual(Math.min(maxChars, PREVIEW_MAX_CHARS));
        expect(preview).not.toMatch(/[\p{Cc}\u2028\u2029\u202a-\u202e\u2066-\u2069]|^\s|\s$|\s\s/u);
        expect(preview.isWellFormed()).toBe(true);
        const cut = preview.endsWith("…") && !significant(text).startsWith(significant(preview));
        expect(significant(text).startsWith(significant(cut ? preview.slice(0, -1) : preview))).toBe(true);
      }),
    );
  });
});
