import type { AnswerStream } from "../http/event-stream";

/** Where a streamed call's chunks go: the platform's `sendChunk`, which does nothing once the client is gone. */
export interface ChunkSink {
  send(chunk: { readonly text: string }): void;
}

/**
 * A callable's answer as it is written: each piece of the reply's text one chunk (`{text}`), as
 * the SSE route sends `delta` events. The last word is not sent here: the call's result (the
 * body the HTTP route answers) or its error ends the stream, written by firebase-functions.
 */
export class CallableStream implements AnswerStream {
  private sent = false;

  constructor(private readonly chunks: ChunkSink) {}

  get started(): boolean {
    return this.sent;
  }

  write(text: string): void {
    if (text === "") return;
    this.sent = true;
    this.chunks.send({ text });
  }

  finish(): void {
    // The handler's return (or throw) is the last event.
  }
}
