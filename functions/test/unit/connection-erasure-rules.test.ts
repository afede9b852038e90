import { forgetDevices, forgetPairUser } from "../../src/connections/erasure-rules";
import { takeRequest } from "../../src/connections/request-limit";
import { markErasing } from "../../src/session/erasure/erasure-rules";
import { userKey } from "../../src/session/ledger/limits";
import type { DeviceRecord, PairRecord } from "../../src/store/connection-records";

const T = Date.parse("2026-04-01T09:00:00Z");

describe("what erasing a user does to connections' shared records", () => {
  const pair: PairRecord = { user_a: "ann", user_b: "ben", current: { id: "c1", requested_by: "a", created_at: T } };

  it("removes a pair's record, or keeps only the other user's block, without either id, under the blocker's key", () => {
    expect(forgetPairUser("ann", T)(pair)).toEqual({ outcome: true, next: null });
    expect(forgetPairUser("ann", T)({ ...pair, blocked: { a: T } })).toEqual({ outcome: true, next: null });
    expect(forgetPairUser("ann", T)({ ...pair, blocked: { a: T, b: T + 1 } })).toEqual({ outcome: true, next: { blocked: { b: T + 1 }, blocker_key: userKey("ben") } });
    expect(forgetPairUser("ben", T)({ ...pair, blocked: { a: T } })).toEqual({ outcome: true, next: { blocked: { a: T }, blocker_key: userKey("ann") } });
  });

  it("removes a block kept on a user erased before with its blocker's own erasure, whenever it was set", () => {
    const kept: PairRecord = { blocked: { b: T }, blocker_key: userKey("ben") };
    expect(forgetPairUser("ben", T)(kept)).toEqual({ outcome: true, next: null });
    expect(forgetPairUser("ben", T - 1)(kept)).toEqual({ outcome: true, next: null });
  });

  it("leaves a pair that names someone else, none, or whose connection was asked for after the erasure", () => {
    expect(forgetPairUser("cat", T)(pair)).toEqual({ outcome: false });
    expect(forgetPairUser("ann", T)(null)).toEqual({ outcome: false });
    expect(forgetPairUser("ann", T)({ blocked: { b: T } })).toEqual({ outcome: false });
    expect(forgetPairUser("ann", T)({ blocked: { b: T }, blocker_key: userKey("ben") })).toEqual({ outcome: false });
    // A block kept by an older version names no blocker: nobody's erasure finds it.
    expect(forgetPairUser("ben", T)({ blocked: { b: T } })).toEqual({ outcome: false });
    expect(forgetPairUser("ann", T - 1)(pair)).toEqual({ outcome: false });
  });

  it("forgets devices registered up to the erasure, and the record with the last of them", () => {
    const record: DeviceRecord = { tokens: { old: { token: "t-old", updated_at: T }, new: { token: "t-new", updated_at: T + 5 } }, previews: false, oldest_at: T };
    expect(forgetDevices(T)(record)).toEqual({ outcome: 1, next: { tokens: { new: { token: "t-new", updated_at: T + 5 } }, previews: false, oldest_at: T + 5 } });
    expect(forgetDevices(T + 5)(record)).toEqual({ outcome: 2, next: null });
    expect(forgetDevices(T - 1)(record)).toEqual({ outcome: 0 });
    expect(forgetDevices(T)({ previews: true })).toEqual({ outcome: 0, next: null });
    // The setting's time and an unregistration's kept release go with the record, or stay with the tokens registered since.
    expect(forgetDevices(T)({ previews: false, previews_at: T - 9, released: { gone: T - 3 }, oldest_at: T - 3 })).toEqual({ outcome: 0, next: null });
    expect(forgetDevices(T)({ ...record, previews_at: T + 5 })).toEqual({ outcome: 1, next: { tokens: { new: { token: "t-new", updated_at: T + 5 } }, previews: false, previews_at: T + 5, oldest_at: T + 5 } });
    expect(forgetDevices(T)(null)).toEqual({ outcome: 0 });
  });

  it("refuses a connection request while the requester's data is being erased, taking nothing", () => {
    const marked = markErasing(T, 20)(null).next!;
    expect(takeRequest(T, 5, 20)(marked)).toEqual({ outcome: { admitted: false, retryAfterMs: 5_000, erasing: true } });
  });
});
