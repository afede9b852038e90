import type { ReplySink } from "../llm/chat-model";
import type { HttpRequest } from "./http-types";

/**
 * What an adapter (the function's express response, the local server's) gives the boundary to
 * stream an answer on. Each write reaches the client at once; once the client is gone, writes
 * and the end do nothing, so the request's work runs on to its end regardless.
 */
export interface StreamSink {
  /** Sends the status line and headers. */
  open(status: number, headers: Readonly<Record<string, string>>): void;
  /** Writes `text` and flushes it. */
  write(text: string): void;
  end(): void;
  /**
   * Resolves once the client has taken what was written (at once while the response's buffer has
   * room, and once the client is gone): a body produced faster than it is read waits here
   * instead of piling up in memory. Absent: never waits.
   */
  drained?(): Promise<void>;
}

/** The longest silence on an open stream: proxies and clients drop connections quiet for longer. */
export const HEARTBEAT_MS = 15_000;

/** Whether the request's `Accept` header lists `text/event-stream` (and does not refuse it with q=0). */
export function acceptsEventStream(request: HttpRequest): boolean {
  const accept = request.headers.accept;
  if (accept === undefined) return false;
  return accept.split(",").some((range) => {
    const [type = "", ...params] = range.split(";").map((part) => part.trim().toLowerCase());
    if (type !== "text/event-stream") return false;
    return !params.some((param) => /^q=0(\.0{0,3})?$/.test(param));
  });
}

/**
 * An answer streamed as it is written, whatever carries it (Server-Sent Events here, a callable's
 * chunks in callable/callable-stream.ts): the reply's text as it comes, then the last word.
 */
export interface AnswerStream extends ReplySink {
  /** Whether text was sent: the answer can no longer be a plain one. */
  readonly started: boolean;
  /** The last event; the stream ends with it. */
  finish(event: "done" | "error", body: unknown): void;
}

/**
 * One answer as Server-Sent Events, opened by its first delta: until then nothing is written, so
 * every answer decided before it (a refusal, a failure, a replay) is an ordinary JSON answer.
 * Then `delta` events, and last one `done` (the JSON body a non-streamed request gets) or one
 * `error` (the JSON error body), with a comment line as heartbeat while the model is quiet.
 */
export class EventStream implements AnswerStream {
  private heartbeat: NodeJS.Timeout | undefined;
  private opened = false;
  private ended = false;

  constructor(
    private readonly sink: StreamSink,
    /** Headers every answer carries (CORS). */
    private readonly headers: Readonly<Record<string, string>>,
    private readonly heartbeatMs: number = HEARTBEAT_MS,
  ) {}

  /** Whether the stream is open: the answer can no longer be a JSON one. */
  get started(): boolean {
    return this.opened;
  }

  /** A `delta` event with the next piece of the reply's text (the first one opens the stream). */
  write(text: string): void {
    if (this.ended || text === "") return;
    if (!this.opened) this.open();
    this.send("delta", { text });
  }

  /** The last event; the stream ends with it. */
  finish(event: "done" | "error", body: unknown): void {
    if (!this.opened || this.ended) return;
    this.send(event, body);
    this.close();
  }

  private open(): void {
    this.opened = true;
    this.sink.open(200, {
      ...this.headers,
      "Content-Type": "text/event-stream; charset=utf-8",
      // No cache or proxy (nginx's X-Accel-Buffering) may hold events back or replay them.
      "Cache-Control": "no-cache",
      "X-Accel-Buffering": "no",
    });
    this.heartbeat = setInterval(() => { this.sink.write(": keep-alive\n\n"); }, this.heartbeatMs);
  }

  private send(event: string, data: unknown): void {
    // JSON has no raw line breaks, so `data` is one line, as an event's field must be.
    this.sink.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  }

  private close(): void {
    this.ended = true;
    clearInterval(this.heartbeat);
    this.sink.end();
  }
}
