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
  const recent = window > 0 ? history.slice(-window) : [];
  return [
    { role: "system", content: systemPrompt },
    ...recent.map((message) => ({ role: message.role, content: message.content })),
    { role: "user", content: userMessage },
  ];
}
