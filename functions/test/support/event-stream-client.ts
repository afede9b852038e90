import type { Answer } from "./http-harness";

/** One Server-Sent Event as the client read it, with when it arrived (ms since the request). */
export interface ReceivedEvent {
  readonly event: string;
  readonly data: unknown;
  readonly at: number;
}

export interface StreamedAnswer {
  readonly status: number;
  readonly headers: Headers;
  readonly events: readonly ReceivedEvent[];
  /** Comment lines (heartbeats), without the colon, with when each arrived. */
  readonly comments: readonly { readonly text: string; readonly at: number }[];
  /** The body parsed as JSON when the answer was not a stream. */
  readonly json?: Answer["body"];
}

export interface StreamOptions {
  readonly headers?: Record<string, string>;
  /** Hangs up (aborts the request) once this returns true for an event received: the events after it are not taken. */
  readonly hangUpAfter?: (event: ReceivedEvent) => boolean;
}

/**
 * POSTs `body` with `Accept: text/event-stream`, as a page's fetch and stream reader would, and
 * reads the answer: its events as they arrive, or its JSON when the server answered without a stream.
 */
export async function streamCall(baseUrl: string, path: string, body: unknown, options: StreamOptions = {}): Promise<StreamedAnswer> {
  const controller = new AbortController();
  const started = performance.now();
  const response = await fetch(`${baseUrl}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "text/event-stream", ...options.headers },
    body: JSON.stringify(body),
    signal: controller.signal,
  });
  if (!(response.headers.get("content-type") ?? "").startsWith("text/event-stream")) {
    return { status: response.status, headers: response.headers, events: [], comments: [], json: (await response.json()) as Answer["body"] };
  }
  const events: ReceivedEvent[] = [];
  const comments: { text: string; at: number }[] = [];
  const decoder = new TextDecoder();
  let buffered = "";
  if (!response.body) throw new Error("a stream without a body");
  const reader: ReadableStreamDefaultReader<Uint8Array> = response.body.getReader();
  for (;;) {
    const chunk = await reader.read();
    if (chunk.done) break;
    buffered += decoder.decode(chunk.value, { stream: true });
    let end: number;
    let hangUp = false;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const block = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      const at = performance.now() - started;
      let event = "message";
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) comments.push({ text: line.slice(1).trim(), at });
        else if (line.startsWith("event: ")) event = line.slice("event: ".length);
        else if (line.startsWith("data: ")) data.push(line.slice("data: ".length));
        else throw new Error(`unexpected line in the stream: ${JSON.stringify(line)}`);
      }
      if (data.length === 0) continue;
      const received: ReceivedEvent = { event, data: JSON.parse(data.join("\n")) as unknown, at };
      events.push(received);
      if (options.hangUpAfter?.(received)) {
        // What came in the same read after it is dropped unseen: a loaded machine delivers events
        // sent 50 ms apart in one chunk, and a client hanging up here has not taken them.
        hangUp = true;
        buffered = "";
        break;
      }
    }
    if (hangUp) {
      controller.abort();
      await reader.cancel().catch(() => undefined);
      break;
    }
  }
  if (buffered !== "") throw new Error(`the stream ended mid-event: ${JSON.stringify(buffered)}`);
  return { status: response.status, headers: response.headers, events, comments };
}

/** Polls `read` until `accept` holds of its result (a database's state, not a sleep); fails after `timeoutMs`. */
export async function eventually<T>(read: () => Promise<T>, accept: (value: T) => boolean, timeoutMs = 5_000): Promise<T> {
  const giveUpAt = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (accept(value)) return value;
    if (Date.now() > giveUpAt) throw new Error(`still not as expected after ${timeoutMs} ms: ${JSON.stringify(value)}`);
    await new Promise((wake) => setTimeout(wake, 20));
  }
}
