import { DeviceRegistry } from "../../src/connections/device-registry";
import { claimToken, registerDevice, STALE_AFTER_MS, tokenHash } from "../../src/connections/device-rules";
import { sweepDevices } from "../../src/connections/device-sweep";
import { resolveConfig } from "../../src/config";
import { silentLog, type Log, type LogFields } from "../../src/log/log";
import { createOfflineSender } from "../../src/notify/offline-sender";
import { composeInstance } from "../../src/runtime/instance";
import { userKey } from "../../src/session/ledger/limits";
import type { DeviceRecord } from "../../src/store/connection-records";
import { StoreUnavailableError } from "../../src/store/errors";
import { MemoryConnectionStore } from "../../src/store/memory-connection-store";
import { MemoryStore } from "../../src/store/memory-store";
import type { LedgerRule } from "../../src/store/session-store";
import type { SweepCursor, SweepPage } from "../../src/store/sweep-page";
import { CREATED_AT, newSession } from "../support/fixtures";
import { NO_TOKENS } from "../support/service-env";
import { ADD_LANDS_WITHIN_MS } from "../support/connection-fixtures";

const T = 1_700_000_000_000;

describe("the scheduled sweep of device tokens", () => {
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

  it("takes a token from its former owner when the registration that moved it died before doing so", async () => {
    const connectionStore = new MemoryConnectionStore();
    const instance = composeInstance(resolveConfig({}), { store: new MemoryStore(), connectionStore, identity: NO_TOKENS, log: silentLog, pushSender: createOfflineSender(silentLog) });
    const token = "token-of-the-phone";
    const [ann, ben] = [userKey("ann"), userKey("ben")];
    await new DeviceRegistry({ store: connectionStore, clock: () => T, addLandsWithinMs: ADD_LANDS_WITHIN_MS }).register("ann", token, undefined);
    // Ben's registration: its claim and its add commit, then its instance dies; nobody registers the token again.
    await connectionStore.updateTokenOwner(tokenHash(token), claimToken(ben, T + 1));
    await connectionStore.updateDevices(ben, registerDevice(tokenHash(token), token, T + 1, undefined));

    expect(await instance.maintain(T + 2)).toMatchObject({ releasedTokens: 1, staleDevices: 0, staleTokenOwners: 0 });
    expect(Object.keys((await connectionStore.readDevices(ann))?.tokens ?? {})).toEqual([]);
    expect(Object.keys((await connectionStore.readDevices(ben))?.tokens ?? {})).toEqual([tokenHash(token)]);
    expect(await connectionStore.readTokenOwner(tokenHash(token))).toEqual({ user_key: ben, updated_at: T + 1 });
    expect(await instance.maintain(T + 3)).toMatchObject({ releasedTokens: 0 });
  });

  it("leaves nothing of an erased user when it does a removal from them that was pending before their erasure", async () => {
    const connectionStore = new MemoryConnectionStore();
    let now = T;
    const instance = composeInstance(resolveConfig({}), { store: new MemoryStore(), connectionStore, identity: NO_TOKENS, log: silentLog, pushSender: createOfflineSender(silentLog), clock: () => now });
    const token = "token-of-the-phone";
    const [ann, ben] = [userKey("ann"), userKey("ben")];
    await instance.devices.register("ann", token, true);
    // Ben's registration: its claim and its add commit, then its instance dies before the removal from Ann's devices.
    await connectionStore.updateTokenOwner(tokenHash(token), claimToken(ben, T + 1));
    await connectionStore.updateDevices(ben, registerDevice(tokenHash(token), token, T + 1, undefined));
    // Ann erases her data; the clean-up's next run does the second pass, then the pending removal.
    now = T + 1_000;
    expect(await instance.erasure.erase("ann")).toMatchObject({ complete: true });
    now = T + 900_000;
    expect(await instance.maintain(now)).toMatchObject({ erasuresFinished: 1, releasedTokens: 1 });

    // Nothing of Ann's outlives her erasure: no devices record comes back for the removal.
    expect(await connectionStore.readDevices(ann)).toBeNull();
    expect(await connectionStore.readTokenOwner(tokenHash(token))).toEqual({ user_key: ben, updated_at: T + 1 });
  });

  it("starts none of its batches once the clean-up run's time is up", async () => {
    const RUN_MS = 240_000;
    let clock = CREATED_AT;
    /** Expiry's first query takes the whole run's time (a database deadline, or a huge backlog). */
    class SlowStore extends MemoryStore {
      override async findIdleSessions(cutoff: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage> {
        clock += RUN_MS + 1;
        return super.findIdleSessions(cutoff, after, limit);
      }
    }
    /** Notes when each of the sweep's queries started. */
    class TimedDevices extends MemoryConnectionStore {
      readonly queriedAt: number[] = [];
      override async findPendingReleases(upTo: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage> {
        this.queriedAt.push(clock);
        return super.findPendingReleases(upTo, after, limit);
      }
      override async findStaleDevices(cutoff: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage> {
        this.queriedAt.push(clock);
        return super.findStaleDevices(cutoff, after, limit);
      }
      override async findStaleTokenOwners(cutoff: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage> {
        this.queriedAt.push(clock);
        return super.findStaleTokenOwners(cutoff, after, limit);
      }
    }
    const store = new SlowStore();
    await store.createSession(newSession({ created_at: CREATED_AT }));
    const devices = new TimedDevices();
    await devices.updateDevices("stale-user", registerDevice("old", "token-old", CREATED_AT, undefined));
    await devices.updateTokenOwner("old", claimToken("stale-user", CREATED_AT));
    const instance = composeInstance(resolveConfig({}), { store, connectionStore: devices, identity: NO_TOKENS, log: silentLog, clock: () => clock, pushSender: createOfflineSender(silentLog) });

    const report = await instance.maintain(CREATED_AT + STALE_AFTER_MS + 1, RUN_MS);

    expect(report).toMatchObject({ erasuresFinished: 0, releasedTokens: 0, staleDevices: 0, staleTokenOwners: 0 });
    expect(devices.queriedAt).toEqual([]);
    // The next run, with time, sweeps what this one left.
    expect(await instance.maintain(CREATED_AT + STALE_AFTER_MS + 1)).toMatchObject({ staleDevices: 1, staleTokenOwners: 1 });
  });

  it("counts only the changes that landed, logs each one the database failed on by hash or user key, and goes on with the others", async () => {
    /** The database fails (a deadline) on one user's devices and one owner record, while `failing`. */
    class FailingOn extends MemoryConnectionStore {
      failing = false;
      override async updateDevices<O>(key: string, rule: LedgerRule<DeviceRecord, O>): Promise<O> {
        if (this.failing && key === "failing-user") throw new StoreUnavailableError("update devices");
        return super.updateDevices(key, rule);
      }
      override async deleteStaleTokenOwner(hash: string, cutoff: number): Promise<boolean> {
        if (this.failing && hash === "failing-hash") throw new StoreUnavailableError("delete stale token owner");
        return super.deleteStaleTokenOwner(hash, cutoff);
      }
    }
    const store = new FailingOn();
    for (const user of ["failing-user", "other-user"]) await store.updateDevices(user, registerDevice(`${user}-hash`, `${user}-token`, T, undefined));
    await store.updateTokenOwner("failing-hash", claimToken("failing-user", T));
    await store.updateTokenOwner("other-hash", claimToken("other-user", T + 1));
    const warned: LogFields[] = [];
    const log: Log = {
      ...silentLog,
      warn: (_message, fields) => {
        warned.push(fields ?? {});
      },
    };
    const sweep = () => sweepDevices({ store, now: T + 1 + STALE_AFTER_MS, batchSize: 10, maxBatches: 2, log, addLandsWithinMs: ADD_LANDS_WITHIN_MS });

    store.failing = true;
    expect(await sweep()).toEqual({ releasedTokens: 0, staleDevices: 1, staleTokenOwners: 1 });
    expect(warned).toEqual([
      { change: "stale devices", userKey: "failing-user", error: "StoreUnavailableError", detail: "database unavailable during update devices" },
      { change: "stale token owner", tokenHash: "failing-hash", error: "StoreUnavailableError", detail: "database unavailable during delete stale token owner" },
    ]);
    expect([await store.readTokenOwner("failing-hash"), await store.readTokenOwner("other-hash")]).toEqual([{ user_key: "failing-user", updated_at: T }, null]);

    // The next run, the database answering again, does what this one could not.
    store.failing = false;
    expect(await sweep()).toEqual({ releasedTokens: 0, staleDevices: 1, staleTokenOwners: 1 });
    expect(await store.readTokenOwner("failing-hash")).toBeNull();
  });
});
