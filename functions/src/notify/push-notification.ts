/**
 * What a push notification carries, and nothing else: which connection, what happened in it, and
 * at most a short preview of the text. No sender name, no message id, no timestamps: a
 * notification passes through FCM and sits on a lock screen, where less is safer.
 */

/** A new message in a connection, or a request for one. */
export type NotificationKind = "request" | "message";

/** The longest preview any deployment may send, in UTF-16 units, its ellipsis included. */
export const PREVIEW_MAX_CHARS = 200;

declare const bounded: unique symbol;
/** A preview made by `notificationPreview`: one line, at most PREVIEW_MAX_CHARS, bidi controls removed. */
export type Preview = string & { readonly [bounded]: true };

export interface PushNotification {
  readonly connectionId: string;
  readonly kind: NotificationKind;
  /** Absent when previews are off (for the deployment or for the recipient) or the text has nothing to show. */
  readonly preview?: Preview;
}

const ELLIPSIS = "…";
/** C0/C1 controls, line and paragraph separators: a preview is one line. */
const LINE_BREAKING = /[\p{Cc}\u2028\u2029]+/gu;
/**
 * Bidirectional embeddings, overrides, isolates and marks (Unicode's Bidi_Control set): in a system notification they can make a
 * preview read as something else (a reversed link, a fake "from" line).
 */
const BIDI_CONTROLS = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
const SPACES = /\s+/g;
const graphemes = new Intl.Segmenter(undefined, { granularity: "grapheme" });

/**
 * The preview of `text` for a notification, or undefined when `maxChars` is 0 or NaN (previews off) or
 * nothing printable is left. One line (controls and runs of white space become one space), at
 * most `maxChars` UTF-16 units (clamped to PREVIEW_MAX_CHARS) with the ellipsis when cut, and cut
 * between graphemes, so that no emoji, flag or accented letter is split into a broken glyph.
 * Segments only as far as the bound: a long message costs a preview's worth of it.
 */
export function notificationPreview(text: string, maxChars: number): Preview | undefined {
  // NaN (or what floors to it) would pass the clamp and make every comparison below false: nothing cut. Read as off.
  const floored = Math.floor(maxChars);
  const limit = Number.isNaN(floored) ? 0 : Math.min(Math.max(0, floored), PREVIEW_MAX_CHARS);
  if (limit === 0) return undefined;
  const line = text.replace(BIDI_CONTROLS, "").replace(LINE_BREAKING, " ").replace(SPACES, " ").trim();
  if (line === "") return undefined;
  if (line.length <= limit) return line as Preview;
  let kept = "";
  for (const { segment } of graphemes.segment(line)) {
    if (kept.length + segment.length + ELLIPSIS.length > limit) break;
    kept += segment;
  }
  return `${kept.trimEnd()}${ELLIPSIS}` as Preview;
}
