import { z } from "zod";
import type { Identity } from "../auth/identity";
import { DATABASE_KEY } from "../store/records";
import { HttpError, type FieldIssue } from "./http-error";
import { USER_ID_MAX_CHARS } from "./message-body";

/**
 * A string field whose absence and wrong type get distinct, readable messages. Lone surrogates
 * (valid JSON escapes, invalid Unicode) are refused: the database SDK hashes them unlike the
 * server, which would wedge every later transaction on the node that holds one.
 */
export function stringField() {
  return z
    .string({ error: (issue) => (issue.input === undefined ? "is required" : `must be a string, got ${describe(issue.input)}`) })
    .refine((value) => value.isWellFormed(), "must be valid Unicode text (no lone surrogates)");
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value === "object" ? "an object" : `a ${typeof value}`;
}

const CONTROL_CHARACTERS = /\p{Cc}/u;

/**
 * A user id as a client names it: in a body, or in a query where no ID token is sent. Its checks
 * are for an id a client chooses; a signed-in caller naming themselves exactly as their uid is
 * taken before them (withoutCallersName).
 */
export const userIdField = stringField()
  .trim()
  .min(1, "must not be empty")
  .max(USER_ID_MAX_CHARS, `must be at most ${USER_ID_MAX_CHARS} characters`)
  .refine((value) => !CONTROL_CHARACTERS.test(value), "must not contain control characters");

/**
 * `fields` without a `user_id` that names `caller` exactly as their uid. A Firebase uid may be any
 * text (a custom token's: control characters, spaces around it, nothing but spaces), which
 * userIdField would refuse 400; the request acts for `caller.uid` whether it names them or not
 * (identity.ts namesCaller), so a user naming themselves so is taken as one naming no one.
 */
export function withoutCallersName(fields: unknown, caller: Identity | undefined): unknown {
  if (caller === undefined || typeof fields !== "object" || fields === null || Array.isArray(fields)) return fields;
  if (!Object.hasOwn(fields, "user_id") || (fields as Record<string, unknown>).user_id !== caller.uid) return fields;
  const { user_id: _named, ...rest } = fields as Record<string, unknown>;
  return rest;
}

/** `user_id` is required without an ID token; with one, the session belongs to the token's user. */
export function createSessionBody(userIdRequired: boolean) {
  return z.object({
    user_id: userIdRequired ? userIdField : userIdField.optional(),
    template_id: stringField().regex(DATABASE_KEY, "must be 1 to 64 letters, digits, '-' or '_'"),
  });
}

export function sendMessageBody(maxMessageChars: number) {
  return z.object({
    message: stringField()
      .refine((value) => value.trim().length > 0, "must not be empty")
      .refine((value) => value.length <= maxMessageChars, `must be at most ${maxMessageChars} characters`),
  });
}

/**
 * Parses a JSON body with `schema`. Unknown fields are dropped, never trusted: a client
 * cannot smuggle a role or a system prompt in next to the fields it may set. `caller`, the
 * request's signed-in user, may name themselves in `user_id` as their uid is (withoutCallersName).
 */
export function parseBody<S extends z.ZodType>(schema: S, body: unknown, caller?: Identity): z.infer<S> {
  const parsed = schema.safeParse(withoutCallersName(body, caller));
  if (parsed.success) return parsed.data;
  const details: FieldIssue[] = parsed.error.issues.map((issue) => ({
    field: issue.path.length > 0 ? issue.path.join(".") : "(body)",
    message: issue.message,
  }));
  const summary = details.map((detail) => `${detail.field} ${detail.message}`).join("; ");
  throw new HttpError("INVALID_REQUEST", `Invalid request body: ${summary}`, {}, details);
}
