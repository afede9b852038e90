import { randomUUID } from "node:crypto";
import { accept, end, requestOnPair } from "../../src/connections/connection-rules";
import { claimToken, confirmReleases, registerDevice, releaseDevice, removeDevices, STALE_AFTER_MS } from "../../src/connections/device-rules";
import { forgetDevices, forgetPairUser } from "../../src/connections/erasure-rules";
import { userKey } from "../../src/session/ledger/limits";
import type { ConnectionAdapter } from "../../src/store/connection-erasure-store";
import { CREATED_AT } from "../support/fixtures";
import { ADD_LANDS_WITHIN_MS, newConnection, refOf, sendAs } from "../support/connection-fixtures";

/**
 * Several handles on one database: for the embedded store, the store itself; for the Realtime
 * Database, separate firebase-admin apps, as separate function instances would be.
 */
export interface ConnectionStoreHarness {
  instance(): ConnectionAdapter;
  /** A handle on a new, empty database, for queries that must not see other tests' data. */
  empty(): ConnectionAdapter;
  /** Resolves once the instances' copies sent so far have landed. */
  settled(): Promise<void>;
  close(): Promise<void>;
}

const T = CREATED_AT;

/** One contract of connections and devices, run against every adapter. */
export function connectionStoreContract(makeHarness: () => Promise<ConnectionStoreHarness>): void {
  let harness: ConnectionStoreHarness;
  let store: ConnectionAdapter;

  beforeAll(async () => {
    harness = await makeHarness();
    store = harness.instance();
  });
  afterAll(async () => harness.close());

  describe("connections", () => {
    it("creates a connection once, reads back its fields and state, and lists it for both users", async () => {
      const connection = newConnection("pending");
      expect(await store.createConnection(connection)).toBe("created");
      expect(await store.createConnection({ ...connection, state: { ...connection.state, message_count: 9 } })).toBe("exists");
      expect(await store.readConnectionMeta(connection.id)).toEqual(connection.meta);
      expect(await store.readConnectionState(connection.id)).toEqual(connection.state);
      // No messages yet, which is not the same answer as no connection (below).
      expect(await store.readConnectionMessages(connection.id, { limit: 10 })).toEqual([]);
      expect(await store.readConnectionMessages(connection.id, { limit: 10, before: 1 })).toEqual([]);
      for (const userKey of [connection.userKeys.a, connection.userKeys.b]) {
        expect(await store.listConnections(userKey, { limit: 10 })).toEqual([{ id: connection.id, lastActivity: T }]);
      }
    });

    it("answers unknown ids with null and not found, their messages included, and creates nothing", async () => {
      const connection = newConnection();
      expect(await store.readConnectionMeta(connection.id)).toBeNull();
      expect(await store.readConnectionState(connection.id)).toBeNull();
      expect(await store.updateConnection(refOf(connection), end("a", T))).toEqual({ found: false });
      expect(await store.appendMessage(refOf(connection), sendAs(connection, "a", "hi", T))).toEqual({ found: false });
      expect(await store.readConnectionMessages(connection.id, { limit: 10 })).toBeNull();
      expect(await store.readConnectionMessages(connection.id, { limit: 10, before: 1 })).toBeNull();
      expect(await store.readConnectionMessage(connection.id, 1)).toBeNull();
      expect(await store.readConnectionState(connection.id)).toBeNull();
    });

    it("applies a change and moves the connection up both users' lists", async () => {
      const older = newConnection("pending");
      const newer = { ...newConnection("pending", { one: older.meta.user_a, two: `carol-${randomUUID().slice(0, 6)}` }) };
      const fresh = harness.empty();
      await fresh.createConnection(older);
      await fresh.createConnection({ ...newer, state: { ...newer.state, last_activity: T + 5 } });
      expect((await fresh.listConnections(older.userKeys.a, { limit: 10 })).map((entry) => entry.id)).toEqual([newer.id, older.id]);

      const accepted = await fresh.updateConnection(refOf(older), accept("b", "a", T + 10));
      expect(accepted).toMatchObject({ found: true, outcome: { kind: "changed" }, state: { status: "accepted", accepted_at: T + 10, last_activity: T + 10 } });
      expect(await fresh.readConnectionState(older.id)).toMatchObject({ status: "accepted", last_activity: T + 10 });
      expect(await fresh.listConnections(older.userKeys.a, { limit: 10 })).toEqual([
        { id: older.id, lastActivity: T + 10 },
        { id: newer.id, lastActivity: T + 5 },
      ]);
      expect(await fresh.listConnections(older.userKeys.b, { limit: 10 })).toEqual([{ id: older.id, lastActivity: T + 10 }]);
    });

    it("pages a user's list newest first, after a cursor, ties broken by id, a page never more than asked", async () => {
      const fresh = harness.empty();
      const user = `dave-${randomUUID().slice(0, 6)}`;
      const made = Array.from({ length: 7 }, (_, index) => newConnection("pending", { one: user, two: `peer-${index}-${randomUUID().slice(0, 4)}` }));
      // Two share a last activity: their order must still be total.
      const times = [T + 1, T + 2, T + 3, T + 3, T + 4, T + 5, T + 6];
      await Promise.all(made.map((connection, index) => fresh.createConnection({ ...connection, state: { ...connection.state, last_activity: times[index]! } })));
      const userKey = made[0]!.meta.user_a === user ? made[0]!.userKeys.a : made[0]!.userKeys.b;
      const all = await fresh.listConnections(userKey, { limit: 100 });
      expect(all.map((entry) => entry.lastActivity)).toEqual([...times].sort((x, y) => y - x));
      const seen: string[] = [];
      let after: { lastActivity: number; id: string } | undefined;
      for (;;) {
        const page = await fresh.listConnections(userKey, { limit: 3, ...(after ? { after } : {}) });
        expect(page.length).toBeLessThanOrEqual(3);
        if (page.length === 0) break;
        seen.push(...page.map((entry) => entry.id));
        const last = page.at(-1)!;
        after = { lastActivity: last.lastActivity, id: last.id };
      }
      expect(seen).toEqual(all.map((entry) => entry.id));
      expect(new Set(seen).size).toBe(7);
    });

    it("removes a connection from one user's list only, harmlessly again", async () => {
      const connection = newConnection();
      await store.createConnection(connection);
      await store.unlistConnection(connection.userKeys.a, connection.id);
      await harness.instance().unlistConnection(connection.userKeys.a, connection.id);
      expect(await store.listConnections(connection.userKeys.a, { limit: 10 })).toEqual([]);
      expect(await store.listConnections(connection.userKeys.b, { limit: 10 })).toEqual([{ id: connection.id, lastActivity: T }]);
      expect(await store.readConnectionState(connection.id)).toEqual(connection.state);
    });

    it("moves a list entry up to a later activity, never back, and never writes back a removed one", async () => {
      const connection = newConnection();
      await store.createConnection(connection);
      await store.relistConnection(connection.userKeys.a, connection.id, T + 50);
      await harness.instance().relistConnection(connection.userKeys.a, connection.id, T + 20);
      expect(await store.listConnections(connection.userKeys.a, { limit: 10 })).toEqual([{ id: connection.id, lastActivity: T + 50 }]);
      expect(await store.listConnections(connection.userKeys.b, { limit: 10 })).toEqual([{ id: connection.id, lastActivity: T }]);
      await store.unlistConnection(connection.userKeys.b, connection.id);
      await store.relistConnection(connection.userKeys.b, connection.id, T + 90);
      expect(await store.listConnections(connection.userKeys.b, { limit: 10 })).toEqual([]);
    });

    it("tells which list holds a connection, fills a missing entry, and never sets one back", async () => {
      const connection = newConnection();
      await store.createConnection(connection);
      expect(await store.readListed(connection)).toEqual({ a: true, b: true });
      expect(await store.listConnection(connection, T)).toBe(false);
      await store.relistConnection(connection.userKeys.a, connection.id, T + 50);
      await store.unlistConnection(connection.userKeys.b, connection.id);
      expect(await harness.instance().readListed(connection)).toEqual({ a: true, b: false });
      expect(await harness.instance().listConnection(connection, T)).toBe(true);
      expect(await store.listConnections(connection.userKeys.a, { limit: 10 })).toEqual([{ id: connection.id, lastActivity: T + 50 }]);
      expect(await store.listConnections(connection.userKeys.b, { limit: 10 })).toEqual([{ id: connection.id, lastActivity: T }]);
      expect(await store.readListed(connection)).toEqual({ a: true, b: true });
    });

    it("keeps one current connection per pair however many requests race, from instances of their own", async () => {
      const users = { a: `erin-${randomUUID().slice(0, 6)}`, b: `frank-${randomUUID().slice(0, 6)}` };
      const pair = `pair-${randomUUID()}`;
      const outcomes = await Promise.all(
        Array.from({ length: 12 }, (_, index) =>
          harness.instance().updatePair(pair, requestOnPair(users, index % 2 === 0 ? "a" : "b", { id: `candidate-${index}`, createdAt: T + index }, new Set())),
        ),
      );
      const created = outcomes.filter((outcome) => outcome.kind === "current" && outcome.created);
      expect(created).toHaveLength(1);
      const ids = new Set(outcomes.map((outcome) => (outcome.kind === "current" ? outcome.current.id : "")));
      expect(ids.size).toBe(1);
    });
  });

  describe("messages", () => {
    it("stores messages under consecutive keys decided by the commit, counts them exactly, and reads pages back", async () => {
      const connection = newConnection();
      await store.createConnection(connection);
      for (let i = 1; i <= 5; i += 1) {
        const result = await store.appendMessage(refOf(connection), sendAs(connection, i % 2 === 0 ? "b" : "a", `text ${i}`, T + i));
        expect(result).toMatchObject({ found: true, outcome: { kind: "stored", position: i }, state: { message_count: i, last_activity: T + i } });
      }
      await harness.settled();
      const all = await store.readConnectionMessages(connection.id, { limit: 10 });
      expect(all?.map((stored) => [stored.position, stored.message.content, stored.message.sender_id === connection.meta.user_a ? "a" : "b"])).toEqual([
        [1, "text 1", "a"],
        [2, "text 2", "b"],
        [3, "text 3", "a"],
        [4, "text 4", "b"],
        [5, "text 5", "a"],
      ]);
      expect((await store.readConnectionMessages(connection.id, { limit: 2 }))?.map((stored) => stored.position)).toEqual([4, 5]);
      expect((await store.readConnectionMessages(connection.id, { limit: 2, before: 4 }))?.map((stored) => stored.position)).toEqual([2, 3]);
      expect((await store.readConnectionMessages(connection.id, { limit: 2, before: 2 }))?.map((stored) => stored.position)).toEqual([1]);
      expect(await store.readConnectionMessages(connection.id, { limit: 2, before: 1 })).toEqual([]);
      expect(await store.readConnectionMessage(connection.id, 3)).toEqual({ sender_id: connection.meta.user_a, content: "text 3", timestamp: T + 3 });
      expect(await store.readConnectionMessage(connection.id, 6)).toBeNull();
      expect((await store.listConnections(connection.userKeys.b, { limit: 5 })).find((entry) => entry.id === connection.id)?.lastActivity).toBe(T + 5);
    });

    it("keeps timestamps in key order whatever the writers' clocks", async () => {
      const connection = newConnection();
      await store.createConnection(connection);
      await store.appendMessage(refOf(connection), sendAs(connection, "a", "late clock", T + 100));
      const second = await store.appendMessage(refOf(connection), sendAs(connection, "b", "early clock", T + 50));
      expect(second).toMatchObject({ outcome: { kind: "stored", position: 2, message: { timestamp: T + 100 } } });
    });

    it("stores nothing when the rule refuses, and answers a repeat of a key with its message's place", async () => {
      const connection = newConnection("pending");
      await store.createConnection(connection);
      expect(await store.appendMessage(refOf(connection), sendAs(connection, "a", "too soon", T))).toMatchObject({ outcome: { kind: "pending" }, state: { message_count: 0 } });
      await store.updateConnection(refOf(connection), accept("b", "a", T + 1));
      expect(await store.appendMessage(refOf(connection), sendAs(connection, "a", "keyed", T + 2, "key-1"))).toMatchObject({ outcome: { kind: "stored", position: 1 } });
      expect(await store.appendMessage(refOf(connection), sendAs(connection, "a", "keyed", T + 3, "key-1"))).toMatchObject({ outcome: { kind: "duplicate", position: 1 }, state: { message_count: 1 } });
      await store.updateConnection(refOf(connection), end("b", T + 4));
      expect(await store.appendMessage(refOf(connection), sendAs(connection, "a", "after the end", T + 5))).toMatchObject({ outcome: { kind: "closed", status: "ended" } });
      await harness.settled();
      expect((await store.readConnectionMessages(connection.id, { limit: 10 }))?.map((stored) => stored.message.content)).toEqual(["keyed"]);
    });

    it("refuses a rule that appends without counting exactly one more, or without its message", async () => {
      const connection = newConnection();
      await store.createConnection(connection);
      await expect(store.appendMessage(refOf(connection), (state) => ({ outcome: 0, next: { ...state, message_count: state.message_count + 2 }, message: { sender_id: "x", content: "x", timestamp: T } }))).rejects.toThrow(/one more message/);
      await expect(store.appendMessage(refOf(connection), (state) => ({ outcome: 0, next: { ...state, message_count: state.message_count + 1 } }))).rejects.toThrow(/the message it stores/);
      expect(await store.readConnectionState(connection.id)).toMatchObject({ message_count: 0 });
    });

    it("loses no message and stores none twice when both participants send at once from several instances", async () => {
      const connection = newConnection();
      await store.createConnection(connection);
      const writers = [harness.instance(), harness.instance(), harness.instance()];
      const results = await Promise.all(
        Array.from({ length: 30 }, (_, index) => writers[index % 3]!.appendMessage(refOf(connection), sendAs(connection, index % 2 === 0 ? "a" : "b", `m${index}`, T + index))),
      );
      const positions = results.map((result) => (result.found && result.outcome.kind === "stored" ? result.outcome.position : 0)).sort((x, y) => x - y);
      expect(positions).toEqual(Array.from({ length: 30 }, (_, index) => index + 1));
      await harness.settled();
      const readers = [harness.instance(), harness.instance()];
      const seen = await Promise.all(readers.map((reader) => reader.readConnectionMessages(connection.id, { limit: 100 })));
      expect(seen[0]!.map((stored) => stored.message.content)).toEqual(seen[1]!.map((stored) => stored.message.content));
      expect(new Set(seen[0]!.map((stored) => stored.message.content)).size).toBe(30);
      expect(await store.readConnectionState(connection.id)).toMatchObject({ message_count: 30 });
    });
  });

  describe("devices", () => {
    it("keeps at most 20 tokens, the oldest dropped, and records the oldest's time", async () => {
      const user = `user-${randomUUID()}`;
      for (let i = 0; i < 22; i += 1) await store.updateDevices(user, registerDevice(`h${String(i).padStart(2, "0")}`, `token-${i}`, T + i, undefined));
      const record = await store.readDevices(user);
      expect(Object.keys(record?.tokens ?? {}).sort()).toEqual(Array.from({ length: 20 }, (_, index) => `h${String(index + 2).padStart(2, "0")}`));
      expect(record?.oldest_at).toBe(T + 2);
      const change = await store.updateDevices(user, removeDevices(["h05", "h06"], T + 30));
      expect(change).toEqual({ count: 18, removed: ["h05", "h06"] });
    });

    it("finds users holding a stale token, and forgets a record's last token entirely", async () => {
      const fresh = harness.empty();
      const stale = `stale-${randomUUID()}`;
      const live = `live-${randomUUID()}`;
      await fresh.updateDevices(stale, registerDevice("old", "token-old", T, undefined));
      await fresh.updateDevices(live, registerDevice("new", "token-new", T + STALE_AFTER_MS, undefined));
      expect((await fresh.findStaleDevices(T + 1, undefined, 10)).keys).toEqual([stale]);
      await fresh.updateDevices(stale, removeDevices([], T + STALE_AFTER_MS + 1));
      expect((await fresh.readDevices(stale))?.tokens).toBeUndefined();
      expect((await fresh.findStaleDevices(T + STALE_AFTER_MS, undefined, 10)).keys).toEqual([live]);
    });

    it("gives a token to the last user who registers it, naming the one before until its removal is confirmed", async () => {
      const fresh = harness.empty();
      expect(await fresh.updateTokenOwner("hash-1", claimToken("user-1", T))).toEqual({ at: T, releases: {} });
      expect(await fresh.updateTokenOwner("hash-1", claimToken("user-1", T + 1))).toEqual({ at: T + 1, releases: {} });
      expect(await fresh.updateTokenOwner("hash-1", claimToken("user-2", T + 2))).toEqual({ at: T + 2, releases: { "user-1": T + 2 } });
      // Unconfirmed, the release is named again by the next claim, whoever makes it.
      expect(await fresh.updateTokenOwner("hash-1", claimToken("user-2", T + 3))).toEqual({ at: T + 3, releases: { "user-1": T + 2 } });
      expect((await fresh.findPendingReleases(T + 1, undefined, 10)).keys).toEqual([]);
      expect((await fresh.findPendingReleases(T + 2, undefined, 10)).keys).toEqual(["hash-1"]);
      await fresh.updateTokenOwner("hash-1", confirmReleases({ "user-1": T + 2 }));
      expect(await fresh.readTokenOwner("hash-1")).toEqual({ user_key: "user-2", updated_at: T + 3 });
      expect((await fresh.findPendingReleases(T + 10, undefined, 10)).keys).toEqual([]);
      expect((await fresh.findStaleTokenOwners(T + 2, undefined, 10)).keys).toEqual([]);
      expect(await fresh.deleteStaleTokenOwner("hash-1", T + 2)).toBe(false);
      expect(await fresh.deleteStaleTokenOwner("hash-1", T + 3)).toBe(true);
      expect(await fresh.deleteStaleTokenOwner("hash-1", T + 3)).toBe(false);
      expect(await fresh.updateTokenOwner("hash-1", claimToken("user-3", T + 4))).toEqual({ at: T + 4, releases: {} });
    });

    it("times a claim over another user's after theirs whatever its clock read, and an owner's older claim at their newer time", async () => {
      const fresh = harness.empty();
      await fresh.updateTokenOwner("hash-3", claimToken("carl", T + 5));
      // Ben's registration read its clock first (time 3), but his claim lands after Carl's: it is timed after it, and Carl is released up to it.
      expect(await fresh.updateTokenOwner("hash-3", claimToken("ben", T + 3))).toEqual({ at: T + 6, releases: { carl: T + 6 } });
      // An older claim of Ben's landing now keeps his time.
      expect(await fresh.updateTokenOwner("hash-3", claimToken("ben", T + 2))).toEqual({ at: T + 6, releases: { carl: T + 6 } });
      expect(await fresh.readTokenOwner("hash-3")).toEqual({ user_key: "ben", updated_at: T + 6, released_from: { carl: T + 6 }, releasing_since: T + 6 });
      // A claim whose clock is further on keeps its own time; Carl, the claimer, is no longer to be released.
      expect(await fresh.updateTokenOwner("hash-3", claimToken("carl", T + 20))).toEqual({ at: T + 20, releases: { ben: T + 20 } });
    });

    it("finds stale token owner records oldest first, ties by hash, a page after the one before", async () => {
      const fresh = harness.empty();
      for (const [hash, at] of [["hash-c", T + 1], ["hash-b", T + 1], ["hash-a", T + 2], ["hash-d", T], ["hash-live", T + 10]] as const) {
        await fresh.updateTokenOwner(hash, claimToken("user-1", at));
      }
      const first = await fresh.findStaleTokenOwners(T + 2, undefined, 2);
      expect(first).toEqual({ keys: ["hash-d", "hash-b"], next: [{ key: "hash-b", value: T + 1 }] });
      // The records a page ended on are passed whether or not they are still there.
      expect(await fresh.findStaleTokenOwners(T + 2, first.next, 2)).toEqual({ keys: ["hash-c", "hash-a"], next: [{ key: "hash-a", value: T + 2 }] });
      expect(await fresh.findStaleTokenOwners(T + 2, [{ key: "hash-a", value: T + 2 }], 2)).toEqual({ keys: [], next: ["end"] });
    });

    it("keeps a release a later claim made again when an earlier one's removal is confirmed", async () => {
      const fresh = harness.empty();
      await fresh.updateTokenOwner("hash-2", claimToken("ann", T));
      expect(await fresh.updateTokenOwner("hash-2", claimToken("ben", T + 1))).toEqual({ at: T + 1, releases: { ann: T + 1 } });
      // Ann takes it back (she is no longer to lose it), then Cal takes it from her: both still to be released.
      expect(await fresh.updateTokenOwner("hash-2", claimToken("ann", T + 2))).toEqual({ at: T + 2, releases: { ben: T + 2 } });
      expect(await fresh.updateTokenOwner("hash-2", claimToken("cal", T + 3))).toEqual({ at: T + 3, releases: { ben: T + 2, ann: T + 3 } });
      await fresh.updateTokenOwner("hash-2", confirmReleases({ ann: T + 1, ben: T + 2 }));
      expect(await fresh.readTokenOwner("hash-2")).toEqual({ user_key: "cal", updated_at: T + 3, released_from: { ann: T + 3 }, releasing_since: T + 3 });
      // A record gone meanwhile is not written back by a confirmation.
      await fresh.updateTokenOwner("hash-gone", confirmReleases({ ann: T }));
      expect(await fresh.readTokenOwner("hash-gone")).toBeNull();
    });

    it("reads which user holds a token as another instance last claimed it", async () => {
      const hash = `hash-${randomUUID()}`;
      const other = harness.instance();
      expect(await store.readTokenOwner(hash)).toBeNull();
      await store.updateTokenOwner(hash, claimToken("user-1", T));
      expect(await store.readTokenOwner(hash)).toEqual({ user_key: "user-1", updated_at: T });
      await other.updateTokenOwner(hash, claimToken("user-2", T + 1));
      expect(await store.readTokenOwner(hash)).toEqual({ user_key: "user-2", updated_at: T + 1, released_from: { "user-1": T + 1 }, releasing_since: T + 1 });
    });

    it("takes a token from a user only while their entry is no newer than the claim that released it", async () => {
      const user = `user-${randomUUID()}`;
      await store.updateDevices(user, registerDevice("h-1", "token-1", T + 5, undefined));
      expect(await store.updateDevices(user, releaseDevice("h-1", T + 4, T + 6, ADD_LANDS_WITHIN_MS))).toEqual({ count: 1, removed: [] });
      expect(await store.updateDevices(user, releaseDevice("h-1", T + 5, T + 6, ADD_LANDS_WITHIN_MS))).toEqual({ count: 0, removed: ["h-1"] });
    });

    it("keeps a token's release from a user, so that an add of theirs up to it landing after adds nothing, until such an add would be stale", async () => {
      const fresh = harness.empty();
      const user = `user-${randomUUID()}`;
      // The release lands before the user's add (they have no devices yet): it is kept, and a lower one does not lower it.
      expect(await fresh.updateDevices(user, releaseDevice("h-1", T + 5, T + 6, ADD_LANDS_WITHIN_MS))).toEqual({ count: 0, removed: [] });
      expect(await fresh.updateDevices(user, releaseDevice("h-1", T + 3, T + 6, ADD_LANDS_WITHIN_MS))).toEqual({ count: 0, removed: [] });
      expect(await fresh.readDevices(user)).toEqual({ released: { "h-1": T + 5 }, oldest_at: T + 5 });
      // Their add registered up to the claim that released it adds nothing; their preview setting is set all the same.
      expect(await fresh.updateDevices(user, registerDevice("h-1", "token-1", T + 5, false))).toEqual({ count: 0, removed: [] });
      // A registration after it (they took the token back) is added.
      expect(await fresh.updateDevices(user, registerDevice("h-1", "token-1", T + 7, undefined))).toEqual({ count: 1, removed: [] });
      // An older registration landing late sets no preview setting over the newer one's (previews_at).
      expect(await fresh.updateDevices(user, registerDevice("h-1", "token-1", T + 4, true))).toEqual({ count: 1, removed: [] });
      expect(await fresh.readDevices(user)).toEqual({ tokens: { "h-1": { token: "token-1", updated_at: T + 7 } }, previews: false, previews_at: T + 5, released: { "h-1": T + 5 }, oldest_at: T + 5 });

      // Once a registration up to it would be stale, the sweep finds the record by it and drops it.
      expect((await fresh.findStaleDevices(T + 4, undefined, 10)).keys).toEqual([]);
      expect((await fresh.findStaleDevices(T + 5, undefined, 10)).keys).toEqual([user]);
      expect(await fresh.updateDevices(user, removeDevices([], T + 5 + STALE_AFTER_MS))).toEqual({ count: 1, removed: [] });
      expect(await fresh.readDevices(user)).toEqual({ tokens: { "h-1": { token: "token-1", updated_at: T + 7 } }, previews: false, previews_at: T + 5, oldest_at: T + 7 });
      // A release whose registrations are stale already is not kept.
      expect(await fresh.updateDevices(user, releaseDevice("h-2", T + 6, T + 6 + STALE_AFTER_MS, ADD_LANDS_WITHIN_MS))).toEqual({ count: 1, removed: [] });
      expect((await fresh.readDevices(user))?.released).toBeUndefined();
    });

    it("makes no devices record for a user without one once a request's lifetime has passed since the claim the release goes up to", async () => {
      const fresh = harness.empty();
      const [gone, late, kept] = [`user-${randomUUID()}`, `user-${randomUUID()}`, `user-${randomUUID()}`];
      // A request's lifetime after the claim it releases them up to, nothing is written: the user may be one an erasure deleted.
      expect(await fresh.updateDevices(gone, releaseDevice("h-1", T, T + ADD_LANDS_WITHIN_MS, ADD_LANDS_WITHIN_MS))).toEqual({ count: 0, removed: [] });
      expect(await fresh.readDevices(gone)).toBeNull();
      // Within it, the release is kept: their add may still land after it.
      expect(await fresh.updateDevices(late, releaseDevice("h-1", T, T + ADD_LANDS_WITHIN_MS - 1, ADD_LANDS_WITHIN_MS))).toEqual({ count: 0, removed: [] });
      expect(await fresh.readDevices(late)).toEqual({ released: { "h-1": T }, oldest_at: T });
      // A user with a record keeps a later release all the same (it is theirs, and goes with the record).
      await fresh.updateDevices(kept, registerDevice("h-2", "token-2", T, undefined));
      expect(await fresh.updateDevices(kept, releaseDevice("h-1", T, T + ADD_LANDS_WITHIN_MS, ADD_LANDS_WITHIN_MS))).toEqual({ count: 1, removed: [] });
      expect((await fresh.readDevices(kept))?.released).toEqual({ "h-1": T });
    });
  });

  describe("erasure", () => {
    it("finds a user's connections by their list and by their id, in id order, and deletes them with both lists' entries", async () => {
      const fresh = harness.empty();
      const user = `ida-${randomUUID().slice(0, 6)}`;
      const made = Array.from({ length: 5 }, (_, index) => newConnection("accepted", { one: user, two: `peer-${index}-${randomUUID().slice(0, 4)}` }));
      for (const connection of made) await fresh.createConnection(connection);
      await fresh.appendMessage(refOf(made[0]!), sendAs(made[0]!, "a", "words", T + 1));
      await harness.settled();
      const userKey = made[0]!.meta.user_a === user ? made[0]!.userKeys.a : made[0]!.userKeys.b;
      const ids = made.map((connection) => connection.id).sort();

      const listed = [...(await fresh.scanListedConnections(userKey, undefined, 3)), ...(await fresh.scanListedConnections(userKey, ids[2], 3))];
      expect(listed.map((entry) => entry.id)).toEqual(ids);
      expect(listed.find((entry) => entry.id === made[1]!.id)?.meta).toEqual(made[1]!.meta);
      const named = [...(await fresh.readUserConnections(user, undefined, 2)), ...(await fresh.readUserConnections(user, ids[1], 10))];
      expect(named.map((entry) => entry.id)).toEqual(ids);

      await fresh.deleteConnections(made.slice(0, 2).map(refOf));
      await fresh.deleteConnections(made.slice(0, 2).map(refOf));
      expect(await fresh.readConnectionMeta(made[0]!.id)).toBeNull();
      expect(await fresh.readConnectionMessages(made[0]!.id, { limit: 10 })).toBeNull();
      expect((await fresh.listConnections(userKey, { limit: 10 })).map((entry) => entry.id).sort()).toEqual(made.slice(2).map((connection) => connection.id).sort());
      const peerKey = made[0]!.meta.user_a === user ? made[0]!.userKeys.b : made[0]!.userKeys.a;
      expect(await fresh.listConnections(peerKey, { limit: 10 })).toEqual([]);
      expect((await fresh.readUserConnections(user, undefined, 10)).map((entry) => entry.id)).toEqual(made.slice(2).map((connection) => connection.id).sort());
      expect(await fresh.scanListedConnections(peerKey, undefined, 10)).toEqual([]);
    });

    it("finds a user's pairs and rewrites or removes them atomically", async () => {
      const fresh = harness.empty();
      const users = { a: `jo-${randomUUID().slice(0, 6)}`, b: `ky-${randomUUID().slice(0, 6)}` };
      const zed = `zed-${randomUUID().slice(0, 6)}`;
      await fresh.updatePair("pair-1", requestOnPair(users, "a", { id: "c1", createdAt: T }, new Set()));
      await fresh.updatePair("pair-2", requestOnPair({ a: users.a, b: zed }, "a", { id: "c2", createdAt: T }, new Set()));
      await fresh.updatePair("pair-2", (pair) => ({ outcome: undefined, next: { ...pair!, blocked: { b: T + 1 } } }));
      expect(await fresh.findUserPairs(users.a, userKey(users.a), undefined, 10)).toEqual(["pair-1", "pair-2"]);
      expect(await fresh.findUserPairs(users.a, userKey(users.a), "pair-1", 10)).toEqual(["pair-2"]);
      expect(await fresh.findUserPairs(users.b, userKey(users.b), undefined, 10)).toEqual(["pair-1"]);

      expect(await fresh.rewritePair("pair-1", forgetPairUser(users.a, T))).toBe(true);
      expect(await fresh.rewritePair("pair-2", forgetPairUser(users.a, T))).toBe(true);
      expect(await fresh.rewritePair("pair-3", forgetPairUser(users.a, T))).toBe(false);
      expect(await fresh.findUserPairs(users.a, userKey(users.a), undefined, 10)).toEqual([]);
      expect(await fresh.findUserPairs(users.b, userKey(users.b), undefined, 10)).toEqual([]);
      // The other user's block stays, with neither id: a new request on the pair is refused.
      expect(await fresh.updatePair("pair-2", requestOnPair({ a: users.a, b: zed }, "a", { id: "c3", createdAt: T + 2 }, new Set()))).toEqual({ kind: "blocked" });
      expect(await fresh.updatePair("pair-1", requestOnPair(users, "a", { id: "c4", createdAt: T + 2 }, new Set()))).toMatchObject({ kind: "current", created: true });

      // Until the blocker's own erasure, which finds the record by their key and removes it.
      expect(await fresh.findUserPairs(zed, userKey(zed), undefined, 10)).toEqual(["pair-2"]);
      expect(await fresh.findUserPairs(zed, userKey(zed), "pair-2", 10)).toEqual([]);
      expect(await fresh.rewritePair("pair-2", forgetPairUser(users.a, T + 5))).toBe(false);
      expect(await fresh.rewritePair("pair-2", forgetPairUser(zed, T + 5))).toBe(true);
      expect(await fresh.findUserPairs(zed, userKey(zed), undefined, 10)).toEqual([]);
      expect(await fresh.updatePair("pair-2", requestOnPair({ a: users.a, b: zed }, "b", { id: "c5", createdAt: T + 6 }, new Set()))).toMatchObject({ kind: "current", created: true });
    });

    it("forgets a user's devices up to a time, and only the token records still theirs", async () => {
      const fresh = harness.empty();
      const [mine, theirs] = [`user-${randomUUID()}`, `user-${randomUUID()}`];
      const hashes = ["h-old", "h-new", "h-moved", "h-none"];
      await fresh.updateDevices(mine, registerDevice("h-old", "token-old", T, false));
      await fresh.updateDevices(mine, registerDevice("h-new", "token-new", T + 10, undefined));
      for (const [hash, at] of [["h-old", T], ["h-new", T + 10], ["h-moved", T]] as const) await fresh.updateTokenOwner(hash, claimToken(mine, at));
      await fresh.updateTokenOwner("h-moved", claimToken(theirs, T + 1));

      expect(await fresh.rewriteDevices(mine, forgetDevices(T + 5))).toBe(1);
      expect(await fresh.readDevices(mine)).toEqual({ tokens: { "h-new": { token: "token-new", updated_at: T + 10 } }, previews: false, previews_at: T, oldest_at: T + 10 });
      expect(await fresh.deleteTokenOwners(mine, T + 5, hashes)).toBe(1);
      expect(await fresh.deleteTokenOwners(mine, T + 5, hashes)).toBe(0);
      // The token moved from them was never taken from their devices here: it is still to be released.
      expect(await fresh.updateTokenOwner("h-moved", claimToken("someone", T + 20))).toEqual({ at: T + 20, releases: { [mine]: T + 1, [theirs]: T + 20 } });
      expect(await fresh.updateTokenOwner("h-new", claimToken(mine, T + 20))).toEqual({ at: T + 20, releases: {} });

      expect(await fresh.rewriteDevices(mine, forgetDevices(T + 10))).toBe(1);
      expect(await fresh.readDevices(mine)).toBeNull();
      expect(await fresh.deleteTokenOwners(mine, T + 20, ["h-old"])).toBe(0);
      expect(await fresh.deleteTokenOwners(mine, T + 20, hashes)).toBe(1);
      expect(await fresh.updateTokenOwner("h-new", claimToken("someone", T + 30))).toEqual({ at: T + 30, releases: {} });
    });

    it("pages a user's token records in hash order, and keeps one still to leave a former owner until that is confirmed", async () => {
      const fresh = harness.empty();
      const [mine, former] = [`user-${randomUUID()}`, `user-${randomUUID()}`];
      await fresh.updateTokenOwner("h-taken", claimToken(former, T));
      await fresh.updateTokenOwner("h-taken", claimToken(mine, T + 1));
      await fresh.updateTokenOwner("h-own", claimToken(mine, T + 2));
      await fresh.updateTokenOwner("h-later", claimToken(mine, T + 10));
      await fresh.updateTokenOwner("h-other", claimToken(former, T + 3));
      const taken = { hash: "h-taken", owner: { user_key: mine, updated_at: T + 1, released_from: { [former]: T + 1 }, releasing_since: T + 1 } };
      expect(await fresh.findTokenOwners(mine, undefined, 10)).toEqual([{ hash: "h-later", owner: { user_key: mine, updated_at: T + 10 } }, { hash: "h-own", owner: { user_key: mine, updated_at: T + 2 } }, taken]);
      expect(await fresh.findTokenOwners(mine, undefined, 2)).toHaveLength(2);
      expect(await fresh.findTokenOwners(mine, "h-own", 2)).toEqual([taken]);
      expect(await fresh.findTokenOwners(mine, "h-taken", 2)).toEqual([]);

      const hashes = ["h-later", "h-own", "h-taken", "h-other"];
      expect(await fresh.deleteTokenOwners(mine, T + 5, hashes)).toBe(1);
      expect(await fresh.readTokenOwner("h-taken")).toMatchObject({ user_key: mine });
      await fresh.updateTokenOwner("h-taken", confirmReleases({ [former]: T + 1 }));
      expect(await fresh.deleteTokenOwners(mine, T + 5, hashes)).toBe(1);
      expect(await fresh.findTokenOwners(mine, undefined, 10)).toEqual([{ hash: "h-later", owner: { user_key: mine, updated_at: T + 10 } }]);
      expect(await fresh.readTokenOwner("h-other")).toEqual({ user_key: former, updated_at: T + 3 });
    });
  });
}
