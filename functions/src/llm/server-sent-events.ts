/**
 * One server-sent event: its `event` field (undefined when none) and its `data` lines joined.
 * `unterminated` is set when the body's end, not a blank line, ended it: its last line may have
 * been cut short by a connection that closed mid-event.
 */
export interface ServerSentEvent {
  readonly event: string | undefined;
  readonly data: string;
  readonly unterminated?: true;
}

/**
 * The longest line, and the most data one event may gather, in UTF-16 units: far above any chunk a
 * model streams (a few hundred), so that a provider sending a line that never ends is refused at
 * once instead of buffered until the deadline (then retried), with the instance's memory and CPU.
 */
export const MAX_EVENT_CHARS = 1 << 20;

/**
 * The events of a `text/event-stream` body, as the SSE format defines them (lines ended by CRLF,
 * LF or CR; `data` lines joined with LF; comments and unknown fields skipped; an event without
 * data dispatches nothing), with one leniency: the body's end also ends its last event, where the
 * format would drop an event not followed by a blank line (a provider that closes its stream
 * after the last line's break, or before it, has sent the whole reply); such an event is marked
 * `unterminated`, since a close-delimited body (HTTP/1.1 without a length or chunks) cut mid-line
 * ends the same way. A line or an event past MAX_EVENT_CHARS is a SyntaxError, as malformed data
 * is. The openai SDK's own reader (openai 7.57 `Stream.fromSSEResponse`) runs each chunk through
 * its line and event decoders and a chain of async generators: measured by the cost bench, that is
 * most of what a streamed reply costs the service's CPU. This reads the body once, in one loop;
 * the caller keeps the SDK's meaning of the events (see openai-model.ts).
 *
 * `maxChars` bounds the whole body, in UTF-16 units once decoded (events, comments, blank lines and
 * all): past it, a StreamTooLongError. Each event is bounded by itself, but not how many come, nor
 * how many comments, which dispatch nothing: only a count of all that is read stops a body that
 * never ends, whatever it carries.
 */
export async function* serverSentEvents(body: AsyncIterable<Uint8Array>, maxChars = Number.POSITIVE_INFINITY): AsyncGenerator<ServerSentEvent> {
  const decoder = new TextDecoder();
  let read = 0;
  /**
   * The line still open, in the pieces it came in: joined once, when its break comes. Appending
   * each chunk to one string and searching that (as this did before) made V8 flatten the whole
   * string again for every chunk of a long line: a line sent in small pieces cost time quadratic
   * in its length (a 1 Mi-character line in 64-character pieces, seconds of CPU). Only a chunk is searched.
   */
  let open: string[] = [];
  let openChars = 0;
  /** The last chunk ended with a CR, which ended its line: an LF starting the next is the CRLF's second half. */
  let afterCr = false;
  let data: string[] = [];
  let gathered = 0;
  let event: string | undefined;
  /** Takes one line; returns the event it completes, if any. */
  const line = (text: string, unterminated = false): ServerSentEvent | undefined => {
    if (text === "") {
      const done = data.length > 0 ? { event, data: data.join("\n"), ...(unterminated && { unterminated: true as const }) } : undefined;
      data = [];
      gathered = 0;
      event = undefined;
      return done;
    }
    if (text.startsWith(":")) return undefined;
    const colon = text.indexOf(":");
    const field = colon < 0 ? text : text.slice(0, colon);
    let value = colon < 0 ? "" : text.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") {
      gathered += value.length + 1;
      if (gathered > MAX_EVENT_CHARS) throw tooLong();
      data.push(value);
    } else if (field === "event") event = value;
    return undefined;
  };
  /**
   * The events the lines of a chunk complete (the open line's pieces before the first line);
   * what follows its last break stays open. An array, not a generator delegated to with `yield*`:
   * that added an await per event and a generator per chunk, 1.6x the time per event at one event
   * a chunk, as the provider sends them.
   */
  function linesOf(text: string): ServerSentEvent[] {
    const events: ServerSentEvent[] = [];
    let start = afterCr && text.charCodeAt(0) === LF ? 1 : 0;
    if (text !== "") afterCr = false;
    for (;;) {
      const end = nextBreak(text, start);
      if (end < 0) break;
      const whole = open.length === 0 ? text.slice(start, end) : open.join("") + text.slice(start, end);
      open = [];
      openChars = 0;
      const cr = text.charCodeAt(end) === CR;
      if (cr && end === text.length - 1) afterCr = true;
      start = end + (cr && text.charCodeAt(end + 1) === LF ? 2 : 1);
      const completed = line(whole);
      if (completed) events.push(completed);
    }
    if (start < text.length) {
      open.push(text.slice(start));
      openChars += text.length - start;
      if (openChars > MAX_EVENT_CHARS) throw tooLong();
    }
    return events;
  }
  for await (const bytes of body) {
    const text = decoder.decode(bytes, { stream: true });
    read += text.length;
    if (read > maxChars) throw new StreamTooLongError(maxChars);
    for (const event of linesOf(text)) yield event;
  }
  for (const event of linesOf(decoder.decode())) yield event;
  const remainder = open.join("");
  // A blank line would have ended the event already: what the body's end completes is unterminated.
  if (remainder !== "") line(remainder);
  const last = line("", true);
  if (last) yield last;
}

/** A body longer than the reader's `maxChars`: not malformed, only more than the caller will read. */
export class StreamTooLongError extends Error {
  constructor(readonly maxChars: number) {
    super(`a server-sent event stream longer than ${maxChars} characters`);
  }
}

function tooLong(): SyntaxError {
  return new SyntaxError(`a server-sent event or line longer than ${MAX_EVENT_CHARS} characters`);
}

const CR = 13;
const LF = 10;

/** The index of the next CR or LF from `from`, or -1. */
function nextBreak(text: string, from: number): number {
  const lf = text.indexOf("\n", from);
  const cr = text.indexOf("\r", from);
  if (cr < 0) return lf;
  if (lf < 0) return cr;
  return Math.min(cr, lf);
}
