import type { PromptMessage } from "../llm/chat-model";
import type { ChatMessage } from "../store/records";

/**
 * The messages sent to the model: the session's system prompt, then the last `window`
 * history messages in conversation order, then the new user message. Only the prompt's
 * own system message ever has the system role: stored history holds user and assistant
 * messages only, and the new message is always a user message.
 */
export function buildPrompt(
  systemPrompt: string,
  history: readonly ChatMessage[],
  window: number,
  userMessage: string,
): PromptMessage[] {
  return [
    { role: "system", content: systemPrompt },
    // Stored roles are parsed on read; mapping them again keeps a forged one from ever becoming "system".
    ...lastMessages(history, window).map((message) => ({ role: message.role === "assistant" ? "assistant" : "user", content: message.content }) as const),
    { role: "user", content: userMessage },
  ];
}

/** The last `n` messages; none for `n <= 0` (where `slice(-0)` would keep them all). */
export function lastMessages<T>(messages: readonly T[], n: number): T[] {
  return n > 0 ? messages.slice(-n) : [];
}
