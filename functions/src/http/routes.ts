import { isIssuedSessionId } from "../sharding/session-ids";

/**
 * The paths each function answers. A function is reached directly (`<function url>/{id}`,
 * where the platform strips the function name) or through a Hosting rewrite, which keeps
 * the original route (`/api/v1/chatbot/session/{id}/message`).
 */
export const ROUTE_PREFIX = "/api/v1/chatbot/session";

export type RouteMatch = { readonly sessionId?: string; readonly connectionId?: string };

/** The segments of a path without empty ones, so `//x/` and `/x` are the same. */
export function segments(path: string): string[] {
  return path.split("/").filter((segment) => segment !== "");
}

const PREFIX_SEGMENTS = segments(ROUTE_PREFIX);

/** The part of `path` after the original route prefix, or the whole path when called directly. */
function relative(path: string): string[] {
  const parts = segments(path);
  const prefixed = PREFIX_SEGMENTS.every((segment, index) => parts[index] === segment);
  return prefixed ? parts.slice(PREFIX_SEGMENTS.length) : parts;
}

export function matchCreateSession(path: string): RouteMatch | undefined {
  return relative(path).length === 0 ? {} : undefined;
}

export function matchSendMessage(path: string): RouteMatch | undefined {
  const parts = relative(path);
  if (parts.length === 1 || (parts.length === 2 && parts[1] === "message")) return { sessionId: decode(parts[0]) };
  return undefined;
}

export function matchEndSession(path: string): RouteMatch | undefined {
  const parts = relative(path);
  return parts.length === 1 ? { sessionId: decode(parts[0]) } : undefined;
}

/** Ids this service issues: random UUID v4, or v8 naming a database instance (sharding/session-ids.ts), lower case. Anything else cannot name a session. */
export function isSessionId(value: string): boolean {
  return isIssuedSessionId(value);
}

export function decode(segment: string | undefined): string {
  try {
    return decodeURIComponent(segment ?? "");
  } catch {
    return "";
  }
}
