import { decodingRefusal, MAX_DATA_DEPTH, nestingRefusal } from "../../src/callable/callable-data";

// decode logs what it refuses at error level, through the console firebase-functions captured when loaded: muted here.
jest.mock("../../node_modules/firebase-functions/lib/logger/common.js", () => {
  const actual = jest.requireActual<{ UNPATCHED_CONSOLE: Record<string, unknown> }>("../../node_modules/firebase-functions/lib/logger/common.js");
  return { ...actual, UNPATCHED_CONSOLE: { ...actual.UNPATCHED_CONSOLE, error: () => undefined } };
});

/** firebase-functions 7.4's `decode`, which onCall runs on a call's data before the handler (not in the package's exports). */
const { decode } = jest.requireActual<{ decode: (data: unknown) => unknown }>("../../node_modules/firebase-functions/lib/common/providers/https.js");

const INT64 = "type.googleapis.com/google.protobuf.Int64Value";
const UINT64 = "type.googleapis.com/google.protobuf.UInt64Value";

/** `{"a":{"a":...1...}}`, `depth` objects deep. */
const objects = (depth: number): unknown => JSON.parse(`${'{"a":'.repeat(depth)}1${"}".repeat(depth)}`);
/** `[[...]]`, `depth` arrays deep. */
const arrays = (depth: number): unknown => JSON.parse(`${"[".repeat(depth)}${"]".repeat(depth)}`);

function decodes(data: unknown): boolean {
  try {
    decode(data);
    return true;
  } catch {
    return false;
  }
}

describe("decodingRefusal: the data firebase-functions' decode refuses, found without recursion", () => {
  it.each<[string, unknown, boolean]>([
    ["plain data", { user_id: "u", list: [1, "two", null, { three: true }] }, true],
    ["an @type key that is empty, 0 or null (falsy: decode reads the object as any other)", { a: { "@type": "" }, b: { "@type": 0 }, c: { "@type": null } }, true],
    ["an Int64Value of a number in text", { limit: { "@type": INT64, value: "12" } }, true],
    ["a UInt64Value of a number", { limit: { "@type": UINT64, value: 12 } }, true],
    ["an Int64Value whose text starts with a number (parseFloat)", { limit: { "@type": INT64, value: "12 and more" } }, true],
    ["an Int64Value of a list whose text is a number", { limit: { "@type": INT64, value: ["12"] } }, true],
    ["an unknown @type", { extra: { "@type": "type.googleapis.com/example.Thing" } }, false],
    ["an @type that is not a string", { extra: { "@type": 1 } }, false],
    ["an @type that is a list naming Int64Value", { extra: { "@type": [INT64], value: "1" } }, false],
    ["an Int64Value that is not a number", { extra: { "@type": INT64, value: "many" } }, false],
    ["an Int64Value with no value", { extra: { "@type": INT64 } }, false],
    ["an Int64Value whose value cannot be made text", { extra: { "@type": INT64, value: { toString: 1 } } }, false],
    ["an Int64Value of a list holding what cannot be made text", { extra: { "@type": INT64, value: ["1", { toString: 1 }] } }, false],
    ["an unknown @type deep in lists", { extra: [1, [2, { "@type": "x" }]] }, false],
    ["data that is itself a typed value", { "@type": "type.googleapis.com/example.Thing" }, false],
  ])("%s: refused exactly when decode throws", (_what, data, taken) => {
    expect({ decodes: decodes(data), refused: decodingRefusal(data) !== undefined }).toEqual({ decodes: taken, refused: !taken });
  });

  it(`refuses data nested past ${MAX_DATA_DEPTH} levels, well before decode overflows the stack`, () => {
    expect(decodingRefusal({ x: objects(MAX_DATA_DEPTH - 1) })).toBeUndefined();
    expect(decodingRefusal({ x: arrays(MAX_DATA_DEPTH - 1) })).toBeUndefined();
    expect(decodingRefusal({ x: arrays(MAX_DATA_DEPTH) })?.issue).toEqual({ field: "(data)", message: `must not nest more than ${MAX_DATA_DEPTH} levels deep` });
    expect(decodingRefusal(objects(MAX_DATA_DEPTH + 1))?.message).toBe("The call's data is nested too deep");
    expect(() => decode({ x: arrays(5_000) })).toThrow(RangeError);
    expect(decodingRefusal({ x: arrays(5_000) })?.message).toBe("The call's data is nested too deep");
  });

  it("refuses an Int64Value holding lists nested deep by their depth, without making it text (which recurses)", () => {
    expect(decodingRefusal({ extra: { "@type": INT64, value: arrays(100_000) } })?.message).toBe("The call's data is nested too deep");
  });

  it("takes scalars and nothing, as decode does", () => {
    for (const data of [null, 1, "text", true]) expect({ decodes: decodes(data), refused: decodingRefusal(data) }).toEqual({ decodes: true, refused: undefined });
  });
});

describe("nestingRefusal: the depth alone", () => {
  it("refuses past the bound whatever the data holds, and reads no @type", () => {
    expect(nestingRefusal({ x: objects(MAX_DATA_DEPTH - 1), y: { "@type": "x" } })).toBeUndefined();
    expect(nestingRefusal({ x: objects(MAX_DATA_DEPTH) })?.issue.message).toBe(`must not nest more than ${MAX_DATA_DEPTH} levels deep`);
  });
});
