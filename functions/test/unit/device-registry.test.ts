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

/** `store` with the methods of `overrides` in place of its own; everything else as it is. */
function overriding<S extends DeviceStore>(store: S, overrides: Partial<DeviceStore>): S {
  return new Proxy(store, {
    get(target, name, receiver) {
      if (typeof name === "string" && name in overrides) return overrides[name as keyof DeviceStore];
      const value: unknown = Reflect.get(target, name, receiver);
      return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}

/** `store` with its writes to users' devices going through `updateDevices`; everything else as it is. */
const withUpdateDevices = <S extends DeviceStore>(store: S, updateDevices: DeviceStore["updateDevices"]): S => overriding(store, { updateDevices });

/** `store` whose next claim on a token's owner record, once armed, fails as on a database deadline (nothing committed). */
function failingClaimOf(store: DeviceStore): { store: DeviceStore; arm: () => void } {
  let armed = false;
  const failing = overriding(store, {
    updateTokenOwner: async (hash, rule) => {
      if (armed) {
        armed = false;
        throw new StoreUnavailableError("update token owner");
      }
      return store.updateTokenOwner(hash, rule);
    },
  });
  return { store: failing, arm: () => (armed = true) };
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

type HeldCall = "updateTokenOwner" | "updateDevices" | "readTokenOwner";
const HELD_CALLS: readonly string[] = ["updateTokenOwner", "updateDevices", "readTokenOwner"] satisfies HeldCall[];

/**
 * Registrations of TOKEN on `base` whose database calls each wait until the test lets them through,
 * by registration and call, so that the order in which they land (across instances, retried
 * transactions, slow links) is the test's to choose.
 */
class Interleaving {
  private readonly waiting: { who: string; call: string; key: unknown; go: () => Promise<void> }[] = [];
  constructor(private readonly base: DeviceStore) {}

  register(who: string, userId: string, at: number): Promise<unknown> {
    const store = new Proxy(this.base, {
      get: (target, name, receiver) => {
        const value: unknown = Reflect.get(target, name, receiver);
        if (typeof value !== "function") return value;
        const method = (value as (...args: unknown[]) => Promise<unknown>).bind(target);
        if (typeof name !== "string" || !HELD_CALLS.includes(name)) return method;
        return (...args: unknown[]) => new Promise((resolve, reject) => this.waiting.push({ who, call: name, key: args[0], go: () => method(...args).then(resolve, reject) }));
      },
    });
    return new DeviceRegistry({ store, clock: () => at }).register(userId, TOKEN, true);
  }

  /** Lets `who`'s next `call` (on `key`'s record, when given) through and waits until it has landed. */
  async land(who: string, call: HeldCall, key?: string): Promise<void> {
    const matches = (held: { who: string; call: string; key: unknown }) => held.who === who && held.call === call && (key === undefined || held.key === key);
    for (let tick = 0; tick < 100 && !this.waiting.some(matches); tick += 1) await new Promise((resolve) => setImmediate(resolve));
    const index = this.waiting.findIndex(matches);
    if (index < 0) throw new Error(`${who} is not waiting on ${call}: ${this.waiting.map((held) => `${held.who} ${held.call}`).join(", ")}`);
    const [held] = this.waiting.splice(index, 1);
    await held!.go();
  }

  /** Lets every call through until all registrations have settled. */
  async drain(registrations: Promise<unknown>[]): Promise<void> {
    let settled = false;
    void Promise.allSettled(registrations).then(() => (settled = true));
    while (!settled) {
      await new Promise((resolve) => setImmediate(resolve));
      await Promise.all(this.waiting.splice(0).map((held) => held.go()));
    }
    await Promise.all(registrations);
  }
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

  it("leaves the token with the user the owner record names only when a handover's claim fails", async () => {
    const base = open();
    const { store, arm } = failingClaimOf(base);
    const registry = new DeviceRegistry({ store, clock: () => T });
    await registry.register("ann", TOKEN, true);

    // The phone goes to Ben; his claim fails (a database deadline): 503. The clean-up runs before his retry.
    arm();
    await expect(registry.register("ben", TOKEN, undefined)).rejects.toBeInstanceOf(StoreUnavailableError);
    await sweepDevices({ store: base, now: T + 60_000, batchSize: 50, maxBatches: 10 });
    // Nothing names Ben, so nothing would take the token out of his devices: it must not be there.
    expect({ owner: (await base.readTokenOwner(tokenHash(TOKEN)))?.user_key, ann: await tokensOf(base, "ann"), ben: await tokensOf(base, "ben") }).toEqual({ owner: userKey("ann"), ann: [tokenHash(TOKEN)], ben: [] });

    // His retry moves it, and Ann's messages (previews on) no longer reach the phone.
    await registry.register("ben", TOKEN, undefined);
    expect({ ann: await tokensOf(base, "ann"), ben: await tokensOf(base, "ben") }).toEqual({ ann: [], ben: [tokenHash(TOKEN)] });
  });

  it("takes the token from a registration that found another owner and failed to take it back, once the clean-up has run", async () => {
    const base = open();
    // Ben's add is slow; once armed, his next device write fails (a database deadline).
    const slow = slowDevicesOf(base, userKey("ben"));
    const { store, arm } = failingDevicesOf(slow.store, userKey("ben"));
    const registry = new DeviceRegistry({ store, clock: () => T });
    const ben = registry.register("ben", TOKEN, true);
    await slow.reached;
    // The phone goes to Carl, whose registration completes (its removal from Ben finds nothing yet).
    await registry.register("carl", TOKEN, undefined);
    arm();
    slow.release();
    // Ben's add lands; his read finds Carl the owner, and taking the token back fails: 503.
    await expect(ben).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(await base.readTokenOwner(tokenHash(TOKEN))).toMatchObject({ user_key: userKey("carl"), released_from: { [userKey("ben")]: T } });

    // Nobody registers the token as Ben again; the clean-up runs. Ben's messages must not reach Carl's phone.
    await sweepDevices({ store: base, now: T + 60_000, batchSize: 50, maxBatches: 10 });
    expect({ ben: await tokensOf(base, "ben"), carl: await tokensOf(base, "carl") }).toEqual({ ben: [], carl: [tokenHash(TOKEN)] });
    expect(await base.readTokenOwner(tokenHash(TOKEN))).toEqual({ user_key: userKey("carl"), updated_at: T });
  });

  it("releases the former owner up to their newest registration when their older claim lands after it", async () => {
    const base = open();
    const run = new Interleaving(base);
    // Ann's app registers the phone twice (times 1 and 3, on a token refresh); Ben signs in on it at
    // time 2. Ann's later claim lands before her earlier one; Ben's claim lands last: the phone is Ben's.
    const ann1 = run.register("ann@1", "ann", T + 1);
    const ben2 = run.register("ben@2", "ben", T + 2);
    const ann3 = run.register("ann@3", "ann", T + 3);
    await run.land("ann@3", "updateTokenOwner");
    await run.land("ann@1", "updateTokenOwner");
    await run.land("ann@1", "updateDevices");
    await run.land("ann@3", "updateDevices");
    await run.land("ann@3", "readTokenOwner");
    await run.land("ann@1", "readTokenOwner");
    await run.land("ben@2", "updateTokenOwner");
    await run.drain([ann1, ben2, ann3]);
    await sweepDevices({ store: base, now: T + 60_000, batchSize: 50, maxBatches: 10 });

    // Ann's messages must not reach the phone Ben holds.
    const owner = (await base.readTokenOwner(tokenHash(TOKEN)))?.user_key;
    expect({ owner, ann: await tokensOf(base, "ann"), ben: await tokensOf(base, "ben") }).toEqual({ owner: userKey("ben"), ann: [], ben: [tokenHash(TOKEN)] });
  });

  it("keeps the owner's newest registration when their older add lands after it and a removal meant for the older one follows", async () => {
    const base = open();
    const run = new Interleaving(base);
    // Ann registers the phone (time 1, a slow request); Ben signs in on it (time 2) and Ann takes it
    // straight back (time 3). Ann's earlier add lands after her later one; then Ben's removal of the
    // token from Ann (up to his claim, time 2) lands.
    const ann1 = run.register("ann@1", "ann", T + 1);
    const ben2 = run.register("ben@2", "ben", T + 2);
    const ann3 = run.register("ann@3", "ann", T + 3);
    await run.land("ann@1", "updateTokenOwner");
    await run.land("ben@2", "updateTokenOwner");
    await run.land("ann@3", "updateTokenOwner");
    await run.land("ann@3", "updateDevices", userKey("ann"));
    await run.land("ann@1", "updateDevices", userKey("ann"));
    await run.land("ben@2", "updateDevices", userKey("ann"));
    await run.drain([ann1, ben2, ann3]);
    await sweepDevices({ store: base, now: T + 60_000, batchSize: 50, maxBatches: 10 });

    // The phone is Ann's (her claim landed last): it must go on getting her notifications.
    const owner = (await base.readTokenOwner(tokenHash(TOKEN)))?.user_key;
    expect({ owner, ann: liveTokens(await base.readDevices(userKey("ann")), T + 120_000), ben: await tokensOf(base, "ben") }).toEqual({ owner: userKey("ann"), ann: [TOKEN], ben: [] });
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
