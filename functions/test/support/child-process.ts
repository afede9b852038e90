import { spawn, type ChildProcess } from "node:child_process";
import { rmSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join } from "node:path";

/** Helpers for tests and benches that run another program (the Firebase emulators). */

/** A loopback port free right now, for a child process that must be told its port. */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => { resolvePort(port); });
    });
  });
}

/** Polls `ready` until it holds; rejects once `failed` holds (the process exited) or after `timeoutMs`. */
export async function waitFor(ready: () => boolean, failed: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ready()) {
    if (failed()) throw new Error("the emulator process exited");
    if (Date.now() > deadline) throw new Error(`not ready after ${timeoutMs} ms`);
    await new Promise((wake) => setTimeout(wake, 200));
  }
}

/** Stops `child` as Ctrl-C would (the emulators shut down their own children), then by force after 15 s. */
export async function terminate(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise<void>((done) => child.once("exit", () => { done(); }));
  child.kill("SIGINT");
  const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
  await exited;
  clearTimeout(timer);
}

export interface RunningEmulators {
  /** Everything the emulators printed so far, for a failure to show. */
  readonly output: () => string;
  /** Stops them and removes their project directory. */
  readonly stop: () => Promise<void>;
}

/**
 * `firebase emulators:start ...args` (firebase-tools from this project's node_modules) in `dir`, a
 * throwaway project that `stop` removes, resolved once they are all ready (90 s at most: else
 * stopped, and the error carries their output).
 */
export async function startEmulators(dir: string, args: readonly string[]): Promise<RunningEmulators> {
  const firebase = join(dirname(require.resolve("firebase-tools/package.json")), "..", ".bin", "firebase");
  const child = spawn(firebase, ["emulators:start", ...args], { cwd: dir, env: { ...process.env, CI: "true" }, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const stop = async () => {
    await terminate(child);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor(() => output.includes("All emulators ready"), () => child.exitCode !== null, 90_000);
  } catch (error) {
    await stop();
    throw new Error(`emulators did not start: ${(error as Error).message}\n${output}`);
  }
  return { output: () => output, stop };
}
