import type { Response } from "express";
import type { Request } from "firebase-functions/v2/https";
import type { Api } from "./api";
import { failedApi } from "./api";
import type { EndpointName } from "./endpoints";
import type { HttpRequest, HttpResponse } from "./http-types";

/** An `onRequest` handler serving `endpoint` of the instance's API; the platform has already read the body. */
export function cloudHandler(endpoint: EndpointName, api: () => Promise<Api>): (request: Request, response: Response) => Promise<void> {
  return async (request, response) => {
    let answer: HttpResponse;
    try {
      answer = await (await api())(endpoint, fromExpress(request));
    } catch (error) {
      answer = failedApi(error);
    }
    writeResponse(response, answer);
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
