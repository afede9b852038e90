import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";

export interface LocalProcess {
  /** The server's base URL (the API is under /api/v1). */
  readonly url: string;
  readonly child: ChildProcess;
}

/**
 * The built local server (`lib/local/main.js`, what `npm start` runs) as an OS process of its
 * own: another function instance that shares nothing with the test but the database, and that a
 * test can kill as a crash would. `env` adds to the test's environment.
 */
export function startLocalProcess(env: Readonly<Record<string, string>>): Promise<LocalProcess> {
  const child = spawn(process.execPath, [join(__dirname, "..", "..", "lib", "local", "main.js")], {
    env: { ...process.env, PORT: "0", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error(`no start-up line: ${output}`)); }, 30_000);
    child.stdout.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      const match = /API base URL (http:\/\/[\d.:]+)\/api\/v1/.exec(output);
      if (match?.[1]) {
        clearTimeout(timer);
        resolve({ url: match[1], child });
      }
    });
    child.stderr.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.on("exit", (code) => {
      // A process that failed to start leaves no timer behind to hold the test run open.
      clearTimeout(timer);
      reject(new Error(`exited with ${code}: ${output}`));
    });
  });
}
