import type { FieldIssue } from "../http/http-error";

/** How a refusal of the call's data names it: the data as a whole, as a body's issues name `(body)`. */
export const DATA_FIELD = "(data)";

/**
 * The deepest a call's data may nest, the data object itself being level 1. The callables' data
 * is a level or two deep, but what reads it recurses and fails with a RangeError, answered
 * `internal`, well before the platform's 10 MB: firebase-functions 7.4's `decode` (arrays nested
 * some 2,500 deep on Node 24's default stack) and the boundary's JSON.stringify
 * (callable-request.ts, some 4,450). An HTTP body has no bound: JSON.parse does not recurse, and
 * a field the route does not know is dropped unread.
 */
export const MAX_DATA_DEPTH = 100;

/** A refusal of the call's data: the answer's message and its one field issue. */
export interface DataRefusal {
  readonly message: string;
  readonly issue: FieldIssue;
}

const TOO_DEEP: DataRefusal = {
  message: "The call's data is nested too deep",
  issue: { field: DATA_FIELD, message: `must not nest more than ${MAX_DATA_DEPTH} levels deep` },
};

const TYPED_VALUE: DataRefusal = {
  message: "The call's data holds a typed value that cannot be decoded",
  issue: { field: DATA_FIELD, message: 'must not hold an object with an "@type" key, but for an Int64Value or UInt64Value holding a number' },
};

/** The wrappers firebase-functions 7.4's `decode` reads as numbers (lib/common/providers/https.js LONG_TYPE, UNSIGNED_LONG_TYPE). */
const NUMBER_TYPES: ReadonlySet<unknown> = new Set(["type.googleapis.com/google.protobuf.Int64Value", "type.googleapis.com/google.protobuf.UInt64Value"]);

/** `data` nested deeper than MAX_DATA_DEPTH, refused before anything recursive reads it. */
export function nestingRefusal(data: unknown): DataRefusal | undefined {
  for (const { depth } of containers(data)) {
    if (depth > MAX_DATA_DEPTH) return TOO_DEEP;
  }
  return undefined;
}

/**
 * What firebase-functions 7.4's `decode` (lib/common/providers/https.js), which onCall runs on
 * the data before the handler, throws on: nesting past MAX_DATA_DEPTH (it recurses), and an
 * object whose `@type` is truthy, unless it is an Int64Value or UInt64Value wrapper whose `value`
 * parseFloat reads as a number (decode makes it that number). That `value` is read as decode
 * reads it, once the depth is known to be bounded (parseFloat joins an array into text,
 * recursively); one that cannot be made text (an object with a `toString` key) throws in decode
 * too.
 */
export function decodingRefusal(data: unknown): DataRefusal | undefined {
  const nesting = nestingRefusal(data);
  if (nesting) return nesting;
  for (const { value } of containers(data)) {
    if (!decodable(value)) return TYPED_VALUE;
  }
  return undefined;
}

function decodable(object: Readonly<Record<string, unknown>>): boolean {
  const type = object["@type"];
  if (!type) return true;
  if (!NUMBER_TYPES.has(type)) return false;
  try {
    return !Number.isNaN(parseFloat(object.value as string));
  } catch {
    return false;
  }
}

/** Each object and array of `data` (JSON: no cycles) with its depth, without recursion. */
function* containers(data: unknown): Generator<{ readonly value: Readonly<Record<string, unknown>>; readonly depth: number }> {
  const isContainer = (value: unknown): value is Readonly<Record<string, unknown>> => typeof value === "object" && value !== null;
  const pending = isContainer(data) ? [{ value: data, depth: 1 }] : [];
  for (let next = pending.pop(); next; next = pending.pop()) {
    yield next;
    for (const child of Object.values(next.value)) {
      if (isContainer(child)) pending.push({ value: child, depth: next.depth + 1 });
    }
  }
}
