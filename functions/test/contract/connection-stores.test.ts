import { ConnectionErasure } from "../../src/connections/connection-erasure";
import { DeviceRegistry } from "../../src/connections/device-registry";
import { liveTokens, STALE_AFTER_MS, tokenHash } from "../../src/connections/device-rules";
import { sweepDevices } from "../../src/connections/device-sweep";
import { silentLog, type Log, type LogFields } from "../../src/log/log";
import { userKey } from "../../src/session/ledger/limits";
import { MemoryConnectionStore } from "../../src/store/memory-connection-store";
import { RtdbConnectionStore } from "../../src/store/rtdb/rtdb-connection-store";
import { contractStores, describeWithRtdb, freshNamespace, RtdbInstances } from "../support/rtdb";
import { connectionStoreContract } from "./connection-store-contract";
import { ADD_LANDS_WITHIN_MS } from "../support/connection-fixtures";

describe("MemoryConnectionStore", () => {
  connectionStoreContract(async () => {
    const store = new MemoryConnectionStore();
    return { instance: () => store, empty: () => new MemoryConnectionStore(), settled: async () => undefined, close: async () => undefined };
  });
});

describeWithRtdb("RtdbConnectionStore (firebase-admin on the database emulator)", () => {
  connectionStoreContract(async () => contractStores("connections", (database) => new RtdbConnectionStore(database, 10_000)));

  /**
   * docs/conversations.md: a pass starts no page once the run's time for the erasures is up. A user
   * may hold any number of token records (each distinct token registered leaves one, while the user
   * keeps 20 devices): the erasure queries them a page at a time, never all at once.
   */
  describe("the erasure of a user holding many token records", () => {
    const database = new RtdbInstances(freshNamespace("tokenerasure"));
    const store = new RtdbConnectionStore(database.database(), 10_000);
    afterAll(async () => {
      store.close();
      await database.close();
    });

    it("starts no page of the user's token records once the pass's time is up, says it stopped, and the next run removes them all", async () => {
      const user = "token-hoarder";
      const registry = new DeviceRegistry({ store, clock: () => 1_800_000_000_000, addLandsWithinMs: ADD_LANDS_WITHIN_MS });
      // 250 registrations of distinct tokens: 250 owner records (the user keeps 20 devices).
      for (let start = 0; start < 250; start += 25) {
        await Promise.all(Array.from({ length: 25 }, (_, i) => registry.register(user, `token-${start + i}`, undefined)));
      }

      // The pass's time runs out as it reaches the token records (the sweep's or the request's deadline).
      let timeUp = false;
      const find = store.findTokenOwners.bind(store);
      store.findTokenOwners = (key, after, limit) => {
        timeUp = true;
        return find(key, after, limit);
      };
      const engine = (store as unknown as { engine: { read: (operation: string, ...rest: unknown[]) => Promise<unknown> } }).engine;
      const read = engine.read.bind(engine);
      let pagesAfterTimeUp = 0;
      engine.read = (operation: string, ...rest: unknown[]) => {
        if (timeUp && operation === "find user token owners") pagesAfterTimeUp += 1;
        return read(operation, ...rest);
      };

      const erasure = new ConnectionErasure({ store, batchSize: 20, clock: () => 1_800_000_100_000, addLandsWithinMs: ADD_LANDS_WITHIN_MS });
      const hooks = { record: async () => undefined, stopped: () => timeUp };
      const result = await erasure.erase(user, 1_800_000_050_000, hooks);
      // At most the page under way when the time ran out; then the pass says it stopped, and the next run goes on.
      expect({ stopped: result.stopped, pagesAfterTimeUp }).toEqual({ stopped: true, pagesAfterTimeUp: Math.min(pagesAfterTimeUp, 1) });

      const next = await erasure.erase(user, 1_800_000_050_000, { ...hooks, stopped: () => false });
      expect({ stopped: next.stopped, left: await find(userKey(user), undefined, 300) }).toEqual({ stopped: false, left: [] });
    });
  });

  /**
   * The sweep finds stale records by a query, then removes them: on the database, a registration
   * of the same token (the app opened again after 60 days) can land in between. The embedded store
   * does both in one turn of the event loop, so only this adapter is tested for it.
   */
  describe("the device sweep beside a registration landing after its query", () => {
    const T0 = 1_800_000_000_000;
    const NOW = T0 + STALE_AFTER_MS + 86_400_000;
    const TOKEN = "fcm-token-of-the-phone";
    const instances: RtdbInstances[] = [];
    const stores: RtdbConnectionStore[] = [];
    afterAll(async () => {
      for (const store of stores) store.close();
      await Promise.all(instances.map((database) => database.close()));
    });

    /** A store on a new database, whose queries over `path` are followed by `meanwhile` (another instance's registration) before they answer. */
    function racedAfterQueriesOf(path: string, meanwhile: (store: RtdbConnectionStore) => Promise<unknown>): RtdbConnectionStore {
      const database = new RtdbInstances(freshNamespace("devicesweep"));
      instances.push(database);
      const store = new RtdbConnectionStore(database.database(), 10_000);
      stores.push(store);
      const engine = (store as unknown as { engine: { orderedBy: (path: string, ...rest: unknown[]) => Promise<unknown[]> } }).engine;
      const query = engine.orderedBy.bind(engine);
      let raced = false;
      engine.orderedBy = async (queried: string, ...rest: unknown[]) => {
        const keys = await query(queried, ...rest);
        if (queried === path && keys.length > 0 && !raced) {
          raced = true;
          await meanwhile(store);
        }
        return keys;
      };
      return store;
    }

    it("keeps a token's owner record registered again while the sweep ran, so the token's next owner takes it from that user", async () => {
      const store = racedAfterQueriesOf("deviceTokens", (raced) => new DeviceRegistry({ store: raced, clock: () => NOW, addLandsWithinMs: ADD_LANDS_WITHIN_MS }).register("ann", TOKEN, undefined));
      await new DeviceRegistry({ store, clock: () => T0, addLandsWithinMs: ADD_LANDS_WITHIN_MS }).register("ann", TOKEN, undefined);
      expect(await sweepDevices({ store, now: NOW, batchSize: 10, maxBatches: 2, log: silentLog, addLandsWithinMs: ADD_LANDS_WITHIN_MS })).toMatchObject({ staleTokenOwners: 0 });
      expect(await store.readTokenOwner(tokenHash(TOKEN))).toEqual({ user_key: userKey("ann"), updated_at: NOW });

      // The phone changes hands: Ben registers it. Ann's messages must no longer reach it.
      await new DeviceRegistry({ store, clock: () => NOW + 1_000, addLandsWithinMs: ADD_LANDS_WITHIN_MS }).register("ben", TOKEN, undefined);
      const annLive = liveTokens(await store.readDevices(userKey("ann")), NOW + 2_000);
      const benLive = liveTokens(await store.readDevices(userKey("ben")), NOW + 2_000);
      expect({ annLive, benLive }).toEqual({ annLive: [], benLive: [TOKEN] });
    });

    it("keeps a user's token registered again while the sweep ran", async () => {
      const store = racedAfterQueriesOf("userDevices", (raced) => new DeviceRegistry({ store: raced, clock: () => NOW, addLandsWithinMs: ADD_LANDS_WITHIN_MS }).register("ann", TOKEN, undefined));
      await new DeviceRegistry({ store, clock: () => T0, addLandsWithinMs: ADD_LANDS_WITHIN_MS }).register("ann", TOKEN, undefined);
      expect(await sweepDevices({ store, now: NOW, batchSize: 10, maxBatches: 2, log: silentLog, addLandsWithinMs: ADD_LANDS_WITHIN_MS })).toMatchObject({ staleDevices: 0 });
      expect(liveTokens(await store.readDevices(userKey("ann")), NOW)).toEqual([TOKEN]);
      expect(await store.readTokenOwner(tokenHash(TOKEN))).toEqual({ user_key: userKey("ann"), updated_at: NOW });
    });
  });

  /**
   * The sweep's query answers the oldest stale owner records first: one it cannot read (written by
   * hand, by an older version, half restored from a backup) stays there, run after run. It is
   * logged and passed, as the sweep's other changes that fail are: the records after it go.
   */
  describe("the device sweep beside token owner records it cannot read", () => {
    const T0 = 1_800_000_000_000;
    const NOW = T0 + STALE_AFTER_MS + 86_400_000;
    const database = new RtdbInstances(freshNamespace("sweepunreadable"));
    const db = database.database();
    const store = new RtdbConnectionStore(db, 10_000);
    afterAll(async () => {
      store.close();
      await database.close();
    });

    it("removes the stale records after a page of ones it cannot read, logging each of those once a run, in every run", async () => {
      // Ann and Ben registered a phone each 61 days ago and never again: their owner records and devices are stale.
      await new DeviceRegistry({ store, clock: () => T0, addLandsWithinMs: ADD_LANDS_WITHIN_MS }).register("ann", "ann-phone-token", undefined);
      await new DeviceRegistry({ store, clock: () => T0 + 1, addLandsWithinMs: ADD_LANDS_WITHIN_MS }).register("ben", "ben-phone-token", undefined);
      // Two records the service cannot parse, older still: the first page the query answers.
      await db.ref("deviceTokens/unreadable-a").set({ updated_at: T0 - 2_000 });
      await db.ref("deviceTokens/unreadable-b").set({ user_key: 7, updated_at: T0 - 1_000 });
      const warned: LogFields[] = [];
      const log: Log = {
        ...silentLog,
        warn: (_message, fields) => {
          warned.push(fields ?? {});
        },
      };
      const skipped = () => warned.splice(0).map((fields) => [fields.change, fields.tokenHash, fields.error]);

      const first = await sweepDevices({ store, now: NOW, batchSize: 2, maxBatches: 3, log, addLandsWithinMs: ADD_LANDS_WITHIN_MS }).catch((error: unknown) => (error instanceof Error ? `${error.name}: ${error.message}` : String(error)));
      expect(first).toEqual({ releasedTokens: 0, staleDevices: 2, staleTokenOwners: 2 });
      expect(skipped()).toEqual([
        ["stale token owner", "unreadable-a", "StoreDataError"],
        ["stale token owner", "unreadable-b", "StoreDataError"],
      ]);
      expect({ ann: await store.readTokenOwner(tokenHash("ann-phone-token")), ben: await store.readTokenOwner(tokenHash("ben-phone-token")) }).toEqual({ ann: null, ben: null });
      expect({ ann: (await store.readDevices(userKey("ann")))?.tokens, ben: (await store.readDevices(userKey("ben")))?.tokens }).toEqual({ ann: undefined, ben: undefined });

      // The next run is not failed by them either, and logs them again; they stay for an operator.
      await expect(sweepDevices({ store, now: NOW + 1, batchSize: 2, maxBatches: 3, log, addLandsWithinMs: ADD_LANDS_WITHIN_MS })).resolves.toEqual({ releasedTokens: 0, staleDevices: 0, staleTokenOwners: 0 });
      expect(skipped()).toEqual([
        ["stale token owner", "unreadable-a", "StoreDataError"],
        ["stale token owner", "unreadable-b", "StoreDataError"],
      ]);
      expect(Object.keys((await db.ref("deviceTokens").once("value")).val() as object).sort()).toEqual(["unreadable-a", "unreadable-b"]);
    });
  });
  /**
   * Stale devices are found by the oldest time of each user's tokens: a record the sweep cannot read
   * stays among the oldest, run after run. It is logged and passed: the users after it are swept.
   */
  describe("the device sweep beside users' devices records it cannot read", () => {
    const T0 = 1_800_000_000_000;
    const NOW = T0 + STALE_AFTER_MS + 86_400_000;
    const database = new RtdbInstances(freshNamespace("sweepunreadabledevices"));
    const db = database.database();
    const store = new RtdbConnectionStore(db, 10_000);
    afterAll(async () => {
      store.close();
      await database.close();
    });

    it("removes a user's stale token behind a page of devices records it cannot read, logging each of those once a run, in every run", async () => {
      // Ann registered a phone 61 days ago and never again: her token is stale.
      await new DeviceRegistry({ store, clock: () => T0, addLandsWithinMs: ADD_LANDS_WITHIN_MS }).register("ann", "ann-phone-token", undefined);
      // Two devices records the service cannot parse, older still: the first page of the stale devices' query.
      await db.ref("userDevices/unreadable-a").set({ oldest_at: T0 - 2_000, tokens: "not a map" });
      await db.ref("userDevices/unreadable-b").set({ oldest_at: T0 - 1_000, tokens: { x: { token: 7, updated_at: "then" } } });
      const warned: LogFields[] = [];
      const log: Log = {
        ...silentLog,
        warn: (_message, fields) => {
          warned.push(fields ?? {});
        },
      };
      const sweep = (now: number) => sweepDevices({ store, now, batchSize: 2, maxBatches: 40, log, addLandsWithinMs: ADD_LANDS_WITHIN_MS });
      const skipped = () => warned.splice(0).map((fields) => [fields.change, fields.userKey, fields.error]);
      const unreadable = [
        ["stale devices", "unreadable-a", "StoreDataError"],
        ["stale devices", "unreadable-b", "StoreDataError"],
      ];

      expect(await sweep(NOW)).toMatchObject({ staleDevices: 1 });
      expect(skipped()).toEqual(unreadable);
      expect((await store.readDevices(userKey("ann")))?.tokens).toBeUndefined();

      expect(await sweep(NOW + 15 * 60_000)).toMatchObject({ staleDevices: 0 });
      expect(skipped()).toEqual(unreadable);
    });
  });
});
