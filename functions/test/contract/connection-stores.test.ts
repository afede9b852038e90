import { MemoryConnectionStore } from "../../src/store/memory-connection-store";
import { RtdbConnectionStore } from "../../src/store/rtdb/rtdb-connection-store";
import { describeWithRtdb, freshNamespace, RtdbInstances } from "../support/rtdb";
import { connectionStoreContract } from "./connection-store-contract";

describe("MemoryConnectionStore", () => {
  connectionStoreContract(async () => {
    const store = new MemoryConnectionStore();
    return { instance: () => store, empty: () => new MemoryConnectionStore(), settled: async () => undefined, close: async () => undefined };
  });
});

describeWithRtdb("RtdbConnectionStore (firebase-admin on the database emulator)", () => {
  connectionStoreContract(async () => {
    const instances = new RtdbInstances(freshNamespace("connections"));
    const empties: RtdbInstances[] = [];
    const stores: RtdbConnectionStore[] = [];
    const track = (store: RtdbConnectionStore) => {
      stores.push(store);
      return store;
    };
    return {
      instance: () => track(new RtdbConnectionStore(instances.database(), 10_000)),
      empty: () => {
        const database = new RtdbInstances(freshNamespace("connections"));
        empties.push(database);
        return track(new RtdbConnectionStore(database.database(), 10_000));
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
