import { z } from "zod";
import { ErasureInProgressError } from "../session/erasure/erasure-errors";
import { StoreUnavailableError } from "../store/errors";
import { DATABASE_KEY } from "../store/records";
import { matchErase, matchExport } from "./conversation-routes";
import { iso } from "./endpoint-parts";
import type { Endpoint } from "./endpoints";
import { writeExport } from "./export-writer";
import { parseQuery } from "./query-schemas";

/**
 * What an export cursor says: the last session written whole; once they all are, the last
 * connection ("" before the first), and when the next one was split, its id and the position of
 * its last message written; and the number of the part it starts.
 */
const exportPosition = z
  .object({
    s: z.string().regex(DATABASE_KEY).optional(),
    c: z.union([z.literal(""), z.string().regex(DATABASE_KEY)]).optional(),
    x: z.string().regex(DATABASE_KEY).optional(),
    m: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
    p: z.number().int().min(2).max(1_000_000),
  })
  .refine((at) => (at.x === undefined) === (at.m === undefined) && (at.x === undefined || at.c !== undefined));

/** How long a request refused during an erasure is told to wait. */
const ERASING_RETRY_SECONDS = 5;

/**
 * `GET /api/v1/chatbot/me/export`: everything stored about the caller, as JSON written while it
 * is read, in parts when it is more than one answer may carry (`next_cursor`).
 */
export const exportUserData: Endpoint = {
  name: "exportUserData",
  methods: ["GET"],
  match: matchExport,
  async handle(request, _route, context) {
    const caller = await context.authenticate(request);
    const { conversations, connections, cursors, queries, limits, clock } = context.userData;
    const query = parseQuery(caller ? queries.exportUserData.signedIn : queries.exportUserData.anonymous, request.query, caller);
    const owner = conversations.owner(caller, query.user_id);
    const from = query.cursor === undefined ? undefined : await cursors.open("export", owner, query.cursor, exportPosition);
    // Read before the answer begins: its failure, an erasure under way, or sessions this function
    // instance cannot read (on a database instance past its list) is an ordinary JSON error. The
    // last is refused as unavailable (503, retried), as the erasure refuses it: a retry reaches a
    // function instance with the whole list. Sessions are not read once a cursor is past them (`c`).
    const part = from?.p ?? 1;
    const [usage, devices, complete] = await Promise.all([
      conversations.usage(owner),
      part === 1 ? connections.devices(owner) : null,
      from?.c === undefined ? conversations.completes(owner, from?.s) : true,
    ]);
    if (usage?.erasing !== undefined) throw new ErasureInProgressError(ERASING_RETRY_SECONDS);
    if (!complete) throw new StoreUnavailableError("export (a session on a database instance past this list)");
    const split = from?.x === undefined || from.m === undefined ? undefined : { id: from.x, position: from.m };
    const position = {
      ...(from?.s === undefined ? {} : { s: from.s }),
      ...(from?.c === undefined ? {} : { c: from.c }),
      ...(split === undefined ? {} : { x: split.id, m: split.position }),
    };
    return {
      status: 200,
      headers: { "Cache-Control": "no-store", "Content-Disposition": 'attachment; filename="chatify-export.json"' },
      produce: (out) =>
        writeExport(out, {
          userId: owner,
          part,
          usage,
          devices,
          sessions: conversations.sessions(owner, from?.s, limits.exportReadPage),
          connections: connections.connections(owner, { after: from?.c || undefined, ...(split === undefined ? {} : { within: split }) }, limits.exportReadPage),
          from: position,
          asNow: (state) => conversations.asNow(state),
          cursorAfter: (at, next) => cursors.seal("export", owner, { ...at, p: next }),
          limits,
          clock,
        }),
    };
  },
};

/**
 * `DELETE /api/v1/chatbot/me`: erases everything that holds the caller's content. 200 once the
 * first pass is done (a second pass follows by the sweep), 202 when the request's time ran out
 * first (the sweep, or the same request again, finishes it). The Auth account is kept.
 */
export const eraseUserData: Endpoint = {
  name: "eraseUserData",
  methods: ["DELETE"],
  match: matchErase,
  async handle(request, _route, context) {
    const caller = await context.authenticate(request);
    const { conversations, erasure, queries, limits, clock } = context.userData;
    const query = parseQuery(caller ? queries.eraseUserData.signedIn : queries.eraseUserData.anonymous, request.query, caller);
    const owner = conversations.owner(caller, query.user_id);
    const outcome = await erasure.erase(owner, clock() + limits.eraseRequestMs);
    return {
      status: outcome.complete ? 200 : 202,
      body: {
        success: true,
        status: outcome.complete ? "erased" : "in_progress",
        user_id: owner,
        sessions_erased: outcome.sessions,
        final_pass_at: iso(outcome.finalPassAt),
      },
    };
  },
};
