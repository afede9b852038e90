import type { DataSnapshot, Database } from "firebase-admin/database";
import { ListenerHolds } from "../../src/store/rtdb/listener-holds";

/** A Database that only records which paths are listened to. */
function recordingDatabase() {
  const listened = new Set<string>();
  const db = {
    ref: (path: string) => ({
      on: () => { listened.add(path); },
      off: () => { listened.delete(path); },
    }),
  };
  return { listened, db: db as unknown as Database };
}

/** A Database whose listeners a test calls itself (`emit`), each registration kept apart. */
function emittingDatabase() {
  const listeners = new Map<string, ((snapshot: DataSnapshot) => void)[]>();
  const db = {
    ref: (path: string) => ({
      on: (_event: string, listener: (snapshot: DataSnapshot) => void) => { listeners.set(path, [...(listeners.get(path) ?? []), listener]); },
      off: (_event: string, listener: (snapshot: DataSnapshot) => void) => { listeners.set(path, (listeners.get(path) ?? []).filter((kept) => kept !== listener)); },
    }),
  };
  const emit = (path: string, value: unknown) => {
    for (const listener of listeners.get(path) ?? []) listener({ val: () => value, exists: () => value !== null } as unknown as DataSnapshot);
  };
  return { db: db as unknown as Database, emit, count: (path: string) => listeners.get(path)?.length ?? 0 };
}

describe("ListenerHolds", () => {
  afterEach(() => { jest.useRealTimers(); });

  it("keeps at most `max` nodes, least recently used out first, and forgets what it knew of them", () => {
    const { listened, db } = recordingDatabase();
    const released: string[] = [];
    const holds = new ListenerHolds(db, 2, 60_000, (path) => released.push(path), () => 0);
    holds.hold("a");
    holds.hold("b");
    expect(holds.hold("a")).toBe(true); // b is now the least recently used
    holds.hold("c");
    expect([...listened].sort()).toEqual(["a", "c"]);
    expect(released).toEqual(["b"]);
    holds.releaseAll();
    expect(listened.size).toBe(0);
  });

  it("drops nodes left unused past the idle time even when no request comes to trim them", () => {
    jest.useFakeTimers();
    let now = 0;
    const { listened, db } = recordingDatabase();
    const holds = new ListenerHolds(db, 10, 5_000, () => undefined, () => now);
    holds.hold("quiet");
    now = 4_000;
    jest.advanceTimersByTime(4_000);
    expect(listened.has("quiet")).toBe(true);
    now = 6_000;
    jest.advanceTimersByTime(2_500);
    expect(listened.has("quiet")).toBe(false);
    expect(holds.isHeld("quiet")).toBe(false);
  });

  it("pushes no node out for a guess, and drops the guess when it is withdrawn", () => {
    const { listened, db } = recordingDatabase();
    const released: string[] = [];
    const holds = new ListenerHolds(db, 2, 60_000, (path) => released.push(path), () => 0);
    holds.hold("a");
    holds.hold("b");
    const withdraw = holds.guess("absent");
    expect([...listened].sort()).toEqual(["a", "absent", "b"]);
    withdraw();
    expect([...listened].sort()).toEqual(["a", "b"]);
    expect(released).toEqual(["absent"]);
  });

  it("keeps a guess that another use confirmed meanwhile, counted from then on like any hold", () => {
    const { listened, db } = recordingDatabase();
    const holds = new ListenerHolds(db, 2, 60_000, () => undefined, () => 0);
    holds.hold("a");
    holds.hold("b");
    const withdraw = holds.guess("c");
    expect(holds.hold("c")).toBe(true); // another request found it
    withdraw();
    // Confirmed, c is the most recently used of 3 nodes for 2 places: a, the least, went.
    expect([...listened].sort()).toEqual(["b", "c"]);
  });

  it("tells once when a held node takes a value, from a listener of its own that goes then or when asked, and nothing of a node not held", () => {
    const { db, emit, count } = emittingDatabase();
    const holds = new ListenerHolds(db, 10, 60_000, () => undefined, () => 0);
    holds.hold("state");
    const told: string[] = [];
    const closed = (snapshot: DataSnapshot) => snapshot.val() === "ended";
    holds.whenValue("state", closed, () => told.push("first"));
    const stop = holds.whenValue("state", closed, () => told.push("stopped"));
    holds.whenValue("other", closed, () => told.push("not held"));
    expect({ state: count("state"), other: count("other") }).toEqual({ state: 3, other: 0 });
    stop();
    emit("state", "active");
    emit("state", "ended");
    emit("state", "ended");
    expect(told).toEqual(["first"]);
    // The hold's own listener is all that is left.
    expect(count("state")).toBe(1);
  });

  it("tells each time a held node is found absent (deleted), so that what is known of it can be forgotten, and nothing of one that holds a value", () => {
    const { db, emit } = emittingDatabase();
    const absent: string[] = [];
    const holds = new ListenerHolds(db, 10, 60_000, () => undefined, () => 0, (path) => absent.push(path));
    holds.hold("state");
    holds.hold("other");
    emit("state", { status: "active" });
    emit("state", null);
    emit("other", { status: "active" });
    emit("state", { status: "active" });
    expect(absent).toEqual(["state"]);
  });

  it("drops a guess neither confirmed nor withdrawn once it is idle", () => {
    let now = 0;
    const { listened, db } = recordingDatabase();
    const holds = new ListenerHolds(db, 2, 5_000, () => undefined, () => now);
    holds.guess("forgotten");
    now = 6_000;
    holds.hold("a");
    expect([...listened]).toEqual(["a"]);
  });
});
