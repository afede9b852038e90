import { randomUUID } from "node:crypto";
import type { CompletionRequest } from "../../src/llm/chat-model";
import { appendRule, endRule, type SessionPolicy } from "../../src/session/session-rules";
import type { Exchange, SessionMeta, Template } from "../../src/store/records";
import type { NewSession } from "../../src/store/session-store";

export const TEMPLATE: Template = {
  name: "Tester",
  personalityPrompt: "You are a test personality.",
  temperature: 0.3,
  context_window: 4,
};

export const CREATED_AT = 1_700_000_000_000;

/** A model request of one user message, for the model adapters' tests. */
export const HELLO_REQUEST: CompletionRequest = {
  model: "gpt-test",
  messages: [{ role: "user", content: "hello" }],
  temperature: 0.3,
  max_tokens: 42,
  presence_penalty: 0,
  frequency_penalty: 0,
};

/** No expiry within a test's time span, the real number of remembered keys. */
export const POLICY: SessionPolicy = { idleTtlMs: 365 * 86_400_000, maxExchanges: 1_000_000 };

/** `id`: a store over several instances places a session by its id (default: a random v4, the first instance's). */
export function newSession(overrides: Partial<SessionMeta> = {}, id: string = randomUUID()): NewSession {
  const createdAt = overrides.created_at ?? CREATED_AT;
  return {
    id,
    meta: {
      user_id: "user_12345",
      template_id: "tester",
      template_name: "Tester",
      system_prompt: "You are a test personality.",
      settings: { model: "gpt-4o-mini", temperature: 0.3, max_tokens: 50, presence_penalty: 0.6, frequency_penalty: 0.6, context_window: 4 },
      created_at: createdAt,
      ...overrides,
    },
    state: { status: "active", message_count: 0, last_activity: createdAt, idle_since: createdAt },
  };
}

/** An exchange whose texts say who wrote it, so a test can find it again. */
export function exchange(tag: string, at = CREATED_AT + 1): Exchange {
  return {
    user: { role: "user", content: `question ${tag}`, timestamp: at },
    assistant: { role: "assistant", content: `answer ${tag}`, timestamp: at + 1 },
  };
}

/** The service's own rules, as the store contract applies them. */
export const appendAt = (at: number) => appendRule({ receivedAt: at, answeredAt: at, policy: POLICY });
export const endAt = (at: number) => endRule(at, POLICY);
