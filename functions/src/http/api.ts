import type { IdentityVerifier } from "../auth/identity";
import type { Config } from "../config";
import type { Log } from "../log/log";
import type { SessionService } from "../session/session-service";
import type { ConnectionsContext } from "./connection-endpoints";
import { connectionBodies } from "./connection-schemas";
import { authenticator } from "./caller";
import { corsHeaders, preflightHeaders } from "./cors";
import { ENDPOINTS, endpointBodies, type Endpoint, type EndpointContext, type EndpointName } from "./endpoints";
import { errorBody, toErrorAnswer } from "./error-response";
import { acceptsEventStream, EventStream, HEARTBEAT_MS, type StreamSink } from "./event-stream";
import { HttpError } from "./http-error";
import type { HttpRequest, HttpResponse } from "./http-types";

/** What the HTTP boundary needs of an instance, and nothing more. */
export interface ApiDeps {
  readonly sessions: Pick<SessionService, "create" | "send" | "end">;
  readonly connections: ConnectionsContext["connections"];
  readonly devices: ConnectionsContext["devices"];
  readonly identity: IdentityVerifier;
  readonly log: Log;
  readonly config: Pick<Config, "requireAuth" | "maxMessageChars" | "maxBodyBytes" | "corsOrigins">;
  /** The longest silence on a streamed answer (default 15 s; tests shorten it). */
  readonly heartbeatMs?: number;
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
    connections: { connections: deps.connections, devices: deps.devices, bodies: connectionBodies(config.maxMessageChars) },
  };
  return async (name, request, sink) => {
    const endpoint = ENDPOINTS[name];
    const started = Date.now();
    const cors = corsHeaders(request, config.corsOrigins);
    const stream = sink && acceptsEventStream(request) ? new EventStream(sink, cors, deps.heartbeatMs ?? HEARTBEAT_MS) : undefined;
    let response: HttpResponse;
    let code: string | undefined;
    try {
      response = await dispatch(endpoint, request, context, config.maxBodyBytes, cors, stream);
    } catch (error) {
      const answer = toErrorAnswer(error);
      code = answer.code;
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
      if (code !== undefined) stream.finish("error", response.body);
      log.info("request", { endpoint: endpoint.name, method: request.method, status: response.status, code, streamed: true, duration_ms: Date.now() - started });
      return undefined;
    }
    log.info("request", { endpoint: endpoint.name, method: request.method, status: response.status, code, duration_ms: Date.now() - started });
    return response;
  };
}

async function dispatch(
  endpoint: Endpoint,
  request: HttpRequest,
  context: EndpointContext,
  maxBodyBytes: number,
  cors: Record<string, string>,
  stream: EventStream | undefined,
): Promise<HttpResponse> {
  const route = endpoint.match(request.path);
  if (!route) throw new HttpError("NOT_FOUND", "No such route");
  if (request.method === "OPTIONS") {
    return { status: 204, headers: { ...cors, ...preflightHeaders(endpoint.methods) } };
  }
  if (!endpoint.methods.includes(request.method)) {
    throw new HttpError("METHOD_NOT_ALLOWED", `Use ${endpoint.methods.join(" or ")} for this route`, {
      Allow: [...endpoint.methods, "OPTIONS"].join(", "),
    });
  }
  if (request.body.length > maxBodyBytes) {
    throw new HttpError("PAYLOAD_TOO_LARGE", `Request body must be at most ${maxBodyBytes} bytes`);
  }
  const result = await endpoint.handle(request, route, context, stream);
  return { status: result.status, headers: { ...cors, ...result.headers }, body: result.body };
}
