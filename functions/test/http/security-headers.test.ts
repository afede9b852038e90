import { readFileSync } from "node:fs";
import type { Server } from "node:http";
import { connect, type AddressInfo } from "node:net";
import { join } from "node:path";
import { z } from "zod";
import type { Api } from "../../src/http/api";
import { ERROR_CODES } from "../../src/http/error-codes";
import { createLocalServer } from "../../src/local/local-server";
import { hostingRewrites, localSite, PROJECT_ROOT } from "../../src/local/project-files";
import { ROUTES, startHarness, type Harness } from "../support/http-harness";
import { startSiteServer, type SiteServer } from "../support/site-server";

/** firebase.json's Hosting headers (its one rule, for every path), as Hosting sends them. */
function hostingHeaders(): Record<string, string> {
  const config = z
    .object({ hosting: z.object({ headers: z.array(z.object({ source: z.literal("**"), headers: z.array(z.object({ key: z.string(), value: z.string() })) })).length(1) }) })
    .parse(JSON.parse(readFileSync(join(PROJECT_ROOT, "firebase.json"), "utf8")));
  return Object.fromEntries(config.hosting.headers[0]!.headers.map((header) => [header.key, header.value]));
}

/** The answer's values of the headers `expected` names (null where absent). */
function headersNamed(answer: Response, expected: Record<string, string>): Record<string, string | null> {
  return Object.fromEntries(Object.keys(expected).map((name) => [name, answer.headers.get(name)]));
}

/** The policy with the Auth emulator firebase.json names (what a demo- project's page may reach) taken out of connect-src. */
const withoutEmulator = (policy: string) => policy.replace(" http://127.0.0.1:9099", "");

/**
 * `npm start` serves the page with the headers Hosting serves it with (firebase.json's
 * `hosting.headers`): the same on every answer, the API's included, as Hosting applies them.
 */
describe("the page's security headers from the local server", () => {
  let harness: Harness;
  let server: SiteServer;
  const expected = hostingHeaders();

  beforeAll(async () => {
    harness = await startHarness({ store: "memory" });
    // As `npm start` for the .firebaserc project with the Auth emulator the README starts
    // (firebase.json's, the one the Hosting emulator connects the page to).
    server = await startSiteServer(localSite("demo-chatify", "127.0.0.1:9099"), harness.api.runtime.api);
  });
  afterAll(async () => {
    await server.close();
    await harness.close();
  });

  it("names at least the headers a strict deployment sets", () => {
    expect(Object.keys(expected)).toEqual(
      expect.arrayContaining(["Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options", "Referrer-Policy", "Permissions-Policy"]),
    );
  });

  it.each(["/", "/index.html", "/app.js", "/app.css", "/api-bases.json", "/error-codes.json", "/__/firebase/init.js", "/no-such-file"])("GET %s carries firebase.json's headers, exactly", async (path) => {
    const answer = await fetch(`${server.baseUrl}${path}`);
    expect(headersNamed(answer, expected)).toEqual(expected);
  });

  it("the API's answers carry them too: JSON, a streamed reply, an error", async () => {
    const created = await fetch(`${server.baseUrl}${ROUTES.create}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ user_id: "user_headers", template_id: "friendly-assistant" }),
    });
    expect(created.status).toBe(201);
    expect(headersNamed(created, expected)).toEqual(expected);
    const { session_id: id } = z.object({ session_id: z.string() }).parse(await created.json());

    const streamed = await fetch(`${server.baseUrl}${ROUTES.message(id)}`, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "text/event-stream" },
      body: JSON.stringify({ message: "hi" }),
    });
    expect(streamed.headers.get("content-type")).toMatch(/^text\/event-stream/);
    await streamed.text();
    expect(headersNamed(streamed, expected)).toEqual(expected);

    const refused = await fetch(`${server.baseUrl}${ROUTES.create}`, { method: "GET" });
    expect(refused.status).toBe(405);
    expect(headersNamed(refused, expected)).toEqual(expected);
  });

  it("serves the API bases of its own project at /api-bases.json, in place of public/'s file", async () => {
    const other = await startSiteServer(localSite("demo-other"));
    try {
      const answer = await fetch(`${other.baseUrl}/api-bases.json`);
      expect(answer.headers.get("content-type")).toBe("application/json; charset=utf-8");
      expect(await answer.json()).toEqual({ project: "demo-other", apiBases: ["https://us-central1-demo-other.cloudfunctions.net"] });
      expect(answer.headers.get("content-security-policy")).toContain(" https://us-central1-demo-other.cloudfunctions.net ");
      expect(answer.headers.get("content-security-policy")).not.toContain("127.0.0.1");
      expect(answer.headers.get("content-security-policy")).not.toContain("demo-chatify");
    } finally {
      await other.close();
    }
    // The committed file is the deployed project's; the server's own matches it for that project.
    const served = await (await fetch(`${server.baseUrl}/api-bases.json`)).json();
    expect(served).toEqual(JSON.parse(readFileSync(join(PROJECT_ROOT, "public", "api-bases.json"), "utf8")));
  });

  it("serves the API's error codes at /error-codes.json from the list the API answers from, as the committed file holds them", async () => {
    const answer = await fetch(`${server.baseUrl}/error-codes.json`);
    expect(answer.headers.get("content-type")).toBe("application/json; charset=utf-8");
    const served = await answer.json();
    expect(served).toEqual({ errorCodes: ERROR_CODES });
    expect(served).toEqual(JSON.parse(readFileSync(join(PROJECT_ROOT, "public", "error-codes.json"), "utf8")));
  });

  it("names the Auth emulator it checks tokens on in connect-src, and none without one; nothing else changes", async () => {
    const policy = expected["Content-Security-Policy"] ?? "";
    expect(policy).toContain(" http://127.0.0.1:9099;");
    for (const [host, connect] of [[undefined, ""], ["127.0.0.1:9199", " http://127.0.0.1:9199"]] as const) {
      const other = await startSiteServer(localSite("demo-chatify", host));
      try {
        const answer = await fetch(`${other.baseUrl}/`);
        expect(headersNamed(answer, expected)).toEqual({
          ...expected,
          "Content-Security-Policy": withoutEmulator(policy).replace(/(connect-src [^;]*)/, `$1${connect}`),
        });
      } finally {
        await other.close();
      }
    }
  });

  it("refuses an Auth emulator host that would add to the policy", () => {
    expect(() => localSite("demo-chatify", "127.0.0.1:9099; script-src *")).toThrow(/host:port/);
    expect(() => localSite("demo-chatify", "127.0.0.1:9099 https://evil.example")).toThrow(/host:port/);
  });
});

/** Sends `request` (a slice every 40 ms after the first, if more) on a fresh connection; resolves with all received once the server hangs up. */
function exchange(port: number, request: string, ...later: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    let text = "";
    const trickle = setInterval(() => {
      const next = later.shift();
      if (next !== undefined) socket.write(next);
    }, 40);
    const timer = setTimeout(() => {
      clearInterval(trickle);
      socket.destroy();
      reject(new Error(`no hang-up within 5 s; received: ${JSON.stringify(text)}`));
    }, 5_000);
    socket.on("data", (chunk: Buffer) => { text += chunk.toString("latin1"); });
    socket.on("close", () => {
      clearInterval(trickle);
      clearTimeout(timer);
      resolve(text);
    });
    // A reset after the server's answer (it hangs up with the request unread) loses nothing received.
    socket.on("error", () => undefined);
    socket.write(request);
  });
}

/** A raw answer's status line and headers, names in lower case. */
function parsed(answer: string): { statusLine: string; headers: Record<string, string> } {
  const [statusLine = "", ...lines] = answer.split("\r\n\r\n")[0]!.split("\r\n");
  return { statusLine, headers: Object.fromEntries(lines.map((line) => [line.slice(0, line.indexOf(":")).toLowerCase(), line.slice(line.indexOf(":") + 1).trim()])) };
}

/**
 * The answers Node's HTTP server would write itself, with none of the page's headers: its replies
 * to a connection that breaks HTTP, and its 417. A link with a long query is enough for one.
 */
describe("the page's security headers on the answers Node writes for the local server", () => {
  let server: Server;
  let port: number;
  const expected = Object.fromEntries(Object.entries(hostingHeaders()).map(([name, value]) => [name.toLowerCase(), withoutEmulator(value)]));
  const files: Api = () => Promise.reject(new Error("files only"));
  const SHORT = { headersTimeoutMs: 300, requestTimeoutMs: 600, idleTimeoutMs: 300 };

  beforeAll(async () => {
    server = createLocalServer({ api: files, maxBodyBytes: 1024, rewrites: hostingRewrites(), projectId: "demo-chatify", region: "us-central1", site: localSite("demo-chatify"), limits: SHORT });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  it("a file carries them (the same server's ordinary answer)", async () => {
    const answer = parsed(await exchange(port, "GET /app.css HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"));
    expect(answer.statusLine).toBe("HTTP/1.1 200 OK");
    expect(answer.headers).toMatchObject(expected);
  });

  it.each([
    ["a link whose query is over Node's 16 KiB of headers", "HTTP/1.1 431 Request Header Fields Too Large", `GET /?q=${"a".repeat(20_000)} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`],
    ["a malformed request (two Content-Lengths)", "HTTP/1.1 400 Bad Request", "POST /api/v1/chatbot/session HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"],
    ["a chunk extension over Node's 16 KiB", "HTTP/1.1 413 Payload Too Large", `POST /api/v1/chatbot/session HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n1;${"a".repeat(20_000)}\r\n`],
    ["headers never finished (the headers timeout)", "HTTP/1.1 408 Request Timeout", "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"],
    ["an HTTP/1.1 request without a Host header", "HTTP/1.1 400 Bad Request", "GET / HTTP/1.1\r\n\r\n"],
    ["an HTTP/1.1 request without a Host header, whatever it expects (Node checks the Host first)", "HTTP/1.1 400 Bad Request", "GET / HTTP/1.1\r\nExpect: something-else\r\n\r\n"],
  ])("%s is answered %s, carrying them, and the connection closed", async (_what, statusLine, request) => {
    const answer = parsed(await exchange(port, request));
    expect(answer.statusLine).toBe(statusLine);
    expect(answer.headers).toMatchObject({ ...expected, connection: "close" });
  });

  it("what Node's Host check lets through is served: HTTP/1.0 without Host, HTTP/1.1 with an empty one", async () => {
    for (const request of ["GET /app.css HTTP/1.0\r\n\r\n", "GET /app.css HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n"]) {
      const text = await exchange(port, request);
      expect({ request, statusLine: parsed(text).statusLine }).toEqual({ request, statusLine: "HTTP/1.1 200 OK" });
      expect(text.slice(text.indexOf("\r\n\r\n") + 4)).toBe(publicCss());
    }
  });

  it("an Expect other than 100-continue is answered 417, carrying them", async () => {
    const answer = parsed(await exchange(port, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: something-else\r\nConnection: close\r\n\r\n"));
    expect(answer.statusLine).toBe("HTTP/1.1 417 Expectation Failed");
    expect(answer.headers).toMatchObject(expected);
  });

  it("a request timeout once a file's answer has begun only closes the connection: nothing lands inside the answer", async () => {
    // The file is answered at once; its body, which the client trickles, holds the answer's end back until the request timeout.
    const text = await exchange(port, "GET /app.css HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n", ...Array.from({ length: 100 }, () => " "));
    expect(parsed(text).statusLine).toBe("HTTP/1.1 200 OK");
    expect(text.slice(text.indexOf("\r\n\r\n") + 4)).toBe(publicCss());
  });
});

const publicCss = () => readFileSync(join(PROJECT_ROOT, "public", "app.css"), "latin1");
