import { existsSync } from "node:fs";
import { readFile, realpath, stat } from "node:fs/promises";
import { extname, join, sep } from "node:path";
import { contentType } from "mime-types";
import { pageDataFiles } from "../page/page-data";
import type { PagePolicy } from "../page/page-policy";
import { globToRegExp } from "./glob";
import { collapseSlashes } from "./request-target";

/** What the local server serves as Firebase Hosting would, before the rewrites. */
export interface StaticSite {
  /** firebase.json's `hosting.public`, as an absolute path. */
  readonly publicDir: string;
  /** firebase.json's `hosting.ignore` globs (paths relative to publicDir): never served, as never deployed. */
  readonly ignore: readonly string[];
  /**
   * A folder with the Firebase JS SDK's compat builds (`firebase-app-compat.js`, ...), served at
   * Hosting's reserved `/__/firebase/<version>/` URLs; absent, those URLs are 404 (the SDK is a
   * development dependency, so a server-only install has none).
   */
  readonly firebaseSdkDir?: string;
  /** The web app config `/__/firebase/init.js` initialises the SDK with, as Hosting's does. */
  readonly firebaseConfig: Readonly<Record<string, string>>;
  /** host:port of the Auth emulator the server itself uses, told to the page by init.js (local only). */
  readonly authEmulatorHost?: string;
  /** host:port of the database emulator the server itself uses, told to the page by init.js (local only). */
  readonly databaseEmulatorHost?: string;
  /**
   * The headers every answer carries (firebase.json's `hosting.headers`, for this server's
   * origins), and what the page's data files hold (page-data.ts: the API bases for this
   * server's project, the error codes), served in place of public/'s copies, which were written
   * for the deployed project by the last deploy or `page-files write`.
   */
  readonly policy: PagePolicy;
}

export type StaticAnswer =
  | { readonly kind: "file"; readonly status: number; readonly headers: Readonly<Record<string, string | number>>; readonly body: Buffer }
  /** A path no file can have (`..`, an encoded slash, bad percent-encoding): 404 without looking further. */
  | { readonly kind: "refused" };

/**
 * The page's own files' types, fixed here whatever table mime-types holds: its 2.1.35 (Hosting's,
 * below) types .js `application/javascript`, its 3.x and RFC 9239 `text/javascript`.
 */
const PAGE_TYPES: Readonly<Record<string, string>> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".map": "application/json; charset=utf-8",
};

/**
 * A file's Content-Type: any other extension as Hosting types it, superstatic 10 (responder.js)
 * setting `mime.contentType(path.extname(file))` of mime-types (.wasm, .pdf, .mp4, .woff...);
 * an extension that table does not know, as bytes. Hence mime-types pinned at 2.1.35 in
 * package.json, the version superstatic 10 resolves: 3.0.2 types 71 other extensions otherwise
 * (.es is `application/ecmascript` on Hosting, bytes in 3.0.2, which nosniff keeps from running).
 */
function contentTypeOf(file: string): string {
  const extension = extname(file).toLowerCase();
  return PAGE_TYPES[extension] ?? (contentType(extension) || "application/octet-stream");
}

/** The SDK files served at the reserved URLs: compat builds only, the ones a page loads without a bundler. */
const SDK_FILE = /^firebase-[a-z-]+-compat\.js(\.map)?$/;

/**
 * The static answer to a GET or HEAD of `rawPath` (query stripped, still percent-encoded), or
 * undefined when no file answers it and the request goes on to the rewrites, as on Hosting.
 * `search` is the query as sent, `?` included ("" for none): a redirect keeps it, as Hosting's does.
 */
export async function staticAnswer(site: StaticSite, method: "GET" | "HEAD", rawPath: string, search = ""): Promise<StaticAnswer | undefined> {
  const segments = decodeSegments(rawPath);
  if (segments === undefined) return { kind: "refused" };
  if (segments[0] === "__") return reserved(site, method, segments);
  const served = `/${segments.join("/")}`;
  const data = pageDataFiles(site.policy).get(served);
  if (data !== undefined && !rawPath.endsWith("/")) return fileAnswer(method, served, Buffer.from(`${JSON.stringify(data)}\n`), "no-cache");

  if (ignored(site, segments)) return undefined;
  const root = await realpath(site.publicDir).catch(() => undefined);
  if (root === undefined) return undefined;
  const target = join(root, ...segments);
  const info = await stat(target).catch(() => undefined);
  const folder = info?.isDirectory() === true;
  // The file a folder's URL serves is its index.html: never deployed when the globs name it,
  // whatever the folder's own path, so Hosting has nothing there to serve or redirect to.
  if (folder && ignored(site, [...segments, "index.html"])) return undefined;
  if (!folder && (!info?.isFile() || rawPath.endsWith("/"))) return undefined;
  const file = folder ? join(target, "index.html") : target;
  // A symbolic link inside public/ must not lead out of it.
  const real = await realpath(file).catch(() => undefined);
  if (real === undefined || !real.startsWith(root + sep)) return undefined;
  if (folder) {
    // A folder is a page only with its index.html a file: superstatic 10 (files.js) finds none
    // otherwise, and the request goes on to the rewrites, then 404, with no redirect.
    if (!(await stat(real).catch(() => undefined))?.isFile()) return undefined;
    // Hosting's default: a folder without its trailing slash is redirected to it, so that the
    // page's relative URLs (app.js) resolve inside the folder. As superstatic 10 (files.js), to
    // the path with its slashes collapsed (never `//x/`, which names a host), the query kept.
    if (!rawPath.endsWith("/")) return redirect(method, `${collapseSlashes(rawPath)}/${search}`);
  }
  // Local files change while a developer works on them: always revalidated.
  return fileAnswer(method, real, await readFile(real), "no-cache");
}

/**
 * Splits and decodes the path, empty segments left out: `//app.css` is `/app.css`, as on
 * Hosting. Refuses what no file of public/ can be named, and what would climb out of it: `.` or
 * `..` segments, encoded slashes or backslashes, NUL, bad escapes.
 */
function decodeSegments(rawPath: string): string[] | undefined {
  const segments: string[] = [];
  for (const part of rawPath.split("/")) {
    let segment: string;
    try {
      segment = decodeURIComponent(part);
    } catch {
      return undefined;
    }
    if (segment === "." || segment === ".." || /[/\\\0]/.test(segment)) return undefined;
    if (segment !== "") segments.push(segment);
  }
  return segments;
}

/**
 * Whether the ignore globs keep the file at `segments` out of a deploy. `**` may match no folder
 * at all, so `**\/.*` covers `.env` at the top too.
 */
function ignored(site: StaticSite, segments: readonly string[]): boolean {
  const relative = segments.join("/");
  return site.ignore.some((glob) => {
    const pattern = globToRegExp(glob);
    return pattern.test(relative) || pattern.test(`/${relative}`);
  });
}

/**
 * Hosting's reserved `/__/firebase/` URLs: the SDK (whatever version the path names, the local
 * server has one: the installed one) and `init.js`, which initialises it with the project's config.
 */
async function reserved(site: StaticSite, method: "GET" | "HEAD", segments: readonly string[]): Promise<StaticAnswer | undefined> {
  if (segments[1] !== "firebase") return undefined;
  if (segments.length === 3 && segments[2] === "init.js") {
    const lines = [
      "if (typeof firebase === 'undefined') throw new Error('hosting/init-error: Firebase SDK not detected. You must include it before /__/firebase/init.js');",
      `firebase.initializeApp(${JSON.stringify(site.firebaseConfig)});`,
    ];
    // Local only (Hosting has no emulator to name): the page signs in on the Auth emulator the
    // server checks tokens with. Its only source: never the page's address (a hostile link).
    if (site.authEmulatorHost !== undefined) lines.push(`self.CHATIFY_AUTH_EMULATOR = ${JSON.stringify(site.authEmulatorHost)};`);
    if (site.databaseEmulatorHost !== undefined) lines.push(`self.CHATIFY_DATABASE_EMULATOR = ${JSON.stringify(site.databaseEmulatorHost)};`);
    return fileAnswer(method, "init.js", Buffer.from(`${lines.join("\n")}\n`), "no-cache");
  }
  const name = segments[3];
  if (segments.length !== 4 || site.firebaseSdkDir === undefined || name === undefined || !SDK_FILE.test(name)) return undefined;
  const file = join(site.firebaseSdkDir, name);
  if (!existsSync(file)) return undefined;
  return fileAnswer(method, file, await readFile(file), "public, max-age=3600");
}

function fileAnswer(method: "GET" | "HEAD", file: string, body: Buffer, cacheControl: string): StaticAnswer {
  return {
    kind: "file",
    status: 200,
    headers: {
      "Content-Type": contentTypeOf(file),
      "Content-Length": body.length,
      "Cache-Control": cacheControl,
    },
    body: method === "HEAD" ? Buffer.alloc(0) : body,
  };
}

function redirect(method: "GET" | "HEAD", location: string): StaticAnswer {
  const body = Buffer.from(`Redirecting to ${location}\n`);
  return {
    kind: "file",
    status: 301,
    headers: { Location: location, "Content-Type": "text/plain; charset=utf-8", "Content-Length": body.length },
    body: method === "HEAD" ? Buffer.alloc(0) : body,
  };
}
