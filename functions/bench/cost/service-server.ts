import { createLocalInstance } from "../../src/local/local-instance";
import type { Log } from "../../src/log/log";
import { LocalServers } from "../../test/support/local-servers";
import { reportToParent } from "./child-server";

/**
 * The service under test, in a child process of the cost bench: the instance `npm start` builds
 * (createLocalInstance: composeInstance, the Realtime Database when FIREBASE_DATABASE_EMULATOR_HOST
 * is set, else the embedded store; templates seeded) behind the local server. The namespace is
 * BENCH_PROJECT_ID's, so that every child has a database of its own.
 */
async function main(): Promise<void> {
  const local = await createLocalInstance(process.env.BENCH_PROJECT_ID ?? "demo-chatify", stderrLog);
  const baseUrl = await new LocalServers().serve(local.instance);
  reportToParent(Number(new URL(baseUrl).port));
}

/** Errors to stderr, the first few only: the bench counts failed requests itself. */
let errors = 0;
const stderrLog: Log = {
  info: () => undefined,
  warn: () => undefined,
  error: (message, fields) => {
    errors += 1;
    if (errors <= 5) process.stderr.write(`service: ${message} ${JSON.stringify(fields ?? {})}\n`);
  },
};

main().catch((error: unknown) => {
  process.stderr.write(`service: could not start: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
