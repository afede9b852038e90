import { MemoryConnectionStore } from "../../src/store/memory-connection-store";
import { RtdbConnectionStore } from "../../src/store/rtdb/rtdb-connection-store";
import { contractStores, describeWithRtdb } from "../support/rtdb";
import { connectionStoreContract } from "./connection-store-contract";

describe("MemoryConnectionStore", () => {
  connectionStoreContract(async () => {
    const store = new MemoryConnectionStore();
    return { instance: () => store, empty: () => new MemoryConnectionStore(), settled: async () => undefined, close: async () => undefined };
  });
});

describeWithRtdb("RtdbConnectionStore (firebase-admin on the database emulator)", () => {
  connectionStoreContract(async () => contractStores("connections", (database) => new RtdbConnectionStore(database, 10_000)));
});
