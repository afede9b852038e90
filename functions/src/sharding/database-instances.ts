import { withoutCredentials } from "../url-credentials";
import { MAX_INSTANCES } from "./session-ids";

/*
 * DATABASE_INSTANCES: the project's Realtime Database instances, by URL, in the order sessions
 * name them (docs/sharding.md). Empty means one: the app's default database.
 */

/** A deployed instance's host: `{name}.firebaseio.com`, or `{name}.{region}.firebasedatabase.app`. */
const DEPLOYED_HOST = /^([a-z0-9][a-z0-9-]{0,61}[a-z0-9])\.(?:firebaseio\.com|[a-z]+-[a-z]+[0-9]+\.firebasedatabase\.app)$/;
/** A namespace of an emulator (or the stand-in), as `?ns=` names it. */
const NAMESPACE = /^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$/;

/**
 * `raw` in the one form every part of the service uses, or a reason it is not a database URL.
 * One form, because firebase-admin (14.5.1) caches a database by the exact URL string it is given
 * (`https://x.firebaseio.com` and `https://x.firebaseio.com/` make two, and the second throws
 * "initialized multiple times"); and an answer's `database_url` compares equal to the list's.
 * Deployed: `https://host`. An emulator's: `http://host:port?ns=name`.
 */
export function normaliseDatabaseUrl(raw: string): { readonly url: string } | { readonly problem: string } {
  let parsed: URL;
  try {
    parsed = new URL(raw.trim());
  } catch {
    return { problem: "not a URL" };
  }
  if (parsed.username !== "" || parsed.password !== "" || parsed.hash !== "" || (parsed.pathname !== "/" && parsed.pathname !== "")) return { problem: "a database URL has no path, user or fragment" };
  const ns = parsed.searchParams.get("ns");
  if (parsed.protocol === "https:" && parsed.search === "" && DEPLOYED_HOST.test(parsed.hostname) && parsed.port === "") return { url: `https://${parsed.hostname}` };
  if (parsed.protocol === "http:" && ns !== null && NAMESPACE.test(ns) && [...parsed.searchParams.keys()].length === 1) return { url: `http://${parsed.host}?ns=${ns}` };
  return { problem: "expected https://NAME.firebaseio.com, https://NAME.REGION.firebasedatabase.app, or an emulator's http://HOST:PORT?ns=NAME" };
}

/**
 * The list a DATABASE_INSTANCES value names, normalised; a reason when it names none, one twice, a
 * bad URL or too many. Twice is by instance name, not URL: one instance has several accepted forms
 * (`https://x.firebaseio.com`, `https://x.REGION.firebasedatabase.app`, and locally the emulator's
 * `?ns=x` standing for it), and two positions for it would write it twice into firebase.json's
 * rules and, on the emulators, make firebase-admin throw "initialized multiple times".
 */
export function parseDatabaseInstances(raw: string): { readonly urls: readonly string[] } | { readonly problem: string } {
  const entries = raw.split(",").map((entry) => entry.trim()).filter((entry) => entry !== "");
  const urls: string[] = [];
  for (const entry of entries) {
    const normal = normaliseDatabaseUrl(entry);
    if ("problem" in normal) return { problem: `"${withoutCredentials(entry)}": ${normal.problem}` };
    if (urls.some((url) => instanceName(url) === instanceName(normal.url))) return { problem: `"${entry}" is listed twice` };
    urls.push(normal.url);
  }
  if (urls.length > MAX_INSTANCES) return { problem: `at most ${MAX_INSTANCES} instances, got ${urls.length}` };
  return { urls };
}

/**
 * Why `urls` (normalised) cannot be a deployed project's instances, if they cannot: an emulator's
 * URL names a server on the machine that runs the emulators (a loopback address, mostly), which a
 * deployed function, or a deployed page, would call for every database read and write in vain.
 */
export function emulatorUrlProblem(urls: readonly string[]): string | undefined {
  const emulated = urls.find((url) => new URL(url).protocol === "http:");
  return emulated === undefined ? undefined : `"${emulated}" is an emulator's URL, for the emulators and npm start only: list the deployed instances (https://NAME.firebaseio.com)`;
}

/** The URL of `projectId`'s default database as firebase-admin derives it when the app's config names none. */
export function defaultDatabaseUrl(projectId: string): string {
  return `https://${projectId}-default-rtdb.firebaseio.com`;
}

/** The instance's name, as firebase.json's `database[].instance` and the Firebase CLI know it. */
export function instanceName(url: string): string {
  const parsed = new URL(url);
  return parsed.searchParams.get("ns") ?? parsed.hostname.split(".")[0] ?? "";
}

/** The origins a browser's Realtime Database client reaches the instance at: its REST and long-polling origin, and its WebSocket's. */
export function instanceOrigins(url: string): readonly string[] {
  const parsed = new URL(url);
  return parsed.protocol === "https:" ? [`https://${parsed.host}`, `wss://${parsed.host}`] : [`http://${parsed.host}`, `ws://${parsed.host}`];
}

/**
 * The WebSocket hosts a browser's client of a deployed instance may be moved to, as a policy
 * source: the web SDK (@firebase/database 1.1.5, `Connection.onHandshake_`) reconnects to the
 * server host the handshake names (`s-usc1c-nss-237.firebaseio.com`, under a regional instance's
 * region: `s-euw1b-nss-209.europe-west1.firebasedatabase.app`), and keeps it in localStorage for
 * the next visit; no one knows it in advance. None for an emulator, whose handshake host the SDK
 * ignores (it keeps the host `useEmulator` gave).
 */
export function instanceServerSources(url: string): readonly string[] {
  const parsed = new URL(url);
  if (parsed.protocol !== "https:") return [];
  return [`wss://*.${parsed.hostname.slice(parsed.hostname.indexOf(".") + 1)}`];
}
