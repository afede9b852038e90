import { MemoryStore } from "../../src/store/memory-store";
import { newSession } from "../support/fixtures";
import { storeContract } from "./store-contract";

describe("MemoryStore", () => {
  storeContract(async () => {
    const store = new MemoryStore();
    return { instance: () => store, empty: () => new MemoryStore(), partials: async (sessionId) => store.readPartials(sessionId), close: async () => undefined };
  });

  it("writes no partial under a session it does not hold, and drops them with the session", async () => {
    const store = new MemoryStore();
    const session = newSession();
    await store.writePartial(session.id, "owner-a", { text: "late", seq_after: 0, updated_at: 1 });
    await store.createSession(session);
    expect(store.readPartials(session.id)).toEqual({});
    await store.writePartial(session.id, "owner-a", { text: "live", seq_after: 0, updated_at: 2 });
    await store.deleteSession(session.id);
    expect(store.readPartials(session.id)).toEqual({});
  });
});
