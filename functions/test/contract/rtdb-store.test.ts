import { RtdbStore } from "../../src/store/rtdb/rtdb-store";
import { describeWithRtdb, freshNamespace, RtdbInstances } from "../support/rtdb";
import { storeContract } from "./store-contract";

describeWithRtdb("RtdbStore (firebase-admin on the database emulator)", () => {
  storeContract(async () => {
    const instances = new RtdbInstances(freshNamespace("contract"));
    const empties: RtdbInstances[] = [];
    const stores: RtdbStore[] = [];
    // A reader of its own, as a client of the database would be.
    const reader = instances.database();
    return {
      instance: () => {
        const store = new RtdbStore(instances.database(), 10_000);
        stores.push(store);
        return store;
      },
      empty: () => {
        const database = new RtdbInstances(freshNamespace("contract"));
        empties.push(database);
        return new RtdbStore(database.database(), 10_000);
      },
      partials: async (sessionId) => {
        // The copy that removes a completed exchange's partial is sent after the append returns.
        await Promise.all(stores.map((store) => store.copiesSettled()));
        const value: unknown = (await reader.ref(`userSessions/${sessionId}/partials`).once("value")).val();
        return (value ?? {}) as Record<string, unknown>;
      },
      close: async () => {
        await Promise.all([instances, ...empties].map((database) => database.close()));
      },
    };
  });
});
