import type { Response } from "express";
import type { Request } from "firebase-functions/v2/https";
import type { Runtime } from "../runtime/runtime";
import type { Endpoint } from "./endpoints";
import { handleRequest } from "./handle-request";
import type { HttpRequest, HttpResponse } from "./http-types";

/** An `onRequest` handler serving `endpoint`; the platform has already read the body. */
export function cloudHandler(endpoint: Endpoint, runtime: () => Runtime): (request: Request, response: Response) => Promise<void> {
  return async (request, response) => {
    writeResponse(response, await handleRequest(endpoint, fromExpress(request), runtime));
  };
}

function fromExpress(request: Request): HttpRequest {
  const headers: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(request.headers)) {
    headers[name.toLowerCase()] = Array.isArray(value) ? value.join(", ") : value;
  }
  return {
    method: request.method.toUpperCase(),
    path: request.path,
    headers,
    body: Buffer.isBuffer(request.rawBody) ? request.rawBody : Buffer.alloc(0),
  };
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
