import { createServer, STATUS_CODES, validateHeaderName, validateHeaderValue, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Duplex, Readable, Transform } from "node:stream";
import type { Api } from "../http/api";
import { ENDPOINTS, type Endpoint } from "../http/endpoints";
import type { StreamSink } from "../http/event-stream";
import { errorResponse } from "../http/error-response";
import { HttpError } from "../http/http-error";
import type { HttpRequest, HttpResponse } from "../http/http-types";
import { drainedOf, queryOf } from "../http/response-flow";
import { bodyDecoder, DECODED_ENCODINGS } from "./body-encoding";
import { globToRegExp } from "./glob";
import type { HostingRewrite } from "./project-files";
import { collapseSlashes, requestTarget } from "./request-target";
import { staticAnswer, type StaticSite } from "./static-site";

export interface LocalServerOptions {
  readonly api: Api;
  /** Bodies are read up to this size (then 413). */
  readonly maxBodyBytes: number;
  readonly rewrites: readonly HostingRewrite[];
  readonly projectId: string;
  readonly region: string;
  /** Served at `/` before the rewrites, as Hosting serves its public folder; absent, only the functions are served. */
  readonly site?: StaticSite;
  /** The production defaults unless given (tests shorten them). */
  readonly limits?: Partial<ConnectionLimits>;
}

/** What a connection may cost the server before it is dropped. */
export interface ConnectionLimits {
  /** From the connection, or the first byte of a later request on it, until the headers are in: 408 after. */
  readonly headersTimeoutMs: number;
  /** Until the whole request, body included, is in: 408 after. The reply may take longer (the model). */
  readonly requestTimeoutMs: number;
  /** A kept-alive connection with no request in progress. */
  readonly idleTimeoutMs: number;
  /** How much more of a body over MAX_BODY_BYTES is read and thrown away after the 413, before hanging up. */
  readonly drainLimitBytes: number;
}

/**
 * As a production front end would, so that neither silent nor slow clients hold sockets open:
 * - headers 20 s: a client sends its headers in one write, so this only bounds slow-header
 *   (slowloris) and never-speaking connections, with room for a poor mobile link;
 * - request 30 s: bodies are at most MAX_BODY_BYTES (32 KiB by default, 10 MiB at most);
 * - idle 30 s between requests: twice a streamed reply's 15 s heartbeat, so one rule holds for
 *   the whole connection (quiet for two heartbeats means gone); Node advertises it as
 *   `Keep-Alive: timeout=30` and waits a further second, so clients that honour it (fetch)
 *   retire the connection first and never send a request into a closing socket;
 * - drain 16 MiB: enough for any client that stops sending once it sees the early 413 (fetch
 *   does) on links up to about a gigabit at 100 ms, and for clients that read only after sending
 *   a body of that size; beyond it, reading is only work for nothing.
 * There is no inactivity timeout on a request in progress: a reply waits, silent, on the model
 * for up to the function's timeout. Header size stays at Node's 16 KiB (431 beyond);
 * `maxHeadersCount` is left alone, since Node drops extra headers silently instead of refusing.
 */
export const CONNECTION_LIMITS: ConnectionLimits = {
  headersTimeoutMs: 20_000,
  requestTimeoutMs: 30_000,
  idleTimeoutMs: 30_000,
  drainLimitBytes: 16 * 1024 * 1024,
};

interface Target {
  readonly endpoint: Endpoint;
  /** The path the function sees, as on the platform. */
  readonly path: string;
}

/**
 * One Node process serving all three functions the two ways the platform does: through the
 * Hosting rewrites of firebase.json (the original routes, full path kept) and directly
 * (`/{function}/...` or `/{project}/{region}/{function}/...`, function prefix stripped); and,
 * first, for GET and HEAD, Hosting's static files (`site`), so the page and the API share an origin.
 */
export function createLocalServer(options: LocalServerOptions): Server {
  const rewrites = options.rewrites.map((rewrite) => {
    const endpoint = endpointNamed(rewrite.functionId);
    if (!endpoint) throw new Error(`firebase.json rewrites ${rewrite.source} to unknown function ${rewrite.functionId}`);
    return { pattern: globToRegExp(rewrite.source), endpoint };
  });

  function route(path: string): Target | undefined {
    // Matched as Hosting matches (slashes collapsed), handed on as sent: routes.ts reads `//` as `/`.
    const hostingPath = collapseSlashes(path);
    const rewrite = rewrites.find((candidate) => candidate.pattern.test(hostingPath));
    if (rewrite) return { endpoint: rewrite.endpoint, path };
    const parts = path.split("/");
    const direct = parts[1] === options.projectId && parts[2] === options.region ? 3 : 1;
    const endpoint = endpointNamed(parts[direct] ?? "");
    return endpoint ? { endpoint, path: `/${parts.slice(direct + 1).join("/")}` } : undefined;
  }

  const limits = { ...CONNECTION_LIMITS, ...options.limits };
  // As Hosting applies firebase.json's `headers` (source "**"): to every answer, files, API and
  // errors alike, the ones Node writes itself included (below).
  const policy = options.site?.policy.headers ?? {};
  const answers = new AnswersUnderWay();
  /** What every answer begins with; false when it is already the 400 to a request without Host. */
  const begin = (request: IncomingMessage, response: ServerResponse): boolean => {
    answers.add(request.socket, response);
    for (const [name, value] of Object.entries(policy)) response.setHeader(name, value);
    if (!lacksHost(request)) return true;
    response.writeHead(400, { Connection: "close" }).end();
    return false;
  };
  const server = createServer(
    {
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      keepAliveTimeout: limits.idleTimeoutMs,
      // Both timeouts are enforced by a sweep, every 30 s by default: a slow client would keep
      // its socket up to that much past the limit.
      connectionsCheckingInterval: Math.min(1_000, Math.ceil(limits.headersTimeoutMs / 4)),
      // Node 24 (lib/_http_server.js) answers an HTTP/1.1 request without Host with a bare 400
      // before any listener sees it: the same 400 is written by `begin`, with the policy's headers.
      requireHostHeader: false,
    },
    (request, response) => {
      if (!begin(request, response)) return;
      void serve(request, response, route, options, limits.drainLimitBytes).catch(() => {
        if (!response.headersSent) write(response, errorResponse(new Error("unexpected")));
        else response.destroy();
      });
    },
  );
  // Node 24 (lib/_http_server.js) answers an `Expect` other than 100-continue with a bare 417
  // unless this event has a listener: the same 417, with the policy's headers, and its request's
  // body discarded up to the drain limit as behind any early answer (ended here, Node would read
  // all of it: its server dumps the unread body of a finished answer, with no bound).
  server.on("checkExpectation", (request: IncomingMessage, response: ServerResponse) => {
    if (!begin(request, response)) return;
    response.writeHead(417);
    sendBeforeBody(request, response, undefined, limits.drainLimitBytes);
  });
  server.on("clientError", clientErrorAnswer(policy, answers));
  return server;
}

/** RFC 9112 3.2 (Node's check, which an empty Host passes): an HTTP/1.1 request must name its host. */
function lacksHost(request: IncomingMessage): boolean {
  return request.httpVersionMajor === 1 && request.httpVersionMinor === 1 && request.headers.host === undefined;
}

/**
 * The answers of each connection not yet finished: Node writes its own error reply on a
 * connection only while the answer attached to it has not sent its head, and tells no one which
 * answer that is (its `socket._httpMessage`, not public). The attached one is the answer whose
 * `socket` is the connection: Node sets it when it attaches an answer and clears it when the
 * answer finishes, while a pipelined answer waiting its turn has none.
 */
class AnswersUnderWay {
  private readonly byConnection = new WeakMap<Duplex, Set<ServerResponse>>();

  add(connection: Duplex, response: ServerResponse): void {
    const answers = this.byConnection.get(connection) ?? new Set<ServerResponse>();
    this.byConnection.set(connection, answers);
    answers.add(response);
    response.once("close", () => answers.delete(response));
  }

  /** Whether the answer attached to `connection` has begun: an error reply would land inside it. */
  begun(connection: Duplex): boolean {
    return [...(this.byConnection.get(connection) ?? [])].some((response) => response.socket === connection && response.headersSent);
  }
}

/**
 * Node's own handling of a connection that breaks HTTP (a malformed request, headers over 16 KiB,
 * a timeout), with the policy's headers: without a `clientError` listener, Node 24
 * (lib/_http_server.js, socketOnError) writes a fixed reply with none of them (431 for
 * HPE_HEADER_OVERFLOW, 413 for HPE_CHUNK_EXTENSIONS_OVERFLOW, 408 for ERR_HTTP_REQUEST_TIMEOUT,
 * 400 for anything else, each with `Connection: close` alone), only when the socket is writable
 * and the attached answer has not sent its head, then destroys the socket. The same here, and a
 * reset (ECONNRESET) only destroys it: the client is gone. A link with a 20 KiB query is enough
 * for the 431, so the page's headers must hold on these too.
 */
function clientErrorAnswer(policy: Readonly<Record<string, string>>, answers: AnswersUnderWay): (error: Error, socket: Duplex) => void {
  const lines = Object.entries(policy).map(([name, value]) => {
    // Written to the socket as they are, so checked as setHeader checks them (it throws on CR or LF).
    validateHeaderName(name);
    validateHeaderValue(name, value);
    return `${name}: ${value}\r\n`;
  });
  const reply = (status: number) => Buffer.from(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ""}\r\n${lines.join("")}Connection: close\r\n\r\n`, "latin1");
  const replies = { 400: reply(400), 408: reply(408), 413: reply(413), 431: reply(431) };
  return (error, socket) => {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== "ECONNRESET" && socket.writable && !answers.begun(socket)) {
      socket.write(
        code === "HPE_HEADER_OVERFLOW" ? replies[431]
        : code === "HPE_CHUNK_EXTENSIONS_OVERFLOW" ? replies[413]
        : code === "ERR_HTTP_REQUEST_TIMEOUT" ? replies[408]
        : replies[400],
      );
    }
    socket.destroy(error);
  };
}

async function serve(
  request: IncomingMessage,
  response: ServerResponse,
  route: (path: string) => Target | undefined,
  options: LocalServerOptions,
  drainLimitBytes: number,
): Promise<void> {
  const { path, search } = requestTarget(request.url ?? "/");
  const query = queryOf(search);
  const method = (request.method ?? "GET").toUpperCase();
  // As Hosting: a file of the public folder wins over a rewrite; other methods never get files.
  if (options.site && path.startsWith("/") && (method === "GET" || method === "HEAD")) {
    const file = await staticAnswer(options.site, method, path, search);
    if (file?.kind === "refused") {
      answerBeforeBody(request, response, errorResponse(new HttpError("NOT_FOUND", "No such route")), drainLimitBytes);
      return;
    }
    if (file) {
      response.writeHead(file.status, file.headers);
      sendBeforeBody(request, response, file.body, drainLimitBytes);
      return;
    }
  }
  const target = path.startsWith("/") ? route(path) : undefined;
  if (!target) {
    answerBeforeBody(request, response, errorResponse(new HttpError("NOT_FOUND", "No such route")), drainLimitBytes);
    return;
  }
  const decoder = bodyDecoder(request);
  if (decoder === undefined) {
    answerBeforeBody(request, response, errorResponse(new HttpError("UNSUPPORTED_MEDIA_TYPE", `Content-Encoding must be ${DECODED_ENCODINGS}`)), drainLimitBytes);
    return;
  }
  // What a compressed body may cost on the wire, however little it decodes to: as much as a plain
  // body over the limit costs, MAX_BODY_BYTES and then the drain limit.
  const wireLimit = options.maxBodyBytes + drainLimitBytes;
  let read: { body: Buffer; complete: boolean };
  try {
    read = await (decoder === "identity" ? readBody(request, options.maxBodyBytes) : readDecoded(request, decoder(), options.maxBodyBytes, wireLimit));
  } catch (error) {
    // Over the wire limit: 413, and a hang-up at the next byte, the drain limit being spent already.
    if (error instanceof SentTooMuch) answerBeforeBody(request, response, errorResponse(new HttpError("PAYLOAD_TOO_LARGE", `A compressed request body must be sent in at most ${wireLimit} bytes`)), 0);
    else if (error instanceof SentPastTheEnd) answerBeforeBody(request, response, errorResponse(new HttpError("INVALID_REQUEST", "The request body goes on past the end of its compressed stream")), error.wireLeft);
    else answerBeforeBody(request, response, errorResponse(new HttpError("INVALID_REQUEST", "The request body does not decode as its Content-Encoding says")), drainLimitBytes);
    return;
  }
  const { body, complete } = read;
  // The socket's peer: nothing stands in front of this server, so a forwarded header is the client's own word.
  const address = request.socket.remoteAddress;
  const httpRequest: HttpRequest = {
    method,
    path: target.path,
    headers: flattenHeaders(request),
    body,
    ...(query === undefined ? {} : { query }),
    ...(address === undefined ? {} : { clientAddress: address }),
  };
  // A body cut short is refused (413) before anything could stream.
  const answer = await options.api(target.endpoint.name, httpRequest, complete ? nodeSink(response) : undefined);
  // Undefined: the answer was streamed, and has ended.
  if (answer === undefined) return;
  if (complete) write(response, answer);
  else answerBeforeBody(request, response, answer, drainLimitBytes);
}

/**
 * Streams on the response; Node sends each write at once (no Nagle delay on its server sockets).
 * A client that hung up makes writes no-ops: the request's work runs on and is stored.
 */
function nodeSink(response: ServerResponse): StreamSink {
  const gone = () => response.writableEnded || response.destroyed;
  return {
    open(status, headers) {
      response.writeHead(status, headers);
      response.flushHeaders();
    },
    write(text) {
      if (!gone()) response.write(text);
    },
    end() {
      if (!gone()) response.end();
    },
    drained: () => drainedOf(response),
  };
}

function endpointNamed(name: string): Endpoint | undefined {
  return Object.values(ENDPOINTS).find((endpoint) => endpoint.name === name);
}

/**
 * Reads at most `maxBytes + 1` bytes (of the body decoded, when it is encoded): enough for the
 * boundary to see that a body is too large (413) without buffering whatever a client chooses to
 * send, or a small compressed body inflates to.
 */
function readBody(request: Readable, maxBytes: number): Promise<{ body: Buffer; complete: boolean }> {
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

/** A compressed body that went on past `wireLimit` bytes sent: read no further, whatever it decodes to. */
class SentTooMuch extends Error {}

/** A request that went on after the end of its compressed stream; `wireLeft` of the wire limit may still be read. */
class SentPastTheEnd extends Error {
  constructor(readonly wireLeft: number) {
    super("the request goes on past the end of its compressed stream");
  }
}

/**
 * readBody of the request's body through `decoder`. However it ends short (too large, or not
 * decoding), the request is taken off the decoder again, so that answerBeforeBody can read and
 * discard the rest of it; a request that breaks off fails the read, as it would fail readBody.
 * The bytes sent are counted too, since `maxBytes` bounds only what they decode to: empty gzip
 * members, 20 bytes each that decode to nothing, would otherwise be read until the request
 * timeout. Past `wireLimit` the read fails with SentTooMuch.
 *
 * A decoder of Node 24's zlib ends its output at the end of its stream when more input follows
 * (gunzip at a zero byte after a member) and takes whatever is written after, giving nothing:
 * a request going on past that end fails the read with SentPastTheEnd, since it would otherwise
 * flow on into the decoder, uncounted, once the body is read. The platform refuses it too: with
 * its request not yet ended, the Functions Framework's last parser (body-parser 2.4.0's raw, any
 * type) reads the rest as a second body, through a decoder of its own, and answers 400 when that
 * does not decode (when it does, the function is given it instead of the first). A request that
 * ends with the bytes past the end, in the same read, is answered by the function in both.
 */
async function readDecoded(request: IncomingMessage, decoder: Transform, maxBytes: number, wireLimit: number): Promise<{ body: Buffer; complete: boolean }> {
  const broken = (error?: Error) => decoder.destroy(error ?? new Error("the request broke off"));
  request.once("error", broken);
  request.once("close", () => { if (!request.complete) broken(); });
  let sent = 0;
  const count = (chunk: Buffer) => {
    sent += chunk.length;
    if (sent > wireLimit) broken(new SentTooMuch());
  };
  // Before the pipe's own listener, so that no chunk past the limit reaches the decoder.
  request.on("data", count);
  try {
    const read = await readBody(request.pipe(decoder), maxBytes);
    if (read.complete && request.readableEnded) return read;
    request.unpipe(decoder);
    if (read.complete) {
      // Ended on its readable side only, it is not destroyed by itself (autoDestroy waits for both).
      decoder.destroy();
      throw new SentPastTheEnd(wireLimit - sent);
    }
    return read;
  } catch (error) {
    request.unpipe(decoder);
    throw error;
  } finally {
    request.off("data", count);
  }
}

/**
 * Answers at once, then reads and throws away the rest of the body, and ends the answer when the
 * body has ended: the connection is then clean for another request, or closes gracefully if the
 * client asked for that. Hanging up on a client that is still sending makes the kernel answer its
 * next bytes with a reset, and a client that meets the reset while writing reports it instead of
 * the answer already on its way (the 413). Past `limit` more bytes the server stops paying for the
 * upload and hangs up; clients that read the early answer (fetch) have stopped long before.
 */
function answerBeforeBody(request: IncomingMessage, response: ServerResponse, answer: HttpResponse, limit: number): void {
  sendBeforeBody(request, response, writeHead(response, answer), limit);
}

/** answerBeforeBody once the head is written: every answer sent before the request's body is in, a file's too. */
function sendBeforeBody(request: IncomingMessage, response: ServerResponse, payload: string | Buffer | undefined, limit: number): void {
  // A HEAD answer, or one without a body (the 417), has no body to hold back, and draining first
  // left such requests hanging until the client gave up, their head unsent (Node sends it with
  // the first byte of body or at the end): ended at once, its request's body then discarded up
  // to the same limit (the later `end()` calls do nothing on an ended answer).
  if (request.method === "HEAD" || payload === undefined) response.end();
  else response.write(payload);
  endAfterBody(request, response, limit);
}

/** The rest of `answerBeforeBody`: the request's body, if any, is read and thrown away, then the answer ends. */
function endAfterBody(request: IncomingMessage, response: ServerResponse, limit: number): void {
  // All read already (a small encoded body, taken whole by its decoder): nothing left to wait for.
  if (request.readableEnded) {
    response.end();
    return;
  }
  let discarded = 0;
  const onData = (chunk: Buffer) => {
    discarded += chunk.length;
    if (discarded <= limit) return;
    request.off("data", onData);
    response.end();
    request.destroy();
  };
  request.on("data", onData);
  request.once("end", () => response.end());
  // A client that hangs up mid-body once it has the answer is expected, not a failure.
  request.on("error", () => undefined);
  request.resume();
}

function flattenHeaders(request: IncomingMessage): Record<string, string | undefined> {
  const headers: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(request.headers)) {
    headers[name] = Array.isArray(value) ? value.join(", ") : value;
  }
  return headers;
}


function write(response: ServerResponse, answer: HttpResponse): void {
  response.end(writeHead(response, answer));
}

/** Writes the status and headers; returns the body to send. */
function writeHead(response: ServerResponse, answer: HttpResponse): string | undefined {
  const payload = answer.body === undefined ? undefined : JSON.stringify(answer.body);
  const headers: Record<string, string | number> = { ...answer.headers };
  if (payload !== undefined) {
    headers["Content-Type"] = "application/json; charset=utf-8";
    headers["Content-Length"] = Buffer.byteLength(payload);
  }
  response.writeHead(answer.status, headers);
  return payload;
}
