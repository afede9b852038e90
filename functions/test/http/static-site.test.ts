import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer, request as httpRequest, type IncomingHttpHeaders, type RequestListener, type Server } from "node:http";
import { connect, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { types as localTypes } from "mime-types";
import { localSite, PROJECT_ROOT } from "../../src/local/project-files";
import type { StaticSite } from "../../src/local/static-site";
import { pageOrigins, pagePolicy } from "../../src/page/page-policy";
import { createSession, ROUTES, startHarness, type Harness } from "../support/http-harness";
import { startSiteServer, type SiteServer } from "../support/site-server";

interface RawAnswer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly text: string;
}

/** Sends the target as written: fetch would resolve `..` and `.` before sending. */
function raw(baseUrl: string, method: string, path: string): Promise<RawAnswer> {
  const { hostname, port } = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const request = httpRequest({ hostname, port, method, path, agent: false }, (response) => {
      const chunks: Buffer[] = [];
      response.on("data", (chunk: Buffer) => chunks.push(chunk));
      response.on("end", () => { resolve({ status: response.statusCode ?? 0, headers: response.headers, text: Buffer.concat(chunks).toString("utf8") }); });
    });
    request.on("error", reject);
    request.end();
  });
}

/**
 * Sends `request` as written on a fresh connection and resolves with what came back within
 * `withinMs`, up to the end of the head (all a HEAD answer has), so that silence shows as "".
 */
function head(baseUrl: string, request: string, withinMs: number): Promise<string> {
  const { hostname, port } = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname);
    let text = "";
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(text);
    };
    const timer = setTimeout(done, withinMs);
    socket.on("data", (chunk: Buffer) => {
      text += chunk.toString("latin1");
      if (text.includes("\r\n\r\n")) done();
    });
    socket.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.write(request);
  });
}

const publicFile = (name: string) => readFileSync(join(PROJECT_ROOT, "public", name), "utf8");

/** The local server serves public/ at `/` as Firebase Hosting does: files first, then the rewrites. */
describe("the local server's static site (public/)", () => {
  let harness: Harness;
  beforeAll(async () => {
    harness = await startHarness({ store: "memory" });
  });
  afterAll(async () => harness.close());

  it.each([
    ["/", "index.html", "text/html; charset=utf-8"],
    ["/index.html", "index.html", "text/html; charset=utf-8"],
    ["/app.js", "app.js", "text/javascript; charset=utf-8"],
    ["/app.css", "app.css", "text/css; charset=utf-8"],
  ])("GET %s serves public/%s as %s", async (path, file, type) => {
    const answer = await fetch(`${harness.api.baseUrl}${path}?v=1`);
    expect(answer.status).toBe(200);
    expect(answer.headers.get("content-type")).toBe(type);
    expect(answer.headers.get("x-content-type-options")).toBe("nosniff");
    expect(await answer.text()).toBe(publicFile(file));
  });

  it("answers HEAD with the headers and no body", async () => {
    const answer = await raw(harness.api.baseUrl, "HEAD", "/");
    expect(answer.status).toBe(200);
    expect(answer.headers["content-type"]).toBe("text/html; charset=utf-8");
    expect(Number(answer.headers["content-length"])).toBe(Buffer.byteLength(publicFile("index.html")));
    expect(answer.text).toBe("");
  });

  it.each([
    ["/", "a body it declares (Content-Length: 5)", "Content-Length: 5\r\n\r\n"],
    ["/app.js", "a body it declares (Content-Length: 5)", "Content-Length: 5\r\n\r\n"],
    ["/__/firebase/init.js", "a body it declares (Content-Length: 5)", "Content-Length: 5\r\n\r\n"],
    ["/index.html", "a chunked body's last chunk", "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"],
    ["/api-bases.json", "a chunked body's last chunk", "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"],
  ])("answers HEAD %s at once, with its headers, without waiting for %s", async (path, _what, rest) => {
    // The request timeout (30 s) is far off: only an answer that does not wait arrives in time.
    const answer = await head(harness.api.baseUrl, `HEAD ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${rest}`, 2_000);
    expect({ path, statusLine: answer.split("\r\n")[0] }).toEqual({ path, statusLine: "HTTP/1.1 200 OK" });
    expect(answer).toMatch(/\r\nContent-Security-Policy: default-src 'none'/i);
  });

  it.each([
    "/../firebase.json",
    "/../../etc/passwd",
    "/%2e%2e/firebase.json",
    "/%2E%2e%2ffirebase.json",
    "/..%2ffunctions%2fpackage.json",
    "/..%5cfirebase.json",
    "/./index.html",
    "//etc/passwd",
    "//..//firebase.json",
    "/%2e%2e//firebase.json",
    "/%zz",
    "/index.html%00.js",
  ])("refuses %s with the API's 404", async (path) => {
    const answer = await raw(harness.api.baseUrl, "GET", path);
    expect(answer.status).toBe(404);
    expect(answer.headers["content-type"]).toMatch(/^application\/json/);
    expect(JSON.parse(answer.text)).toEqual({ success: false, error: { code: "NOT_FOUND", message: "No such route" } });
  });

  it("gives files to GET and HEAD only: POST / is the API's 404, as before", async () => {
    const answer = await harness.api.call("POST", "/", { message: "hi" });
    expect(answer.status).toBe(404);
    expect(answer.body.error?.code).toBe("NOT_FOUND");
  });

  it("leaves the API as it was: routes, their 405 to GET, 404 JSON for unknown paths", async () => {
    const id = await createSession(harness.api);
    const sent = await harness.api.call("POST", ROUTES.directMessage(id), { message: "hi" });
    expect(sent.status).toBe(200);
    const get = await harness.api.call("GET", ROUTES.create);
    expect(get.status).toBe(405);
    expect(get.body.error?.code).toBe("METHOD_NOT_ALLOWED");
    for (const path of ["/no-such-file.html", "/api/v2/whatever", "/__/other"]) {
      const answer = await harness.api.call("GET", path);
      expect(answer.status).toBe(404);
      expect(answer.body).toEqual({ success: false, error: { code: "NOT_FOUND", message: "No such route" } });
    }
  });

  it("routes a path with a trailing slash as Hosting does: `*` takes no empty segment", async () => {
    const created = await harness.api.call("POST", `${ROUTES.create}/`, { user_id: "slash-user", template_id: "friendly-assistant" });
    expect(created.status).toBe(201);
    expect((await harness.api.call("GET", "/api/v1/connections/?user_id=slash-user")).status).toBe(200);
    // A session's own routes still take its id, with a slash after it or not.
    const id = String(created.body.session_id);
    expect((await harness.api.call("POST", `${ROUTES.message(id)}/`, { message: "hi" })).status).toBe(200);
  });

  it("reads a run of slashes as one, as Hosting does: a file at //app.css, the rewrites at /api/v1//chatbot/session", async () => {
    // superstatic 10 looks files up after normalizeMultiSlashes and matches rewrites on a
    // normalised path: the Hosting emulator (firebase-tools 15.34) serves both. The function gets
    // the path as sent, and its routes (routes.ts `segments`) read `//` as `/`.
    const file = await raw(harness.api.baseUrl, "GET", "//app.css");
    expect(file.status).toBe(200);
    expect(file.text).toBe(publicFile("app.css"));
    expect((await raw(harness.api.baseUrl, "GET", "///")).text).toBe(publicFile("index.html"));
    const created = await harness.api.call("POST", "/api/v1//chatbot/session", { user_id: "slashes-user", template_id: "friendly-assistant" });
    expect(created.status).toBe(201);
    const id = String(created.body.session_id);
    expect((await harness.api.call("POST", `/api/v1/chatbot//session/${id}//message`, { message: "hi" })).status).toBe(200);
  });

  it("serves a target in absolute form by its path and query as sent (RFC 9112 3.2.2), as Hosting does and express routes it", async () => {
    const origin = harness.api.baseUrl;
    const file = await raw(origin, "GET", `${origin}/app.css`);
    expect(file.status).toBe(200);
    expect(file.text).toBe(publicFile("app.css"));
    expect((await raw(origin, "GET", origin)).text).toBe(publicFile("index.html"));
    // The routes are there (405: use POST), and the query reaches the function.
    expect((await raw(origin, "GET", `${origin}${ROUTES.create}`)).status).toBe(405);
    expect((await raw(origin, "GET", `${origin}/api/v1/connections?user_id=absolute-user`)).status).toBe(200);
    expect((await raw(origin, "GET", `${origin}/api/v1/connections`)).status).toBe(400);
    // Its path is checked as written: nothing resolves its dot segments away first.
    const climb = await raw(origin, "GET", `${origin}/../firebase.json`);
    expect(climb.status).toBe(404);
    expect(JSON.parse(climb.text)).toEqual({ success: false, error: { code: "NOT_FOUND", message: "No such route" } });
  });

  it("serves Hosting's reserved /__/firebase/init.js, initialising the SDK for the project", async () => {
    const answer = await fetch(`${harness.api.baseUrl}/__/firebase/init.js`);
    expect(answer.status).toBe(200);
    expect(answer.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
    expect(await answer.text()).toContain('firebase.initializeApp({"projectId":"demo-chatify"');
  });

  it("serves the installed SDK's compat builds at /__/firebase/<version>/, nothing else", async () => {
    // `firebase` is a development dependency, installed wherever these tests run: no reason to skip.
    const sdk = localSite("demo-chatify").firebaseSdkDir;
    expect(sdk).toBeDefined();
    for (const name of ["firebase-app-compat.js", "firebase-auth-compat.js"]) {
      const answer = await fetch(`${harness.api.baseUrl}/__/firebase/12.19.0/${name}`);
      expect(answer.status).toBe(200);
      expect(answer.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
      expect(await answer.text()).toBe(readFileSync(join(sdk ?? "", name), "utf8"));
    }
    for (const path of ["/__/firebase/12.19.0/package.json", "/__/firebase/12.19.0/firebase-nope-compat.js", "/__/firebase/firebase-app-compat.js"]) {
      expect((await fetch(`${harness.api.baseUrl}${path}`)).status).toBe(404);
    }
  });
});

/** Hosting's rules on a site made for the test: ignore globs, folders, links out of the folder. */
describe("a static site's edges", () => {
  let harness: Harness;
  let server: SiteServer;
  let base: string;
  let dir: string;
  let root: string;
  const ignore = ["firebase.json", "**/.*", "**/node_modules/**"];

  beforeAll(async () => {
    harness = await startHarness({ store: "memory" });
    dir = mkdtempSync(join(tmpdir(), "chatify-site-"));
    root = join(dir, "public");
    mkdirSync(join(root, "guide"), { recursive: true });
    mkdirSync(join(root, "node_modules", "x"), { recursive: true });
    mkdirSync(join(root, "docs", "node_modules"), { recursive: true });
    writeFileSync(join(root, "index.html"), "<p>home</p>");
    writeFileSync(join(root, "guide", "index.html"), "<p>guide</p>");
    writeFileSync(join(root, ".env"), "SECRET=1");
    writeFileSync(join(root, "firebase.json"), "{}");
    writeFileSync(join(root, "node_modules", "x", "a.js"), "1");
    writeFileSync(join(root, "node_modules", "index.html"), "<p>never deployed</p>");
    writeFileSync(join(root, "docs", "node_modules", "index.html"), "<p>never deployed either</p>");
    writeFileSync(join(root, "data.bin"), "bytes");
    writeFileSync(join(dir, "outside.txt"), "outside");
    symlinkSync(join(dir, "outside.txt"), join(root, "link.txt"));
    const site: StaticSite = {
      publicDir: root,
      ignore,
      firebaseConfig: { projectId: "demo-chatify" },
      policy: pagePolicy("demo-chatify", pageOrigins("demo-chatify", ["us-central1"])),
    };
    server = await startSiteServer(site, harness.api.runtime.api);
    base = server.baseUrl;
  });
  afterAll(async () => {
    await server.close();
    await harness.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it.each(["/.env", "/firebase.json", "/node_modules/x/a.js", "/link.txt"])("does not serve %s (ignored, or a link out of the folder)", async (path) => {
    const answer = await raw(base, "GET", path);
    expect(answer.status).toBe(404);
    expect(answer.text).not.toMatch(/SECRET|outside/);
  });

  it("leaves out of a deploy the index.html of a folder the ignore globs name (firebase-tools' listFiles)", () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { listFiles } = require("firebase-tools/lib/listFiles") as { listFiles: (cwd: string, ignore: string[]) => string[] };
    expect(listFiles(root, ignore).filter((file) => file.endsWith("index.html")).sort()).toEqual(["guide/index.html", "index.html"]);
  });

  it.each(["/node_modules", "/node_modules/", "/node_modules/index.html", "/docs/node_modules/"])(
    "does not serve at %s the index.html a deploy leaves out, nor redirect to it (404, as Hosting)",
    async (path) => {
      const answer = await raw(base, "GET", path);
      expect({ path, status: answer.status }).toEqual({ path, status: 404 });
      expect(answer.text).not.toContain("never deployed");
    },
  );

  it("redirects a folder to its trailing slash, then serves its index.html", async () => {
    const redirect = await raw(base, "GET", "/guide");
    expect(redirect.status).toBe(301);
    expect(redirect.headers.location).toBe("/guide/");
    const page = await raw(base, "GET", "/guide/");
    expect(page.status).toBe(200);
    expect(page.text).toBe("<p>guide</p>");
  });

  it("keeps the query in the redirect to a folder's slash, and names the path with one slash (superstatic: pathname + '/' + search)", async () => {
    // The Hosting emulator answers GET /guide?api=1&x=2 with `Location: /guide/?api=1&x=2`.
    const redirect = await raw(base, "GET", "/guide?api=https%3A%2F%2Fexample.test&x=1");
    expect(redirect.status).toBe(301);
    expect(redirect.headers.location).toBe("/guide/?api=https%3A%2F%2Fexample.test&x=1");
    // Never `//guide/`, which a browser reads as the host `guide`.
    expect((await raw(base, "GET", "//guide")).headers.location).toBe("/guide/");
    expect((await raw(base, "GET", "//guide//?x=1")).text).toBe("<p>guide</p>");
  });

  it("serves an unknown extension as bytes, and no init.js SDK files without an SDK folder", async () => {
    const file = await raw(base, "GET", "/data.bin");
    expect(file.headers["content-type"]).toBe("application/octet-stream");
    expect((await raw(base, "GET", "/__/firebase/12.19.0/firebase-app-compat.js")).status).toBe(404);
  });
});

/**
 * Hosting's own server as the oracle: superstatic 10, which firebase-tools' Hosting emulator runs,
 * from firebase-tools (a development dependency), on the same folder, offline.
 */
// eslint-disable-next-line @typescript-eslint/no-require-imports -- Hosting's own server, resolved where firebase-tools finds it
const superstatic = (require(require.resolve("superstatic", { paths: [require.resolve("firebase-tools")] })) as { default: (options: { cwd: string; config: { public: string } }) => RequestListener }).default;
// eslint-disable-next-line @typescript-eslint/no-require-imports -- superstatic is connect middleware
const connectApp = require(require.resolve("connect", { paths: [require.resolve("firebase-tools")] })) as () => { use(middleware: RequestListener): RequestListener };
// eslint-disable-next-line @typescript-eslint/no-require-imports -- the table superstatic types files with (responder.js)
const hostingTypes = require(require.resolve("mime-types", { paths: [require.resolve("superstatic", { paths: [require.resolve("firebase-tools")] })] })) as { contentType(extension: string): string | false; types: Readonly<Record<string, string>> };

/** A site of `files` (relative paths, folders made as needed) in a new temporary folder: its public/ and the folder. */
function siteOf(files: readonly string[]): { dir: string; site: StaticSite } {
  const dir = mkdtempSync(join(tmpdir(), "chatify-site-hosting-"));
  const root = join(dir, "public");
  for (const file of files) {
    mkdirSync(join(root, file, ".."), { recursive: true });
    writeFileSync(join(root, file), file.endsWith(".html") ? `<p>${file}</p>` : "x");
  }
  return {
    dir,
    site: {
      publicDir: root,
      ignore: ["firebase.json", "**/.*", "**/node_modules/**"],
      firebaseConfig: { projectId: "demo-chatify" },
      policy: pagePolicy("demo-chatify", pageOrigins("demo-chatify", ["us-central1"])),
    },
  };
}

/** A folder of assets (`/images`) with no index.html is no page: Hosting does not redirect it to its slash. */
describe("a folder of public/ without an index.html, answered as Hosting does", () => {
  let dir: string;
  let local: SiteServer;
  let hosting: { server: Server; base: string };

  beforeAll(async () => {
    const made = siteOf(["index.html", "images/logo.png", "guide/index.html", "nested/folder/index.html/not-a-file.txt"]);
    dir = made.dir;
    local = await startSiteServer(made.site);
    const server = createServer(connectApp().use(superstatic({ cwd: dir, config: { public: "public" } })));
    await new Promise<void>((listening) => server.listen(0, "127.0.0.1", listening));
    hosting = { server, base: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
  });
  afterAll(async () => {
    await local.close();
    hosting.server.closeAllConnections();
    await new Promise((closed) => hosting.server.close(closed));
    rmSync(dir, { recursive: true, force: true });
  });

  const answer = async (base: string, path: string) => {
    const response = await fetch(`${base}${path}`, { redirect: "manual" });
    await response.arrayBuffer();
    return { path, status: response.status, location: response.headers.get("location") };
  };

  it("redirects a folder with its index.html to its slash, as Hosting does", async () => {
    const hosted = await answer(hosting.base, "/guide?x=1");
    expect(hosted).toEqual({ path: "/guide?x=1", status: 301, location: "/guide/?x=1" });
    expect(await answer(local.baseUrl, "/guide?x=1")).toEqual(hosted);
  });

  it.each(["/images", "/images?x=1", "/images/", "/nested/folder", "/nested/folder/"])("answers %s not found, with no redirect, as Hosting does", async (path) => {
    const hosted = await answer(hosting.base, path);
    expect(hosted).toEqual({ path, status: 404, location: null });
    expect(await answer(local.baseUrl, path)).toEqual(hosted);
  });
});

/** The content type of each file Hosting types by its table (mime-types), where this server had 16 extensions and bytes for the rest. */
describe("content types of public/'s files, as Hosting gives them", () => {
  const FILES = ["module.wasm", "manual.pdf", "clip.mp4", "clip.webm", "sound.mp3", "sound.wav", "photo.avif", "font.woff", "font.ttf", "feed.xml", "data.csv", "Photo.PNG", "icon.ico", "app.webmanifest", "script.es"];
  let dir: string;
  let local: SiteServer;

  beforeAll(async () => {
    const made = siteOf([...FILES, "data.unknown-extension"]);
    dir = made.dir;
    local = await startSiteServer(made.site);
  });
  afterAll(async () => {
    await local.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it.each(FILES)("serves %s with the content type Hosting's table gives it", async (file) => {
    const hosting = hostingTypes.contentType(file.slice(file.lastIndexOf(".")).toLowerCase());
    expect(hosting).not.toBe(false);
    const response = await fetch(`${local.baseUrl}/${file}`);
    await response.arrayBuffer();
    expect({ file, status: response.status, type: response.headers.get("content-type") }).toEqual({ file, status: 200, type: hosting });
  });

  it("serves every extension either table knows (Hosting's, the local server's) as Hosting's table types it, the page's JavaScript aside", async () => {
    const extensions = [...new Set([...Object.keys(hostingTypes.types), ...Object.keys(localTypes)])].filter((extension) => extension !== "js" && extension !== "mjs");
    const { dir: other, site } = siteOf(extensions.map((extension) => `file.${extension}`));
    const server = await startSiteServer(site);
    try {
      const differing: { extension: string; local: string; hosting: string }[] = [];
      // Some 1,200 files, 32 at a time.
      for (let start = 0; start < extensions.length; start += 32) {
        await Promise.all(extensions.slice(start, start + 32).map(async (extension) => {
          const response = await fetch(`${server.baseUrl}/file.${extension}`, { method: "HEAD" });
          const hosting = hostingTypes.contentType(`.${extension}`) || "application/octet-stream";
          const local = response.headers.get("content-type");
          if (response.status !== 200 || local !== hosting) differing.push({ extension, local: `${response.status} ${local}`, hosting });
        }));
      }
      expect({ checked: extensions.length > 1000, differing }).toEqual({ checked: true, differing: [] });
    } finally {
      await server.close();
      rmSync(other, { recursive: true, force: true });
    }
  });

  it("serves an extension no table knows as bytes", async () => {
    expect(hostingTypes.contentType(".unknown-extension")).toBe(false);
    const response = await fetch(`${local.baseUrl}/data.unknown-extension`);
    expect(await response.text()).toBe("x");
    expect(response.headers.get("content-type")).toBe("application/octet-stream");
  });

  it("keeps the page's own types: JavaScript as text/javascript (RFC 9239), where superstatic's older table says application/javascript", async () => {
    expect(hostingTypes.contentType(".js")).toBe("application/javascript; charset=utf-8");
    const { dir: other, site } = siteOf(["app.mjs", "app.js"]);
    const server = await startSiteServer(site);
    try {
      for (const file of ["app.js", "app.mjs"]) {
        const response = await fetch(`${server.baseUrl}/${file}`);
        await response.arrayBuffer();
        expect({ file, type: response.headers.get("content-type") }).toEqual({ file, type: "text/javascript; charset=utf-8" });
      }
    } finally {
      await server.close();
      rmSync(other, { recursive: true, force: true });
    }
  });
});
