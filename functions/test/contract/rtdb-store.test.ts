import { RtdbStore } from "../../src/store/rtdb-store";
import { describeWithRtdb, freshNamespace, RtdbInstances } from "../support/rtdb";
import { storeContract } from "./store-contract";

describeWithRtdb("RtdbStore (firebase-admin on the database emulator)", () => {
  storeContract(async () => {
    const instances = new RtdbInstances(freshNamespace("contract"));
    const empties: RtdbInstances[] = [];
    return {
      instance: () => new RtdbStore(instances.database(), 10_000),
      empty: () => {
        const database = new RtdbInstances(freshNamespace("contract"));
        empties.push(database);
        return new RtdbStore(database.database(), 10_000);
      },
      close: async () => {
        await Promise.all([instances, ...empties].map((database) => database.close()));
      },
    };
  });
});
