import type { ConversationHead, SessionMeta } from "../../store/records";

const GRAPHEMES = new Intl.Segmenter("en", { granularity: "grapheme" });

/** The longest title, in characters: a line of a list on a phone. */
export const TITLE_MAX_CHARS = 60;

/**
 * The longest a character of a title may be, in UTF-16 units: more than any emoji sequence takes
 * (a family with skin tones, a subdivision flag: 15 or so), far less than one grapheme may hold.
 * A letter followed by thousands of combining marks, or a run of Hangul leading jamo, is one
 * character as a reader counts it: kept whole, one such first message (4,000 units) was a title.
 */
const CHAR_MAX_UNITS = 32;

/**
 * A conversation's title: its first user message on one line, cut at the last word boundary that
 * fits (with an ellipsis), or at the limit when that boundary would keep less than half of the
 * room: a long word after a short one (a link after "Summarize"), or a language written without
 * spaces (Chinese, Japanese) with one space near its start, kept a word of it, or the ellipsis
 * alone. It fits in `maxChars` characters as a reader counts them and in 16 UTF-16 units a
 * character (960 for 60: 60 emoji sequences of a family or a couple with skin tones, 11 to 15
 * units each, stay whole), each character cut to CHAR_MAX_UNITS: the index entry and every list
 * page carry it. Control characters go (a line break is a space). No model call: the listing must
 * cost nothing on the message path but the text it already has.
 */
export function conversationTitle(message: string, maxChars: number = TITLE_MAX_CHARS): string {
  const maxUnits = 16 * maxChars;
  // \s misses NEL (U+0085), a line break too; the other C0 and C1 controls show as nothing or boxes.
  const line = message.replace(/[\s\u0085]+/gu, " ").replace(/\p{Cc}/gu, "").trim();
  // Characters as a reader counts them: an emoji or an accented letter is never cut in two.
  const chars = Array.from(GRAPHEMES.segment(line), (part) => bounded(part.segment));
  let fit = 0;
  for (let units = 0; fit < chars.length && fit < maxChars && units + (chars[fit]?.length ?? 0) <= maxUnits; fit += 1) units += chars[fit]?.length ?? 0;
  if (fit === chars.length) return chars.join("");
  // Room for the ellipsis.
  const room = chars.slice(0, Math.max(0, fit - 1)).join("");
  // The room ends a word when a space follows it; else its last word is cut short, and goes.
  const boundary = chars[fit - 1] === " " ? room.length : room.lastIndexOf(" ");
  const atWord = boundary > 0 ? trimEnd(room.slice(0, boundary)) : "";
  // A room of punctuation alone keeps it: never the ellipsis alone.
  const cut = atWord.length * 2 >= room.length ? atWord : trimEnd(room) || room;
  return `${cut}…`;
}

/** `text` without the spaces and punctuation that would stand before the ellipsis. */
function trimEnd(text: string): string {
  return text.replace(/[\s,.;:!?-]+$/u, "");
}

/** `char` cut to CHAR_MAX_UNITS, between code points: its base and first marks. */
function bounded(char: string): string {
  if (char.length <= CHAR_MAX_UNITS) return char;
  let kept = "";
  for (const point of char) {
    if (kept.length + point.length > CHAR_MAX_UNITS) break;
    kept += point;
  }
  return kept;
}

/** What a conversation's first exchange gives its entry in the owner's index: its title, and the fields fixed at creation. */
export function conversationHead(meta: SessionMeta, firstMessage: string): ConversationHead {
  return { title: conversationTitle(firstMessage), template_id: meta.template_id, template_name: meta.template_name, created_at: meta.created_at };
}
