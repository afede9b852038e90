import { defaultDatabaseUrl, instanceOrigins, instanceServerSources } from "../sharding/database-instances";

/**
 * What the chat page (public/) may talk to, and the headers it is served with: the one source of
 * the local server's answers (`npm start`) and of the files a deploy serves, firebase.json's
 * `hosting.headers` and public/api-bases.json, written for the project being deployed
 * (page-files.ts). docs/web-page-security.md explains each choice.
 */

/**
 * The origins a page's policy names besides its own, exact (no wildcard: `*.cloudfunctions.net`
 * would admit anyone's function), but for the database servers' WebSocket hosts, which cannot be.
 */
export interface PageOrigins {
  /**
   * API bases the page may send an ID token and messages to besides its own origin, compared
   * exactly (scheme, host, port and path): the project's function URL folders.
   */
  readonly apiBases: readonly string[];
  /** Other origins the page's scripts (the Firebase Auth SDK, App Check's token exchange) call. */
  readonly services: readonly string[];
  /**
   * The WebSocket hosts the database instances' servers may move a client to, one wildcard source
   * per domain (`wss://*.firebaseio.com`, `wss://*.REGION.firebasedatabase.app`): the Realtime
   * Database SDK reconnects to the host its handshake names (instanceServerSources). The only
   * wildcards in the policy, each checked to be one of those two forms.
   */
  readonly databaseServers: readonly string[];
  /** How the page attests itself to App Check: what it loads and frames for that comes from here. */
  readonly appCheck: AppCheckSetup;
}

/**
 * public/app-check.json: how the page gets App Check tokens to send (`X-Firebase-AppCheck`):
 * none, or reCAPTCHA Enterprise with the site key registered for the web app in the console. The
 * key is public (every visitor's browser sends it to Google); it is read from the project's
 * `functions/.env.<project>` (APP_CHECK_RECAPTCHA_SITE_KEY) when the files are written.
 * `replayProtection`, present only when true: the deployment's message calls consume their token
 * (REQUIRE_APP_CHECK and APP_CHECK_REPLAY_PROTECTION, from the same files), so the page sends each
 * message a limited-use token of its own; the standard token it keeps for an hour would be
 * refused from the second message on.
 */
export type AppCheckSetup =
  | { readonly provider: "none" }
  | { readonly provider: "recaptcha-enterprise"; readonly siteKey: string; readonly replayProtection?: true };

/** Where public/app-check.json is served. */
export const APP_CHECK_PATH = "/app-check.json";

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
  readonly appCheckFile: AppCheckSetup;
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

/**
 * What reCAPTCHA Enterprise loads and frames (Google's CSP guidance for reCAPTCHA; Enterprise's
 * enterprise.js and anchor frames are under these paths), and where App Check's SDK exchanges a
 * reCAPTCHA token for an App Check token (firebase 12.19.0, `exchangeRecaptchaEnterpriseToken`).
 */
const RECAPTCHA_SCRIPTS = ["https://www.google.com/recaptcha/", "https://www.gstatic.com/recaptcha/"];
const RECAPTCHA_FRAMES = ["https://www.google.com/recaptcha/", "https://recaptcha.google.com/recaptcha/"];
const APP_CHECK_EXCHANGE_ORIGIN = "https://content-firebaseappcheck.googleapis.com";
/** A reCAPTCHA site key as the console issues them (40 characters today), nothing a file or a policy could misread. */
const SITE_KEY = /^[A-Za-z0-9_-]{20,100}$/;

/** A database server source instanceServerSources gives: every host of Firebase's Realtime Database domain, or of one region's. */
const DATABASE_SERVERS = /^wss:\/\/\*\.(?:firebaseio\.com|[a-z]+-[a-z]+[0-9]+\.firebasedatabase\.app)$/;

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

/** What a page's origins may add to the project's own: each absent when not used. */
export interface PageOriginOptions {
  readonly authEmulatorHost?: string | undefined;
  readonly appCheckSiteKey?: string | undefined;
  /** Whether the message calls consume their App Check token (counts only with a site key: the page sends no token otherwise). */
  readonly appCheckReplayProtection?: boolean | undefined;
  readonly databaseEmulatorHost?: string | undefined;
  /**
   * DATABASE_INSTANCES (normalised): the database instances clients listen to sessions on
   * (docs/sharding.md). None, without a database emulator: the project's default database, which
   * createSession names then (as firebase-admin derives it: one outside us-central1 is named by
   * listing it in DATABASE_INSTANCES).
   */
  readonly databaseInstances?: readonly string[] | undefined;
}

/**
 * The project's origins: its function URL folder in each region firebase.json routes to, and
 * Firebase Auth; with an Auth emulator, that too (the page signs in there: the local server's
 * init.js, or the Hosting emulator's, connects it); with a reCAPTCHA Enterprise site key, App
 * Check's token exchange (and reCAPTCHA's scripts and frames, in the policy); with a database
 * emulator, that too (the page listens to its connections there: the local server's init.js
 * names it).
 */
export function pageOrigins(projectId: string, regions: readonly string[], extra: PageOriginOptions = {}): PageOrigins {
  const { authEmulatorHost, appCheckSiteKey, appCheckReplayProtection, databaseEmulatorHost, databaseInstances = [] } = extra;
  if (!PROJECT_ID.test(projectId)) throw new Error(`not a Google Cloud project id: ${JSON.stringify(projectId)}`);
  const bad = regions.find((region) => !REGION.test(region));
  if (bad !== undefined) throw new Error(`not a Cloud Functions region: ${JSON.stringify(bad)}`);
  if (authEmulatorHost !== undefined && !HOST_PORT.test(authEmulatorHost)) {
    throw new Error(`an Auth emulator host must be host:port, not ${JSON.stringify(authEmulatorHost)}`);
  }
  if (appCheckSiteKey !== undefined && !SITE_KEY.test(appCheckSiteKey)) {
    throw new Error(`not a reCAPTCHA site key: ${JSON.stringify(appCheckSiteKey)}`);
  }
  if (databaseEmulatorHost !== undefined && !HOST_PORT.test(databaseEmulatorHost)) {
    throw new Error(`a database emulator host must be host:port, not ${JSON.stringify(databaseEmulatorHost)}`);
  }
  const databases = databaseInstances.length > 0 || databaseEmulatorHost !== undefined ? databaseInstances : [defaultDatabaseUrl(projectId)];
  return {
    apiBases: [...new Set(regions)].sort().map((region) => `https://${region}-${projectId}.cloudfunctions.net`),
    services: [
      ...FIREBASE_AUTH_ORIGINS,
      // Local only: the page listens to connections live on the database the server uses (its WebSocket, and the SDK's long-polling fallback).
      ...(databaseEmulatorHost === undefined ? [] : [`ws://${databaseEmulatorHost}`, `http://${databaseEmulatorHost}`]),
      // Each database instance sessions are placed on (its REST origin and its WebSocket's), for a client that listens to one.
      ...databases.flatMap(instanceOrigins),
      ...(authEmulatorHost === undefined ? [] : [`http://${authEmulatorHost}`]),
      ...(appCheckSiteKey === undefined ? [] : [APP_CHECK_EXCHANGE_ORIGIN]),
    ],
    databaseServers: [...new Set(databases.flatMap(instanceServerSources))],
    appCheck: appCheckSiteKey === undefined
      ? { provider: "none" }
      : { provider: "recaptcha-enterprise", siteKey: appCheckSiteKey, ...(appCheckReplayProtection === true ? { replayProtection: true as const } : {}) },
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
    appCheckFile: origins.appCheck,
  };
}

/**
 * Everything from the page's own origin only, except what it connects to: its own origin, the
 * API bases' origins and the services. `'self'` scripts only: no inline script, no eval, which
 * neither the page nor the Firebase compat SDK uses.
 */
function contentSecurityPolicy(origins: PageOrigins): string {
  const connect = [...new Set([...origins.apiBases.map((base) => exactOrigin(new URL(base).origin)), ...origins.databaseServers.map(databaseServers), ...origins.services.map(exactOrigin)])];
  const recaptcha = origins.appCheck.provider === "recaptcha-enterprise";
  const directives: readonly (readonly [string, readonly string[]])[] = [
    ["default-src", ["'none'"]],
    ["script-src", ["'self'", ...(recaptcha ? RECAPTCHA_SCRIPTS.map(exactFolder) : [])]],
    ["style-src", ["'self'"]],
    ["img-src", ["'self'"]],
    ["connect-src", ["'self'", ...connect]],
    // Only reCAPTCHA's frames, and only when the page attests with it; otherwise default-src's 'none'.
    ...(recaptcha ? [["frame-src", RECAPTCHA_FRAMES.map(exactFolder)] as const] : []),
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

/** `source` if it is one of the two wildcard forms of database servers (DATABASE_SERVERS), nothing wider. */
function databaseServers(source: string): string {
  if (!DATABASE_SERVERS.test(source)) throw new Error(`not a Realtime Database server source: ${JSON.stringify(source)}`);
  return source;
}

/** `source` if it is one https folder (scheme, host, a path ending in `/`): a policy matches it and what is under it, nothing else. */
function exactFolder(source: string): string {
  const url = new URL(source);
  if (url.href !== source || url.protocol !== "https:" || !url.pathname.endsWith("/") || source.includes("*") || url.search !== "" || url.hash !== "") {
    throw new Error(`not an exact https folder: ${JSON.stringify(source)}`);
  }
  return source;
}
