import { decode, segments, type RouteMatch } from "./routes";

/**
 * The paths of the connection and device functions, reached directly (`<function url>/{id}`, the
 * platform stripping the function's name) or through a Hosting rewrite, which keeps the route
 * (`/api/v1/connections/{id}/messages`). Hosting matches the path only, so one function serves
 * every method of one path.
 */
export const CONNECTIONS_PREFIX = "/api/v1/connections";
export const DEVICES_PREFIX = "/api/v1/devices";

/** The part of `path` after `prefix`, or the whole path when called directly. */
function relative(path: string, prefix: string): string[] {
  const parts = segments(path);
  const head = segments(prefix);
  return head.every((segment, index) => parts[index] === segment) ? parts.slice(head.length) : parts;
}

/** `/api/v1/connections`: the caller's list (GET) and requests (POST). */
export function matchConnections(path: string): RouteMatch | undefined {
  return relative(path, CONNECTIONS_PREFIX).length === 0 ? {} : undefined;
}

/** `/api/v1/connections/{id}`: one connection (GET) and its end (DELETE). */
export function matchConnection(path: string): RouteMatch | undefined {
  const parts = relative(path, CONNECTIONS_PREFIX);
  return parts.length === 1 ? { connectionId: decode(parts[0]) } : undefined;
}

/** `/api/v1/connections/{id}/{action}`, or `/{id}` on the function's own URL. */
export function matchConnectionAction(action: "accept" | "decline" | "block" | "messages"): (path: string) => RouteMatch | undefined {
  return (path) => {
    const parts = relative(path, CONNECTIONS_PREFIX);
    if (parts.length === 1 || (parts.length === 2 && parts[1] === action)) return { connectionId: decode(parts[0]) };
    return undefined;
  };
}

/** `/api/v1/devices`: registration (POST) and unregistration (DELETE). */
export function matchDevices(path: string): RouteMatch | undefined {
  return relative(path, DEVICES_PREFIX).length === 0 ? {} : undefined;
}
