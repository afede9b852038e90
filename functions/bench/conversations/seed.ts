import type { Database } from "firebase-admin/database";
import { messageKey } from "../../src/store/message-keys";
import type { RtdbStore } from "../../src/store/rtdb/rtdb-store";
import { newSession } from "../../test/support/fixtures";

/**
 * Users for the conversations bench, written quickly: sessions created through the store (so that
 * each has its index entry, as the service makes them), and their history written as stored
 * (`messages` and the state's count) in one update per session instead of one commit per exchange.
 */
export async function seedUser(store: RtdbStore, db: Database, userId: string, sessions: number, messagesEach: number, word: string): Promise<string[]> {
  const ids: string[] = [];
  const start = Date.now() - 3_600_000;
  for (let first = 0; first < sessions; first += 100) {
    await Promise.all(
      Array.from({ length: Math.min(100, sessions - first) }, async (_, i) => {
        const n = first + i;
        const session = newSession({ user_id: userId, created_at: start + n });
        ids.push(session.id);
        await store.createSession(session);
        if (messagesEach === 0) return;
        const update: Record<string, unknown> = { "state/message_count": messagesEach / 2, "state/last_activity": start + n, "state/idle_since": start + n };
        for (let position = 1; position <= messagesEach; position += 1) {
          const role = position % 2 === 1 ? "user" : "assistant";
          update[`messages/${messageKey(position)}`] = { role, content: `${word} ${role} message ${position} of session ${n}: ${"lorem ipsum dolor sit amet ".repeat(6)}`, timestamp: start + n };
        }
        await db.ref(`userSessions/${session.id}`).update(update);
      }),
    );
  }
  return ids;
}
