import type { Identity } from "../auth/identity";
import type { SessionService } from "../session/session-service";
import { NO_USAGE } from "../session/ledger/token-usage";
import { idempotencyKeyOf, iso, replayHeaders, sessionIdOf, usageBody } from "./endpoint-parts";
import type { AnswerStream } from "./event-stream";
import type { HttpRequest } from "./http-types";
import { readJsonObject } from "./json-body";
import { getSession, listSessions } from "./conversation-endpoints";
import { eraseUserData, exportUserData } from "./user-data-endpoints";
import type { UserDataContext } from "./user-data-context";
import { createSessionBody, parseBody, sendMessageBody } from "./request-schemas";
import { matchCreateSession, matchEndSession, matchSendMessage, type RouteMatch } from "./routes";
import { CONNECTION_ENDPOINTS, type ConnectionEndpointName, type ConnectionsContext } from "./connection-endpoints";

export interface EndpointResult {
  readonly status: number;
  readonly body: Record<string, unknown>;
  readonly headers?: Readonly<Record<string, string>>;
}

/** An answer whose JSON body is written piece by piece as it is produced (an export), never held whole. */
export interface StreamedResult {
  readonly status: number;
  readonly headers?: Readonly<Record<string, string>>;
  /** Writes the body through `out`; must not throw once it has written (a failure becomes part of the body). */
  readonly produce: (out: BodyWriter) => Promise<void>;
}

export interface BodyWriter {
  /** Resolves once the client can take more: a slow reader slows the producer instead of filling memory. */
  write(text: string): Promise<void>;
}

export type EndpointName = "createSession" | "sendMessage" | "endSession" | "listSessions" | "getSession" | "exportUserData" | "eraseUserData" | ConnectionEndpointName;

/** What the endpoints need, built once per instance: nothing here is made per request. */
export interface EndpointContext {
  readonly sessions: Pick<SessionService, "create" | "send" | "end">;
  /** The verified caller, or undefined where no token is sent and none is required. */
  readonly authenticate: (request: HttpRequest) => Promise<Identity | undefined>;
  readonly bodies: {
    readonly createSession: { readonly signedIn: ReturnType<typeof createSessionBody>; readonly anonymous: ReturnType<typeof createSessionBody> };
    readonly sendMessage: ReturnType<typeof sendMessageBody>;
  };
  /** A user's conversations and data (issue 16). */
  readonly userData: UserDataContext;
  /** The connection and device endpoints' services and bodies (connection-endpoints.ts). */
  readonly connections: ConnectionsContext;
  /** The database instance a session's clients listen to (docs/sharding.md); absent, or undefined for a session: none answered. */
  readonly databaseUrl?: (sessionId: string) => string | undefined;
}

/** The request schemas of an instance: zod schemas are costly to build and never change. */
export function endpointBodies(maxMessageChars: number): EndpointContext["bodies"] {
  return {
    createSession: { signedIn: createSessionBody(false), anonymous: createSessionBody(true) },
    sendMessage: sendMessageBody(maxMessageChars),
  };
}

export interface Endpoint {
  readonly name: EndpointName;
  readonly methods: readonly string[];
  readonly match: (path: string) => RouteMatch | undefined;
  /** `stream`, when the client asked for one: the endpoint may pass it text as it is written. */
  readonly handle: (request: HttpRequest, route: RouteMatch, context: EndpointContext, stream?: AnswerStream) => Promise<EndpointResult | StreamedResult>;
}

export const createSession: Endpoint = {
  name: "createSession",
  methods: ["POST"],
  match: matchCreateSession,
  async handle(request, _route, context) {
    const caller = await context.authenticate(request);
    const { signedIn, anonymous } = context.bodies.createSession;
    const body = parseBody(caller === undefined ? anonymous : signedIn, readJsonObject(request), caller);
    const idempotencyKey = idempotencyKeyOf(request);
    const { sessionId, meta, replayed } = await context.sessions.create({
      templateId: body.template_id,
      ...(request.clientAddress === undefined ? {} : { address: request.clientAddress }),
      ...(body.user_id === undefined ? {} : { userId: body.user_id }),
      ...(caller ? { caller } : {}),
      ...(idempotencyKey === undefined ? {} : { idempotencyKey }),
    });
    return {
      status: 201,
      headers: replayHeaders(replayed),
      body: {
        success: true,
        session_id: sessionId,
        message: "Session created successfully",
        user_id: meta.user_id,
        template_id: meta.template_id,
        template_name: meta.template_name,
        created_at: iso(meta.created_at),
        ...databaseUrlOf(context, sessionId),
      },
    };
  },
};

/** `database_url`: where the session's live partials and messages are, for a client that listens to them. */
function databaseUrlOf(context: EndpointContext, sessionId: string): { database_url?: string } {
  const url = context.databaseUrl?.(sessionId);
  return url === undefined ? {} : { database_url: url };
}

export const sendMessage: Endpoint = {
  name: "sendMessage",
  methods: ["POST"],
  match: matchSendMessage,
  async handle(request, route, context, stream) {
    const caller = await context.authenticate(request);
    const sessionId = sessionIdOf(route);
    const body = parseBody(context.bodies.sendMessage, readJsonObject(request));
    const idempotencyKey = idempotencyKeyOf(request);
    const reply = await context.sessions.send({
      sessionId,
      message: body.message,
      ...(caller ? { caller } : {}),
      ...(idempotencyKey === undefined ? {} : { idempotencyKey }),
      ...(stream ? { stream } : {}),
    });
    const answer = {
      success: true,
      response: reply.text,
      session_id: reply.sessionId,
      // The API's name for what counts exchanges, kept for existing frontends.
      message_count: reply.exchangeCount,
      truncated: reply.truncated,
      ...(reply.usage ? { usage: usageBody(reply.usage) } : {}),
    };
    // Once the stream is open (its status line went with the first piece of text), the answer is its last event.
    if (stream?.started) stream.finish("done", answer);
    return { status: 200, headers: replayHeaders(reply.replayed), body: answer };
  },
};

export const endSession: Endpoint = {
  name: "endSession",
  methods: ["DELETE"],
  match: matchEndSession,
  async handle(request, route, context) {
    const caller = await context.authenticate(request);
    const { sessionId, meta, state } = await context.sessions.end(sessionIdOf(route), caller);
    const endedAt = state.ended_at ?? state.last_activity;
    return {
      status: 200,
      body: {
        success: true,
        message: "Session ended successfully",
        session_id: sessionId,
        status: state.status,
        message_count: state.message_count,
        duration_seconds: Math.max(0, endedAt - meta.created_at) / 1000,
        created_at: iso(meta.created_at),
        ended_at: iso(endedAt),
        usage: usageBody(state.usage ?? NO_USAGE),
      },
    };
  },
};

export const ENDPOINTS = {
  createSession,
  sendMessage,
  endSession,
  listSessions,
  getSession,
  exportUserData,
  eraseUserData,
  ...CONNECTION_ENDPOINTS,
} as const;
