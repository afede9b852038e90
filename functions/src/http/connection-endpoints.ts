import type { Identity } from "../auth/identity";
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
import type { Endpoint, EndpointResult } from "./endpoints";
import { HttpError } from "./http-error";
import type { HttpRequest } from "./http-types";
import { idempotencyKeyOf, iso, replayHeaders } from "./endpoint-parts";
import { readJsonObject } from "./json-body";
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
    if (userId !== undefined && userId !== caller.uid) throw new ForbiddenError("user_id does not match the signed-in user");
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

/** The fields a change names: from a JSON body when one is sent, else from the query string (a DELETE or GET has none). */
function actorFields(request: HttpRequest): Record<string, unknown> {
  return request.body.length > 0 ? readJsonObject(request) : queryOf(request);
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

/** An opaque cursor: where the next page of a user's list starts (base64url JSON of the last entry shown). */
function encodeCursor(cursor: ListCursor): string {
  return Buffer.from(JSON.stringify([cursor.lastActivity, cursor.id])).toString("base64url");
}

function decodeCursor(raw: string | undefined): ListCursor | undefined {
  if (raw === undefined) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(raw, "base64url").toString("utf8"));
  } catch {
    parsed = undefined;
  }
  if (Array.isArray(parsed) && parsed.length === 2 && Number.isSafeInteger(parsed[0]) && typeof parsed[1] === "string" && isSessionId(parsed[1])) {
    return { lastActivity: parsed[0] as number, id: parsed[1] };
  }
  throw new HttpError("INVALID_REQUEST", "Invalid request: cursor is not one this API gave", {}, [{ field: "cursor", message: "must be a next_cursor from an earlier page" }]);
}

function ok(body: Record<string, unknown>, status = 200, headers: Readonly<Record<string, string>> = {}): EndpointResult {
  return { status, headers, body: { success: true, ...body } };
}

/** An endpoint of several methods on one path: each method's handler, and the path's match. */
function endpoint(
  name: ConnectionEndpointName,
  match: (path: string) => RouteMatch | undefined,
  handlers: Readonly<Record<string, (request: HttpRequest, route: RouteMatch, context: ConnectionsContext, caller: Identity | undefined) => Promise<EndpointResult>>>,
): Endpoint {
  return {
    name,
    methods: Object.keys(handlers),
    match,
    async handle(request, route, context) {
      const caller = await context.authenticate(request);
      const handler = handlers[request.method];
      if (!handler) throw new HttpError("METHOD_NOT_ALLOWED", `Use ${Object.keys(handlers).join(" or ")} for this route`);
      return handler(request, route, context.connections, caller);
    },
  };
}

/** A change of one connection by one of its users, answered with the connection as it now stands. */
function change(action: (context: ConnectionsContext, userId: string, connectionId: string) => Promise<ConnectionView>) {
  return async (request: HttpRequest, route: RouteMatch, context: ConnectionsContext, caller: Identity | undefined) => {
    const connectionId = connectionIdOf(route);
    const body = parseBody(context.bodies.actor, actorFields(request));
    return ok({ connection: connectionBody(await action(context, actingUser(caller, body.user_id), connectionId)) });
  };
}

export const connections = endpoint("connections", matchConnections, {
  async GET(request, _route, context, caller) {
    const query = parseBody(context.bodies.listQuery, queryOf(request));
    const after = decodeCursor(query.cursor);
    const page = await context.connections.list(actingUser(caller, query.user_id), { limit: query.limit, ...(after ? { after } : {}) });
    return ok({ connections: page.connections.map(connectionBody), next_cursor: page.next ? encodeCursor(page.next) : null });
  },
  async POST(request, _route, context, caller) {
    const body = parseBody(context.bodies.request, readJsonObject(request));
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
    const query = parseBody(context.bodies.messagesQuery, queryOf(request));
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
    const body = parseBody(context.bodies.message, readJsonObject(request));
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
    const body = parseBody(context.bodies.device, readJsonObject(request));
    const after = await context.devices.register(actingUser(caller, body.user_id), body.token, body.previews);
    return ok({ devices: after.devices });
  },
  async DELETE(request, _route, context, caller) {
    const body = parseBody(context.bodies.deviceRemoval, readJsonObject(request));
    const after = await context.devices.unregister(actingUser(caller, body.user_id), body.token);
    return ok({ removed: after.removed === true, devices: after.devices });
  },
});

export const CONNECTION_ENDPOINTS = { connections, connection, acceptConnection, declineConnection, blockConnection, connectionMessages, devices } as const;
