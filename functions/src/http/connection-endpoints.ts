import { z } from "zod";
import { namesCaller, type Identity } from "../auth/identity";
import type { ConnectionService, ConnectionView } from "../connections/connection-service";
import { ConnectionNotFoundError } from "../connections/errors";
import type { DeviceRegistry } from "../connections/device-registry";
import { ForbiddenError } from "../session/errors";
import type { ListCursor, StoredMessage } from "../store/connection-store";
import { messageKey } from "../store/message-keys";
import type { ConnectionMessage } from "../store/connection-records";
import { matchConnection, matchConnectionAction, matchConnections, matchDevices } from "./connection-routes";
import { parseBody } from "./request-schemas";
import type { ConnectionBodies } from "./connection-schemas";
import type { CursorCodec } from "./cursor-codec";
import type { Endpoint, EndpointResult } from "./endpoints";
import { HttpError } from "./http-error";
import type { HttpRequest } from "./http-types";
import { idempotencyKeyOf, iso, replayHeaders } from "./endpoint-parts";
import { readJsonObject, sentBody } from "./json-body";
import { isSessionId, type RouteMatch } from "./routes";

/** What the connection and device endpoints need of an instance (built once, like EndpointContext's). */
export interface ConnectionsContext {
  readonly connections: Pick<ConnectionService, "request" | "list" | "get" | "accept" | "decline" | "end" | "block" | "unblock" | "send" | "messages">;
  readonly devices: Pick<DeviceRegistry, "register" | "unregister">;
  readonly bodies: ConnectionBodies;
}

export type ConnectionEndpointName = "connections" | "connection" | "acceptConnection" | "declineConnection" | "blockConnection" | "connectionMessages" | "devices";

/**
 * Who acts: the signed-in caller, or, with no ID token (where REQUIRE_AUTH is off), the `user_id`
 * the request names. Given both, they must be the same user.
 */
function actingUser(caller: Identity | undefined, userId: string | undefined): string {
  if (caller) {
    if (userId !== undefined && !namesCaller(userId, caller)) throw new ForbiddenError("user_id does not match the signed-in user");
    return caller.uid;
  }
  if (userId === undefined) throw new HttpError("INVALID_REQUEST", "Invalid request: user_id is required without an ID token", {}, [{ field: "user_id", message: "is required without an ID token" }]);
  return userId;
}

/** The query string as an object of its first values, for a schema to parse. */
function queryOf(request: HttpRequest): Record<string, string> {
  const params = new URLSearchParams(request.query ?? "");
  const query: Record<string, string> = {};
  for (const [name, value] of params) if (!(name in query)) query[name] = value;
  return query;
}

/**
 * The fields a change names: its JSON body's, and `user_id` from the query string of a GET or
 * DELETE (docs/connections.md, "Who acts"), also when it sends a body for its other fields
 * (DELETE /devices sends its token), or of a request without a body. Only `user_id` comes from
 * the query: a device token there would end up in access logs. Named in both places, they must be
 * the same user, refused 403 as a `user_id` other than the token's user is: answering for either
 * would guess which one the client meant.
 */
function actorFields(request: HttpRequest): Record<string, unknown> {
  // A body sent is read even when none arrived: deployed, one under no Content-Type never does.
  const fields = sentBody(request) ? readJsonObject(request) : {};
  const named = request.method === "GET" || request.method === "DELETE" || request.body.length === 0 ? queryOf(request).user_id : undefined;
  if (named === undefined) return fields;
  if (fields.user_id === undefined) return { ...fields, user_id: named };
  // A body's user_id that is not a string is left to the schema, which names the field.
  if (typeof fields.user_id === "string" && fields.user_id !== named) throw new ForbiddenError("user_id in the query string and in the body name different users");
  return fields;
}

/** The connection named in the path; an id this service could not have issued names nothing. */
function connectionIdOf(route: RouteMatch): string {
  if (route.connectionId === undefined || !isSessionId(route.connectionId)) throw new ConnectionNotFoundError(route.connectionId ?? "");
  return route.connectionId;
}

/** A connection as its user sees it: the other user, who asked, the status and the counts. */
export function connectionBody(view: ConnectionView): Record<string, unknown> {
  const { meta, state, you } = view;
  const them = you === "a" ? "b" : "a";
  return {
    connection_id: view.id,
    status: state.status,
    other_user_id: them === "a" ? meta.user_a : meta.user_b,
    requested_by_you: meta.requested_by === you,
    message_count: state.message_count,
    created_at: iso(meta.created_at),
    last_activity: iso(state.last_activity),
    accepted_at: iso(state.accepted_at),
    closed_at: iso(state.closed_at),
    blocked_by_you: state.blocked?.[you] !== undefined,
    blocked_by_them: state.blocked?.[them] !== undefined,
  };
}

/** A stored message as clients read it in the database, with its key. */
export function messageBody(position: number, message: ConnectionMessage): Record<string, unknown> {
  return { id: messageKey(position), position, sender_id: message.sender_id, content: message.content, timestamp: message.timestamp };
}

/** What a list cursor says: the last connection shown (its activity, its id). */
const listPosition = z.object({ a: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER), c: z.string().refine(isSessionId) });

/**
 * Where the next page of a user's list starts, sealed as the conversation list's cursors are
 * (cursor-codec.ts): a kind of its own and the user as its scope, so that a cursor changed, cut,
 * made up, another user's or another list's is 400 INVALID_CURSOR, not a page read from it.
 */
function sealCursor(cursors: CursorCodec, userId: string, cursor: ListCursor): Promise<string> {
  return cursors.seal("connections", userId, { a: cursor.lastActivity, c: cursor.id });
}

async function openCursor(cursors: CursorCodec, userId: string, raw: string | undefined): Promise<ListCursor | undefined> {
  if (raw === undefined) return undefined;
  const { a, c } = await cursors.open("connections", userId, raw, listPosition);
  return { lastActivity: a, id: c };
}

function ok(body: Record<string, unknown>, status = 200, headers: Readonly<Record<string, string>> = {}): EndpointResult {
  return { status, headers, body: { success: true, ...body } };
}

/**
 * What a handler is given: the connection services, and the instance's cursor codec, which the
 * user-data endpoints hold: one codec and one secret for every list's cursors.
 */
type HandlerContext = ConnectionsContext & { readonly cursors: CursorCodec };

/** An endpoint of several methods on one path: each method's handler, and the path's match. */
function endpoint(
  name: ConnectionEndpointName,
  match: (path: string) => RouteMatch | undefined,
  handlers: Readonly<Record<string, (request: HttpRequest, route: RouteMatch, context: HandlerContext, caller: Identity | undefined) => Promise<EndpointResult>>>,
): Endpoint {
  return {
    name,
    methods: Object.keys(handlers),
    match,
    async handle(request, route, context) {
      const caller = await context.authenticate(request);
      const handler = handlers[request.method];
      if (!handler) throw new HttpError("METHOD_NOT_ALLOWED", `Use ${Object.keys(handlers).join(" or ")} for this route`);
      return handler(request, route, { ...context.connections, cursors: context.userData.cursors }, caller);
    },
  };
}

/** A change of one connection by one of its users, answered with the connection as it now stands. */
function change(action: (context: ConnectionsContext, userId: string, connectionId: string) => Promise<ConnectionView>) {
  return async (request: HttpRequest, route: RouteMatch, context: ConnectionsContext, caller: Identity | undefined) => {
    const connectionId = connectionIdOf(route);
    const body = parseBody(context.bodies.actor, actorFields(request), caller);
    return ok({ connection: connectionBody(await action(context, actingUser(caller, body.user_id), connectionId)) });
  };
}

export const connections = endpoint("connections", matchConnections, {
  async GET(request, _route, context, caller) {
    const query = parseBody(context.bodies.listQuery, queryOf(request), caller);
    const userId = actingUser(caller, query.user_id);
    const after = await openCursor(context.cursors, userId, query.cursor);
    const page = await context.connections.list(userId, { limit: query.limit, ...(after ? { after } : {}) });
    return ok({ connections: page.connections.map(connectionBody), next_cursor: page.next ? await sealCursor(context.cursors, userId, page.next) : null });
  },
  async POST(request, _route, context, caller) {
    const body = parseBody(context.bodies.request, readJsonObject(request), caller);
    const userId = actingUser(caller, body.user_id);
    if (body.other_user_id === userId) {
      throw new HttpError("INVALID_REQUEST", "Invalid request: other_user_id is the caller", {}, [{ field: "other_user_id", message: "must be another user's id" }]);
    }
    const { connection, created } = await context.connections.request(userId, body.other_user_id);
    return ok({ created, connection: connectionBody(connection) }, created ? 201 : 200);
  },
});

export const connection = endpoint("connection", matchConnection, {
  GET: change((context, userId, id) => context.connections.get(userId, id)),
  DELETE: change((context, userId, id) => context.connections.end(userId, id)),
});

export const acceptConnection = endpoint("acceptConnection", matchConnectionAction("accept"), {
  POST: change((context, userId, id) => context.connections.accept(userId, id)),
});

export const declineConnection = endpoint("declineConnection", matchConnectionAction("decline"), {
  POST: change((context, userId, id) => context.connections.decline(userId, id)),
});

export const blockConnection = endpoint("blockConnection", matchConnectionAction("block"), {
  POST: change((context, userId, id) => context.connections.block(userId, id)),
  DELETE: change((context, userId, id) => context.connections.unblock(userId, id)),
});

export const connectionMessages = endpoint("connectionMessages", matchConnectionAction("messages"), {
  async GET(request, route, context, caller) {
    const connectionId = connectionIdOf(route);
    const query = parseBody(context.bodies.messagesQuery, queryOf(request), caller);
    const messages: StoredMessage[] = await context.connections.messages(actingUser(caller, query.user_id), connectionId, {
      limit: query.limit,
      ...(query.before === undefined ? {} : { before: query.before }),
    });
    const first = messages[0]?.position;
    return ok({
      connection_id: connectionId,
      messages: messages.map(({ position, message }) => messageBody(position, message)),
      next_before: first !== undefined && first > 1 ? first : null,
    });
  },
  async POST(request, route, context, caller) {
    const connectionId = connectionIdOf(route);
    const body = parseBody(context.bodies.message, readJsonObject(request), caller);
    const idempotencyKey = idempotencyKeyOf(request);
    const sent = await context.connections.send({
      userId: actingUser(caller, body.user_id),
      connectionId,
      text: body.message,
      ...(idempotencyKey === undefined ? {} : { idempotencyKey }),
    });
    return ok(
      { connection_id: connectionId, message: messageBody(sent.position, sent.message), message_count: sent.messageCount },
      201,
      replayHeaders(sent.replayed),
    );
  },
});

export const devices = endpoint("devices", matchDevices, {
  async POST(request, _route, context, caller) {
    const body = parseBody(context.bodies.device, readJsonObject(request), caller);
    const after = await context.devices.register(actingUser(caller, body.user_id), body.token, body.previews);
    return ok({ devices: after.devices });
  },
  async DELETE(request, _route, context, caller) {
    const body = parseBody(context.bodies.deviceRemoval, actorFields(request), caller);
    const after = await context.devices.unregister(actingUser(caller, body.user_id), body.token);
    return ok({ removed: after.removed === true, devices: after.devices });
  },
});

export const CONNECTION_ENDPOINTS = { connections, connection, acceptConnection, declineConnection, blockConnection, connectionMessages, devices } as const;
