/*
 * A URL param (OPENAI_BASE_URL, CORS_ORIGINS, DATABASE_INSTANCES) may come with a user name and
 * password in it (`https://user:password@host`); an error naming the param says what is wrong
 * with the value without showing them, since start-up errors go to logs and terminals.
 */

/** Whether `url` carries a user name or a password. */
export function hasCredentials(url: URL): boolean {
  return url.username !== "" || url.password !== "";
}

/** The schemes the URL params take: only in a URL of these is what sits before an `@` read as the params read it. */
const PARAM_SCHEME = /^https?:$/;

/** A value's leading `scheme://`, which can hold no credentials and tells what the value was meant to be. */
const SCHEME_PREFIX = /^[a-z][a-z\d+.-]*:\/\//i;

/**
 * `raw` as an error message may show it: an http(s) URL as given, its credentials (if any)
 * replaced by `***`; any other value as given when it has no `@`, and otherwise with everything
 * before its last `@` (past a leading `scheme://`) replaced by `***`. Not only a URL's own
 * credentials: WHATWG URL parsing reads a proxy written without its scheme,
 * `user:password@host:port`, as a URL of the scheme `user:` and the path `password@host:port`,
 * with no credentials, and a password may hold an `@` of its own.
 */
export function withoutCredentials(raw: string): string {
  const url = URL.canParse(raw) ? new URL(raw) : undefined;
  if (url !== undefined && PARAM_SCHEME.test(url.protocol)) {
    if (!hasCredentials(url)) return raw;
    url.username = "***";
    url.password = "";
    return url.href;
  }
  const at = raw.lastIndexOf("@");
  if (at < 0) return raw;
  return `${SCHEME_PREFIX.exec(raw)?.[0] ?? ""}***${raw.slice(at)}`;
}
