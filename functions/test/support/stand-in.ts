import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { resolve } from "node:path";

/**
 * A stand-in database (rtdb-wire) of a suite's own, for a setting that is server-wide (its
 * latency): not the one a whole run shares. It exists only in this workplace (found as .ci/run
 * finds it); `standInSkipReason` says so elsewhere, for a visible skip.
 */
export const STAND_IN = ["../../../../shared/rtdb-wire/server.mjs", "/work/shared/rtdb-wire/server.mjs"]
  .map((candidate) => resolve(__dirname, candidate))
  .find((candidate) => existsSync(candidate));

export const standInSkipReason = STAND_IN === undefined ? "the stand-in rtdb-wire (shared/rtdb-wire/server.mjs) is not here: it exists only in this workplace" : undefined;

export interface StandIn {
  /** host:port, as FIREBASE_DATABASE_EMULATOR_HOST wants it. */
  readonly host: string;
  readonly process: ChildProcess;
}

/** Starts the stand-in with `latencyMs` of latency on every message it sends. */
export function startStandIn(latencyMs: number): Promise<StandIn> {
  const server = STAND_IN;
  if (server === undefined) return Promise.reject(new Error(standInSkipReason));
  return new Promise((started, failed) => {
    const child = spawn(process.execPath, [server, "--port", "0", "--host", "127.0.0.1", "--latency-ms", String(latencyMs)], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    const timer = setTimeout(() => {
      child.kill();
      failed(new Error(`rtdb-wire did not start: ${output}`));
    }, 10_000);
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      const host = /FIREBASE_DATABASE_EMULATOR_HOST=([0-9.:]+)/.exec(output)?.[1];
      if (host === undefined) return;
      clearTimeout(timer);
      started({ host, process: child });
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("error", (error) => {
      clearTimeout(timer);
      failed(error);
    });
  });
}
