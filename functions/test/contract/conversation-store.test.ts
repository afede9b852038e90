import { MemoryStore } from "../../src/store/memory-store";
import { RtdbStore } from "../../src/store/rtdb/rtdb-store";
import { contractStores, describeWithRtdb } from "../support/rtdb";
import { conversationContract } from "./conversation-contract";

describe("MemoryStore: a user's conversations", () => {
  conversationContract(async () => {
    const store = new MemoryStore();
    return { instance: () => store, empty: () => new MemoryStore(), settled: async () => undefined, close: async () => undefined };
  });
});

describeWithRtdb("RtdbStore: a user's conversations (firebase-admin on the database emulator)", () => {
  conversationContract(async () => contractStores("conversations", (database) => new RtdbStore(database, 10_000)));
});
