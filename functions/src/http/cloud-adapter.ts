import type { Response } from "express";
import type { Request } from "firebase-functions/v2/https";
import type { Api } from "./api";
import { errorResponse } from "./error-response";
import type { EndpointName } from "./endpoints";
import type { StreamSink } from "./event-stream";
import type { HttpRequest, HttpResponse } from "./http-types";
import { drainedOf, queryOf } from "./response-flow";

/** An `onRequest` handler serving `endpoint` of the instance's API; the platform has already read the body. */
export function cloudHandler(endpoint: EndpointName, api: () => Promise<Api>): (request: Request, response: Response) => Promise<void> {
  return async (request, response) => {
    let answer: HttpResponse | undefined;
    try {
      answer = await (await api())(endpoint, fromExpress(request), expressSink(response));
    } catch (error) {
      // A failure after a stream opened cannot become a JSON answer any more: end the stream.
      if (response.headersSent) {
        if (!response.writableEnded) response.end();
        return;
      }
      // An instance that could not start (a bad param): the same JSON error on every request.
      answer = errorResponse(error);
    }
    // Undefined: the answer was streamed, and has ended.
    if (answer) writeResponse(response, answer);
  };
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
