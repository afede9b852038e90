import { ConnectionErasure } from "../../src/connections/connection-erasure";
import { DeviceRegistry } from "../../src/connections/device-registry";
import { tokenHash } from "../../src/connections/device-rules";
import { beginErasure } from "../../src/session/erasure/erasure-rules";
import { ErasureService, ID_TOKEN_LIFETIME_MS } from "../../src/session/erasure/erasure-service";
import { admitSession, userKey, type UsagePolicy } from "../../src/session/ledger/limits";
import { silentLog } from "../../src/log/log";
import type { DeviceStore } from "../../src/store/connection-store";
import { MemoryConnectionStore } from "../../src/store/memory-connection-store";
import { MemoryStore } from "../../src/store/memory-store";
import type { CreateKey, SessionState } from "../../src/store/records";
import type { ErasureRule } from "../../src/store/conversation-records";
import { StoreDataError } from "../../src/store/errors";
import type { StoredCreateKey, UsageRule } from "../../src/store/session-store";
import { ADD_LANDS_WITHIN_MS } from "../support/connection-fixtures";
import { newSession } from "../support/fixtures";

const T = Date.parse("2026-04-01T09:00:00Z");
const POLICY: UsagePolicy = { messagesPerMinute: 20, maxActiveSessions: 5, idleTtlMs: 3_600_000, tokensPerDay: 0 };

/** `store`, whose first usage write is held until `release`: `reached` resolves when it is asked for. */
function holdingFirstUsageWrite(store: MemoryStore): { store: MemoryStore; reached: Promise<void>; release: () => void } {
  let release!: () => void;
  let reach!: () => void;
  const released = new Promise<void>((resolve) => { release = resolve; });
  const reached = new Promise<void>((resolve) => { reach = resolve; });
  let writes = 0;
  const held = new Proxy(store, {
    get(target, name, receiver) {
      if (name === "updateUsage") {
        return async <O>(key: string, rule: UsageRule<O>) => {
          writes += 1;
          if (writes === 1) {
            reach();
            await released;
          }
          return target.updateUsage(key, rule);
        };
      }
      const value = Reflect.get(target, name, receiver) as unknown;
      return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
  return { store: held, reached, release };
}

describe("two erasure requests of one user at once", () => {
  it("leave the user unmarked once the sweep has finished, though the earlier one's mark landed last", async () => {
    const store = new MemoryStore();
    let now = T;
    const options = { clock: () => now, log: silentLog, messagesPerMinute: 20, takeOverAfterMs: 60_000, finalPassAfterMs: 51_000, batchSize: 50 };
    const slow = holdingFirstUsageWrite(store);
    const a = new ErasureService({ ...options, store: slow.store });
    const b = new ErasureService({ ...options, store });
    const user = "erased-twice";
    await store.updateUsage(userKey(user), admitSession("s1", T - 1_000, POLICY));

    // A (say DELETE /me) has recorded its request; its mark is slow to land.
    const first = a.erase(user, T + 30_000);
    await slow.reached;
    // B (the Auth trigger, or a retry) runs its whole first pass meanwhile, and clears its mark.
    now = T + 5;
    expect((await b.erase(user, now + 30_000)).complete).toBe(true);
    // A's mark lands after A's time ran out: it answers 202 and leaves the rest to the sweep.
    now = T + 31_000;
    slow.release();
    expect((await first).complete).toBe(false);
    expect((await store.readUsage(userKey(user)))?.erasing).toBe(T);

    // The sweep, once everything is due: the record goes, and the mark with it.
    now = T + 3_600_000;
    await b.finishDue(now);
    expect((await store.findDueErasures(Number.MAX_SAFE_INTEGER, undefined, 10)).keys).toEqual([]);
    expect((await store.readUsage(userKey(user)))?.erasing).toBeUndefined();
    expect(await store.updateUsage(userKey(user), admitSession("s2", now, POLICY))).toEqual({ admitted: true });
  });
});

/** `store` whose device and token-owner writes wait until `release`: `reached` resolves once a registration's first write (its claim) is asked for. */
function holdingDeviceWrites(store: DeviceStore): { store: DeviceStore; reached: Promise<void>; release: () => void } {
  let release!: () => void;
  let reach!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  const reached = new Promise<void>((resolve) => (reach = resolve));
  let asked = 0;
  const held = new Proxy(store, {
    get(target, name, receiver) {
      const value: unknown = Reflect.get(target, name, receiver);
      if (typeof value !== "function") return value;
      const bound = (value as (...args: unknown[]) => unknown).bind(target);
      if (name !== "updateDevices" && name !== "updateTokenOwner") return bound;
      return async (...args: unknown[]) => {
        asked += 1;
        if (asked === 1) reach();
        await released;
        return bound(...args);
      };
    },
  });
  return { store: held, reached, release };
}

describe("a device registration racing the erasure of its user", () => {
  it("is erased by the second pass when it began before the request and landed after the first", async () => {
    const connectionStore = new MemoryConnectionStore();
    let now = T;
    const erasure = new ErasureService({
      store: new MemoryStore(),
      clock: () => now,
      log: silentLog,
      messagesPerMinute: 20,
      takeOverAfterMs: 60_000,
      finalPassAfterMs: 51_000,
      batchSize: 50,
      connections: new ConnectionErasure({ store: connectionStore, batchSize: 50, clock: () => now, addLandsWithinMs: ADD_LANDS_WITHIN_MS }),
    });
    const user = "erased-while-registering";
    // The registration read its clock before the request, and its writes are slow to land.
    const slow = holdingDeviceWrites(connectionStore);
    const registering = new DeviceRegistry({ store: slow.store, clock: () => T - 10, addLandsWithinMs: ADD_LANDS_WITHIN_MS }).register(user, "racing-token", undefined);
    await slow.reached;
    const first = await erasure.erase(user);
    expect(first.complete).toBe(true);
    slow.release();
    await registering;
    expect(await connectionStore.readDevices(userKey(user))).not.toBeNull();
    expect(await connectionStore.readTokenOwner(tokenHash("racing-token"))).not.toBeNull();

    now = first.finalPassAt + 1;
    expect(await erasure.finishDue(now)).toBe(1);
    expect(await connectionStore.readDevices(userKey(user))).toBeNull();
    expect(await connectionStore.readTokenOwner(tokenHash("racing-token"))).toBeNull();
  });
});


describe("the erasure of a user deleted from Firebase Auth", () => {
  const FINAL_PASS_AFTER_MS = 51_000;
  function erasureAt(clock: () => number) {
    const store = new MemoryStore();
    const connectionStore = new MemoryConnectionStore();
    const erasure = new ErasureService({
      store,
      clock,
      log: silentLog,
      messagesPerMinute: 20,
      takeOverAfterMs: 60_000,
      finalPassAfterMs: FINAL_PASS_AFTER_MS,
      batchSize: 50,
      connections: new ConnectionErasure({ store: connectionStore, batchSize: 50, clock, addLandsWithinMs: ADD_LANDS_WITHIN_MS }),
    });
    return { store, connectionStore, erasure };
  }

  it("keeps them refused until a second pass after their last ID token expired, which erases what that token wrote meanwhile", async () => {
    let now = T + 2_000;
    const { store, connectionStore, erasure } = erasureAt(() => now);
    const user = "deleted-from-auth";
    await store.updateUsage(userKey(user), admitSession("s1", T - 60_000, POLICY));

    // Deleted at T; the event is handled two seconds later.
    const first = await erasure.eraseDeletedUser(user, T);
    expect(first).toMatchObject({ complete: true, finalPassAt: T + ID_TOKEN_LIFETIME_MS + FINAL_PASS_AFTER_MS });

    // Half an hour on, the app still open sends the ID token issued before the deletion: a new
    // session is refused, a device registration (which reads no mark) is stored.
    now = T + 30 * 60_000;
    expect(await store.updateUsage(userKey(user), admitSession("s2", now, POLICY))).toMatchObject({ admitted: false, erasing: true });
    await new DeviceRegistry({ store: connectionStore, clock: () => now, addLandsWithinMs: ADD_LANDS_WITHIN_MS }).register(user, "token-after-deletion", undefined);
    expect(await erasure.finishDue(now)).toBe(0);

    // Once the token has expired and the second pass is due, the sweep runs it: the device goes, then the mark.
    now = first.finalPassAt;
    expect(await erasure.finishDue(now)).toBe(1);
    expect(await connectionStore.readDevices(userKey(user))).toBeNull();
    expect(await connectionStore.readTokenOwner(tokenHash("token-after-deletion"))).toBeNull();
    expect((await store.findDueErasures(Number.MAX_SAFE_INTEGER, undefined, 10)).keys).toEqual([]);
    expect((await store.readUsage(userKey(user)))?.erasing).toBeUndefined();
  });

  it("takes the hour from the deletion, not from a late retry of its event, and keeps a DELETE /me of theirs meanwhile from moving it back", async () => {
    let now = T + 10 * 60_000;
    const { store, erasure } = erasureAt(() => now);
    const user = "deleted-then-erased-again";
    expect((await erasure.eraseDeletedUser(user, T)).finalPassAt).toBe(T + ID_TOKEN_LIFETIME_MS + FINAL_PASS_AFTER_MS);
    // Their still valid token asks DELETE /me: the mark stays, the second pass as late as before.
    now = T + 20 * 60_000;
    expect((await erasure.erase(user)).finalPassAt).toBe(T + ID_TOKEN_LIFETIME_MS + FINAL_PASS_AFTER_MS);
    expect((await store.readUsage(userKey(user)))?.erasing).toBe(T + ID_TOKEN_LIFETIME_MS);
    // An event retried after the tokens expired erases up to then, and clears the mark after its first pass.
    now = T + 2 * ID_TOKEN_LIFETIME_MS;
    expect((await erasure.eraseDeletedUser(user, T)).finalPassAt).toBe(now + FINAL_PASS_AFTER_MS);
    expect((await store.readUsage(userKey(user)))?.erasing).toBeUndefined();
  });

  it("leaves DELETE /me as it was: the mark cleared after the first pass, the second one a lease later", async () => {
    const now = T;
    const { store, erasure } = erasureAt(() => now);
    const user = "erases-own-data";
    expect(await erasure.erase(user)).toMatchObject({ complete: true, finalPassAt: T + FINAL_PASS_AFTER_MS });
    expect((await store.readUsage(userKey(user)))?.erasing).toBeUndefined();
  });
});

/** `store`, whose reads of the create keys of the users in `failing` fail: their erasure's pass fails at that step. */
class FailingCreateKeys extends MemoryStore {
  readonly failing = new Set<string>();
  readonly failed: string[] = [];
  calls = 0;

  override async readUserCreateKeys(key: string, after: string | undefined, limit: number): Promise<StoredCreateKey[]> {
    this.calls += 1;
    if (this.failing.has(key)) {
      this.failed.push(key);
      throw new Error("read create keys (refused)");
    }
    return super.readUserCreateKeys(key, after, limit);
  }
}

/** A store counting its deletions of sessions: pages of an erasure (the second pass's decided per session). */
class CountingDeletes extends MemoryStore {
  pages = 0;

  override async deleteUserSessions(userId: string, sessionIds: readonly string[]): Promise<void> {
    this.pages += 1;
    return super.deleteUserSessions(userId, sessionIds);
  }

  override async deleteUserSessionsUpTo(userId: string, sessionIds: readonly string[], cutoff: number): Promise<ReadonlySet<string>> {
    this.pages += 1;
    return super.deleteUserSessionsUpTo(userId, sessionIds, cutoff);
  }
}

/** A connection store counting its deletions of connections (not those of none, a scan's empty page): pages of an erasure. */
class CountingConnectionDeletes extends MemoryConnectionStore {
  pages = 0;

  override async deleteConnections(connections: Parameters<MemoryConnectionStore["deleteConnections"]>[0]): Promise<void> {
    if (connections.length > 0) this.pages += 1;
    return super.deleteConnections(connections);
  }
}

describe("the sweep's erasures", () => {
  const TAKE_OVER_AFTER_MS = 60_000;

  it("finishes the erasures due behind 20 whose second pass keeps failing, trying each of those once a run, and those when next due", async () => {
    const store = new FailingCreateKeys();
    let now = T;
    const erasure = new ErasureService({ store, clock: () => now, log: silentLog, messagesPerMinute: 20, takeOverAfterMs: TAKE_OVER_AFTER_MS, finalPassAfterMs: 51_000, batchSize: 50 });
    const users = Array.from({ length: 25 }, (_, i) => `erased-${i}`);
    for (const user of users) {
      now += 1;
      expect((await erasure.erase(user)).complete).toBe(true);
    }
    // The 20 erased first, due first: the head of every query for due erasures.
    const stuck = users.slice(0, 20).map(userKey);
    for (const key of stuck) store.failing.add(key);
    now = T + 3_600_000;

    expect(await erasure.finishDue(now, { maxBatches: 40 })).toBe(5);
    expect(store.failed.sort()).toEqual([...stuck].sort());
    expect((await store.findDueErasures(now, undefined, 100)).keys).toEqual([]);

    // Due again once their take-over lapses: then the sweep tries them again.
    store.failing.clear();
    expect(await erasure.finishDue(now + TAKE_OVER_AFTER_MS, { maxBatches: 40 })).toBe(20);
    expect((await store.findDueErasures(Number.MAX_SAFE_INTEGER, undefined, 100)).keys).toEqual([]);
  });

  it("finishes the erasures due behind 20 whose records it cannot read, trying each of those once a run", async () => {
    /** A store that cannot read the erasure records of `unreadable` (half restored from a backup, say): their takeover fails every time. */
    class UnreadableErasures extends MemoryStore {
      readonly unreadable = new Set<string>();
      readonly tried: string[] = [];
      override async updateErasure<O>(key: string, rule: ErasureRule<O>): Promise<O> {
        if (!this.unreadable.has(key)) return super.updateErasure(key, rule);
        this.tried.push(key);
        throw new StoreDataError(`userErasures/${key}`, "invalid");
      }
    }
    const store = new UnreadableErasures();
    let now = T;
    const erasure = new ErasureService({ store, clock: () => now, log: silentLog, messagesPerMinute: 20, takeOverAfterMs: TAKE_OVER_AFTER_MS, finalPassAfterMs: 51_000, batchSize: 50 });
    const users = Array.from({ length: 25 }, (_, i) => `unreadable-${i}`);
    for (const user of users) {
      now += 1;
      expect((await erasure.erase(user)).complete).toBe(true);
    }
    // The 20 erased first, due first: a whole page at the head of every query for due erasures, due for good.
    const unreadable = users.slice(0, 20).map(userKey);
    for (const key of unreadable) store.unreadable.add(key);

    for (const run of [1, 2]) {
      now = T + run * 3_600_000;
      expect(await erasure.finishDue(now, { maxBatches: 40 })).toBe(run === 1 ? 5 : 0);
      expect(store.tried.splice(0).sort()).toEqual([...unreadable].sort());
    }
    expect((await store.findDueErasures(now, undefined, 100)).keys.length).toBe(20);
  });

  it("stops a pass page by page once its time is up, and goes on with it at the next run though its takeover lasts longer", async () => {
    const HOUR = 3_600_000;
    const store = new CountingDeletes();
    const connectionStore = new CountingConnectionDeletes();
    let now = T;
    const erasure = new ErasureService({
      store,
      clock: () => now,
      log: silentLog,
      messagesPerMinute: 20,
      takeOverAfterMs: HOUR,
      finalPassAfterMs: 51_000,
      batchSize: 10,
      connections: new ConnectionErasure({ store: connectionStore, batchSize: 10, clock: () => now, addLandsWithinMs: ADD_LANDS_WITHIN_MS }),
    });
    const key = userKey("many");
    // A second pass due over 25 recorded sessions and 15 recorded connections: 3 pages, then 2.
    const sessions = Object.fromEntries(Array.from({ length: 25 }, (_, i) => [`s${String(i).padStart(2, "0")}`, true as const]));
    const connections = Object.fromEntries(Array.from({ length: 15 }, (_, i) => [`c${String(i).padStart(2, "0")}`, "other"]));
    await store.updateErasure(key, () => ({ outcome: undefined, next: { user_id: "many", requested_at: T, phase: "settling", due_at: T + 1, sessions, connections } }));

    // The step's time is up after 4 pages: the sessions' 3, and the connections' first.
    now = T + 15 * 60_000;
    const pages = () => store.pages + connectionStore.pages;
    expect(await erasure.finishDue(now, { maxBatches: 40, stopped: () => pages() >= 4 })).toBe(0);
    const paused = await store.updateErasure(key, (record) => ({ outcome: record }));
    expect({ due: paused?.due_at, sessions: Object.keys(paused?.sessions ?? {}).length, connections: Object.keys(paused?.connections ?? {}).length }).toEqual({ due: now, sessions: 0, connections: 5 });

    // The next run, 15 minutes on (the takeover would have held it an hour): only the last page is left.
    now += 15 * 60_000;
    expect(await erasure.finishDue(now, { maxBatches: 40 })).toBe(1);
    expect({ sessionPages: store.pages, connectionPages: connectionStore.pages, left: (await store.findDueErasures(Number.MAX_SAFE_INTEGER, undefined, 10)).keys }).toEqual({ sessionPages: 3, connectionPages: 2, left: [] });
  });

  it("starts no pass once its time is up: the erasures it did not reach stay due", async () => {
    const store = new FailingCreateKeys();
    let now = T;
    const erasure = new ErasureService({ store, clock: () => now, log: silentLog, messagesPerMinute: 20, takeOverAfterMs: TAKE_OVER_AFTER_MS, finalPassAfterMs: 51_000, batchSize: 50 });
    for (const user of ["first", "second", "third"]) expect((await erasure.erase(user)).complete).toBe(true);
    now = T + 3_600_000;
    const before = store.calls;

    // Up once a pass has run (it reads the user's create keys).
    expect(await erasure.finishDue(now, { maxBatches: 40, stopped: () => store.calls > before })).toBe(1);
    expect((await store.findDueErasures(now, undefined, 100)).keys).toHaveLength(2);
  });
});

/**
 * A store on which a repeat takes `racing`'s create key over (its own claim `repeat`) while the
 * erasure reads that key's session, i.e. between the erasure's read of the key and its delete.
 */
class TakenOverMeanwhile extends MemoryStore {
  racing: { readonly hash: string; readonly sessionId: string; readonly repeat: CreateKey } | undefined;
  pages = 0;

  override async readSessionState(sessionId: string): Promise<SessionState | null> {
    const racing = this.racing;
    if (racing?.sessionId === sessionId) {
      this.racing = undefined;
      await this.claimCreateKey(racing.hash, racing.repeat);
    }
    return super.readSessionState(sessionId);
  }

  override async readUserCreateKeys(userKey: string, after: string | undefined, limit: number): Promise<StoredCreateKey[]> {
    this.pages += 1;
    return super.readUserCreateKeys(userKey, after, limit);
  }
}

describe("the second pass and the user's create keys refused for the erasure that no session came of", () => {
  /** A lease and a database deadline: no request claimed before it, nor taking over before it, still runs. */
  const FINAL_PASS_AFTER_MS = 65_000;
  const user = "refused-keyed-creates";
  const claim = (session: string, at: number, more: Partial<CreateKey> = {}): CreateKey => ({ fingerprint: "f", session_id: session, created_at: at, user_key: userKey(user), ...more });

  function erasureOn(store: MemoryStore, clock: () => number, batchSize = 50) {
    return new ErasureService({ store, clock, log: silentLog, messagesPerMinute: 20, takeOverAfterMs: 60_000, finalPassAfterMs: FINAL_PASS_AFTER_MS, batchSize });
  }

  /** `key` claimed under `hash` (taking over what is there), then marked refused for the erasure as that claim or take-over left it. */
  async function refused(store: MemoryStore, hash: string, key: CreateKey): Promise<void> {
    expect(await store.refuseCreateKey(hash, await store.claimCreateKey(hash, key))).toBe(true);
  }

  it("deletes those whose last claim or take-over was refused for the erasure, a lease and a database deadline ago; keeps one unrefused, taken over since, or meanwhile, or by an older version", async () => {
    const store = new TakenOverMeanwhile();
    let now = T;
    const erasure = erasureOn(store, () => now);
    expect((await erasure.erase(user)).complete).toBe(true);
    const passAt = T + FINAL_PASS_AFTER_MS + 60_000;
    // Claimed after the cutoff, refused; its repeat took it over and was refused too.
    await store.claimCreateKey("h-refused-twice", claim("s-refused-twice", T + 1));
    await refused(store, "h-refused-twice", claim("s-repeat-1", T + 2));
    // Claimed after the first pass and admitted, its session's write failed (its fate unknown): the retry needs it.
    await store.claimCreateKey("h-unknown", claim("s-unknown", T + 1));
    // Taken over by a repeat that was admitted, its write failed likewise.
    await store.claimCreateKey("h-taken-unknown", claim("s-taken-unknown", T + 1));
    await store.claimCreateKey("h-taken-unknown", claim("s-repeat-4", T + 2));
    // Refused, then taken over by a repeat not refused: the mark names the earlier take-over.
    await store.claimCreateKey("h-taken-after", claim("s-taken-after", T + 1));
    await refused(store, "h-taken-after", claim("s-repeat-5", T + 2));
    await store.claimCreateKey("h-taken-after", claim("s-repeat-6", T + 3));
    // Taken over and refused a moment before the pass: a request of it may still be running.
    await store.claimCreateKey("h-taken-lately", claim("s-taken-lately", T + 1));
    await refused(store, "h-taken-lately", claim("s-repeat-2", passAt - 1_000));
    // Taken over and refused long ago, and taken over again while the pass reads its session: the record the pass read is no longer there.
    await store.claimCreateKey("h-taken-meanwhile", claim("s-taken-meanwhile", T + 1));
    await refused(store, "h-taken-meanwhile", claim("s-repeat-0", T + 2));
    store.racing = { hash: "h-taken-meanwhile", sessionId: "s-taken-meanwhile", repeat: claim("s-repeat-3", passAt) };
    // Marked, then taken over by an older version, which wrote no time.
    await store.claimCreateKey("h-older", claim("s-older", T + 1, { adopted: true, refused_at: T + 1 }));

    now = passAt;
    expect(await erasure.finishDue(passAt)).toBe(1);
    expect((await store.readUserCreateKeys(userKey(user), undefined, 10)).map(({ hash }) => hash)).toEqual(["h-older", "h-taken-after", "h-taken-lately", "h-taken-meanwhile", "h-taken-unknown", "h-unknown"]);
  });

  it("stops among the keys once its time is up, and the next run deletes the rest", async () => {
    const store = new TakenOverMeanwhile();
    let now = T;
    const erasure = erasureOn(store, () => now, 2);
    expect((await erasure.erase(user)).complete).toBe(true);
    // The first pass's look through the keys (none yet) is not the second's.
    store.pages = 0;
    for (let i = 0; i < 5; i += 1) {
      await store.claimCreateKey(`h${i}`, claim(`s${i}`, T + 1));
      await refused(store, `h${i}`, claim(`s-repeat-${i}`, T + 2));
    }

    now = T + FINAL_PASS_AFTER_MS + 60_000;
    // Up after the first page of keys: 2 deleted, the erasure due again.
    expect(await erasure.finishDue(now, { maxBatches: 40, stopped: () => store.pages >= 1 })).toBe(0);
    expect((await store.readUserCreateKeys(userKey(user), undefined, 10)).map(({ hash }) => hash)).toEqual(["h2", "h3", "h4"]);
    expect((await store.findDueErasures(now, undefined, 10)).keys).toEqual([userKey(user)]);

    now += 60_000;
    expect(await erasure.finishDue(now)).toBe(1);
    expect(await store.readUserCreateKeys(userKey(user), undefined, 10)).toEqual([]);
  });
});

/** A store on which a repeat takes `racing`'s create key over (its own claim `repeat`) just before the erasure deletes that key, as it read it. */
class TakenOverBeforeDelete extends MemoryStore {
  racing: { readonly hash: string; readonly repeat: CreateKey } | undefined;

  override async deleteUnchangedCreateKey(hash: string, read: CreateKey): Promise<boolean> {
    const racing = this.racing;
    if (racing?.hash === hash) {
      this.racing = undefined;
      await this.claimCreateKey(hash, racing.repeat);
    }
    return super.deleteUnchangedCreateKey(hash, read);
  }
}

describe("both passes and the user's create keys first claimed before the cutoff", () => {
  const FINAL_PASS_AFTER_MS = 65_000;
  const user = "keyed-creates-across-the-cutoff";
  const claim = (session: string, at: number): CreateKey => ({ fingerprint: "f", session_id: session, created_at: at, user_key: userKey(user) });

  it("delete those last claimed or taken over up to it; keep one a repeat took over after it, before the first pass read it or between that read and its delete, until the second pass finds it refused with no session", async () => {
    const store = new TakenOverBeforeDelete();
    let now = T;
    const erasure = new ErasureService({ store, clock: () => now, log: silentLog, messagesPerMinute: 20, takeOverAfterMs: 60_000, finalPassAfterMs: FINAL_PASS_AFTER_MS, batchSize: 2 });
    const keys = async () => (await store.readUserCreateKeys(userKey(user), undefined, 10)).map(({ hash }) => hash);
    // Claimed before the cutoff (T), each by a create whose write failed (503): one taken over before the cutoff too.
    await store.claimCreateKey("h-before", claim("s-before", T - 3_000));
    await store.claimCreateKey("h-taken-before", claim("s-taken-before", T - 3_000));
    await store.claimCreateKey("h-taken-before", claim("s-repeat-0", T - 1_000));
    // Taken over after the cutoff, while the user is marked: that repeat, admitted once the mark is cleared, created its session.
    await store.claimCreateKey("h-created", claim("s-created", T - 3_000));
    await store.claimCreateKey("h-created", claim("s-repeat-1", T + 1));
    await store.createSession(newSession({ user_id: user, created_at: T + 2 }, "s-created"));
    // Taken over after the cutoff by a repeat refused for the erasure: it marked the key.
    await store.claimCreateKey("h-refused", claim("s-refused", T - 3_000));
    expect(await store.refuseCreateKey("h-refused", await store.claimCreateKey("h-refused", claim("s-repeat-2", T + 1)))).toBe(true);
    // Taken over after the cutoff between the first pass's read of the key and its delete: that repeat's write failed (503).
    await store.claimCreateKey("h-taken-meanwhile", claim("s-taken-meanwhile", T - 3_000));
    store.racing = { hash: "h-taken-meanwhile", repeat: claim("s-repeat-3", T + 3) };

    const first = await erasure.erase(user);
    expect(first.complete).toBe(true);
    expect(await keys()).toEqual(["h-created", "h-refused", "h-taken-meanwhile"]);

    now = first.finalPassAt + 60_000;
    expect(await erasure.finishDue(now)).toBe(1);
    // The session the user keeps, with its key; the key whose create's fate is unknown, for its retry.
    expect(await keys()).toEqual(["h-created", "h-taken-meanwhile"]);
    expect(await store.readSessionState("s-created")).not.toBeNull();
  });
});

describe("a request's first pass that ran out of time", () => {
  /** `store`, whose first read of a user's index waits until `release`: `reached` resolves once it is asked for. */
  function holdingFirstScan(store: MemoryStore): { store: MemoryStore; reached: Promise<void>; release: () => void } {
    let release!: () => void;
    let reach!: () => void;
    const released = new Promise<void>((resolve) => { release = resolve; });
    const reached = new Promise<void>((resolve) => { reach = resolve; });
    let scans = 0;
    const held = new Proxy(store, {
      get(target, name, receiver) {
        if (name === "scanConversationIndex") {
          return async (...args: Parameters<MemoryStore["scanConversationIndex"]>) => {
            scans += 1;
            if (scans === 1) {
              reach();
              await released;
            }
            return target.scanConversationIndex(...args);
          };
        }
        const value = Reflect.get(target, name, receiver) as unknown;
        return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
      },
    });
    return { store: held, reached, release };
  }

  it("is the sweep's at its next run once the request has stopped, and not while the request still runs it", async () => {
    const store = new MemoryStore();
    let now = T;
    const options = { clock: () => now, log: silentLog, messagesPerMinute: 20, takeOverAfterMs: 60_000, finalPassAfterMs: 51_000, batchSize: 1 };
    const held = holdingFirstScan(store);
    const request = new ErasureService({ ...options, store: held.store });
    const sweep = new ErasureService({ ...options, store });
    const user = "out-of-time";
    const key = userKey(user);
    for (const id of ["s1", "s2"]) {
      await store.createSession(newSession({ user_id: user, created_at: T - 1_000 }, id));
      await store.updateUsage(key, admitSession(id, T - 1_000, POLICY));
    }

    // The request's pass is at its first page when its time (30 s) runs out; a run of the sweep comes meanwhile.
    const erasing = request.erase(user, T + 30_000);
    await held.reached;
    now = T + 31_000;
    expect({ finished: await sweep.finishDue(now), due: (await store.findDueErasures(now, undefined, 10)).keys, s1: await store.readSessionState("s1") === null }).toEqual({ finished: 0, due: [], s1: false });

    // The request deletes its page, starts no other, and answers: the pass is due at once.
    held.release();
    expect(await erasing).toMatchObject({ complete: false, sessions: 1 });
    expect((await store.findDueErasures(now, undefined, 10)).keys).toEqual([key]);
    expect((await store.readUsage(key))?.erasing).toBe(T);

    // The next run, within the function's timeout of the request's start, takes it over and finishes it: the user is served again.
    now = T + 45_000;
    expect(await sweep.finishDue(now)).toBe(0);
    expect({ s2: await store.readSessionState("s2"), erasing: (await store.readUsage(key))?.erasing, admitted: await store.updateUsage(key, admitSession("s3", now, POLICY)) }).toEqual({
      s2: null,
      erasing: undefined,
      admitted: { admitted: true },
    });
  });

  it("leaves the record of a request that began the erasure again meanwhile to that request", async () => {
    const store = new MemoryStore();
    let now = T;
    const options = { clock: () => now, log: silentLog, messagesPerMinute: 20, takeOverAfterMs: 60_000, finalPassAfterMs: 51_000, batchSize: 1 };
    const held = holdingFirstScan(store);
    const first = new ErasureService({ ...options, store: held.store });
    const user = "asked-twice";
    await store.createSession(newSession({ user_id: user, created_at: T - 1_000 }, "s1"));
    const erasing = first.erase(user, T + 30_000);
    await held.reached;
    // A second request (another tab) begins the erasure again, and is still running its pass when the first one's time runs out.
    now = T + 31_000;
    await store.updateErasure(userKey(user), beginErasure(user, now, 60_000));
    held.release();
    expect((await erasing).complete).toBe(false);
    expect(await store.updateErasure(userKey(user), (record) => ({ outcome: record?.due_at }))).toBe(now + 60_000);
  });
});

describe("the second pass and a session created again under an id the first pass erased", () => {
  it("keeps the session created after the cutoff, and its count; deletes again one created up to the cutoff, and forgets it", async () => {
    const store = new MemoryStore();
    let now = T;
    const erasure = new ErasureService({ store, clock: () => now, log: silentLog, messagesPerMinute: 20, takeOverAfterMs: 60_000, finalPassAfterMs: 51_000, batchSize: 50 });
    const user = "created-again";
    const key = userKey(user);
    for (const id of ["s-again", "s-late"]) {
      await store.createSession(newSession({ user_id: user, created_at: T - 1_000 }, id));
      await store.updateUsage(key, admitSession(id, T - 1_000, POLICY));
    }
    const first = await erasure.erase(user);
    expect(first).toMatchObject({ complete: true, sessions: 2 });
    expect(await store.updateErasure(key, (record) => ({ outcome: Object.keys(record?.sessions ?? {}).sort() }))).toEqual(["s-again", "s-late"]);

    // Under the first id, a keyed create's retry (its key taken over after the cutoff) creates its session again, counted anew;
    // under the second, a create from before the cutoff whose write lands late.
    now = T + 2_000;
    await store.createSession(newSession({ user_id: user, created_at: now }, "s-again"));
    await store.updateUsage(key, admitSession("s-again", now, POLICY));
    await store.createSession(newSession({ user_id: user, created_at: T - 500 }, "s-late"));
    await store.updateUsage(key, admitSession("s-late", T - 500, POLICY));

    now = first.finalPassAt + 1;
    expect(await erasure.finishDue(now)).toBe(1);
    expect({
      again: await store.readSessionState("s-again") !== null,
      late: await store.readSessionState("s-late"),
      counted: Object.keys((await store.readUsage(key))?.sessions ?? {}),
      listed: (await store.listConversations(user, 5)).map((listed) => listed.sessionId),
    }).toEqual({ again: true, late: null, counted: ["s-again"], listed: ["s-again"] });
  });

  it("keeps the count of a keyed create's retry admitted before it and written after it: the user's limit holds with that session", async () => {
    const policy: UsagePolicy = { ...POLICY, maxActiveSessions: 2 };
    const store = new MemoryStore();
    let now = T;
    const erasure = new ErasureService({ store, clock: () => now, log: silentLog, messagesPerMinute: 20, takeOverAfterMs: 60_000, finalPassAfterMs: 51_000, batchSize: 50 });
    const user = "counted-then-created";
    const key = userKey(user);
    // A keyed create whose write landed with its answer lost: the first pass records and deletes its session.
    await store.createSession(newSession({ user_id: user, created_at: T - 1_000 }, "s-again"));
    await store.updateUsage(key, admitSession("s-again", T - 1_000, policy));
    const first = await erasure.erase(user);
    expect(first).toMatchObject({ complete: true, sessions: 1 });

    // The retry (its key taken over after the cutoff) is admitted once the mark is cleared: counted;
    // the second pass runs before its write lands (a round trip later), which then lands.
    now = first.finalPassAt - 10;
    expect(await store.updateUsage(key, admitSession("s-again", now, policy))).toEqual({ admitted: true });
    now = first.finalPassAt + 1;
    expect(await erasure.finishDue(now)).toBe(1);
    await store.createSession(newSession({ user_id: user, created_at: first.finalPassAt - 10 }, "s-again"));

    expect(await store.readSessionState("s-again")).not.toBeNull();
    expect(Object.keys((await store.readUsage(key))?.sessions ?? {})).toEqual(["s-again"]);
    // With a limit of 2 active sessions, the user holding s-again gets one more, not two.
    expect(await store.updateUsage(key, admitSession("s-second", now, policy))).toEqual({ admitted: true });
    expect(await store.updateUsage(key, admitSession("s-third", now, policy))).toMatchObject({ admitted: false });
  });

  it("forgets at its next run the count of a session created up to the cutoff that it deleted when its change to the usage record failed", async () => {
    const store = new FailingUsageWrites();
    let now = T;
    const erasure = new ErasureService({ store, clock: () => now, log: silentLog, messagesPerMinute: 20, takeOverAfterMs: 60_000, finalPassAfterMs: 51_000, batchSize: 50 });
    const user = "forgotten-next-run";
    const key = userKey(user);
    await store.createSession(newSession({ user_id: user, created_at: T - 1_000 }, "s-late"));
    const first = await erasure.erase(user);
    // A create from before the cutoff whose write lands late, counted from then.
    await store.createSession(newSession({ user_id: user, created_at: T - 500 }, "s-late"));
    await store.updateUsage(key, admitSession("s-late", T - 500, POLICY));

    // The pass deletes it, and its change to the usage record fails: the pass fails, due again a takeover later.
    store.failNext = true;
    now = first.finalPassAt + 1;
    expect(await erasure.finishDue(now)).toBe(0);
    expect({ late: await store.readSessionState("s-late"), counted: Object.keys((await store.readUsage(key))?.sessions ?? {}) }).toEqual({ late: null, counted: ["s-late"] });
    now += 60_001;
    expect(await erasure.finishDue(now)).toBe(1);
    expect(Object.keys((await store.readUsage(key))?.sessions ?? {})).toEqual([]);
  });
});

/** A store whose next change to a usage record fails once `failNext` is set. */
class FailingUsageWrites extends MemoryStore {
  failNext = false;

  override async updateUsage<O>(key: string, rule: UsageRule<O>): Promise<O> {
    if (this.failNext) {
      this.failNext = false;
      throw new Error("update usage (refused)");
    }
    return super.updateUsage(key, rule);
  }
}
