import { createServer, connect, type Server, type Socket } from "node:net";
import type { AddressInfo } from "node:net";

/**
 * A TCP proxy on loopback between a client and a server, to make a real database connection
 * slow or unreachable: `stall()` holds every byte in both directions (a black hole), and
 * `resume()` delivers what was held, in order, as a congested link eventually would.
 */
export class TcpProxy {
  private stalled = false;
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

  get address(): string {
    return `127.0.0.1:${(this.server.address() as AddressInfo).port}`;
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
    const held: [Socket, Buffer][] = [];
    const forward = (to: Socket) => (chunk: Buffer) => {
      if (this.stalled) held.push([to, chunk]);
      else to.write(chunk);
    };
    client.on("data", forward(upstream));
    upstream.on("data", forward(client));
    const pipe = {
      flush: () => {
        for (const [to, chunk] of held.splice(0)) to.write(chunk);
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
