/*
 * A URL param (OPENAI_BASE_URL, CORS_ORIGINS, DATABASE_INSTANCES) may come with a user name and
 * password in it (`https://user:password@host`); an error naming the param says what is wrong
 * with the value without showing them, since start-up errors go to logs and terminals.
 */

/** Whether `url` carries a user name or a password. */
export function hasCredentials(url: URL): boolean {
  return url.username !== "" || url.password !== "";
}

/**
 * `raw` as an error message may show it: as given, but with the credentials of a URL holding
 * some replaced by `***`, and a value that is no URL at all but has an `@` (where a password
 * could sit) not shown.
 */
export function withoutCredentials(raw: string): string {
  if (!URL.canParse(raw)) return raw.includes("@") ? "(a value with an @, not shown)" : raw;
  const url = new URL(raw);
  if (!hasCredentials(url)) return raw;
  url.username = "***";
  url.password = "";
  return url.href;
}
