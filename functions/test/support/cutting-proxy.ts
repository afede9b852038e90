import { createServer, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/** What a planned disruption does to the answer of the request it names. */
type Disruption = { readonly kind: "cut"; readonly keep: (body: string) => string } | { readonly kind: "stall" } | { readonly kind: "silence" };

/**
 * An HTTP proxy in front of a local server, as the network between a phone and the site is.
 * Every request goes through unchanged, except those a planned disruption names. A cut: the
 * server gets the request and answers it whole (it acts), the proxy sends the answer's status
 * line and headers, then `keep(body)` of its body, and then drops the connection before the
 * body's end (a phone switching networks after the answer began); the browser's fetch resolves
 * with the status, and reading the rest of the body fails. A stall: the answer's head and its
 * first `delta` event go through, then nothing more while the connection stays open (the link
 * went dead without a reset: a phone between cells, a NAT that dropped its mapping), so the
 * browser sees neither the server's heartbeats nor its end. A silence: the same dead link, before
 * the answer's first byte: the server gets the request and answers it, and nothing of the answer,
 * not even its head, comes back; the browser's fetch never resolves on its own.
 */
export class CuttingProxy {
  private readonly planned: { method: string; path: RegExp; disruption: Disruption }[] = [];
  /** The answers cut so far, as "METHOD path status". */
  readonly cutDone: string[] = [];
  /** Set once the server behind finished a stalled or silenced answer (it wrote its last byte). */
  stalledFinished = false;
  private onStalledFinished: (() => void) | undefined;

  private constructor(
    private readonly server: Server,
    private readonly target: URL,
  ) {
    server.on("request", (req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (chunk: Buffer) => chunks.push(chunk));
      req.on("end", () => {
        const index = this.planned.findIndex((plan) => plan.method === req.method && plan.path.test(req.url ?? ""));
        const disruption = index >= 0 ? this.planned.splice(index, 1)[0]?.disruption : undefined;
        const headers: IncomingHttpHeaders = { ...req.headers, host: this.target.host };
        const upstream = httpRequest({ host: this.target.hostname, port: this.target.port, method: req.method, path: req.url, headers }, (answer) => {
          // Framing headers are the proxy's own: it answers chunked, so a disrupted body has no end.
          const passed = Object.fromEntries(
            Object.entries(answer.headers).filter(([name]) => !["content-length", "transfer-encoding", "connection", "keep-alive"].includes(name)),
          ) as Record<string, string | string[]>;
          if (!disruption) {
            res.writeHead(answer.statusCode ?? 502, passed);
            answer.pipe(res);
          } else if (disruption.kind === "cut") this.cut(req, res, answer, passed, disruption.keep);
          else if (disruption.kind === "stall") this.stall(res, answer, passed);
          else {
            answer.resume();
            answer.on("end", () => {
              this.stalledAnswerEnded();
            });
          }
        });
        upstream.on("error", () => res.socket?.destroy());
        upstream.end(Buffer.concat(chunks));
      });
    });
  }

  private cut(req: IncomingMessage, res: ServerResponse, answer: IncomingMessage, passed: Record<string, string | string[]>, keep: (body: string) => string): void {
    const body: Buffer[] = [];
    answer.on("data", (chunk: Buffer) => body.push(chunk));
    answer.on("end", () => {
      this.cutDone.push(`${req.method ?? ""} ${req.url ?? ""} ${answer.statusCode ?? 0}`);
      res.writeHead(answer.statusCode ?? 502, passed);
      res.flushHeaders();
      res.write(keep(Buffer.concat(body).toString("utf8")), () => {
        // A moment for the kept part to reach the browser, then the connection drops.
        setTimeout(() => res.socket?.destroy(), 50).unref();
      });
    });
  }

  private stall(res: ServerResponse, answer: IncomingMessage, passed: Record<string, string | string[]>): void {
    res.writeHead(answer.statusCode ?? 502, passed);
    res.flushHeaders();
    let seen = "";
    let dead = false;
    answer.on("data", (chunk: Buffer) => {
      if (dead) return;
      seen += chunk.toString("utf8");
      const delta = seen.indexOf("event: delta");
      const end = delta >= 0 ? seen.indexOf("\n\n", delta) : -1;
      if (end < 0) return;
      // The first delta arrives whole; then the link goes dead.
      res.write(seen.slice(0, end + 2));
      dead = true;
    });
    answer.on("end", () => {
      this.stalledAnswerEnded();
    });
  }

  private stalledAnswerEnded(): void {
    this.stalledFinished = true;
    this.onStalledFinished?.();
  }

  /** Resolves once the server behind finished the stalled or silenced answer; rejects after `ms`. */
  stalledAnswerFinished(ms: number): Promise<void> {
    if (this.stalledFinished) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { reject(new Error("the server did not finish the stalled answer")); }, ms);
      this.onStalledFinished = () => {
        clearTimeout(timer);
        resolve();
      };
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
    this.planned.push({ method, path, disruption: { kind: "cut", keep } });
  }

  /** The next request matching `method` and `path` is answered up to its first `delta` event, then stalled. */
  stallNext(method: string, path: RegExp): void {
    this.planned.push({ method, path, disruption: { kind: "stall" } });
  }

  /** The next request matching `method` and `path` reaches the server, and nothing of its answer comes back. */
  silenceNext(method: string, path: RegExp): void {
    this.planned.push({ method, path, disruption: { kind: "silence" } });
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

/** The first half of a body: the answer began, its end never came. */
export const firstHalf = (body: string): string => body.slice(0, Math.max(1, Math.floor(body.length / 2)));
