import { ConnectionErasure } from "../../src/connections/connection-erasure";
import { DeviceRegistry } from "../../src/connections/device-registry";
import { liveTokens, tokenHash } from "../../src/connections/device-rules";
import { sweepDevices } from "../../src/connections/device-sweep";
import { userKey } from "../../src/session/ledger/limits";
import type { ConnectionErasureStore } from "../../src/store/connection-erasure-store";
import type { DeviceStore } from "../../src/store/connection-store";
import { StoreUnavailableError } from "../../src/store/errors";
import { MemoryConnectionStore } from "../../src/store/memory-connection-store";
import { RtdbConnectionStore } from "../../src/store/rtdb/rtdb-connection-store";
import { describeWithRtdb, freshNamespace, RtdbInstances } from "../support/rtdb";

const T = 1_800_000_000_000;
const TOKEN = "fcm-token-of-the-phone";

/** `store` with its writes to users' devices going through `updateDevices`; everything else as it is. */
function withUpdateDevices<S extends DeviceStore>(store: S, updateDevices: DeviceStore["updateDevices"]): S {
  return new Proxy(store, {
    get(target, name, receiver) {
      if (name === "updateDevices") return updateDevices;
      const value: unknown = Reflect.get(target, name, receiver);
      return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}

/**
 * `store` whose next write to `slowKey`'s devices, while armed (from the start unless `armed` is
 * false), waits until `release` is called: a slow link, a retried transaction. `reached` resolves
 * once that write is asked for.
 */
function slowDevicesOf(store: DeviceStore, slowKey: string, armed = true): { store: DeviceStore; arm: () => void; reached: Promise<void>; release: () => void } {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let reach!: () => void;
  const reached = new Promise<void>((resolve) => (reach = resolve));
  let holding = armed;
  const slow = withUpdateDevices(store, async (key, rule) => {
    if (holding && key === slowKey) {
      holding = false;
      reach();
      await gate;
    }
    return store.updateDevices(key, rule);
  });
  return { store: slow, arm: () => (holding = true), reached, release };
}

/** `store` whose next write to `failingKey`'s devices, once armed, fails as on a database deadline. */
function failingDevicesOf<S extends DeviceStore>(store: S, failingKey: string): { store: S; arm: () => void } {
  let armed = false;
  const failing = withUpdateDevices(store, async (key, rule) => {
    if (armed && key === failingKey) {
      armed = false;
      throw new StoreUnavailableError("update devices");
    }
    return store.updateDevices(key, rule);
  });
  return { store: failing, arm: () => (armed = true) };
}

/**
 * Ann's token handed over to Ben on `base`, the removal from Ann's devices failing (a database
 * deadline): Ben's registration commits its claim and answers 503. `store` fails Ann's next device
 * write again once `arm` is called.
 */
async function handedOverWithRemovalFailed<S extends DeviceStore>(base: S, previews: boolean | undefined) {
  const { store, arm } = failingDevicesOf(base, userKey("ann"));
  const registry = new DeviceRegistry({ store, clock: () => T });
  await registry.register("ann", TOKEN, previews);
  arm();
  await expect(registry.register("ben", TOKEN, undefined)).rejects.toBeInstanceOf(StoreUnavailableError);
  return { base, store, arm, registry };
}

const tokensOf = async (store: DeviceStore, userId: string) => Object.keys((await store.readDevices(userKey(userId)))?.tokens ?? {});

/** An erasure's pass over what connections hold of the user, as ErasureService runs each of its two. */
const erasurePass = (store: DeviceStore & ConnectionErasureStore, userId: string, cutoff: number, now: number) =>
  new ConnectionErasure({ store, batchSize: 50, clock: () => now }).erase(userId, cutoff, { record: async () => undefined, stopped: () => false });

function deviceRegistryBehaviour(open: () => DeviceStore & ConnectionErasureStore) {
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

  it("takes the token from the former owner on the retry of a handover whose removal from them failed", async () => {
    const { base, registry } = await handedOverWithRemovalFailed(open(), undefined);
    expect(await base.readTokenOwner(tokenHash(TOKEN))).toEqual({ user_key: userKey("ben"), updated_at: T, released_from: { [userKey("ann")]: T }, releasing_since: T });
    expect(await registry.register("ben", TOKEN, undefined)).toEqual({ devices: 1 });

    // Ann's messages must not be pushed to the phone Ben uses now; the record no longer names her.
    expect(await tokensOf(base, "ann")).toEqual([]);
    expect(await tokensOf(base, "ben")).toEqual([tokenHash(TOKEN)]);
    expect(await base.readTokenOwner(tokenHash(TOKEN))).toEqual({ user_key: userKey("ben"), updated_at: T });
  });

  it("keeps the token with the former owner who took it back before the handover's removal from them landed", async () => {
    const base = open();
    const { store, arm, reached, release } = slowDevicesOf(base, userKey("ann"), false);
    let now = T;
    const registry = new DeviceRegistry({ store, clock: () => now });
    await registry.register("ann", TOKEN, undefined);

    // The phone goes to Ben, and straight back to Ann (an app switching accounts).
    now = T + 1_000;
    arm();
    const ben = registry.register("ben", TOKEN, undefined);
    await reached; // Ben's removal of the token from Ann's devices is on its way.
    now = T + 2_000;
    await registry.register("ann", TOKEN, undefined);
    release();
    await ben;

    const owner = (await base.readTokenOwner(tokenHash(TOKEN)))?.user_key;
    const annLive = liveTokens(await base.readDevices(userKey("ann")), T + 3_000);
    const benLive = liveTokens(await base.readDevices(userKey("ben")), T + 3_000);
    expect({ owner, annLive, benLive }).toEqual({ owner: userKey("ann"), annLive: [TOKEN], benLive: [] });
  });

  it("takes the token from the former owner when its new owner is erased before the handover's removal from them was confirmed", async () => {
    const { base } = await handedOverWithRemovalFailed(open(), true);
    expect(await base.readTokenOwner(tokenHash(TOKEN))).toMatchObject({ user_key: userKey("ben"), released_from: { [userKey("ann")]: T } });

    // Ben erases his data (or is deleted from Auth) before registering again: both passes, then the sweep.
    await erasurePass(base, "ben", T + 1_000, T + 1_000);
    await erasurePass(base, "ben", T + 1_000, T + 60_000);
    await sweepDevices({ store: base, now: T + 120_000, batchSize: 50, maxBatches: 10 });

    // Ann's messages (with previews) must not be pushed to the phone Ben holds, and nothing names Ben.
    expect(liveTokens(await base.readDevices(userKey("ann")), T + 180_000)).toEqual([]);
    expect(await base.readTokenOwner(tokenHash(TOKEN))).toBeNull();
  });

  it("keeps the new owner's record while the erasure's removal from the former owner fails, and removes both on the next pass", async () => {
    const { base, store, arm } = await handedOverWithRemovalFailed(open(), true);

    // The erasure's own removal from Ann's devices fails too: its pass fails, the record stays for the next.
    arm();
    await expect(erasurePass(store, "ben", T + 1_000, T + 1_000)).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(await base.readTokenOwner(tokenHash(TOKEN))).toMatchObject({ user_key: userKey("ben"), released_from: { [userKey("ann")]: T } });
    expect(await tokensOf(base, "ann")).toEqual([tokenHash(TOKEN)]);

    await erasurePass(store, "ben", T + 1_000, T + 60_000);
    expect(await tokensOf(base, "ann")).toEqual([]);
    expect(await base.readTokenOwner(tokenHash(TOKEN))).toBeNull();
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
