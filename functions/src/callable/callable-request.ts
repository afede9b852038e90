import { z } from "zod";
import { HttpError, type FieldIssue } from "../http/http-error";
import type { HttpRequest } from "../http/http-types";
import { parseBody } from "../http/request-schemas";
import { DATA_FIELD, nestingRefusal } from "./callable-data";
import type { CallableOperation } from "./callable-operations";

/** What the platform knows of a call besides its data. */
export interface CallMeta {
  readonly clientAddress?: string;
}

/**
 * The data's fields that are not the body's: the path's, and the idempotency key. A path field
 * must be well-formed text: encodeURIComponent throws on a lone surrogate (which the Functions SDK
 * sends as a JSON escape), and that would answer `internal`.
 */
function buildRoutingSchema(pathFields: readonly string[]) {
  const pathField = z
    .string({ error: (issue) => (issue.input === undefined ? "is required" : "must be a string") })
    .min(1, "must not be empty")
    .refine((value) => value.isWellFormed(), "must be valid Unicode text (no lone surrogates)");
  return z.object({
    ...Object.fromEntries(pathFields.map((field) => [field, pathField])),
    idempotency_key: z.string({ error: "must be a string" }).optional(),
  });
}

/** Each operation's schema, built once: zod schemas are costly to build and never change. */
const routingSchemas = new WeakMap<CallableOperation, ReturnType<typeof buildRoutingSchema>>();

function routingSchema(operation: CallableOperation): ReturnType<typeof buildRoutingSchema> {
  let schema = routingSchemas.get(operation);
  if (!schema) {
    schema = buildRoutingSchema(operation.pathFields);
    routingSchemas.set(operation, schema);
  }
  return schema;
}

/**
 * The HTTP request a call stands for, as the boundary's adapters hand requests to the endpoints:
 * the path made of the data's path fields, the idempotency key as its header, and the rest of
 * the data as the JSON body (the endpoint's schema reads it, dropping what it does not know).
 * Data that is not an object, or path fields missing, are refused as a body would be (400); data
 * nested past MAX_DATA_DEPTH too (callable-data.ts): JSON.stringify, which recurses, would
 * overflow the stack on it below (a RangeError, answered `internal`).
 */
export function callableRequest(operation: CallableOperation, data: unknown, meta: CallMeta): HttpRequest {
  if (data !== null && data !== undefined && (typeof data !== "object" || Array.isArray(data))) {
    throw new HttpError("INVALID_REQUEST", "The call's data must be an object", {}, [{ field: DATA_FIELD, message: "must be an object" }]);
  }
  const tooDeep = nestingRefusal(data);
  if (tooDeep) throw new HttpError("INVALID_REQUEST", tooDeep.message, {}, [tooDeep.issue]);
  const fields = presentFields(data);
  const routing = parseBody(routingSchema(operation), fields) as Record<string, string | undefined>;
  const rest = Object.entries(fields).filter(([field]) => field !== "idempotency_key" && !operation.pathFields.includes(field));
  const path = operation.path(Object.fromEntries(operation.pathFields.map((field) => [field, encodeURIComponent(routing[field] ?? "")])));
  const key = routing.idempotency_key;
  const query = operation.rest === "query" ? queryStringOf(rest) : undefined;
  return {
    method: operation.method,
    path,
    headers: { "content-type": "application/json", ...(key === undefined ? {} : { "idempotency-key": key }) },
    body: Buffer.from(query === undefined ? JSON.stringify(Object.fromEntries(rest)) : ""),
    ...(query ? { query } : {}),
    ...(meta.clientAddress === undefined ? {} : { clientAddress: meta.clientAddress }),
  };
}

/**
 * The data's fields, those set to null left out: the Functions client SDK sends a field left
 * `undefined` as null (@firebase/functions 0.14, firebase 12.19: `encode` maps `data == null` to
 * null), where `JSON.stringify` drops it on the way to the HTTP route. So an optional field is
 * absent either way, and a required one null is missing, refused as an absent one is. Top-level
 * only: that is where the callables' optional fields are.
 */
function presentFields(data: object | null | undefined): Record<string, unknown> {
  return Object.fromEntries(Object.entries(data ?? {}).filter(([, value]) => value !== null));
}

/**
 * The data's fields as the query string the route reads: strings as they are, numbers in
 * decimal (a page size); anything else is refused here, by its field's name, since a query
 * cannot carry it and the route's schema would name a different problem.
 */
function queryStringOf(fields: readonly (readonly [string, unknown])[]): string {
  const params = new URLSearchParams();
  const issues: FieldIssue[] = [];
  for (const [field, value] of fields) {
    if (typeof value === "string") params.append(field, value);
    else if (typeof value === "number" && Number.isFinite(value)) params.append(field, String(value));
    else if (value !== undefined) issues.push({ field, message: "must be a string or a number" });
  }
  if (issues.length > 0) throw new HttpError("INVALID_REQUEST", "The call's data has fields of the wrong type", {}, issues);
  return params.toString();
}
