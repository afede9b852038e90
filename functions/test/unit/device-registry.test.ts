import { ConnectionErasure } from "../../src/connections/connection-erasure";
import { DeviceRegistry, type DevicesAfter } from "../../src/connections/device-registry";
import { claimToken, confirmReleases, liveTokens, registerDevice, removeDevices, tokenHash } from "../../src/connections/device-rules";
import { sweepDevices } from "../../src/connections/device-sweep";
import { RecipientNotifier } from "../../src/connections/recipient-notifier";
import { silentLog } from "../../src/log/log";
import { createOfflineSender } from "../../src/notify/offline-sender";
import { userKey } from "../../src/session/ledger/limits";
import type { ConnectionErasureStore } from "../../src/store/connection-erasure-store";
import type { DeviceRecord } from "../../src/store/connection-records";
import type { DeviceStore } from "../../src/store/connection-store";
import { StoreUnavailableError } from "../../src/store/errors";
import { MemoryConnectionStore } from "../../src/store/memory-connection-store";
import { RtdbConnectionStore } from "../../src/store/rtdb/rtdb-connection-store";
import type { LedgerRule } from "../../src/store/session-store";
import { describeWithRtdb, freshNamespace, RtdbInstances } from "../support/rtdb";
import { ADD_LANDS_WITHIN_MS } from "../support/connection-fixtures";

const T = 1_800_000_000_000;
const TOKEN = "fcm-token-of-the-phone";
const TABLET = "fcm-token-of-the-tablet";

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
 * deadline): Ben's registration commits its claim and answers 503. Both read the clock at T, and
 * Ben's claim, over Ann's, is timed just after hers (T + 1). `store` fails Ann's next device write
 * again once `arm` is called.
 */
async function handedOverWithRemovalFailed<S extends DeviceStore>(base: S, previews: boolean | undefined) {
  const { store, arm } = failingDevicesOf(base, userKey("ann"));
  const registry = new DeviceRegistry({ store, clock: () => T, addLandsWithinMs: ADD_LANDS_WITHIN_MS });
  await registry.register("ann", TOKEN, previews);
  arm();
  await expect(registry.register("ben", TOKEN, undefined)).rejects.toBeInstanceOf(StoreUnavailableError);
  return { base, store, arm, registry };
}

type HeldCall = "updateTokenOwner" | "updateDevices" | "readTokenOwner";
const HELD_CALLS: readonly string[] = ["updateTokenOwner", "updateDevices", "readTokenOwner"] satisfies HeldCall[];

/**
 * Registrations of TOKEN on `base` whose database calls each wait until the test lets them through
 * (or fails them, or lets the registration's instance die), by registration and call, so that the
 * order in which they land (across instances, retried transactions, slow links) is the test's to choose.
 */
class Interleaving {
  private readonly waiting: { who: string; call: string; key: unknown; go: () => Promise<void>; fail: () => void }[] = [];
  private readonly dead = new Set<string>();
  constructor(private readonly base: DeviceStore) {}

  register(who: string, userId: string, at: number): Promise<DevicesAfter> {
    const store = new Proxy(this.base, {
      get: (target, name, receiver) => {
        const value: unknown = Reflect.get(target, name, receiver);
        if (typeof value !== "function") return value;
        const method = (value as (...args: unknown[]) => Promise<unknown>).bind(target);
        if (typeof name !== "string" || !HELD_CALLS.includes(name)) return method;
        return (...args: unknown[]) =>
          new Promise((resolve, reject) => {
            // A dead instance sends nothing more: the call never lands, nor answers.
            if (this.dead.has(who)) return;
            const fail = () => {
              reject(new StoreUnavailableError(name));
            };
            this.waiting.push({ who, call: name, key: args[0], go: () => method(...args).then(resolve, reject), fail });
          });
      },
    });
    return new DeviceRegistry({ store, clock: () => at, addLandsWithinMs: ADD_LANDS_WITHIN_MS }).register(userId, TOKEN, true);
  }

  /** Lets `who`'s next `call` (on `key`'s record, when given) through and waits until it has landed. */
  async land(who: string, call: HeldCall, key?: string): Promise<void> {
    await (await this.take(who, call, key)).go();
  }

  /** Fails `who`'s next `call` (on `key`'s record, when given) as on a database deadline: nothing lands. */
  async fail(who: string, call: HeldCall, key?: string): Promise<void> {
    (await this.take(who, call, key)).fail();
    await new Promise((resolve) => setImmediate(resolve));
  }

  /** `who`'s instance dies: its calls waiting, and any it would make, never land. */
  die(who: string): void {
    this.dead.add(who);
    this.waiting.splice(0, this.waiting.length, ...this.waiting.filter((held) => held.who !== who));
  }

  /** Lets every call through until all registrations have settled (of live instances only: a dead one's never does). */
  async drain(registrations: Promise<unknown>[]): Promise<void> {
    let settled = false;
    void Promise.allSettled(registrations).then(() => (settled = true));
    for (let idle = 0; !settled; ) {
      await new Promise((resolve) => setImmediate(resolve));
      const held = this.waiting.splice(0);
      idle = held.length === 0 ? idle + 1 : 0;
      if (idle > 100) throw new Error("registrations asked for nothing more and never settled");
      await Promise.all(held.map((call) => call.go()));
    }
    await Promise.all(registrations);
  }

  /** `who`'s next `call`, out of those waiting, once it is asked for (bounded: a registration asks within a few turns). */
  private async take(who: string, call: HeldCall, key: string | undefined) {
    const matches = (held: { who: string; call: string; key: unknown }) => held.who === who && held.call === call && (key === undefined || held.key === key);
    for (let tick = 0; tick < 100 && !this.waiting.some(matches); tick += 1) await new Promise((resolve) => setImmediate(resolve));
    const index = this.waiting.findIndex(matches);
    if (index < 0) throw new Error(`${who} is not waiting on ${call}: ${this.waiting.map((held) => `${held.who} ${held.call}`).join(", ")}`);
    return this.waiting.splice(index, 1)[0]!;
  }
}

/**
 * `rule` applied as an instance of the version before removals were kept in users' devices
 * applies its own: its schema has no `released`, so it reads the record without it, and writes it
 * back so.
 */
function asOlderVersion<O>(rule: LedgerRule<DeviceRecord, O>): LedgerRule<DeviceRecord, O> {
  return (record) => {
    if (record === null) return rule(null);
    const { released, ...read } = record;
    return rule(read);
  };
}

const tokensOf = async (store: DeviceStore, userId: string) => Object.keys((await store.readDevices(userKey(userId)))?.tokens ?? {});

/** An erasure's pass over what connections hold of the user, as ErasureService runs each of its two. */
const erasurePass = (store: DeviceStore & ConnectionErasureStore, userId: string, cutoff: number, now: number) =>
  new ConnectionErasure({ store, batchSize: 50, clock: () => now, addLandsWithinMs: ADD_LANDS_WITHIN_MS }).erase(userId, cutoff, { record: async () => undefined, stopped: () => false });

function deviceRegistryBehaviour(open: () => DeviceStore & ConnectionErasureStore) {
  it("gives a token to the last user who registers it, leaving the one before", async () => {
    const store = open();
    const registry = new DeviceRegistry({ store, clock: () => T, addLandsWithinMs: ADD_LANDS_WITHIN_MS });
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
    const registry = new DeviceRegistry({ store, clock: () => T, addLandsWithinMs: ADD_LANDS_WITHIN_MS });
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
    expect(await base.readTokenOwner(tokenHash(TOKEN))).toEqual({ user_key: userKey("ben"), updated_at: T + 1, released_from: { [userKey("ann")]: T + 1 }, releasing_since: T + 1 });
    expect(await registry.register("ben", TOKEN, undefined)).toEqual({ devices: 1 });

    // Ann's messages must not be pushed to the phone Ben uses now; the record no longer names her.
    expect(await tokensOf(base, "ann")).toEqual([]);
    expect(await tokensOf(base, "ben")).toEqual([tokenHash(TOKEN)]);
    expect(await base.readTokenOwner(tokenHash(TOKEN))).toEqual({ user_key: userKey("ben"), updated_at: T + 1 });
  });

  it("keeps the token with the former owner who took it back before the handover's removal from them landed", async () => {
    const base = open();
    const { store, arm, reached, release } = slowDevicesOf(base, userKey("ann"), false);
    let now = T;
    const registry = new DeviceRegistry({ store, clock: () => now, addLandsWithinMs: ADD_LANDS_WITHIN_MS });
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
    const registry = new DeviceRegistry({ store, clock: () => T, addLandsWithinMs: ADD_LANDS_WITHIN_MS });
    await registry.register("ann", TOKEN, true);

    // The phone goes to Ben; his claim fails (a database deadline): 503. The clean-up runs before his retry.
    arm();
    await expect(registry.register("ben", TOKEN, undefined)).rejects.toBeInstanceOf(StoreUnavailableError);
    await sweepDevices({ store: base, now: T + 60_000, batchSize: 50, maxBatches: 10, log: silentLog, addLandsWithinMs: ADD_LANDS_WITHIN_MS });
    // Nothing names Ben, so nothing would take the token out of his devices: it must not be there.
    expect({ owner: (await base.readTokenOwner(tokenHash(TOKEN)))?.user_key, ann: await tokensOf(base, "ann"), ben: await tokensOf(base, "ben") }).toEqual({ owner: userKey("ann"), ann: [tokenHash(TOKEN)], ben: [] });

    // His retry moves it, and Ann's messages (previews on) no longer reach the phone.
    await registry.register("ben", TOKEN, undefined);
    expect({ ann: await tokensOf(base, "ann"), ben: await tokensOf(base, "ben") }).toEqual({ ann: [], ben: [tokenHash(TOKEN)] });
  });

  /*
   * Ben registers the phone first, Carl second (the app signed in as Carl): each claim commits
   * before its add is sent, and Carl's claim names Ben, so Carl's registration takes the token out
   * of Ben's devices (up to his claim) beside his own add. Ben's add may land anywhere after his
   * claim, Carl's removal from Ben may fail or never run (then the clean-up does it), and either
   * instance may die at any point: here Ben's dies the moment his add has landed, the worst moment
   * (nothing of his registration after it runs). Whatever the order, once the clean-up has run,
   * the owner record names Carl, only Carl's devices hold the token, and nothing is left pending.
   */
  const ben = userKey("ben");
  const HANDOVERS: { name: string; carlDies: boolean; steps: (run: Interleaving, sweep: () => Promise<unknown>) => Promise<void> }[] = [
    {
      name: "Ben's add lands before Carl's claim",
      carlDies: false,
      steps: async (run) => {
        await run.land("ben", "updateTokenOwner");
        await run.land("ben", "updateDevices", ben);
        run.die("ben");
        await run.land("carl", "updateTokenOwner");
      },
    },
    {
      name: "Ben's add lands between Carl's claim and Carl's removal from him",
      carlDies: false,
      steps: async (run) => {
        await run.land("ben", "updateTokenOwner");
        await run.land("carl", "updateTokenOwner");
        await run.land("ben", "updateDevices", ben);
        run.die("ben");
        await run.land("carl", "updateDevices", ben);
      },
    },
    {
      name: "Ben's add lands after Carl's registration, removal from him included, has completed",
      carlDies: false,
      steps: async (run) => {
        await run.land("ben", "updateTokenOwner");
        await run.land("carl", "updateTokenOwner");
        await run.land("carl", "updateDevices", ben);
        await run.land("carl", "updateDevices", userKey("carl"));
        await run.land("carl", "updateTokenOwner");
        await run.land("ben", "updateDevices", ben);
        run.die("ben");
      },
    },
    {
      name: "Carl's removal from Ben fails, and Ben's add lands before the clean-up",
      carlDies: false,
      steps: async (run, sweep) => {
        await run.land("ben", "updateTokenOwner");
        await run.land("carl", "updateTokenOwner");
        await run.fail("carl", "updateDevices", ben);
        await run.land("ben", "updateDevices", ben);
        run.die("ben");
        await sweep();
      },
    },
    {
      name: "Carl's removal from Ben fails, and Ben's add lands after the clean-up did it",
      carlDies: false,
      steps: async (run, sweep) => {
        await run.land("ben", "updateTokenOwner");
        await run.land("carl", "updateTokenOwner");
        await run.fail("carl", "updateDevices", ben);
        await sweep();
        await run.land("ben", "updateDevices", ben);
        run.die("ben");
      },
    },
    {
      name: "Carl's instance dies once his claim has landed, and Ben's add lands after the clean-up",
      carlDies: true,
      steps: async (run, sweep) => {
        await run.land("ben", "updateTokenOwner");
        await run.land("carl", "updateTokenOwner");
        run.die("carl");
        await sweep();
        await run.land("ben", "updateDevices", ben);
        run.die("ben");
      },
    },
  ];

  it.each(HANDOVERS)("leaves the token with its last owner only, once the clean-up has run, when $name", async ({ steps, carlDies }) => {
    const base = open();
    const run = new Interleaving(base);
    const sweep = () => sweepDevices({ store: base, now: T + 60_000, batchSize: 50, maxBatches: 10, log: silentLog, addLandsWithinMs: ADD_LANDS_WITHIN_MS });
    void run.register("ben", "ben", T);
    // Carl's answer (a 503 when a write of his failed) is not what this is about; his request settles either way.
    const carl = run.register("carl", "carl", T + 1).catch(() => undefined);
    await steps(run, sweep);
    await run.drain(carlDies ? [] : [carl]);
    await sweep();

    // A message to Ben must not be pushed to the phone Carl holds (previews on).
    const notifier = new RecipientNotifier({ devices: base, sender: createOfflineSender(silentLog), log: silentLog, clock: () => T + 120_000, previewChars: 100, deadlineMs: 1_000 });
    expect({
      owner: await base.readTokenOwner(tokenHash(TOKEN)),
      benLive: liveTokens(await base.readDevices(ben), T + 120_000),
      carlLive: liveTokens(await base.readDevices(userKey("carl")), T + 120_000),
      notifiedForBen: (await notifier.audience(ben, userKey("someone-else")))?.tokens,
    }).toEqual({ owner: { user_key: userKey("carl"), updated_at: T + 1 }, benLive: [], carlLive: carlDies ? [] : [TOKEN], notifiedForBen: [] });
  });

  it("answers a registration whose add lands after another user's claim and removal with the token not among its devices", async () => {
    const base = open();
    const run = new Interleaving(base);
    const benAnswer = run.register("ben", "ben", T);
    const carl = run.register("carl", "carl", T + 1);
    await run.land("ben", "updateTokenOwner");
    await run.land("carl", "updateTokenOwner");
    await run.land("carl", "updateDevices", ben);
    await run.drain([carl, benAnswer]);
    expect({ ben: await benAnswer, carl: await carl }).toEqual({ ben: { devices: 0 }, carl: { devices: 1 } });
    expect({ ben: await tokensOf(base, "ben"), carl: await tokensOf(base, "carl") }).toEqual({ ben: [], carl: [tokenHash(TOKEN)] });
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
    await run.land("ben@2", "updateTokenOwner");
    await run.drain([ann1, ben2, ann3]);
    await sweepDevices({ store: base, now: T + 60_000, batchSize: 50, maxBatches: 10, log: silentLog, addLandsWithinMs: ADD_LANDS_WITHIN_MS });

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
    await sweepDevices({ store: base, now: T + 60_000, batchSize: 50, maxBatches: 10, log: silentLog, addLandsWithinMs: ADD_LANDS_WITHIN_MS });

    // The phone is Ann's (her claim landed last): it must go on getting her notifications.
    const owner = (await base.readTokenOwner(tokenHash(TOKEN)))?.user_key;
    expect({ owner, ann: liveTokens(await base.readDevices(userKey("ann")), T + 120_000), ben: await tokensOf(base, "ben") }).toEqual({ owner: userKey("ann"), ann: [TOKEN], ben: [] });
  });

  it("leaves the token with the user whose claim landed last when the other's claim and removal from them landed first, though their registration began first", async () => {
    const base = open();
    const ben = userKey("ben");
    await new DeviceRegistry({ store: base, clock: () => T, addLandsWithinMs: ADD_LANDS_WITHIN_MS }).register("ben", TOKEN, true);
    const run = new Interleaving(base);
    // Ben's app registers again (a token refresh, its clock at time 3) while Carl signs in on the
    // phone (time 5): Carl's claim and his removal of the token from Ben land first, then Ben's claim.
    const ben3 = run.register("ben@3", "ben", T + 3);
    const carl5 = run.register("carl@5", "carl", T + 5);
    await run.land("carl@5", "updateTokenOwner");
    await run.land("carl@5", "updateDevices", ben);
    await run.land("ben@3", "updateTokenOwner");
    await run.drain([ben3, carl5]);
    await sweepDevices({ store: base, now: T + 60_000, batchSize: 50, maxBatches: 10, log: silentLog, addLandsWithinMs: ADD_LANDS_WITHIN_MS });

    // The owner record names Ben (his claim landed last, timed after Carl's): his devices hold the token, Carl's do not.
    expect({
      owner: await base.readTokenOwner(tokenHash(TOKEN)),
      benLive: liveTokens(await base.readDevices(ben), T + 120_000),
      carlLive: liveTokens(await base.readDevices(userKey("carl")), T + 120_000),
      answered: await ben3,
    }).toEqual({ owner: { user_key: ben, updated_at: T + 6 }, benLive: [TOKEN], carlLive: [], answered: { devices: 1 } });
  });

  /*
   * During a deploy, instances of the version before removals were kept in users' devices serve
   * beside this one: they keep none when they take a token from a user, and their schema has no
   * `released`, so a record they rewrite loses it. Ben registers the phone on an instance of this
   * version (time 3): his claim lands, his add is slow. Carl signs in on it (time 5), and his
   * registration completes before Ben's add lands.
   */
  const OLDER_VERSION_STEPS: { name: string; steps: (base: DeviceStore) => Promise<void> }[] = [
    {
      name: "made the handover",
      steps: async (base) => {
        const [hash, ben, carl] = [tokenHash(TOKEN), userKey("ben"), userKey("carl")];
        // Its steps: the claim, the removal from Ben (its rule: his entry up to the claim goes, nothing is kept), Carl's add, the confirmation.
        const { releases } = await base.updateTokenOwner(hash, claimToken(carl, T + 5));
        expect(releases).toEqual({ [ben]: T + 5 });
        await base.updateDevices(ben, asOlderVersion((record) => removeDevices((record?.tokens?.[hash]?.updated_at ?? Infinity) <= T + 5 ? [hash] : [], T + 5)(record)));
        await base.updateDevices(carl, asOlderVersion(registerDevice(hash, TOKEN, T + 5, true)));
        await base.updateTokenOwner(hash, confirmReleases(releases));
      },
    },
    {
      name: "rewrote the former owner's devices after the handover",
      steps: async (base) => {
        await new DeviceRegistry({ store: base, clock: () => T + 5, addLandsWithinMs: ADD_LANDS_WITHIN_MS }).register("carl", TOKEN, true);
        // Ben registers his tablet on an older instance: his devices are written back without the removal kept there.
        await base.updateDevices(userKey("ben"), asOlderVersion(registerDevice(tokenHash("ben-tablet"), "ben-tablet", T + 6, undefined)));
      },
    },
  ];

  it.each(OLDER_VERSION_STEPS)("leaves the token with its last owner only when an instance of the version before kept removals $name", async ({ steps }) => {
    const base = open();
    const run = new Interleaving(base);
    const ben3 = run.register("ben@3", "ben", T + 3);
    await run.land("ben@3", "updateTokenOwner");
    await steps(base);
    await run.drain([ben3]);
    await sweepDevices({ store: base, now: T + 60_000, batchSize: 50, maxBatches: 10, log: silentLog, addLandsWithinMs: ADD_LANDS_WITHIN_MS });

    // Ben's messages (previews on) must not reach the phone Carl holds now.
    expect({
      owner: (await base.readTokenOwner(tokenHash(TOKEN)))?.user_key,
      benLive: liveTokens(await base.readDevices(userKey("ben")), T + 120_000).filter((token) => token === TOKEN),
      carlLive: liveTokens(await base.readDevices(userKey("carl")), T + 120_000),
    }).toEqual({ owner: userKey("carl"), benLive: [], carlLive: [TOKEN] });
  });

  it("takes the token from the former owner when its new owner is erased before the handover's removal from them was confirmed", async () => {
    const { base } = await handedOverWithRemovalFailed(open(), true);
    expect(await base.readTokenOwner(tokenHash(TOKEN))).toMatchObject({ user_key: userKey("ben"), released_from: { [userKey("ann")]: T + 1 } });

    // Ben erases his data (or is deleted from Auth) before registering again: both passes, then the sweep.
    await erasurePass(base, "ben", T + 1_000, T + 1_000);
    await erasurePass(base, "ben", T + 1_000, T + 60_000);
    await sweepDevices({ store: base, now: T + 120_000, batchSize: 50, maxBatches: 10, log: silentLog, addLandsWithinMs: ADD_LANDS_WITHIN_MS });

    // Ann's messages (with previews) must not be pushed to the phone Ben holds, and nothing names Ben.
    expect(liveTokens(await base.readDevices(userKey("ann")), T + 180_000)).toEqual([]);
    expect(await base.readTokenOwner(tokenHash(TOKEN))).toBeNull();
  });

  it("keeps the new owner's record while the erasure's removal from the former owner fails, and removes both on the next pass", async () => {
    const { base, store, arm } = await handedOverWithRemovalFailed(open(), true);

    // The erasure's own removal from Ann's devices fails too: its pass fails, the record stays for the next.
    arm();
    await expect(erasurePass(store, "ben", T + 1_000, T + 1_000)).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(await base.readTokenOwner(tokenHash(TOKEN))).toMatchObject({ user_key: userKey("ben"), released_from: { [userKey("ann")]: T + 1 } });
    expect(await tokensOf(base, "ann")).toEqual([tokenHash(TOKEN)]);

    await erasurePass(store, "ben", T + 1_000, T + 60_000);
    expect(await tokensOf(base, "ann")).toEqual([]);
    expect(await base.readTokenOwner(tokenHash(TOKEN))).toBeNull();
  });

  /*
   * Ann's token goes to Ben, and his removal of it from her devices fails (503): the owner record
   * names her until it is done. Then Ann erases her data: both passes, the second a request's
   * lifetime after the first (ADD_LANDS_WITHIN_MS with the defaults, as ErasureService waits), and
   * the removal still pending is done after the first, in one order or another.
   */
  const firstPass = T + 1_000;
  const secondPass = firstPass + ADD_LANDS_WITHIN_MS;
  const sweepAt = (store: DeviceStore, now: number) => sweepDevices({ store, now, batchSize: 50, maxBatches: 10, log: silentLog, addLandsWithinMs: ADD_LANDS_WITHIN_MS });
  const ERASED_FORMER_OWNER: { name: string; steps: (base: DeviceStore & ConnectionErasureStore) => Promise<void> }[] = [
    {
      name: "the clean-up does it after the second pass",
      steps: async (base) => {
        await erasurePass(base, "ann", firstPass, firstPass);
        await erasurePass(base, "ann", firstPass, secondPass);
        // The clean-up's next run, in the order runtime/instance.ts runs its steps: erasures, then devices.
        await sweepAt(base, T + 900_000);
      },
    },
    {
      name: "the clean-up does it between the passes",
      steps: async (base) => {
        await erasurePass(base, "ann", firstPass, firstPass);
        await sweepAt(base, firstPass + 30_000);
        await erasurePass(base, "ann", firstPass, secondPass);
      },
    },
    {
      name: "Ben's next registration of the token does it after the second pass",
      steps: async (base) => {
        await erasurePass(base, "ann", firstPass, firstPass);
        await erasurePass(base, "ann", firstPass, secondPass);
        await new DeviceRegistry({ store: base, clock: () => T + 900_000, addLandsWithinMs: ADD_LANDS_WITHIN_MS }).register("ben", TOKEN, undefined);
      },
    },
  ];

  it.each(ERASED_FORMER_OWNER)("leaves no devices record of an erased former owner when a removal from them pending before the erasure is done after it: $name", async ({ steps }) => {
    const { base } = await handedOverWithRemovalFailed(open(), true);
    await steps(base);

    // Nothing of Ann's outlives her erasure (docs/conversations.md, "Writes racing an erasure"); the phone is Ben's alone, nothing pending.
    expect({ ann: await base.readDevices(userKey("ann")), ben: await tokensOf(base, "ben") }).toEqual({ ann: null, ben: [tokenHash(TOKEN)] });
    expect((await base.readTokenOwner(tokenHash(TOKEN)))?.released_from).toBeUndefined();
  });

  /** Whom a message to Ann from someone else would notify at `now`, and with previews or not. */
  const annsAudience = (store: DeviceStore, now: number) =>
    new RecipientNotifier({ devices: store, sender: createOfflineSender(silentLog), log: silentLog, clock: () => now, previewChars: 100, deadlineMs: 1_000 }).audience(userKey("ann"), userKey("someone-else"));
  /** Ann's live tokens at `now`, and those a message to her notifies. */
  const annsPhones = async (store: DeviceStore, now: number) => ({
    annLive: liveTokens(await store.readDevices(userKey("ann")), now),
    notified: (await annsAudience(store, now))?.tokens,
  });

  it("keeps a token unregistered once the add of its user's earlier registration, answered 503 and still on the way, lands", async () => {
    const base = open();
    const { store, reached, release } = slowDevicesOf(base, userKey("ann"));
    let now = T;
    const registry = new DeviceRegistry({ store, clock: () => now, addLandsWithinMs: ADD_LANDS_WITHIN_MS });
    // Ann's app registers the phone; the add is slow (the request answers 503 at its deadline).
    const first = registry.register("ann", TOKEN, undefined);
    await reached;
    // Ten seconds later Ann signs out on the phone: the app unregisters the token, answered 200.
    now = T + 10_000;
    expect((await registry.unregister("ann", TOKEN)).devices).toBe(0);
    // The first registration's add lands only now.
    release();
    await first;

    // The signed-out phone must not go on getting Ann's messages (previews included) for 60 days.
    expect(await annsPhones(base, T + 20_000)).toEqual({ annLive: [], notified: [] });
  });

  it("keeps a token unregistered when its earlier registration's add lands after another of the user's unregistrations, past a request's lifetime", async () => {
    const base = open();
    const { store, reached, release, arm } = slowDevicesOf(base, userKey("ann"), false);
    let now = T - 60_000;
    const registry = new DeviceRegistry({ store, clock: () => now, addLandsWithinMs: ADD_LANDS_WITHIN_MS });
    // Ann has a tablet registered.
    await registry.register("ann", TABLET, undefined);
    // She registers her phone; its add is held: the Firebase SDK queued it while its instance was cut
    // off from the database, and resends it on reconnect (a deadline does not cancel a write already sent).
    now = T;
    arm();
    const first = registry.register("ann", TOKEN, undefined);
    await reached;
    // Ten seconds later she signs out on the phone, answered 200.
    now = T + 10_000;
    expect(await registry.unregister("ann", TOKEN)).toEqual({ devices: 1, removed: false });
    // Two minutes on, past a request's lifetime, she signs out on the tablet too.
    now = T + 120_000;
    expect(await registry.unregister("ann", TABLET)).toEqual({ devices: 0, removed: true });
    // The phone's add lands only now.
    release();
    await first;

    // The phone she signed out of hears nothing more of her messages.
    expect(await annsPhones(base, T + 130_000)).toEqual({ annLive: [], notified: [] });
  });

  it("adds a registration made after an unregistration of the token, though its instance's clock is behind the one that unregistered it", async () => {
    const base = open();
    await new DeviceRegistry({ store: base, clock: () => T, addLandsWithinMs: ADD_LANDS_WITHIN_MS }).register("ann", TOKEN, undefined);
    expect(await new DeviceRegistry({ store: base, clock: () => T + 10_000, addLandsWithinMs: ADD_LANDS_WITHIN_MS }).unregister("ann", TOKEN)).toEqual({ devices: 0, removed: true });
    // Ann signs in again; this instance's clock is five seconds behind the one before.
    expect(await new DeviceRegistry({ store: base, clock: () => T + 5_000, addLandsWithinMs: ADD_LANDS_WITHIN_MS }).register("ann", TOKEN, undefined)).toEqual({ devices: 1 });
    expect(liveTokens(await base.readDevices(userKey("ann")), T + 20_000)).toEqual([TOKEN]);
  });

  it("adds a registration whose claim landed after an unregistration of the token while another user held it, whenever that unregistration's removal lands", async () => {
    const base = open();
    const { store, arm, reached, release } = slowDevicesOf(base, userKey("ann"), false);
    let now = T;
    const registry = new DeviceRegistry({ store, clock: () => now, addLandsWithinMs: ADD_LANDS_WITHIN_MS });
    // The phone was Ann's, then Ben signed in on it and took the token.
    await registry.register("ann", TOKEN, undefined);
    now = T + 1_000;
    await registry.register("ben", TOKEN, undefined);
    // The app signs Ann's old account out on the phone: her unregistration finds Ben holding the
    // token; its removal from her devices is slow (a slow link, a transaction retried).
    now = T + 10_000;
    arm();
    const unregistering = registry.unregister("ann", TOKEN);
    await reached;
    // Ann signs in again on the phone: her registration claims the token after the unregistration
    // (the owner record has ordered them), adds it, and is answered 200 with one device.
    now = T + 11_000;
    expect(await registry.register("ann", TOKEN, undefined)).toEqual({ devices: 1 });
    // The earlier unregistration's removal lands only now.
    release();
    await unregistering;

    // The phone is Ann's again: her messages reach it, as they reach any device registered after a sign-out.
    expect(await annsPhones(base, T + 20_000)).toEqual({ annLive: [TOKEN], notified: [TOKEN] });
  });

  it("adds a registration whose claim landed after an unregistration of a token nobody's claim held yet, whenever that unregistration's removal lands", async () => {
    const base = open();
    const { store, reached, release } = slowDevicesOf(base, userKey("ann"));
    let now = T;
    const registry = new DeviceRegistry({ store, clock: () => now, addLandsWithinMs: ADD_LANDS_WITHIN_MS });
    // Ann's app signs out a token no registration has claimed (no owner record); its removal is slow.
    const unregistering = registry.unregister("ann", TOKEN);
    await reached;
    // She signs in: the registration claims the token, adds it, and is answered 200 with one device.
    now = T + 1_000;
    expect(await registry.register("ann", TOKEN, undefined)).toEqual({ devices: 1 });
    release();
    await unregistering;

    expect(await annsPhones(base, T + 20_000)).toEqual({ annLive: [TOKEN], notified: [TOKEN] });
  });

  it("adds a registration whose claim landed after an unregistration of a token nobody's claim held yet, though its instance's clock is behind the one that unregistered it", async () => {
    const base = open();
    const { store, reached, release } = slowDevicesOf(base, userKey("ann"));
    // Ann's app signs out a token no registration has claimed, through an instance whose clock is
    // ten seconds ahead; its removal is slow.
    const unregistering = new DeviceRegistry({ store, clock: () => T + 10_000, addLandsWithinMs: ADD_LANDS_WITHIN_MS }).unregister("ann", TOKEN);
    await reached;
    // She signs in through another instance, its clock at T: the claim lands after the unregistration.
    expect(await new DeviceRegistry({ store: base, clock: () => T, addLandsWithinMs: ADD_LANDS_WITHIN_MS }).register("ann", TOKEN, undefined)).toEqual({ devices: 1 });
    release();
    await unregistering;

    expect(liveTokens(await base.readDevices(userKey("ann")), T + 20_000)).toEqual([TOKEN]);
  });

  it("still removes, when another user holds the token, the registrations of the user that unregisters it", async () => {
    const base = open();
    // Ben took Ann's token, and its removal from her devices failed: her registration is still there.
    await handedOverWithRemovalFailed(base, undefined);
    expect(await tokensOf(base, "ann")).toEqual([tokenHash(TOKEN)]);
    // Ann's app signs her out on the phone.
    const registry = new DeviceRegistry({ store: base, clock: () => T + 10_000, addLandsWithinMs: ADD_LANDS_WITHIN_MS });
    expect(await registry.unregister("ann", TOKEN)).toEqual({ devices: 0, removed: true });
    expect({ ann: await tokensOf(base, "ann"), ben: await tokensOf(base, "ben"), owner: (await base.readTokenOwner(tokenHash(TOKEN)))?.user_key }).toEqual({ ann: [], ben: [tokenHash(TOKEN)], owner: userKey("ben") });
  });

  it("keeps previews off once turned off, when an earlier registration that turned them on lands after", async () => {
    const base = open();
    const { store, reached, release } = slowDevicesOf(base, userKey("ann"));
    let now = T;
    const registry = new DeviceRegistry({ store, clock: () => now, addLandsWithinMs: ADD_LANDS_WITHIN_MS });
    // Ann registers with previews on; the add is slow (the request answers 503 at its deadline).
    const first = registry.register("ann", TOKEN, true);
    await reached;
    // Ten seconds later she turns previews off (the app registers again with previews: false), answered 200.
    now = T + 10_000;
    expect(await registry.register("ann", TOKEN, false)).toEqual({ devices: 1 });
    expect((await base.readDevices(userKey("ann")))?.previews).toBe(false);
    // The first registration's add lands only now.
    release();
    await first;

    // Her last choice stands: no message text on her lock screen.
    const audience = await annsAudience(base, T + 20_000);
    expect({ stored: (await base.readDevices(userKey("ann")))?.previews, previewsSent: audience?.previews }).toEqual({ stored: false, previewsSent: false });
  });

  it("sets previews by a registration on a devices record an older version kept, which has no time for them", async () => {
    const base = open();
    await base.updateDevices(userKey("ann"), () => ({ outcome: undefined, next: { previews: true } }));
    await new DeviceRegistry({ store: base, clock: () => T, addLandsWithinMs: ADD_LANDS_WITHIN_MS }).register("ann", TOKEN, false);
    expect((await annsAudience(base, T + 1_000))?.previews).toBe(false);
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
