/*
 * A URL param (OPENAI_BASE_URL, CORS_ORIGINS, DATABASE_INSTANCES) may come with a user name and
 * password in it (`https://user:password@host`); an error naming the param says what is wrong
 * with the value without showing them, since start-up errors go to logs and terminals.
 */

/** Whether `url` carries a user name or a password. */
export function hasCredentials(url: URL): boolean {
  return url.username !== "" || url.password !== "";
}

/** A value's leading `scheme://`, which can hold no credentials and tells what the value was meant to be. */
const SCHEME_PREFIX = /^[a-z][a-z\d+.-]*:\/\//i;

/**
 * `raw` as an error message may show it: as given when it has no `@`, and otherwise with everything
 * before its last `@` (past a leading `scheme://`) replaced by `***`, whether or not a URL parser
 * finds credentials there. WHATWG URL parsing sees none in many a value that holds them: a proxy
 * written without its scheme, `user:password@host:port`, is a URL of the scheme `user:` and the
 * path `password@host:port`; a password that starts with `#`, `?`, `/` or `\`, or with a number
 * and one of them (`user:2024#pass`), ends the authority there, so `https://user:#pass@host` is
 * the host `user` and the fragment `#pass@host`; and a password may hold an `@` of its own.
 */
export function withoutCredentials(raw: string): string {
  const at = raw.lastIndexOf("@");
  if (at < 0) return raw;
  return `${SCHEME_PREFIX.exec(raw)?.[0] ?? ""}***${raw.slice(at)}`;
}
