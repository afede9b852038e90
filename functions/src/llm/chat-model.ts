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

/** Receives each new piece of a reply's text, in order, as the model writes it. */
export type DeltaListener = (text: string) => void;

export interface ChatModel {
  /** A label for logs: which adapter answered. */
  readonly name: string;
  /**
   * The whole reply. With `onDelta`, the adapter streams: it passes each new piece of text as it
   * arrives, the pieces concatenating to the completion's `text`, and still resolves with the
   * whole completion (or rejects). A failure after the first piece is final: the caller has shown
   * text that a second attempt would not continue, so nothing retries past it, unless the caller
   * can take the text back: with `onRestart`, a retry after some pieces calls it first, and the
   * pieces start over (a partial reply in the database is simply overwritten; an HTTP stream is not).
   */
  complete(request: CompletionRequest, onDelta?: DeltaListener, onRestart?: () => void): Promise<Completion>;
}
