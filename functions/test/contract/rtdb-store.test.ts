import { RtdbStore } from "../../src/store/rtdb-store";
import { describeWithRtdb, freshNamespace, RtdbInstances } from "../support/rtdb";
import { storeContract } from "./store-contract";

describeWithRtdb("RtdbStore (firebase-admin on the database emulator)", () => {
  storeContract(async () => {
    const instances = new RtdbInstances(freshNamespace("contract"));
    return { instance: () => new RtdbStore(instances.database(), 10_000), close: () => instances.close() };
  });
});
