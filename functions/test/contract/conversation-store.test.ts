import { MemoryStore } from "../../src/store/memory-store";
import { RtdbStore } from "../../src/store/rtdb/rtdb-store";
import { describeWithRtdb, freshNamespace, RtdbInstances } from "../support/rtdb";
import { conversationContract } from "./conversation-contract";

describe("MemoryStore: a user's conversations", () => {
  conversationContract(async () => {
    const store = new MemoryStore();
    return { instance: () => store, empty: () => new MemoryStore(), settled: async () => undefined, close: async () => undefined };
  });
});

describeWithRtdb("RtdbStore: a user's conversations (firebase-admin on the database emulator)", () => {
  conversationContract(async () => {
    const instances = new RtdbInstances(freshNamespace("conversations"));
    const empties: RtdbInstances[] = [];
    const stores: RtdbStore[] = [];
    return {
      instance: () => {
        const store = new RtdbStore(instances.database(), 10_000);
        stores.push(store);
        return store;
      },
      empty: () => {
        const database = new RtdbInstances(freshNamespace("conversations"));
        empties.push(database);
        return new RtdbStore(database.database(), 10_000);
      },
      settled: async () => {
        await Promise.all(stores.map((store) => store.copiesSettled()));
      },
      close: async () => {
        for (const store of stores) store.close();
        await Promise.all([instances, ...empties].map((database) => database.close()));
      },
    };
  });
});
