import { RtdbStore } from "../../src/store/rtdb/rtdb-store";
import { contractStores, describeWithRtdb } from "../support/rtdb";
import { storeContract } from "./store-contract";

describeWithRtdb("RtdbStore (firebase-admin on the database emulator)", () => {
  storeContract(async () => {
    const stores = contractStores("contract", (database) => new RtdbStore(database, 10_000));
    // A reader of its own, as a client of the database would be.
    const reader = stores.instances.database();
    return {
      ...stores,
      partials: async (sessionId) => {
        // The copy that removes a completed exchange's partial is sent after the append returns.
        await stores.settled();
        const value: unknown = (await reader.ref(`userSessions/${sessionId}/partials`).once("value")).val();
        return (value ?? {}) as Record<string, unknown>;
      },
    };
  });
});
