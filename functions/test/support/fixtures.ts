import { randomUUID } from "node:crypto";
import type { Exchange, SessionMeta, Template } from "../../src/store/records";
import type { NewSession, StateGuard } from "../../src/store/session-store";

export const TEMPLATE: Template = {
  name: "Tester",
  personalityPrompt: "You are a test personality.",
  temperature: 0.3,
  context_window: 4,
};

export function newSession(overrides: Partial<SessionMeta> = {}): NewSession {
  const createdAt = 1_700_000_000_000;
  return {
    id: randomUUID(),
    meta: {
      user_id: "user_12345",
      template_id: "tester",
      template_name: "Tester",
      system_prompt: "You are a test personality.",
      settings: { model: "gpt-4o-mini", temperature: 0.3, max_tokens: 50, presence_penalty: 0.6, frequency_penalty: 0.6, context_window: 4 },
      created_at: createdAt,
      ...overrides,
    },
    state: { status: "active", message_count: 0, last_activity: createdAt },
  };
}

/** An exchange whose texts say who wrote it, so a test can find it again. */
export function exchange(tag: string, at = 1_700_000_000_000): Exchange {
  return {
    user: { role: "user", content: `question ${tag}`, timestamp: at },
    assistant: { role: "assistant", content: `answer ${tag}`, timestamp: at + 1 },
  };
}

/** The guard the service uses: only active sessions change. */
export const whileActive: StateGuard<string> = (state) => (state.status === "active" ? undefined : state.status);
