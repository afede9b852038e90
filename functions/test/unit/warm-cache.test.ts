import { WarmCache } from "../../src/session/warm-cache";

/** A clock the test moves by hand. */
function manualClock(start = 1_000_000) {
  let now = start;
  return {
    now: () => now,
    advance(ms: number) {
      now += ms;
    },
  };
}

/** Whether `key` is still held. Uses `get`, so it refreshes recency: call it only once the order no longer matters. */
function has<K>(cache: WarmCache<K, string>, key: K): boolean {
  return cache.get(key) !== undefined;
}

describe("WarmCache LRU", () => {
  it("evicts the least recently written entry first", () => {
    const cache = new WarmCache<string, string>(2, 60_000);
    cache.set("a", "A");
    cache.set("b", "B");
    cache.set("c", "C");
    expect(cache.size).toBe(2);
    expect(cache.get("a")).toBeUndefined();
    expect(cache.get("b")).toBe("B");
    expect(cache.get("c")).toBe("C");
  });

  it("treats a read as use: the entry read survives the next eviction", () => {
    const cache = new WarmCache<string, string>(2, 60_000);
    cache.set("a", "A");
    cache.set("b", "B");
    expect(cache.get("a")).toBe("A");
    cache.set("c", "C");
    expect(has(cache, "b")).toBe(false);
    expect(has(cache, "a")).toBe(true);
    expect(has(cache, "c")).toBe(true);
  });

  it("treats a rewrite as use and replaces the value without growing", () => {
    const cache = new WarmCache<string, string>(2, 60_000);
    cache.set("a", "A");
    cache.set("b", "B");
    cache.set("a", "A2");
    expect(cache.size).toBe(2);
    cache.set("c", "C");
    expect(has(cache, "b")).toBe(false);
    expect(cache.get("a")).toBe("A2");
  });

  it("evicts in order over many writes, keeping only the newest maxEntries", () => {
    const cache = new WarmCache<number, string>(3, 60_000);
    for (let i = 0; i < 10; i += 1) cache.set(i, `v${i}`);
    expect(cache.size).toBe(3);
    expect([...Array(10).keys()].filter((key) => cache.get(key) !== undefined)).toEqual([7, 8, 9]);
  });
});

describe("WarmCache expiry", () => {
  it("serves an entry until its TTL has passed, then forgets it", () => {
    const clock = manualClock();
    const cache = new WarmCache<string, string>(10, 1_000, clock.now);
    cache.set("a", "A");
    clock.advance(999);
    expect(cache.get("a")).toBe("A");
    clock.advance(1);
    expect(cache.get("a")).toBeUndefined();
    expect(cache.size).toBe(0);
  });

  it("does not extend the TTL on read", () => {
    const clock = manualClock();
    const cache = new WarmCache<string, string>(10, 1_000, clock.now);
    cache.set("a", "A");
    clock.advance(600);
    expect(cache.get("a")).toBe("A");
    clock.advance(600);
    expect(cache.get("a")).toBeUndefined();
  });

  it("restarts the TTL when the entry is written again", () => {
    const clock = manualClock();
    const cache = new WarmCache<string, string>(10, 1_000, clock.now);
    cache.set("a", "A");
    clock.advance(600);
    cache.set("a", "A2");
    clock.advance(600);
    expect(cache.get("a")).toBe("A2");
  });

  it("expires each entry on its own schedule", () => {
    const clock = manualClock();
    const cache = new WarmCache<string, string>(10, 1_000, clock.now);
    cache.set("old", "O");
    clock.advance(500);
    cache.set("new", "N");
    clock.advance(500);
    expect(cache.get("old")).toBeUndefined();
    expect(cache.get("new")).toBe("N");
  });
});

describe("WarmCache disabled", () => {
  it.each([
    ["maxEntries 0", 0, 60_000],
    ["ttl 0", 10, 0],
    ["negative maxEntries", -1, 60_000],
  ])("keeps nothing with %s", (_name, maxEntries, ttlMs) => {
    const cache = new WarmCache<string, string>(maxEntries, ttlMs);
    cache.set("a", "A");
    expect(cache.size).toBe(0);
    expect(cache.get("a")).toBeUndefined();
  });
});

describe("WarmCache delete", () => {
  it("removes only the named entry", () => {
    const cache = new WarmCache<string, string>(10, 60_000);
    cache.set("a", "A");
    cache.set("b", "B");
    cache.delete("a");
    expect(cache.get("a")).toBeUndefined();
    expect(cache.get("b")).toBe("B");
    expect(cache.size).toBe(1);
  });

  it("ignores a key it does not hold", () => {
    const cache = new WarmCache<string, string>(10, 60_000);
    cache.set("a", "A");
    cache.delete("zzz");
    expect(cache.size).toBe(1);
  });

  it("frees a slot, so the next write evicts nothing", () => {
    const cache = new WarmCache<string, string>(2, 60_000);
    cache.set("a", "A");
    cache.set("b", "B");
    cache.delete("b");
    cache.set("c", "C");
    expect(cache.get("a")).toBe("A");
    expect(cache.get("c")).toBe("C");
  });
});
