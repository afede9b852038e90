import { createServer, request as httpRequest, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";

/**
 * An HTTP proxy in front of a local server, as the network between a phone and the site is.
 * Every request goes through unchanged, except those a planned cut names: the server gets the
 * request and answers it whole (it acts), the proxy sends the answer's status line and headers,
 * then `keep(body)` of its body, and then drops the connection before the body's end (a phone
 * switching networks after the answer began). The browser's fetch resolves with the status, and
 * reading the rest of the body fails.
 */
export class CuttingProxy {
  private readonly cuts: { method: string; path: RegExp; keep: (body: string) => string }[] = [];
  /** The answers cut so far, as "METHOD path status". */
  readonly cutDone: string[] = [];

  private constructor(
    private readonly server: Server,
    private readonly target: URL,
  ) {
    server.on("request", (req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (chunk: Buffer) => chunks.push(chunk));
      req.on("end", () => {
        const index = this.cuts.findIndex((cut) => cut.method === req.method && cut.path.test(req.url ?? ""));
        const cut = index >= 0 ? this.cuts.splice(index, 1)[0] : undefined;
        const headers: IncomingHttpHeaders = { ...req.headers, host: this.target.host };
        const upstream = httpRequest({ host: this.target.hostname, port: this.target.port, method: req.method, path: req.url, headers }, (answer) => {
          // Framing headers are the proxy's own: it answers chunked, so a cut body has no end.
          const passed = Object.fromEntries(
            Object.entries(answer.headers).filter(([name]) => !["content-length", "transfer-encoding", "connection", "keep-alive"].includes(name)),
          ) as Record<string, string | string[]>;
          if (!cut) {
            res.writeHead(answer.statusCode ?? 502, passed);
            answer.pipe(res);
            return;
          }
          const body: Buffer[] = [];
          answer.on("data", (chunk: Buffer) => body.push(chunk));
          answer.on("end", () => {
            this.cutDone.push(`${req.method ?? ""} ${req.url ?? ""} ${answer.statusCode ?? 0}`);
            res.writeHead(answer.statusCode ?? 502, passed);
            res.flushHeaders();
            res.write(cut.keep(Buffer.concat(body).toString("utf8")), () => {
              // A moment for the kept part to reach the browser, then the connection drops.
              setTimeout(() => res.socket?.destroy(), 50).unref();
            });
          });
        });
        upstream.on("error", () => res.socket?.destroy());
        upstream.end(Buffer.concat(chunks));
      });
    });
  }

  static async start(target: string): Promise<CuttingProxy> {
    const proxy = new CuttingProxy(createServer(), new URL(target));
    await new Promise<void>((resolve) => proxy.server.listen(0, "127.0.0.1", resolve));
    return proxy;
  }

  get origin(): string {
    return `http://127.0.0.1:${String((this.server.address() as AddressInfo).port)}`;
  }

  /** The next request matching `method` and `path` is answered, then cut after `keep(body)`. */
  cutNext(method: string, path: RegExp, keep: (body: string) => string): void {
    this.cuts.push({ method, path, keep });
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

/** The first half of a body: the answer began, its end never came. */
export const firstHalf = (body: string): string => body.slice(0, Math.max(1, Math.floor(body.length / 2)));
