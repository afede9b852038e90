import type { Response } from "express";
import type { Request } from "firebase-functions/v2/https";
import { corsOriginsParam } from "../config";
import type { Api } from "./api";
import { corsHeaders } from "./cors";
import { errorResponse } from "./error-response";
import type { EndpointName } from "./endpoints";
import type { StreamSink } from "./event-stream";
import type { HttpRequest, HttpResponse } from "./http-types";
import { optionsAnswer } from "./methods";
import { drainedOf, queryOf } from "./response-flow";
import { servedBy } from "./shared-paths";

/** An `onRequest` handler serving `endpoint` of the instance's API; the platform has already read the body. */
export function cloudHandler(endpoint: EndpointName, api: () => Promise<Api>): (request: Request, response: Response) => Promise<void> {
  return async (request, response) => {
    let started: Api;
    try {
      started = await api();
    } catch (error) {
      writeResponse(response, unstartedAnswer(endpoint, request, error));
      return;
    }
    let answer: HttpResponse | undefined;
    try {
      answer = await started(endpoint, fromExpress(request), expressSink(response));
    } catch (error) {
      // A failure after a stream opened cannot become a JSON answer any more: end the stream.
      if (response.headersSent) {
        if (!response.writableEnded) response.end();
        return;
      }
      answer = errorResponse(error);
    }
    // Undefined: the answer was streamed, and has ended.
    if (answer) writeResponse(response, answer);
  };
}

/**
 * The answer of an instance that could not start (a bad param): the same JSON error on every
 * request. With the CORS headers every answer carries (docs/api.md), CORS_ORIGINS read on its own,
 * and a preflight answered: without them a page of another origin would see a network failure
 * instead of the error. None when CORS_ORIGINS is itself unreadable.
 */
function unstartedAnswer(endpoint: EndpointName, request: Request, error: unknown): HttpResponse {
  let origins: ReturnType<typeof corsOriginsParam>;
  try {
    origins = corsOriginsParam();
  } catch {
    return errorResponse(error);
  }
  // Only the Origin header counts; the body was not read.
  const method = request.method.toUpperCase();
  const cors = corsHeaders({ method, path: request.path, headers: { origin: request.headers.origin }, body: Buffer.alloc(0) }, origins);
  if (method === "OPTIONS") return optionsAnswer(servedBy(endpoint).flatMap((served) => served.methods), cors);
  const failure = errorResponse(error);
  return { ...failure, headers: { ...cors, ...failure.headers } };
}

/**
 * Streams on the express response. The function returns, and so the instance keeps its CPU, only
 * after the whole answer: a client that hung up does not cut the work short (see the README).
 */
export function expressSink(response: Response): StreamSink {
  const gone = () => response.writableEnded || response.destroyed;
  return {
    open(status, headers) {
      response.status(status);
      response.set(headers);
      response.flushHeaders();
    },
    write(text) {
      if (gone()) return;
      response.write(text);
      // Present when a compression middleware buffers the body; a plain response writes at once.
      const flushable = response as Response & { flush?: () => void };
      flushable.flush?.();
    },
    end() {
      if (!gone()) response.end();
    },
    drained: () => drainedOf(response),
  };
}

function fromExpress(request: Request): HttpRequest {
  const headers: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(request.headers)) {
    headers[name.toLowerCase()] = Array.isArray(value) ? value.join(", ") : value;
  }
  const address = clientAddress(headers["x-forwarded-for"], request.socket.remoteAddress);
  const query = queryOf(request.url);
  return {
    method: request.method.toUpperCase(),
    path: request.path,
    headers,
    body: Buffer.isBuffer(request.rawBody) ? request.rawBody : Buffer.alloc(0),
    ...(query === undefined ? {} : { query }),
    ...(address === undefined ? {} : { clientAddress: address }),
  };
}

/**
 * The caller's address: the last X-Forwarded-For entry, which Google's front end appends with the
 * address that connected to it (what a client sends in the header comes before it, so it cannot
 * be forged), else the socket's peer. Express's `request.ip` is not used: with "trust proxy" on
 * (as the Functions emulator sets it, firebase-tools 15) it is the first entry, which the client
 * chooses. Through Hosting's rewrites the connecting address is Hosting's edge, not the visitor:
 * docs/security.md says what that means for the per-address limit.
 */
export function clientAddress(forwardedFor: string | undefined, peer: string | undefined): string | undefined {
  const last = forwardedFor?.split(",").map((entry) => entry.trim()).filter(Boolean).at(-1);
  return last ?? peer;
}

function writeResponse(response: Response, answer: HttpResponse): void {
  response.status(answer.status);
  response.set(answer.headers);
  if (answer.body === undefined) {
    response.end();
    return;
  }
  response.type("application/json").send(JSON.stringify(answer.body));
}
