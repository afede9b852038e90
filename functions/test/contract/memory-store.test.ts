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

  it("shares what it holds frozen, and never holds or freezes a caller's own objects", async () => {
    const store = new MemoryStore();
    const session = newSession();
    await store.createSession(session);
    // The caller's objects stay its own: changing them later changes nothing stored.
    expect(Object.isFrozen(session.state)).toBe(false);
    const before = await store.readSessionState(session.id);
    (session.state as { message_count: number }).message_count = 99;
    expect(await store.readSessionState(session.id)).toEqual(before);
    // What a read hands out cannot be changed under the store.
    const read = await store.readSessionState(session.id);
    expect(() => { (read as { message_count: number }).message_count = 5; }).toThrow(TypeError);
    const ruled = await store.updateState(session.id, (state) => ({ outcome: state, next: { ...state, last_activity: state.last_activity + 1 } }));
    if (!ruled.found) throw new Error("the session is stored");
    expect(Object.isFrozen(ruled.outcome)).toBe(true);
    expect(Object.isFrozen(ruled.state)).toBe(true);
    expect((await store.readSessionState(session.id))?.message_count).toBe(before?.message_count);
  });

  it("copies a caller's object frozen by the caller, whose insides it could still change", async () => {
    const store = new MemoryStore();
    const session = newSession();
    const requests = { held: { fingerprint: "f", owner: "o", lease_until: 1 } };
    await store.createSession({ ...session, state: Object.freeze({ ...session.state, requests }) });
    requests.held.lease_until = 99;
    expect((await store.readSessionState(session.id))?.requests?.held?.lease_until).toBe(1);
  });
});
