import type { ChatMessage } from "../../src/store/records";
import type { HistoryStore } from "../../src/store/session-store";

/** The last `limit` stored messages of a session, oldest first, as a test checks them (the window, without its count). */
export async function recentMessages(store: Pick<HistoryStore, "readWindow">, sessionId: string, limit: number): Promise<ChatMessage[]> {
  return (await store.readWindow(sessionId, limit)).messages;
}
