/**
 * What the chat page (public/) may talk to, and the headers it is served with: the one source of
 * the local server's answers (`npm start`) and of the files a deploy serves, firebase.json's
 * `hosting.headers` and public/api-bases.json, written for the project being deployed
 * (page-files.ts). docs/web-page-security.md explains each choice.
 */

/** The origins a page's policy names besides its own, exact (no wildcard: `*.cloudfunctions.net` would admit anyone's function). */
export interface PageOrigins {
  /**
   * API bases the page may send an ID token and messages to besides its own origin, compared
   * exactly (scheme, host, port and path): the project's function URL folders.
   */
  readonly apiBases: readonly string[];
  /** Other origins the page's scripts (the Firebase Auth SDK) call. */
  readonly services: readonly string[];
}

/** public/api-bases.json: what the page reads before it sends anything anywhere but its own origin. */
export interface ApiBasesFile {
  /** The project it was written for (a check before deploy compares it). */
  readonly project: string;
  readonly apiBases: readonly string[];
}

export interface PagePolicy {
  /** Every answer the site gives carries these, in this order. */
  readonly headers: Readonly<Record<string, string>>;
  readonly apiBasesFile: ApiBasesFile;
}

/** Where public/api-bases.json is served. */
export const API_BASES_PATH = "/api-bases.json";

/** Where firebase.json routes functions without a region, and where Cloud Functions puts them. */
export const DEFAULT_FUNCTION_REGION = "us-central1";

/**
 * The Auth SDK's calls, deployed: sign-in and account lookups (Identity Toolkit) and ID token
 * refresh (Secure Token). Anonymous sign-in needs nothing else: no iframe, no gapi script (the
 * compat SDK tries to preload them on mobile browsers for popup/redirect sign-in, and carries on
 * when that fails: firebase 12.19.0, `_shouldInitProactively`).
 */
const FIREBASE_AUTH_ORIGINS = ["https://identitytoolkit.googleapis.com", "https://securetoken.googleapis.com"];

/** Google Cloud's rule for project ids: 6 to 30 lowercase letters, digits, hyphens; a letter first, no hyphen last. */
const PROJECT_ID = /^[a-z][a-z0-9-]{4,28}[a-z0-9]$/;
const REGION = /^[a-z]+-[a-z]+[0-9]+$/;
/** host:port as FIREBASE_AUTH_EMULATOR_HOST and firebase.json's emulators give it (a bracketed IPv6 address too). */
const HOST_PORT = /^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}$/;

/**
 * Features the page never uses, turned off for it and for anything it could ever frame. Only
 * names Chromium knows (an unknown one is reported as an error in the console).
 */
const PERMISSIONS = [
  "accelerometer",
  "autoplay",
  "camera",
  "display-capture",
  "encrypted-media",
  "geolocation",
  "gyroscope",
  "magnetometer",
  "microphone",
  "midi",
  "payment",
  "publickey-credentials-get",
  "screen-wake-lock",
  "usb",
  "xr-spatial-tracking",
];

/**
 * The project's origins: its function URL folder in each region firebase.json routes to, and
 * Firebase Auth; with an Auth emulator, that too (the page signs in there: the local server's
 * init.js, or the Hosting emulator's, connects it); with a database emulator, that too (the page
 * listens to its connections there: the local server's init.js names it).
 */
export function pageOrigins(projectId: string, regions: readonly string[], authEmulatorHost?: string, databaseEmulatorHost?: string): PageOrigins {
  if (!PROJECT_ID.test(projectId)) throw new Error(`not a Google Cloud project id: ${JSON.stringify(projectId)}`);
  const bad = regions.find((region) => !REGION.test(region));
  if (bad !== undefined) throw new Error(`not a Cloud Functions region: ${JSON.stringify(bad)}`);
  if (authEmulatorHost !== undefined && !HOST_PORT.test(authEmulatorHost)) {
    throw new Error(`an Auth emulator host must be host:port, not ${JSON.stringify(authEmulatorHost)}`);
  }
  if (databaseEmulatorHost !== undefined && !HOST_PORT.test(databaseEmulatorHost)) {
    throw new Error(`a database emulator host must be host:port, not ${JSON.stringify(databaseEmulatorHost)}`);
  }
  return {
    apiBases: [...new Set(regions)].sort().map((region) => `https://${region}-${projectId}.cloudfunctions.net`),
    services: [
      ...FIREBASE_AUTH_ORIGINS,
      ...(authEmulatorHost === undefined ? [] : [`http://${authEmulatorHost}`]),
      // Local only: the page listens to connections live on the database the server uses (its WebSocket, and the SDK's long-polling fallback).
      ...(databaseEmulatorHost === undefined ? [] : [`ws://${databaseEmulatorHost}`, `http://${databaseEmulatorHost}`]),
    ],
  };
}

export function pagePolicy(projectId: string, origins: PageOrigins): PagePolicy {
  return {
    headers: {
      "Content-Security-Policy": contentSecurityPolicy(origins),
      // For browsers without CSP's frame-ancestors: the page is never framed (clickjacking).
      "X-Frame-Options": "DENY",
      "X-Content-Type-Options": "nosniff",
      // Other origins learn the site, never the page's path or query (a Google API key
      // restricted to the site's referrer still matches the origin).
      "Referrer-Policy": "strict-origin",
      "Permissions-Policy": PERMISSIONS.map((feature) => `${feature}=()`).join(", "),
      // No window the page opens, or that opens it, keeps a handle on it. A popup sign-in would
      // need same-origin-allow-popups (see docs/web-page-security.md).
      "Cross-Origin-Opener-Policy": "same-origin",
      // Other sites cannot embed the page's files (no-cors loads); CORS calls to the API are not concerned.
      "Cross-Origin-Resource-Policy": "same-origin",
    },
    apiBasesFile: { project: projectId, apiBases: origins.apiBases },
  };
}

/**
 * Everything from the page's own origin only, except what it connects to: its own origin, the
 * API bases' origins and the services. `'self'` scripts only: no inline script, no eval, which
 * neither the page nor the Firebase compat SDK uses.
 */
function contentSecurityPolicy(origins: PageOrigins): string {
  const connect = [...new Set([...origins.apiBases.map((base) => exactOrigin(new URL(base).origin)), ...origins.services.map(exactOrigin)])];
  const directives: readonly (readonly [string, readonly string[]])[] = [
    ["default-src", ["'none'"]],
    ["script-src", ["'self'"]],
    ["style-src", ["'self'"]],
    ["img-src", ["'self'"]],
    ["connect-src", ["'self'", ...connect]],
    ["form-action", ["'self'"]],
    ["base-uri", ["'none'"]],
    ["object-src", ["'none'"]],
    ["frame-ancestors", ["'none'"]],
  ];
  return directives.map(([name, sources]) => `${name} ${sources.join(" ")}`).join("; ");
}

/** `origin` if it is one exact origin (scheme, host, port: nothing a policy would read as a wildcard or a second source). */
function exactOrigin(origin: string): string {
  let parsed: URL | undefined;
  try {
    parsed = new URL(origin);
  } catch {
    parsed = undefined;
  }
  // The URL parser takes `*` in a host name: refused here, since a policy reads it as a wildcard.
  if (parsed?.origin !== origin || origin.includes("*") || !["https:", "http:", "wss:", "ws:"].includes(parsed.protocol)) throw new Error(`not an exact origin: ${JSON.stringify(origin)}`);
  return origin;
}
