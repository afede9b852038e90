import type { AppCheckVerifier } from "../auth/app-check";
import type { IdentityVerifier } from "../auth/identity";
import type { Config } from "../config";
import type { Log } from "../log/log";
import type { SessionService } from "../session/session-service";
import { appCheckGate } from "./app-check-gate";
import type { ConnectionsContext } from "./connection-endpoints";
import { authenticator } from "./caller";
import { corsHeaders } from "./cors";
import { ENDPOINTS, endpointBodies, type Endpoint, type EndpointContext, type EndpointName, type StreamedResult } from "./endpoints";
import { errorBody, errorEventBody, toErrorAnswer, type ErrorAnswer } from "./error-response";
import { acceptsEventStream, EventStream, HEARTBEAT_MS, type StreamSink } from "./event-stream";
import { gatheredBody } from "./gathered-body";
import { HttpError } from "./http-error";
import type { HttpRequest, HttpResponse } from "./http-types";
import { allowedMethods, optionsAnswer, servingMethod } from "./methods";
import { servedBy } from "./shared-paths";
import type { UserDataContext } from "./user-data-context";

/** What the HTTP boundary needs of an instance, and nothing more. */
export interface ApiDeps {
  readonly sessions: Pick<SessionService, "create" | "send" | "end">;
  /** Connections between users and their devices (docs/connections.md). */
  readonly connections: ConnectionsContext;
  readonly identity: IdentityVerifier;
  readonly log: Log;
  readonly config: Pick<Config, "requireAuth" | "maxMessageChars" | "maxBodyBytes" | "corsOrigins" | "appCheckReplayProtection">;
  /** Present when App Check is required (REQUIRE_APP_CHECK): every request's token is verified with it. */
  readonly appCheck?: AppCheckVerifier;
  /** The longest silence on a streamed answer (default 15 s; tests shorten it). */
  readonly heartbeatMs?: number;
  /** A user's conversations and data (issue 16). */
  readonly userData: UserDataContext;
  /** The database a session's clients listen to (docs/sharding.md); absent: none answered. */
  readonly databaseUrl?: (sessionId: string) => string | undefined;
}

/**
 * One instance's HTTP boundary: answers a request to one of its functions. Given a `sink`,
 * a request that accepts `text/event-stream` may be answered there as a stream: then the answer
 * is `undefined` (already written and ended); otherwise it is the answer to write.
 */
export type Api = (endpoint: EndpointName, request: HttpRequest, sink?: StreamSink) => Promise<HttpResponse | undefined>;

/**
 * The HTTP boundary shared by the Cloud Functions and the local server: CORS, method and
 * route checks, the endpoint itself, and every failure turned into a JSON answer.
 */
export function createApi(deps: ApiDeps): Api {
  const { config, log } = deps;
  const context: EndpointContext = {
    sessions: deps.sessions,
    authenticate: authenticator(deps.identity, config.requireAuth),
    bodies: endpointBodies(config.maxMessageChars),
    userData: deps.userData,
    connections: deps.connections,
    ...(deps.databaseUrl ? { databaseUrl: deps.databaseUrl } : {}),
  };
  const attest = deps.appCheck ? appCheckGate(deps.appCheck, config.appCheckReplayProtection) : undefined;
  return async (name, request, sink) => {
    const served = servedBy(name);
    // The endpoint that answers this method, for the log (the function's own when none does).
    const endpoint = served.find((candidate) => candidate.methods.includes(servingMethod(request.method))) ?? ENDPOINTS[name];
    const started = Date.now();
    const cors = corsHeaders(request, config.corsOrigins);
    const stream = sink && acceptsEventStream(request) ? new EventStream(sink, cors, deps.heartbeatMs ?? HEARTBEAT_MS) : undefined;
    let response: HttpResponse;
    let failure: ErrorAnswer | undefined;
    try {
      const answered = await dispatch(served, request, context, config.maxBodyBytes, cors, stream, sink, attest);
      if (answered === STREAMED) {
        log.info("request", { endpoint: endpoint.name, method: request.method, status: 200, streamed: true, duration_ms: Date.now() - started });
        return undefined;
      }
      response = answered;
    } catch (error) {
      const answer = toErrorAnswer(error);
      failure = answer;
      if (answer.status >= 500) {
        // Name and message only: stacks and causes may carry prompts, keys or tokens.
        log.error("request failed", {
          endpoint: endpoint.name,
          error: error instanceof Error ? error.name : typeof error,
          detail: error instanceof Error ? error.message : undefined,
        });
      }
      response = { status: answer.status, headers: { ...cors, ...answer.headers }, body: errorBody(answer) };
    }
    if (stream?.started) {
      // The status line went with the first delta: a failure is the last event (an answer was, already).
      if (failure !== undefined) stream.finish("error", errorEventBody(failure));
      log.info("request", { endpoint: endpoint.name, method: request.method, status: response.status, code: failure?.code, streamed: true, duration_ms: Date.now() - started });
      return undefined;
    }
    log.info("request", { endpoint: endpoint.name, method: request.method, status: response.status, code: failure?.code, duration_ms: Date.now() - started });
    return response;
  };
}

/** What `dispatch` gives back for an answer it wrote to the sink itself. */
const STREAMED = Symbol("streamed");

async function dispatch(
  served: readonly Endpoint[],
  request: HttpRequest,
  context: EndpointContext,
  maxBodyBytes: number,
  cors: Record<string, string>,
  stream: EventStream | undefined,
  sink: StreamSink | undefined,
  attest: ((endpoint: EndpointName, request: HttpRequest) => Promise<void>) | undefined,
): Promise<HttpResponse | typeof STREAMED> {
  const routed = served.flatMap((endpoint) => {
    const route = endpoint.match(request.path);
    return route ? [{ endpoint, route }] : [];
  });
  if (routed.length === 0) throw new HttpError("NOT_FOUND", "No such route");
  const methods = routed.flatMap(({ endpoint }) => endpoint.methods);
  if (request.method === "OPTIONS") return optionsAnswer(methods, cors);
  const method = servingMethod(request.method);
  const target = routed.find(({ endpoint }) => endpoint.methods.includes(method));
  if (!target) {
    throw new HttpError("METHOD_NOT_ALLOWED", `Use ${methods.join(" or ")} for this route`, {
      Allow: allowedMethods(methods).join(", "),
    });
  }
  if (request.body.length > maxBodyBytes) {
    throw new HttpError("PAYLOAD_TOO_LARGE", `Request body must be at most ${maxBodyBytes} bytes`);
  }
  // App Check before anything about the caller or the request is looked at.
  await attest?.(target.endpoint.name, request);
  // A HEAD runs as the GET it stands for: the endpoint never sees a method it does not list.
  const head = request.method === "HEAD";
  const result = await target.endpoint.handle(head ? { ...request, method } : request, target.route, context, stream);
  if ("produce" in result) return head ? streamHead(result, cors) : streamBody(result, cors, sink);
  return { status: result.status, headers: { ...cors, ...result.headers }, body: result.body };
}

/**
 * A HEAD of a body produced in pieces (an export): the status and headers its GET starts with,
 * without producing it. The endpoint has read and checked what decides its status before its
 * answer begins (its failures past that point are written into a body already under way, 200);
 * producing it only for the adapter to drop every byte would cost a whole export's reads.
 */
function streamHead(result: StreamedResult, cors: Record<string, string>): HttpResponse {
  return { status: result.status, headers: streamedHeaders(result, cors) };
}

/**
 * A body produced in pieces: written to the sink as it comes, each piece waiting until the client
 * can take it. Without a sink (an adapter that cannot stream) it is gathered and answered whole.
 */
async function streamBody(result: StreamedResult, cors: Record<string, string>, sink: StreamSink | undefined): Promise<HttpResponse | typeof STREAMED> {
  const headers = streamedHeaders(result, cors);
  if (!sink) return { status: result.status, headers: { ...cors, ...result.headers }, body: await gatheredBody(result) };
  sink.open(result.status, headers);
  try {
    await result.produce({
      write: async (text) => {
        sink.write(text);
        await sink.drained?.();
      },
    });
  } finally {
    sink.end();
  }
  return STREAMED;
}

/** The head of a body produced in pieces, written before its first piece. */
function streamedHeaders(result: StreamedResult, cors: Record<string, string>): Record<string, string> {
  return { ...cors, ...result.headers, "Content-Type": "application/json; charset=utf-8" };
}
