import { preflightHeaders } from "./cors";
import type { HttpResponse } from "./http-types";

/**
 * The method whose endpoint answers `method`. No endpoint lists HEAD: RFC 9110 9.1 asks every
 * general-purpose server to support it, and 9.3.2 makes it GET without the content, so a HEAD
 * runs the GET endpoint of its path (both adapters send a HEAD answer's head only).
 */
export function servingMethod(method: string): string {
  return method === "HEAD" ? "GET" : method;
}

/** What Allow and Access-Control-Allow-Methods name for a path whose endpoints serve `methods`. */
export function allowedMethods(methods: readonly string[]): string[] {
  return [...new Set([...methods.flatMap((method) => (method === "GET" ? ["GET", "HEAD"] : [method])), "OPTIONS"])];
}

/**
 * The answer to an OPTIONS on a path: the preflight's headers, and Allow, the list a 405 gives
 * (RFC 9110 9.3.7: a successful OPTIONS SHOULD send it), for a client that is no browser.
 */
export function optionsAnswer(methods: readonly string[], cors: Readonly<Record<string, string>>): HttpResponse {
  const allowed = allowedMethods(methods);
  return { status: 204, headers: { ...cors, ...preflightHeaders(allowed), Allow: allowed.join(", ") } };
}
