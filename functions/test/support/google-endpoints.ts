import { sign, type KeyObject } from "node:crypto";
import { createServer, type RequestListener, type Server } from "node:http";
import { Agent, type RequestOptions } from "node:https";
import { connect, type AddressInfo } from "node:net";
import type { Duplex } from "node:stream";

/**
 * firebase-admin reaches Google (public keys, App Check's replay check) over https with the app's
 * `httpAgent`. This agent sends every connection, whatever the host, to a local plain-HTTP server
 * standing in for Google, or to a closed port (Google out of reach). No network is used either way.
 */
export class LocalGoogleAgent extends Agent {
  /** The hosts firebase-admin tried to reach, one entry per connection. */
  readonly attempts: string[] = [];

  constructor(private readonly port: () => number) {
    super({ keepAlive: false });
  }

  override createConnection(options: RequestOptions): Duplex {
    this.attempts.push(options.host ?? options.hostname ?? "");
    return connect(this.port(), "127.0.0.1");
  }
}

/** A local server standing in for Google, and a port where nothing listens. */
export interface LocalGoogle {
  readonly server: Server;
  readonly port: number;
  readonly closedPort: number;
  close(): Promise<void>;
}

export async function startLocalGoogle(listener: RequestListener): Promise<LocalGoogle> {
  const server = createServer(listener);
  const port = await listen(server);
  const closed = createServer();
  const closedPort = await listen(closed);
  await close(closed);
  return {
    server,
    port,
    closedPort,
    close: () => {
      server.closeAllConnections();
      return close(server);
    },
  };
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => { resolve((server.address() as AddressInfo).port); }));
}

function close(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => { resolve(); }));
}

export function base64url(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString("base64url");
}

/**
 * A list nested `depth` deep (`[[[...]]]`), for a claim: 3,500 deep is under 10 KB in a token, and
 * too deep for String() (firebase-admin 14.5.1 prints claims it refuses) without overflowing the stack.
 */
export function deeplyNested(depth: number): unknown {
  return JSON.parse(`${"[".repeat(depth)}${"]".repeat(depth)}`);
}

/** A JWT with `header` and `claims`, signed RS256 with `key` whatever the header says. */
export function signedJwt(key: KeyObject, header: Record<string, unknown>, claims: Record<string, unknown>): string {
  const signed = `${base64url(header)}.${base64url(claims)}`;
  return `${signed}.${sign("sha256", Buffer.from(signed), key).toString("base64url")}`;
}
