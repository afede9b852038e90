import { connect, createServer, type Server, type Socket } from "node:net";
import type { AddressInfo } from "node:net";

/** Bytes that crossed the proxy so far, in each direction. */
export interface ByteCounts {
  /** From the database to the client: what the client downloaded. */
  readonly received: number;
  /** From the client to the database. */
  readonly sent: number;
}

/**
 * A TCP proxy on loopback that forwards a client's connections to a server unchanged and counts
 * the bytes in each direction (TCP payload: the WebSocket frames of firebase-admin, handshake included).
 */
export class ByteCountingProxy {
  private received = 0;
  private sent = 0;
  private readonly sockets = new Set<Socket>();

  private constructor(private readonly server: Server) {}

  static async start(target: { host: string; port: number }): Promise<ByteCountingProxy> {
    const server = createServer();
    const proxy = new ByteCountingProxy(server);
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

  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => { resolve(); }));
  }

  private pipe(client: Socket, upstream: Socket): void {
    for (const socket of [client, upstream]) {
      // As the client's own socket does: without it, Nagle's algorithm would hold small frames back.
      socket.setNoDelay(true);
      this.sockets.add(socket);
      socket.on("close", () => {
        this.sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
      socket.on("error", () => socket.destroy());
    }
    client.on("data", (chunk: Buffer) => {
      this.sent += chunk.length;
      upstream.write(chunk);
    });
    upstream.on("data", (chunk: Buffer) => {
      this.received += chunk.length;
      client.write(chunk);
    });
  }
}

/** "host:port" split, for a database emulator address. */
export function parseHost(hostPort: string): { host: string; port: number } {
  const match = /^(.+):(\d+)$/.exec(hostPort);
  if (!match?.[1] || !match[2]) throw new Error(`not a host:port: "${hostPort}"`);
  return { host: match[1], port: Number(match[2]) };
}
