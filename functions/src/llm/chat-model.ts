/** The port through which the session module reaches a language model. */

export interface PromptMessage {
  readonly role: "system" | "user" | "assistant";
  readonly content: string;
}

export interface CompletionRequest {
  readonly model: string;
  readonly messages: readonly PromptMessage[];
  readonly temperature: number;
  readonly max_tokens: number;
  readonly presence_penalty: number;
  readonly frequency_penalty: number;
  /**
   * The caller giving up on the call (a summary that did not finish in time, say): once it aborts,
   * the adapter aborts the HTTP request and rejects, and nothing retries the call. Not sent to the provider.
   */
  readonly signal?: AbortSignal;
}

/** Tokens a call used, as the provider reports them (the ledger keeps its own `TokenUsage`, records.ts, built from this). */
export interface ReportedUsage {
  readonly prompt_tokens: number;
  readonly completion_tokens: number;
}

export interface Completion {
  readonly text: string;
  /** The reply stopped at the token limit. */
  readonly truncated: boolean;
  /** The model that answered, as the provider reports it. */
  readonly model: string;
  /** Absent when the provider reported none (or reported it malformed): the caller estimates it. */
  readonly usage?: ReportedUsage;
}

/**
 * Where a reply's text goes, piece by piece, as the model writes it: an HTTP stream of events, a
 * partial reply in the database, or both at once. One interface whatever the sink.
 */
export interface ReplySink {
  /** The next piece of the text, in order. */
  write(text: string): void;
  /**
   * Takes back what the sink was given, if it still can, so that a retried call's pieces start
   * over: true when it did (a partial reply in the database is simply overwritten; text still held
   * back for moderation's verdict is forgotten, nobody having seen it), false when some of it is
   * past recall (sent down an HTTP stream), and then nothing changed. A retry after some text calls
   * it, and gives up when it answers false. Absent: the sink can never take text back.
   */
  restart?(): boolean;
}

export interface ChatModel {
  /** A label for logs: which adapter answered. */
  readonly name: string;
  /**
   * The whole reply. With a `sink`, the adapter streams: it writes each new piece of text to it as
   * it arrives, the pieces concatenating to the completion's `text`, and still resolves with the
   * whole completion (or rejects). A failure after the first piece is final (the caller has shown
   * text that a second attempt would not continue), unless the sink can take the text back
   * (`restart`).
   */
  complete(request: CompletionRequest, sink?: ReplySink): Promise<Completion>;
}
