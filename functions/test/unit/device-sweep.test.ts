import { claimToken, registerDevice, STALE_AFTER_MS } from "../../src/connections/device-rules";
import { resolveConfig } from "../../src/config";
import { silentLog } from "../../src/log/log";
import { createOfflineSender } from "../../src/notify/offline-sender";
import { composeInstance } from "../../src/runtime/instance";
import { MemoryConnectionStore } from "../../src/store/memory-connection-store";
import { MemoryStore } from "../../src/store/memory-store";
import { NO_TOKENS } from "../support/service-env";

const T = 1_700_000_000_000;

describe("the scheduled sweep of stale device tokens", () => {
  it("removes tokens not registered again for 60 days, and their owner records, in the instance's clean-up", async () => {
    const connectionStore = new MemoryConnectionStore();
    const instance = composeInstance(resolveConfig({}), { store: new MemoryStore(), connectionStore, identity: NO_TOKENS, log: silentLog, pushSender: createOfflineSender(silentLog) });
    await connectionStore.updateDevices("stale-user", registerDevice("old", "token-old", T, undefined));
    await connectionStore.updateDevices("stale-user", registerDevice("new", "token-new", T + 10, undefined));
    await connectionStore.updateDevices("fresh-user", registerDevice("fresh", "token-fresh", T + 10, undefined));
    await connectionStore.updateTokenOwner("old", claimToken("stale-user", T));

    expect(await instance.maintain(T + STALE_AFTER_MS - 1)).toMatchObject({ staleDevices: 0, staleTokenOwners: 0 });
    expect(await instance.maintain(T + STALE_AFTER_MS)).toMatchObject({ staleDevices: 1, staleTokenOwners: 1 });
    expect(Object.keys((await connectionStore.readDevices("stale-user"))?.tokens ?? {})).toEqual(["new"]);
    expect(Object.keys((await connectionStore.readDevices("fresh-user"))?.tokens ?? {})).toEqual(["fresh"]);
    // A second run finds nothing more until the rest go stale.
    expect(await instance.maintain(T + STALE_AFTER_MS)).toMatchObject({ staleDevices: 0 });
    expect(await instance.maintain(T + 10 + STALE_AFTER_MS)).toMatchObject({ staleDevices: 2 });
  });
});
