import { MAX_EVENT_CHARS, serverSentEvents, StreamTooLongError, type ServerSentEvent } from "../../src/llm/server-sent-events";

/** The events read from `pieces`, each sent as one chunk of the body, up to `maxChars` of it. */
async function read(pieces: readonly (string | Uint8Array)[], maxChars?: number): Promise<ServerSentEvent[]> {
  const encoder = new TextEncoder();
  async function* body(): AsyncGenerator<Uint8Array> {
    for (const piece of pieces) yield typeof piece === "string" ? encoder.encode(piece) : piece;
  }
  const events: ServerSentEvent[] = [];
  for await (const event of serverSentEvents(body(), maxChars)) events.push(event);
  return events;
}

describe("serverSentEvents", () => {
  it("reads events split anywhere across chunks, with LF, CRLF and CR line ends", async () => {
    const text = 'data: {"a":1}\n\ndata: {"b":2}\r\n\r\ndata: {"c":3}\r\rdata: [DONE]\n\n';
    const whole = await read([text]);
    expect(whole).toEqual([
      { event: undefined, data: '{"a":1}' },
      { event: undefined, data: '{"b":2}' },
      { event: undefined, data: '{"c":3}' },
      { event: undefined, data: "[DONE]" },
    ]);
    // Every split point, a CRLF cut in two included.
    for (let cut = 1; cut < text.length; cut += 1) expect(await read([text.slice(0, cut), text.slice(cut)])).toEqual(whole);
  });

  it("joins data lines, keeps the event name, skips comments and unknown fields, and dispatches nothing without data", async () => {
    const events = await read([": keep-alive\n\nevent: error\ndata: {\"error\":\ndata: {}}\nid: 7\n\nevent: ping\n\n", "data:no space\n\n"]);
    expect(events).toEqual([
      { event: "error", data: '{"error":\n{}}' },
      { event: undefined, data: "no space" },
    ]);
  });

  it("decodes a character split across chunks, and dispatches a last event the body ends without a blank line", async () => {
    const bytes = new TextEncoder().encode("data: é😀\n\ndata: last");
    const events = await read([bytes.slice(0, 8), bytes.slice(8, 11), bytes.slice(11)]);
    expect(events).toEqual([
      { event: undefined, data: "é😀" },
      { event: undefined, data: "last", unterminated: true },
    ]);
  });
  it("dispatches a last event whatever ends the body after it: no line break, CR, LF or CRLF, marked unterminated", async () => {
    for (const end of ["", "\r", "\n", "\r\n"]) expect(await read([`data: one\n\ndata: last${end}`])).toStrictEqual([{ event: undefined, data: "one" }, { event: undefined, data: "last", unterminated: true }]);
  });

  it("does not mark a last event unterminated when a blank line ends it, the body ending on its break", async () => {
    for (const end of ["\n\n", "\r\r", "\r\n\r\n", "\n\r"]) expect(await read([`data: last${end}`])).toStrictEqual([{ event: undefined, data: "last" }]);
  });

  it("refuses a line past MAX_EVENT_CHARS, and an event gathering more data than that, as malformed", async () => {
    const piece = "x".repeat(65_536);
    const endless = ["data: ", ...Array<string>(MAX_EVENT_CHARS / piece.length + 1).fill(piece)];
    await expect(read(endless)).rejects.toBeInstanceOf(SyntaxError);
    const lines = Array<string>(MAX_EVENT_CHARS / piece.length + 1).fill(`data: ${piece}\n`);
    await expect(read(lines)).rejects.toBeInstanceOf(SyntaxError);
    // Just under: read whole.
    expect(await read([`data: ${"y".repeat(MAX_EVENT_CHARS - 10)}\n\n`])).toEqual([{ event: undefined, data: "y".repeat(MAX_EVENT_CHARS - 10) }]);
  });

  it("refuses a body past maxChars, counting all it reads (comments, blank lines, the events' fields), not only the events' data", async () => {
    const body = ["data: 1\n\n", ": a comment\n", "\n\n", "event: x\ndata: 2\n\n"];
    const length = body.join("").length;
    expect(await read(body, length)).toEqual([{ event: undefined, data: "1" }, { event: "x", data: "2" }]);
    const refused = read(body, length - 1);
    await expect(refused).rejects.toBeInstanceOf(StreamTooLongError);
    await expect(refused).rejects.toMatchObject({ maxChars: length - 1 });
  });

  it("reads a line of the most a line may be, sent in 16-character pieces, in well under a second's CPU, not seconds", async () => {
    // Each chunk was appended to one string searched again (V8 flattens it for indexOf): quadratic,
    // about 20 s for this line. Linear, it takes 70-90 ms here: 4 s leaves room for any machine and
    // load, and none for the quadratic reader.
    const encoder = new TextEncoder();
    const chars = MAX_EVENT_CHARS - 1024;
    const chunk = encoder.encode("x".repeat(16));
    async function* body(): AsyncGenerator<Uint8Array> {
      yield encoder.encode("data: ");
      for (let sent = 0; sent < chars; sent += 16) yield chunk;
      yield encoder.encode("\n\n");
    }
    const started = performance.now();
    const events: ServerSentEvent[] = [];
    for await (const event of serverSentEvents(body())) events.push(event);
    const elapsedMs = performance.now() - started;
    expect(events.map((event) => event.data.length)).toEqual([chars]);
    expect(elapsedMs).toBeLessThan(4_000);
  }, 60_000);

  /** The events (their length, whether unterminated) a body in `chunks` gives, and the name of the error that ended it, if any. */
  async function outcome(chunks: readonly Uint8Array[]): Promise<{ events: { length: number; unterminated: boolean }[]; error: string | undefined }> {
    async function* body(): AsyncGenerator<Uint8Array> {
      for (const chunk of chunks) yield chunk;
    }
    const events: { length: number; unterminated: boolean }[] = [];
    try {
      for await (const event of serverSentEvents(body())) events.push({ length: event.data.length, unterminated: event.unterminated === true });
    } catch (error) {
      return { events, error: error instanceof Error ? error.name : String(error) };
    }
    return { events, error: undefined };
  }

  it("reads a line of exactly MAX_EVENT_CHARS whether an LF or a CR at a chunk's end ends it (a CR ends its line at once, as the format says)", async () => {
    const encoder = new TextEncoder();
    const line = `data: ${"x".repeat(MAX_EVENT_CHARS - 6)}`;
    for (const end of ["\n", "\r"]) {
      const chunks = [encoder.encode(line + end), encoder.encode(end === "\r" ? "\n\r\n" : "\n")];
      expect(await outcome(chunks)).toStrictEqual({ events: [{ length: MAX_EVENT_CHARS - 6, unterminated: false }], error: undefined });
    }
  });

  it("refuses a line that the decoder's last U+FFFD takes past MAX_EVENT_CHARS at the body's end, as when the character is whole", async () => {
    const encoder = new TextEncoder();
    const line = `data: ${"x".repeat(MAX_EVENT_CHARS - 6)}`;
    // A 2-byte character's first byte, the body ending there.
    const cut = Uint8Array.from([...encoder.encode(line), 0xc3]);
    expect(await outcome([encoder.encode(`${line}é`)])).toStrictEqual({ events: [], error: "SyntaxError" });
    expect(await outcome([cut])).toStrictEqual({ events: [], error: "SyntaxError" });
  });

  it("closes the body when the caller stops reading (openai-model breaks at [DONE]), wherever the event's blank line came from", async () => {
    const encoder = new TextEncoder();
    for (const pieces of [["data: [DONE]\n\n", "data: more\n\n"], ["data: [DONE]\r", "\r", "data: more\n\n"], ["data: [DONE]\r\r", "\n"]]) {
      let closed = false;
      let pulled = 0;
      async function* body(): AsyncGenerator<Uint8Array> {
        try {
          for (const piece of pieces) {
            pulled += 1;
            yield encoder.encode(piece);
          }
        } finally {
          closed = true;
        }
      }
      for await (const event of serverSentEvents(body())) {
        expect(event.data).toBe("[DONE]");
        break;
      }
      expect({ closed, pulled }).toStrictEqual({ closed: true, pulled: pieces[0]!.endsWith("\n\n") || pieces[0]!.endsWith("\r\r") ? 1 : 2 });
    }
  });
});
