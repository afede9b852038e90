import type { Runtime } from "../runtime/runtime";
import { corsHeaders, preflightHeaders } from "./cors";
import type { Endpoint } from "./endpoints";
import { errorBody, toErrorAnswer } from "./error-response";
import { HttpError } from "./http-error";
import type { HttpRequest, HttpResponse } from "./http-types";

/**
 * The HTTP boundary shared by the Cloud Functions and the local server: CORS, method and
 * route checks, the endpoint itself, and every failure turned into a JSON answer.
 */
export async function handleRequest(endpoint: Endpoint, request: HttpRequest, runtime: () => Runtime): Promise<HttpResponse> {
  const started = Date.now();
  let instance: Runtime | undefined;
  let cors: Record<string, string> = {};
  let response: HttpResponse;
  let code: string | undefined;
  try {
    instance = runtime();
    cors = corsHeaders(request, instance.config.corsOrigins);
    response = await dispatch(endpoint, request, instance, cors);
  } catch (error) {
    const answer = toErrorAnswer(error);
    code = answer.code;
    if (answer.status >= 500) {
      // Name and message only: stacks and causes may carry prompts, keys or tokens.
      instance?.log.error("request failed", {
        endpoint: endpoint.name,
        error: error instanceof Error ? error.name : typeof error,
        detail: error instanceof Error ? error.message : undefined,
      });
    }
    response = { status: answer.status, headers: { ...cors, ...answer.headers }, body: errorBody(answer) };
  }
  instance?.log.info("request", {
    endpoint: endpoint.name,
    method: request.method,
    status: response.status,
    code,
    duration_ms: Date.now() - started,
  });
  return response;
}

async function dispatch(endpoint: Endpoint, request: HttpRequest, runtime: Runtime, cors: Record<string, string>): Promise<HttpResponse> {
  const route = endpoint.match(request.path);
  if (!route) throw new HttpError(404, "NOT_FOUND", "No such route");
  if (request.method === "OPTIONS") {
    return { status: 204, headers: { ...cors, ...preflightHeaders(endpoint.methods) } };
  }
  if (!endpoint.methods.includes(request.method)) {
    throw new HttpError(405, "METHOD_NOT_ALLOWED", `Use ${endpoint.methods.join(" or ")} for this route`, {
      Allow: [...endpoint.methods, "OPTIONS"].join(", "),
    });
  }
  const { maxBodyBytes } = runtime.config;
  if (request.body.length > maxBodyBytes) {
    throw new HttpError(413, "PAYLOAD_TOO_LARGE", `Request body must be at most ${maxBodyBytes} bytes`);
  }
  const result = await endpoint.handle(request, route, runtime);
  return { status: result.status, headers: { ...cors, ...result.headers }, body: result.body };
}
