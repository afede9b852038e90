import type { ConversationHead, SessionMeta } from "../../store/records";

const GRAPHEMES = new Intl.Segmenter("en", { granularity: "grapheme" });

/** The longest title, in characters: a line of a list on a phone. */
export const TITLE_MAX_CHARS = 60;

/**
 * A conversation's title: its first user message on one line, cut at the last word boundary that
 * fits (with an ellipsis), or at the limit when one word is longer. No model call: the listing
 * must cost nothing on the message path but the text it already has.
 */
export function conversationTitle(message: string, maxChars: number = TITLE_MAX_CHARS): string {
  const line = message.replace(/\s+/gu, " ").trim();
  // Characters as a reader counts them: an emoji or an accented letter is never cut in two.
  const chars = Array.from(GRAPHEMES.segment(line), (part) => part.segment);
  if (chars.length <= maxChars) return line;
  // Room for the ellipsis.
  const room = chars.slice(0, maxChars - 1).join("");
  // The room ends a word when a space follows it; else its last word is cut short, and goes.
  const boundary = chars[maxChars - 1] === " " ? room.length : room.lastIndexOf(" ");
  const cut = boundary > 0 ? room.slice(0, boundary) : room;
  return `${cut.replace(/[\s,.;:!?-]+$/u, "")}…`;
}

/** What a conversation's first exchange gives its entry in the owner's index: its title, and the fields fixed at creation. */
export function conversationHead(meta: SessionMeta, firstMessage: string): ConversationHead {
  return { title: conversationTitle(firstMessage), template_id: meta.template_id, template_name: meta.template_name, created_at: meta.created_at };
}
