import { readFileSync } from "node:fs";
import { join } from "node:path";
import { resolveConfig } from "../../src/config";
import { PROJECT_ROOT } from "../../src/local/project-files";
import { instanceName, instanceOrigins, normaliseDatabaseUrl, parseDatabaseInstances } from "../../src/sharding/database-instances";
import { instancePositionOf, isIssuedSessionId, placedSessionId, RANDOM_BITS_PLACED, sessionPlacement } from "../../src/sharding/session-ids";

describe("session ids that name their database instance", () => {
  it("issues random v4 ids for a deployment of one instance, as before sharding", () => {
    const id = placedSessionId(0, 1);
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(instancePositionOf(id)).toBe(0);
  });

  it("issues v8 ids carrying the position in their first byte with more instances, and reads it back", () => {
    for (const [position, instances] of [[0, 2], [1, 2], [3, 4], [255, 256]] as const) {
      const id = placedSessionId(position, instances);
      expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      expect(isIssuedSessionId(id)).toBe(true);
      expect(instancePositionOf(id)).toBe(position);
    }
  });

  it("sends every v4 id to the first instance, whatever its first byte", () => {
    expect(instancePositionOf("ff8fad5b-d9cb-469f-a165-70867728950e")).toBe(0);
    expect(instancePositionOf("01000000-0000-8000-8000-000000000000")).toBe(1);
  });

  it("keeps the other bits random: no two of 10,000 ids alike, and every random bit seen both ways", () => {
    const ids = Array.from({ length: 10_000 }, () => placedSessionId(2, 4));
    expect(new Set(ids).size).toBe(ids.length);
    const bits = (id: string) => BigInt(`0x${id.replaceAll("-", "")}`);
    let ones = 0n;
    let zeros = 0n;
    for (const id of ids) {
      ones |= bits(id);
      zeros |= ~bits(id) & ((1n << 128n) - 1n);
    }
    const varying = ones & zeros;
    let count = 0;
    for (let bit = 0n; bit < 128n; bit += 1n) if ((varying >> bit) & 1n) count += 1;
    expect(count).toBe(RANDOM_BITS_PLACED);
  });

  it("refuses a position the list does not have", () => {
    expect(() => placedSessionId(2, 2)).toThrow();
    expect(() => placedSessionId(-1, 2)).toThrow();
    expect(() => placedSessionId(0, 257)).toThrow();
  });

  it("places a function instance's sessions round robin from its start: exactly even over a multiple of the count", () => {
    const place = sessionPlacement(4, 3);
    const positions = Array.from({ length: 4_000 }, () => instancePositionOf(place.next()));
    expect(positions.slice(0, 5)).toEqual([3, 0, 1, 2, 3]);
    for (const position of [0, 1, 2, 3]) expect(positions.filter((p) => p === position)).toHaveLength(1_000);
  });

  it("takes a turn given back again first, so that ids drawn and discarded do not steer the sessions", () => {
    const place = sessionPlacement(2, 0);
    // Every other id discarded (a keyed create's repeat, a refused create): the kept ones still alternate.
    const kept = Array.from({ length: 8 }, () => {
      place.giveBack(place.next());
      return instancePositionOf(place.next());
    });
    expect(kept).toEqual([0, 1, 0, 1, 0, 1, 0, 1]);
    // Turns given back while others are out are taken again in the order given.
    const [a, b, c] = [place.next(), place.next(), place.next()];
    place.giveBack(b);
    place.giveBack(a);
    expect([c, place.next(), place.next(), place.next()].map(instancePositionOf)).toEqual([0, 1, 0, 1]);
  });
});

describe("DATABASE_INSTANCES", () => {
  it.each([
    ["https://chatify-default-rtdb.firebaseio.com", "https://chatify-default-rtdb.firebaseio.com"],
    ["https://chatify-default-rtdb.firebaseio.com/", "https://chatify-default-rtdb.firebaseio.com"],
    [" HTTPS://Chatify-2.firebaseio.com ", "https://chatify-2.firebaseio.com"],
    ["https://chatify-eu.europe-west1.firebasedatabase.app/", "https://chatify-eu.europe-west1.firebasedatabase.app"],
    ["http://127.0.0.1:9000/?ns=demo-chatify", "http://127.0.0.1:9000?ns=demo-chatify"],
    ["http://localhost:9001?ns=shard-1", "http://localhost:9001?ns=shard-1"],
  ])("normalises %p to one form", (raw, url) => {
    expect(normaliseDatabaseUrl(raw)).toEqual({ url });
  });

  it.each([
    "chatify.firebaseio.com",
    "http://chatify.firebaseio.com",
    "https://chatify.firebaseio.com/path",
    "https://chatify.firebaseio.com?ns=other",
    "https://evil.example.com",
    "https://chatify.firebaseio.com.evil.example",
    "https://user:pw@chatify.firebaseio.com",
    "https://chatify.firebaseio.com:8443",
    "http://127.0.0.1:9000",
    "http://127.0.0.1:9000?ns=Bad_Name",
    "http://127.0.0.1:9000?ns=a&x=1",
    "https://chatify.firebaseio.com#x",
  ])("refuses %p", (raw) => {
    expect(normaliseDatabaseUrl(raw)).toHaveProperty("problem");
  });

  it("reads a list in order, empty as none, and refuses one listed twice", () => {
    expect(parseDatabaseInstances("")).toEqual({ urls: [] });
    expect(parseDatabaseInstances("https://a1.firebaseio.com, https://b2.firebaseio.com,")).toEqual({ urls: ["https://a1.firebaseio.com", "https://b2.firebaseio.com"] });
    expect(parseDatabaseInstances("https://a1.firebaseio.com,https://a1.firebaseio.com/")).toEqual({ problem: expect.stringContaining("twice") as unknown });
  });

  // One instance in two accepted forms: both would be {instance: "chatify-eu"} in firebase.json, and
  // on the emulators firebase-admin throws "Database initialized multiple times".
  it.each([
    ["https://chatify-eu.firebaseio.com", "https://chatify-eu.europe-west1.firebasedatabase.app"],
    ["https://chatify-eu.firebaseio.com", "http://127.0.0.1:9000?ns=chatify-eu"],
  ])("refuses %s beside %s as one instance listed twice", (a, b) => {
    expect(parseDatabaseInstances(`https://chatify-home.firebaseio.com,${a},${b}`)).toEqual({ problem: `"${b}" is listed twice` });
  });

  it("fails the config at start, naming the param", () => {
    expect(() => resolveConfig({ DATABASE_INSTANCES: "https://ok1.firebaseio.com,ftp://x" })).toThrow(/DATABASE_INSTANCES: "ftp:\/\/x"/);
    expect(resolveConfig({}).databaseInstances).toEqual([]);
  });

  it("names each instance and its origins as firebase.json and the page's policy need them", () => {
    expect(instanceName("https://chatify-2.firebaseio.com")).toBe("chatify-2");
    expect(instanceName("http://127.0.0.1:9000?ns=shard-1")).toBe("shard-1");
    expect(instanceOrigins("https://chatify-2.firebaseio.com")).toEqual(["https://chatify-2.firebaseio.com", "wss://chatify-2.firebaseio.com"]);
    expect(instanceOrigins("http://127.0.0.1:9000?ns=shard-1")).toEqual(["http://127.0.0.1:9000", "ws://127.0.0.1:9000"]);
  });
});

describe("the database rules on every instance", () => {
  /**
   * Every instance is deployed with the same database.rules.json (firebase.json lists it once per
   * instance), and the rules suites run it on one database: that stands for every instance only
   * while no rule reads a path beside the node it guards (`root`), whose data would sit on another
   * instance when sharded (a user's records on the first, their sessions anywhere).
   */
  it("read nothing through root: each rule means the same on an instance that holds only some of the nodes", () => {
    const rules = readFileSync(join(PROJECT_ROOT, "database.rules.json"), "utf8");
    expect(rules).not.toMatch(/\broot\s*\./);
    expect(rules).toMatch(/\bdata\.child\(/);
  });
});
