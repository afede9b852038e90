import type { ChatModel, Completion, CompletionRequest } from "./chat-model";

export const OFFLINE_LABEL = "[offline responder: no OPENAI_API_KEY set]";

/**
 * Stands in for the model when no API key is configured, so the local flow works offline.
 * Every reply carries a label so that nobody mistakes it for a model's answer.
 */
export function createOfflineModel(): ChatModel {
  return {
    name: "offline",
    async complete(request: CompletionRequest): Promise<Completion> {
      const lastUser = [...request.messages].reverse().find((message) => message.role === "user");
      const history = request.messages.filter((message) => message.role !== "system").length - 1;
      return {
        text: `${OFFLINE_LABEL} You said "${lastUser?.content ?? ""}" (${history} earlier messages in context).`,
        truncated: false,
        model: "offline",
      };
    },
  };
}
