import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { PROJECT_ROOT, seedTemplates } from "../../src/local/project-files";
import type { Template } from "../../src/store/records";
import { SetupError } from "../shared/cli";
import { send } from "../shared/http-client";

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
  /** Puts, merges and transaction attempts: what the real service's write limit counts. */
  readonly writes: number;
  /** UTF-16 units of the data messages, both directions. */
  readonly units: number;
}

export class RtdbWire {
  private constructor(
    /** host:port, as FIREBASE_DATABASE_EMULATOR_HOST. */
    readonly host: string,
    readonly dir: string,
    private readonly server: ChildProcess,
  ) {}

  /**
   * For a program that needs it: starts one (`start`), or fails the run saying why, and makes it
   * the database every firebase-admin app of this process reaches (FIREBASE_DATABASE_EMULATOR_HOST,
   * to which firebase-admin sends every database URL).
   */
  static async startAsTheDatabase(): Promise<RtdbWire> {
    const wire = await RtdbWire.start(process.env);
    if (typeof wire === "string") throw new SetupError(wire);
    process.env.FIREBASE_DATABASE_EMULATOR_HOST = wire.host;
    return wire;
  }

  /**
   * Starts a server on a free loopback port, in a process of its own (as a database is: its work
   * is not billed to the service or the load generator), or says why it cannot.
   */
  static async start(env: Readonly<Record<string, string | undefined>>): Promise<RtdbWire | string> {
    const dir = resolve(env.RTDB_WIRE_DIR || join(PROJECT_ROOT, "..", "shared", "rtdb-wire"));
    const entry = join(dir, "server.mjs");
    if (!existsSync(entry)) return `rtdb-wire not found (${entry}; set RTDB_WIRE_DIR to its folder)`;
    const server = spawn(process.execPath, [entry, "--port", "0", "--host", "127.0.0.1"], { stdio: ["ignore", "pipe", "inherit"] });
    const host = await new Promise<string | undefined>((settle) => {
      let output = "";
      server.stdout.on("data", (chunk: Buffer) => {
        output += chunk.toString();
        const match = /FIREBASE_DATABASE_EMULATOR_HOST=([\d.:]+)/.exec(output);
        if (match?.[1]) settle(match[1]);
      });
      server.on("exit", () => { settle(undefined); });
    });
    if (host === undefined) return `rtdb-wire (${entry}) exited before it was ready`;
    return new RtdbWire(host, dir, server);
  }

  /** Delays every message the server sends from now on, on open connections too. */
  async setLatency(ms: number): Promise<void> {
    await this.call("PUT", "/.wire/latency", { ms });
  }

  async counts(ns: string): Promise<WireCounts> {
    const stats = await this.call("GET", `/.wire/stats?ns=${ns}`);
    const get = (name: string): number => {
      const value = stats[name];
      return typeof value === "number" ? value : 0;
    };
    return {
      requests: get("requests"),
      listens: get("listens"),
      gets: get("gets"),
      transactionAttempts: get("transactionAttempts"),
      datastale: get("datastale"),
      writes: get("writes"),
      units: get("unitsIn") + get("unitsOut"),
    };
  }

  /** UTF-16 units of the data messages clients sent to `ns` (what they uploaded). */
  async unitsIn(ns: string): Promise<number> {
    const stats = await this.call("GET", `/.wire/stats?ns=${ns}`);
    return typeof stats.unitsIn === "number" ? stats.unitsIn : 0;
  }

  /** The templates of emulator-data/ (and `extra`), written over REST as `firebase emulators:start --import` loads them. */
  async seedTemplates(ns: string, extra: Readonly<Record<string, Template>> = {}): Promise<void> {
    await this.call("PUT", `/templates.json?ns=${ns}`, { ...seedTemplates(), ...extra });
  }

  async close(): Promise<void> {
    if (this.server.exitCode !== null) return;
    const exited = new Promise((settle) => this.server.once("exit", settle));
    this.server.kill();
    await exited;
  }

  private async call(method: string, path: string, body?: unknown): Promise<Record<string, unknown>> {
    const answer = await send(`http://${this.host}${path}`, { method, body, headers: { Authorization: "Bearer owner" } });
    if (answer.status < 200 || answer.status > 299) throw new Error(`rtdb-wire ${method} ${path}: ${answer.status} ${answer.error ?? JSON.stringify(answer.body)}`);
    return answer.body;
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
    writes: after.writes - before.writes,
    units: after.units - before.units,
  };
}
