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
  const rulesReason = reason ?? (await probeRules(host ?? ""));
  process.env.CHATIFY_RULES_SKIP_REASON = rulesReason ?? "";
  if (rulesReason !== undefined) process.stdout.write(`Security rules suites will be SKIPPED: ${rulesReason}\n`);
  const statsReason = reason ?? (await probeWireStats(host ?? ""));
  process.env.CHATIFY_WIRE_STATS_SKIP_REASON = statsReason ?? "";
  if (statsReason !== undefined) process.stdout.write(`Write-count suites will be SKIPPED: ${statsReason}\n`);
}

/** Whether the database counts its writes (`/.wire/stats`: rtdb-wire, the stand-in, only). */
async function probeWireStats(host: string): Promise<string | undefined> {
  const stats = await fetch(`http://${host}/.wire/stats?ns=chatify-stats-probe`).catch(() => undefined);
  return stats?.ok ? undefined : `the database at ${host} does not count writes (/.wire/stats is rtdb-wire's, the stand-in's, only)`;
}

/**
 * Whether the database enforces security rules: loads deny-all rules into a scratch namespace
 * and tries an unauthenticated write. The official emulator refuses it; a stand-in may not.
 */
async function probeRules(host: string): Promise<string | undefined> {
  const base = `http://${host}`;
  const ns = "chatify-rules-probe";
  const owner = { Authorization: "Bearer owner" };
  const rules = await fetch(`${base}/.settings/rules.json?ns=${ns}`, { method: "PUT", headers: owner, body: '{"rules":{".read":false,".write":false}}' });
  if (!rules.ok) return `the database at ${host} refused to load rules (${rules.status})`;
  const write = await fetch(`${base}/probe.json?ns=${ns}`, { method: "PUT", body: "1" });
  return write.ok
    ? `the database at ${host} does not enforce security rules (a stand-in, not the official emulator); run \`npm run test:emulators\``
    : undefined;
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
  execFileSync(process.execPath, [join(FUNCTIONS_DIR, "esbuild.config.mjs")], { cwd: FUNCTIONS_DIR, stdio: "inherit" });
}

function probe(host: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const req = request(`http://${host}/.json?ns=chatify-probe&shallow=true`, { timeout: 3000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200 ? undefined : `the database emulator at ${host} answered ${res.statusCode}`);
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", (error) => { resolve(`no database emulator answers at ${host} (${error.message})`); });
    req.end();
  });
}
