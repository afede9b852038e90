import { request } from "node:http";

/** Probes the Realtime Database emulator once, so suites can run on it or say why they skip. */
export default async function globalSetup(): Promise<void> {
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
