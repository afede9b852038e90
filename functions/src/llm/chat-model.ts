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
}

export interface Completion {
  readonly text: string;
  /** The reply stopped at the token limit. */
  readonly truncated: boolean;
  /** The model that answered, as the provider reports it. */
  readonly model: string;
}

export interface ChatModel {
  /** A label for logs: which adapter answered. */
  readonly name: string;
  complete(request: CompletionRequest): Promise<Completion>;
}
