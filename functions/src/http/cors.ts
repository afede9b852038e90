import type { HttpRequest } from "./http-types";

// Content-Encoding is no CORS-safelisted request header: a compressed body from another origin is sent only if the preflight allows it.
const ALLOWED_HEADERS = "Content-Type, Content-Encoding, Authorization, Idempotency-Key, X-Firebase-AppCheck";
const EXPOSED_HEADERS = "Retry-After, Idempotent-Replayed";

/** CORS headers for a response to `request`, given the configured origins. */
export function corsHeaders(request: HttpRequest, origins: "*" | readonly string[]): Record<string, string> {
  if (origins === "*") return { "Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": EXPOSED_HEADERS };
  const origin = request.headers.origin;
  // Vary on every answer: a cache must not serve one origin's answer to another.
  if (origin === undefined || !origins.includes(origin)) return { Vary: "Origin" };
  return { "Access-Control-Allow-Origin": origin, "Access-Control-Expose-Headers": EXPOSED_HEADERS, Vary: "Origin" };
}

/** Extra headers of the answer to a preflight request; `allowed`: every method of the path, OPTIONS included (methods.ts). */
export function preflightHeaders(allowed: readonly string[]): Record<string, string> {
  return {
    "Access-Control-Allow-Methods": allowed.join(", "),
    "Access-Control-Allow-Headers": ALLOWED_HEADERS,
    "Access-Control-Max-Age": "3600",
  };
}
