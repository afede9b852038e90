import type { ChatModel, Completion, CompletionRequest, ReplySink } from "./chat-model";

export const OFFLINE_LABEL = "[offline responder: no OPENAI_API_KEY set]";

export interface OfflineModelOptions {
  /** Between two words of a streamed reply: long enough that `npm start` visibly streams. */
  readonly wordDelayMs?: number;
  readonly sleep?: (ms: number) => Promise<void>;
}

/**
 * Stands in for the model when no API key is configured, so the local flow works offline.
 * Every reply carries a label so that nobody mistakes it for a model's answer. Asked to stream,
 * it passes the reply word by word, with a pause between words as a model's tokens have.
 */
export function createOfflineModel(options: OfflineModelOptions = {}): ChatModel {
  const wordDelayMs = options.wordDelayMs ?? 40;
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((wake) => setTimeout(wake, ms)));
  return {
    name: "offline",
    async complete(request: CompletionRequest, sink?: ReplySink): Promise<Completion> {
      const lastUser = [...request.messages].reverse().find((message) => message.role === "user");
      const history = request.messages.filter((message) => message.role !== "system").length - 1;
      const text = `${OFFLINE_LABEL} You said "${lastUser?.content ?? ""}" (${history} earlier messages in context).`;
      if (sink) {
        // Each word with the spaces before it, so that the pieces concatenate to the text exactly.
        const words = text.match(/\s*\S+/g) ?? [text];
        for (const [index, word] of words.entries()) {
          if (index > 0) await sleep(wordDelayMs);
          sink.write(word);
        }
      }
      return { text, truncated: false, model: "offline" };
    },
  };
}
