import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Api } from "../http/api";
import { ENDPOINTS, type Endpoint } from "../http/endpoints";
import { errorBody, toErrorAnswer } from "../http/error-response";
import { HttpError } from "../http/http-error";
import type { HttpRequest, HttpResponse } from "../http/http-types";
import { globToRegExp } from "./glob";
import type { HostingRewrite } from "./project-files";

export interface LocalServerOptions {
  readonly api: Api;
  /** Bodies are read up to this size (then 413). */
  readonly maxBodyBytes: number;
  readonly rewrites: readonly HostingRewrite[];
  readonly projectId: string;
  readonly region: string;
}

interface Target {
  readonly endpoint: Endpoint;
  /** The path the function sees, as on the platform. */
  readonly path: string;
}

/**
 * One Node process serving all three functions the two ways the platform does: through the
 * Hosting rewrites of firebase.json (the original routes, full path kept) and directly
 * (`/{function}/...` or `/{project}/{region}/{function}/...`, function prefix stripped).
 */
export function createLocalServer(options: LocalServerOptions): Server {
  const rewrites = options.rewrites.map((rewrite) => {
    const endpoint = endpointNamed(rewrite.functionId);
    if (!endpoint) throw new Error(`firebase.json rewrites ${rewrite.source} to unknown function ${rewrite.functionId}`);
    return { pattern: globToRegExp(rewrite.source), endpoint };
  });

  function route(path: string): Target | undefined {
    const rewrite = rewrites.find((candidate) => candidate.pattern.test(path));
    if (rewrite) return { endpoint: rewrite.endpoint, path };
    const parts = path.split("/");
    const direct = parts[1] === options.projectId && parts[2] === options.region ? 3 : 1;
    const endpoint = endpointNamed(parts[direct] ?? "");
    return endpoint ? { endpoint, path: `/${parts.slice(direct + 1).join("/")}` } : undefined;
  }

  return createServer((request, response) => {
    void serve(request, response, route, options).catch(() => {
      if (!response.headersSent) write(response, errorResponse(new Error("unexpected")));
      else response.destroy();
    });
  });
}

async function serve(
  request: IncomingMessage,
  response: ServerResponse,
  route: (path: string) => Target | undefined,
  options: LocalServerOptions,
): Promise<void> {
  // The raw target, not `new URL`: a target such as "//x" would be read as a host, or throw.
  const path = (request.url ?? "/").split("?")[0] ?? "/";
  const target = path.startsWith("/") ? route(path) : undefined;
  if (!target) {
    request.resume();
    write(response, errorResponse(new HttpError(404, "NOT_FOUND", "No such route")));
    return;
  }
  const { body, complete } = await readBody(request, options.maxBodyBytes);
  const httpRequest: HttpRequest = {
    method: (request.method ?? "GET").toUpperCase(),
    path: target.path,
    headers: flattenHeaders(request),
    body,
  };
  const answer = await options.api(target.endpoint.name, httpRequest);
  if (complete) {
    write(response, answer);
    return;
  }
  // The rest of an oversized body is never read, so the connection cannot serve another request.
  response.setHeader("Connection", "close");
  write(response, answer, () => request.destroy());
}

function endpointNamed(name: string): Endpoint | undefined {
  return Object.values(ENDPOINTS).find((endpoint) => endpoint.name === name);
}

/**
 * Reads at most `maxBytes + 1` bytes: enough for the boundary to see that a body is too large
 * (413) without buffering whatever a client chooses to send.
 */
function readBody(request: IncomingMessage, maxBytes: number): Promise<{ body: Buffer; complete: boolean }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      size += chunk.length;
      if (size > maxBytes) {
        request.off("data", onData);
        request.pause();
        resolve({ body: Buffer.concat(chunks).subarray(0, maxBytes + 1), complete: false });
      }
    };
    request.on("data", onData);
    request.on("end", () => { resolve({ body: Buffer.concat(chunks), complete: true }); });
    request.on("error", reject);
  });
}

function flattenHeaders(request: IncomingMessage): Record<string, string | undefined> {
  const headers: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(request.headers)) {
    headers[name] = Array.isArray(value) ? value.join(", ") : value;
  }
  return headers;
}

function errorResponse(error: unknown): HttpResponse {
  const answer = toErrorAnswer(error);
  return { status: answer.status, headers: answer.headers, body: errorBody(answer) };
}

function write(response: ServerResponse, answer: HttpResponse, done?: () => void): void {
  const payload = answer.body === undefined ? undefined : JSON.stringify(answer.body);
  const headers: Record<string, string | number> = { ...answer.headers };
  if (payload !== undefined) {
    headers["Content-Type"] = "application/json; charset=utf-8";
    headers["Content-Length"] = Buffer.byteLength(payload);
  }
  response.writeHead(answer.status, headers);
  response.end(payload, done);
}
