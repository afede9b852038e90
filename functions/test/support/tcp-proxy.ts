import { createServer, connect, type Server, type Socket } from "node:net";
import type { AddressInfo } from "node:net";

/** Bytes that crossed the proxy so far, in each direction. */
export interface ByteCounts {
  /** From the server to the client: what the client downloaded. */
  readonly received: number;
  /** From the client to the server. */
  readonly sent: number;
}

/**
 * A TCP proxy on loopback between a client and a server. It forwards every byte unchanged and
 * counts them in each direction (TCP payload: for firebase-admin, its WebSocket frames,
 * handshake included). To make a real database connection slow or unreachable, `stall()` holds
 * every byte in both directions (a black hole), and `resume()` delivers what was held, in order,
 * as a congested link eventually would; held bytes are counted once delivered.
 */
export class TcpProxy {
  private stalled = false;
  private received = 0;
  private sent = 0;
  private readonly pipes = new Set<{ flush: () => void; destroy: () => void }>();

  private constructor(private readonly server: Server) {}

  static async start(target: { host: string; port: number }): Promise<TcpProxy> {
    const server = createServer();
    const proxy = new TcpProxy(server);
    server.on("connection", (client) => {
      proxy.pipe(client, connect(target.port, target.host));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return proxy;
  }

  /** host:port to give the client instead of the server's. */
  get address(): string {
    return `127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  counts(): ByteCounts {
    return { received: this.received, sent: this.sent };
  }

  stall(): void {
    this.stalled = true;
  }

  resume(): void {
    this.stalled = false;
    for (const pipe of this.pipes) pipe.flush();
  }

  async stop(): Promise<void> {
    for (const pipe of this.pipes) pipe.destroy();
    await new Promise<void>((resolve) => this.server.close(() => { resolve(); }));
  }

  private pipe(client: Socket, upstream: Socket): void {
    // As the client's own socket does: without it, Nagle's algorithm would hold small frames back.
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    const held: [Socket, Buffer][] = [];
    const deliver = (to: Socket, chunk: Buffer) => {
      if (to === upstream) this.sent += chunk.length;
      else this.received += chunk.length;
      to.write(chunk);
    };
    const forward = (to: Socket) => (chunk: Buffer) => {
      if (this.stalled) held.push([to, chunk]);
      else deliver(to, chunk);
    };
    client.on("data", forward(upstream));
    upstream.on("data", forward(client));
    const pipe = {
      flush: () => {
        for (const [to, chunk] of held.splice(0)) deliver(to, chunk);
      },
      destroy: () => {
        client.destroy();
        upstream.destroy();
      },
    };
    this.pipes.add(pipe);
    const close = () => {
      pipe.destroy();
      this.pipes.delete(pipe);
    };
    client.on("close", close);
    upstream.on("close", close);
    client.on("error", close);
    upstream.on("error", close);
  }
}

/** "host:port" split, for a database emulator address. */
export function parseHost(hostPort: string): { host: string; port: number } {
  const match = /^(.+):(\d+)$/.exec(hostPort);
  if (!match?.[1] || !match[2]) throw new Error(`not a host:port: "${hostPort}"`);
  return { host: match[1], port: Number(match[2]) };
}
