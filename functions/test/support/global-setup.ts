import { execFileSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { request } from "node:http";
import { join } from "node:path";

const FUNCTIONS_DIR = join(__dirname, "..", "..");

/**
 * Once per run: builds `lib/` when a source file is newer (the end-to-end and multi-process
 * suites run the built code, as deployed), and probes the Realtime Database emulator, so the
 * suites that need one run on it or say why they skip.
 */
export default async function globalSetup(): Promise<void> {
  buildIfStale();
  const host = process.env.FIREBASE_DATABASE_EMULATOR_HOST;
  const reason = host
    ? await probe(host)
    : "FIREBASE_DATABASE_EMULATOR_HOST is not set; run `npm run test:emulators` (needs the database emulator: Java 21+) to include these suites";
  process.env.CHATIFY_RTDB_SKIP_REASON = reason ?? "";
  process.stdout.write(
    reason === undefined
      ? `\nRealtime Database emulator at ${host}: database suites will run.\n`
      : `\nRealtime Database suites will be SKIPPED: ${reason}\n`,
  );
}

function buildIfStale(): void {
  const newest = (dir: string): number =>
    Math.max(0, ...readdirSync(dir, { withFileTypes: true }).map((entry) => (entry.isDirectory() ? newest(join(dir, entry.name)) : statSync(join(dir, entry.name)).mtimeMs)));
  let built = 0;
  try {
    built = statSync(join(FUNCTIONS_DIR, "lib", "index.js")).mtimeMs;
  } catch {
    // Not built yet.
  }
  if (built >= newest(join(FUNCTIONS_DIR, "src"))) return;
  process.stdout.write("\nBuilding lib/ (src is newer) ...\n");
  execFileSync(process.execPath, [join(FUNCTIONS_DIR, "node_modules", "typescript", "bin", "tsc"), "-p", join(FUNCTIONS_DIR, "tsconfig.build.json")], { stdio: "inherit" });
}

function probe(host: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const req = request(`http://${host}/.json?ns=chatify-probe&shallow=true`, { timeout: 3000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200 ? undefined : `the database emulator at ${host} answered ${res.statusCode}`);
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", (error) => resolve(`no database emulator answers at ${host} (${error.message})`));
    req.end();
  });
}
