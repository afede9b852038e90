import { MemoryStore } from "../../src/store/memory-store";
import { storeContract } from "./store-contract";

describe("MemoryStore", () => {
  storeContract(async () => {
    const store = new MemoryStore();
    return { instance: () => store, empty: () => new MemoryStore(), close: async () => undefined };
  });
});
