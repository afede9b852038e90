import { z } from "zod";
import { MAX_CURSOR_CHARS } from "./cursor-codec";
import { HttpError, type FieldIssue } from "./http-error";
import type { Identity } from "../auth/identity";
import { userIdField, withoutCallersName } from "./request-schemas";

/** The most conversations or messages one page holds. */
export const MAX_PAGE = 100;
export const DEFAULT_LIST_PAGE = 20;
export const DEFAULT_MESSAGES_PAGE = 50;

/** A page size as a query gives it: digits only, 1 to MAX_PAGE. */
function pageSize(fallback: number) {
  return z
    .string()
    .regex(/^\d{1,3}$/, `must be a whole number from 1 to ${MAX_PAGE}`)
    .transform(Number)
    .refine((size) => size >= 1 && size <= MAX_PAGE, `must be a whole number from 1 to ${MAX_PAGE}`)
    .default(fallback);
}

/**
 * Any string short enough to be one issued (its body, a dot, its MAC): whether it is a cursor this
 * service issued, cut or not (to nothing, too: `cursor=${next ?? ""}`), is the codec's to say
 * (400 INVALID_CURSOR, as docs/api.md lists it), not a field's format, as for the connection
 * list's cursor.
 */
const cursorField = z.string().max(MAX_CURSOR_CHARS + 1 + 64);

/** `user_id` names the user only without an ID token (and must then be given), as in `createSession`'s body. */
function owner(userIdRequired: boolean) {
  return { user_id: userIdRequired ? userIdField : userIdField.optional() };
}

export function listSessionsQuery(userIdRequired: boolean) {
  return z.object({ ...owner(userIdRequired), limit: pageSize(DEFAULT_LIST_PAGE), cursor: cursorField.optional() });
}

export const getSessionQuery = z.object({ limit: pageSize(DEFAULT_MESSAGES_PAGE), before: cursorField.optional() });

export function exportQuery(userIdRequired: boolean) {
  return z.object({ ...owner(userIdRequired), cursor: cursorField.optional() });
}

export function eraseQuery(userIdRequired: boolean) {
  return z.object(owner(userIdRequired));
}

/** The schemas of an instance, built once: one per identity case where `user_id` is required without a token. */
export function querySchemas() {
  return {
    listSessions: { signedIn: listSessionsQuery(false), anonymous: listSessionsQuery(true) },
    getSession: getSessionQuery,
    exportUserData: { signedIn: exportQuery(false), anonymous: exportQuery(true) },
    eraseUserData: { signedIn: eraseQuery(false), anonymous: eraseQuery(true) },
  };
}
export type QuerySchemas = ReturnType<typeof querySchemas>;

/**
 * Parses a query string with `schema`: unknown parameters are ignored, a parameter given twice
 * is refused (which one would count is a guess), every issue is named like a body's. `caller`, as
 * for parseBody, may name themselves in `user_id` as their uid is.
 */
export function parseQuery<S extends z.ZodType>(schema: S, query: string | undefined, caller?: Identity): z.infer<S> {
  const params = new URLSearchParams(query ?? "");
  const values: Record<string, string> = {};
  const issues: FieldIssue[] = [];
  for (const [name, value] of params) {
    if (Object.hasOwn(values, name)) issues.push({ field: name, message: "must be given once" });
    values[name] = value;
  }
  const parsed = schema.safeParse(withoutCallersName(values, caller));
  if (!parsed.success) {
    issues.push(...parsed.error.issues.map((issue) => ({ field: issue.path.length > 0 ? issue.path.join(".") : "(query)", message: issue.message })));
  }
  if (issues.length > 0 || !parsed.success) {
    throw new HttpError("INVALID_REQUEST", `Invalid query: ${issues.map((issue) => `${issue.field} ${issue.message}`).join("; ")}`, {}, issues);
  }
  return parsed.data;
}
