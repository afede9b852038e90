import { DeviceRegistry } from "../../src/connections/device-registry";
import { tokenHash } from "../../src/connections/device-rules";
import { userKey } from "../../src/session/ledger/limits";
import type { DeviceStore } from "../../src/store/connection-store";
import { MemoryConnectionStore } from "../../src/store/memory-connection-store";
import { RtdbConnectionStore } from "../../src/store/rtdb/rtdb-connection-store";
import { describeWithRtdb, freshNamespace, RtdbInstances } from "../support/rtdb";

const T = 1_800_000_000_000;
const TOKEN = "fcm-token-of-the-phone";

/** `store` with the first write to `slowKey`'s devices held until the returned release is called. */
function slowDevicesOf(store: DeviceStore, slowKey: string): { store: DeviceStore; release: () => void } {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let held = true;
  const updateDevices: DeviceStore["updateDevices"] = async (key, rule) => {
    if (held && key === slowKey) {
      held = false;
      await gate;
    }
    return store.updateDevices(key, rule);
  };
  const slow = new Proxy(store, {
    get(target, name, receiver) {
      if (name === "updateDevices") return updateDevices;
      const value: unknown = Reflect.get(target, name, receiver);
      return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
  return { store: slow, release };
}

const tokensOf = async (store: DeviceStore, userId: string) => Object.keys((await store.readDevices(userKey(userId)))?.tokens ?? {});

function deviceRegistryBehaviour(open: () => DeviceStore) {
  it("gives a token to the last user who registers it, leaving the one before", async () => {
    const store = open();
    const registry = new DeviceRegistry({ store, clock: () => T });
    expect(await registry.register("ann", TOKEN, undefined)).toEqual({ devices: 1 });
    expect(await registry.register("ann", TOKEN, undefined)).toEqual({ devices: 1 });
    expect(await registry.register("ben", TOKEN, undefined)).toEqual({ devices: 1 });
    expect(await tokensOf(store, "ann")).toEqual([]);
    expect(await tokensOf(store, "ben")).toEqual([tokenHash(TOKEN)]);
  });

  it("leaves the token with its last owner only when the former owner's own registration lands after the handover", async () => {
    const base = open();
    // Ann's write to her own devices is slow (a retried transaction, a slow link); nothing else is.
    const { store, release } = slowDevicesOf(base, userKey("ann"));
    const registry = new DeviceRegistry({ store, clock: () => T });
    const ann = registry.register("ann", TOKEN, undefined);
    await registry.register("ben", TOKEN, undefined);
    release();
    const answered = await ann;
    expect(await base.readTokenOwner(tokenHash(TOKEN))).toMatchObject({ user_key: userKey("ben") });
    // Ann's messages must not be pushed to the phone Ben uses now.
    expect(await tokensOf(base, "ann")).toEqual([]);
    expect(await tokensOf(base, "ben")).toEqual([tokenHash(TOKEN)]);
    expect(answered).toEqual({ devices: 0 });
  });
}

describe("DeviceRegistry [embedded store]", () => {
  deviceRegistryBehaviour(() => new MemoryConnectionStore());
});

describeWithRtdb("DeviceRegistry [Realtime Database]", () => {
  const instances: RtdbInstances[] = [];
  const stores: RtdbConnectionStore[] = [];
  afterAll(async () => {
    for (const store of stores) store.close();
    await Promise.all(instances.map((database) => database.close()));
  });
  deviceRegistryBehaviour(() => {
    const database = new RtdbInstances(freshNamespace("devices"));
    instances.push(database);
    const store = new RtdbConnectionStore(database.database(), 10_000);
    stores.push(store);
    return store;
  });
});
