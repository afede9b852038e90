import { z } from "zod";
import { MAX_CURSOR_CHARS } from "./cursor-codec";
import { DEVICE_TOKEN_MAX_CHARS } from "./message-body";
import { stringField, userIdField } from "./request-schemas";

/**
 * The bodies and query strings of the connection and device routes. `user_id` names who acts when
 * no ID token is sent (only where REQUIRE_AUTH is off); with a token it may be left out, and must
 * be the token's user when given.
 */

const actor = { user_id: userIdField.optional() };

/** A page size from the query string: digits only, within `max`; `fallback` when absent. */
function pageSize(fallback: number, max: number) {
  return z
    .string()
    .regex(/^[0-9]{1,4}$/, "must be a whole number")
    .transform(Number)
    .pipe(z.number().int().min(1, "must be at least 1").max(max, `must be at most ${max}`))
    .default(fallback);
}

/** An FCM registration token: visible ASCII, as FCM issues them (stored by its hash, sent only to FCM). */
const deviceToken = stringField().regex(new RegExp(`^[\\x21-\\x7e]{1,${DEVICE_TOKEN_MAX_CHARS}}$`), `must be 1 to ${DEVICE_TOKEN_MAX_CHARS} visible ASCII characters`);

export function connectionBodies(maxMessageChars: number) {
  return {
    actor: z.object(actor),
    request: z.object({ ...actor, other_user_id: userIdField }),
    message: z.object({
      ...actor,
      message: stringField()
        .refine((value) => value.trim().length > 0, "must not be empty")
        .refine((value) => value.length <= maxMessageChars, `must be at most ${maxMessageChars} characters`),
    }),
    device: z.object({ ...actor, token: deviceToken, previews: z.boolean({ error: "must be true or false" }).optional() }),
    deviceRemoval: z.object({ ...actor, token: deviceToken }),
    // Any string short enough: whether it is a cursor this service issued, cut or not, is the
    // codec's to say (400 INVALID_CURSOR, as docs/api.md lists it), not a field's format.
    listQuery: z.object({ ...actor, limit: pageSize(20, 100), cursor: z.string().max(MAX_CURSOR_CHARS).optional() }),
    messagesQuery: z.object({
      ...actor,
      limit: pageSize(50, 100),
      before: z.string().regex(/^[0-9]{1,9}$/, "must be a message position").transform(Number).pipe(z.number().int().min(1, "must be at least 1")).optional(),
    }),
  };
}

export type ConnectionBodies = ReturnType<typeof connectionBodies>;
