/**
 * A request's target as Hosting reads it, kept raw (still percent-encoded, `.` and `..` as sent)
 * so that the static site's checks see what the client sent: `new URL` would resolve dot
 * segments, re-encode characters, and read a target such as `//x` as a host (or throw).
 */
export interface RequestTarget {
  /** The path as sent; it starts with `/` for any target the server can answer. */
  readonly path: string;
  /** The query as sent, its `?` included; "" for none. */
  readonly search: string;
}

/**
 * The path and query of `url` (Node's `request.url`, the target as written). An HTTP/1.1 server
 * must accept a target in absolute form too (RFC 9112 3.2.2: `GET http://host/app.css`), which
 * Hosting serves and express routes by its path: its authority is dropped, its path and query
 * taken as written (`/` when it has no path).
 */
export function requestTarget(url: string): RequestTarget {
  const authority = /^https?:\/\/[^/?#]*/i.exec(url);
  const rest = authority ? url.slice(authority[0].length) : url;
  const origin = authority && !rest.startsWith("/") ? `/${rest}` : rest;
  const mark = origin.indexOf("?");
  return mark < 0 ? { path: origin, search: "" } : { path: origin.slice(0, mark), search: origin.slice(mark) };
}

/**
 * The path with each run of slashes made one, as Hosting matches it: superstatic 10 looks files
 * up after normalizeMultiSlashes and matches rewrites on glob-slasher's normalised path, so
 * `//app.css` is `/app.css` and `/api/v1//chatbot/session` reaches createSession.
 */
export function collapseSlashes(path: string): string {
  return path.replace(/\/+/g, "/");
}
