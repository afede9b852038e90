import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { PROJECT_ROOT, seedTemplates } from "../src/local/project-files";

/**
 * rtdb-wire, the workplace's stand-in Realtime Database (not part of this project, never copied
 * into it): loaded from RTDB_WIRE_DIR, else from ../shared/rtdb-wire beside the project. Its
 * latency setting and its /.wire/stats counters exist only there, not on the official emulator.
 */
export interface WireCounts {
  readonly requests: number;
  readonly listens: number;
  readonly gets: number;
  readonly transactionAttempts: number;
  readonly datastale: number;
  /** UTF-16 units of the data messages, both directions. */
  readonly units: number;
}

export class RtdbWire {
  private constructor(
    /** host:port, as FIREBASE_DATABASE_EMULATOR_HOST. */
    readonly host: string,
    readonly dir: string,
    private readonly server: { close(): Promise<void> },
  ) {}

  /** Starts a server on a free loopback port, or says why it cannot. */
  static async start(env: Readonly<Record<string, string | undefined>>): Promise<RtdbWire | string> {
    const dir = resolve(env.RTDB_WIRE_DIR || join(PROJECT_ROOT, "..", "shared", "rtdb-wire"));
    const entry = join(dir, "lib", "server.mjs");
    if (!existsSync(entry)) return `rtdb-wire not found (${entry}; set RTDB_WIRE_DIR to its folder)`;
    const loaded = (await import(pathToFileURL(entry).href)) as { startServer?: unknown };
    if (typeof loaded.startServer !== "function") return `${entry} exports no startServer`;
    const startServer = loaded.startServer as (options: object) => Promise<{ emulatorHost: string; close(): Promise<void> }>;
    const server = await startServer({ host: "127.0.0.1", port: 0, latencyMs: 0, log: (line: string) => process.stderr.write(`rtdb-wire: ${line}\n`) });
    return new RtdbWire(server.emulatorHost, dir, server);
  }

  /** Delays every message the server sends from now on, on open connections too. */
  async setLatency(ms: number): Promise<void> {
    await this.call("PUT", "/.wire/latency", JSON.stringify({ ms }));
  }

  async counts(ns: string): Promise<WireCounts> {
    const stats = JSON.parse(await this.call("GET", `/.wire/stats?ns=${ns}`)) as Record<string, number | undefined>;
    const get = (name: string): number => stats[name] ?? 0;
    return {
      requests: get("requests"),
      listens: get("listens"),
      gets: get("gets"),
      transactionAttempts: get("transactionAttempts"),
      datastale: get("datastale"),
      units: get("unitsIn") + get("unitsOut"),
    };
  }

  /** The templates of emulator-data/, written over REST as `firebase emulators:start --import` loads them. */
  async seedTemplates(ns: string): Promise<void> {
    await this.call("PUT", `/templates.json?ns=${ns}`, JSON.stringify(seedTemplates()));
  }

  close(): Promise<void> {
    return this.server.close();
  }

  private async call(method: string, path: string, body?: string): Promise<string> {
    const response = await fetch(`http://${this.host}${path}`, { method, ...(body === undefined ? {} : { body }), headers: { Authorization: "Bearer owner" } });
    const text = await response.text();
    if (!response.ok) throw new Error(`rtdb-wire ${method} ${path}: ${response.status} ${text}`);
    return text;
  }
}

/** What a message cost on the wire: `after` less `before`. */
export function countsSince(before: WireCounts, after: WireCounts): WireCounts {
  return {
    requests: after.requests - before.requests,
    listens: after.listens - before.listens,
    gets: after.gets - before.gets,
    transactionAttempts: after.transactionAttempts - before.transactionAttempts,
    datastale: after.datastale - before.datastale,
    units: after.units - before.units,
  };
}
