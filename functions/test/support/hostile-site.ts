import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";

/** What reached the hostile site. */
export interface Visit {
  readonly method: string;
  readonly url: string;
  /** The Authorization header it was given, if any: a token the page must never hand over. */
  readonly authorization?: string;
}

/**
 * A site on loopback playing the attacker of a hostile link (`?api=`, `?authEmulator=`): it
 * records every TCP connection and every request, allows any origin (CORS, preflights
 * included) and answers 401 UNAUTHENTICATED, which made the old page sign in and send again
 * with the visitor's ID token. A page that keeps its rules leaves `connections` at 0.
 */
export class HostileSite {
  readonly visits: Visit[] = [];
  private connectionCount = 0;

  private constructor(private readonly server: Server) {
    server.on("connection", () => {
      this.connectionCount += 1;
    });
    server.on("request", (request, response) => {
      request.resume();
      this.visits.push({ method: request.method ?? "", url: request.url ?? "", ...(request.headers.authorization ? { authorization: request.headers.authorization } : {}) });
      response.writeHead(request.method === "OPTIONS" ? 204 : 401, {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Headers": "Authorization, Content-Type, Accept, X-Client-Version, X-Firebase-gmpid, X-Firebase-Client",
        "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
        "Content-Type": "application/json",
      });
      response.end(request.method === "OPTIONS" ? undefined : JSON.stringify({ success: false, error: { code: "UNAUTHENTICATED", message: "Sign in" } }));
    });
  }

  static async start(): Promise<HostileSite> {
    const site = new HostileSite(createServer());
    await new Promise<void>((resolve) => site.server.listen(0, "127.0.0.1", resolve));
    return site;
  }

  /** host:port, as `?authEmulator=` took it. */
  get host(): string {
    return `127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  get origin(): string {
    return `http://${this.host}`;
  }

  /** TCP connections opened to it so far, requests or not. */
  get connections(): number {
    return this.connectionCount;
  }

  /** Forgets what it saw, and drops open connections: a browser would reuse them unseen. */
  reset(): void {
    this.server.closeAllConnections();
    this.visits.length = 0;
    this.connectionCount = 0;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }
}
