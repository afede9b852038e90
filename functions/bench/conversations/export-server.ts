import { initializeApp } from "firebase-admin/app";
import { getDatabase } from "firebase-admin/database";
import { createLocalInstance } from "../../src/local/local-instance";
import { databaseNamespace } from "../../src/local/project-files";
import { silentLog } from "../../src/log/log";
import { RtdbStore } from "../../src/store/rtdb/rtdb-store";
import { LocalServers } from "../../test/support/local-servers";

/**
 * The service under test for the conversations bench, in a child process of its own (run with
 * --expose-gc): the instance `npm start` builds on the Realtime Database of BENCH_PROJECT_ID,
 * behind the local server. It measures its own memory while the bench asks: the highest RSS
 * sampled every 2 ms since a start, less the RSS at the start (after a full collection); with
 * `gcEveryMs`, a full collection that often too, and the highest heap in use right after one (what
 * the work holds, not what it has thrown away). It runs the buffered baseline (every session read
 * at once, then one JSON text) the same way.
 */
type Ask = { readonly start: true; readonly gcEveryMs?: number } | { readonly stop: true } | { readonly buffered: string; readonly gcEveryMs?: number };
export type Told = { readonly port: number } | { readonly rssMb: number; readonly liveMb: number };

const gc = (globalThis as { gc?: () => void }).gc ?? (() => undefined);
const mb = (bytes: number) => bytes / 2 ** 20;

async function main(): Promise<void> {
  const projectId = process.env.BENCH_PROJECT_ID ?? "demo-chatify";
  const local = await createLocalInstance(projectId, silentLog);
  const baseUrl = await new LocalServers().serve(local.instance);
  // The baseline's reads, on a connection of its own in this same process.
  const store = new RtdbStore(getDatabase(initializeApp({ projectId, databaseURL: `https://${databaseNamespace(projectId)}.firebaseio.com` }, "buffered")), 60_000);
  let base = { rss: 0, heap: 0 };
  let peak = { rss: 0, heap: 0 };
  const timers: NodeJS.Timeout[] = [];
  const start = (gcEveryMs: number | undefined) => {
    gc();
    const now = process.memoryUsage();
    base = { rss: now.rss, heap: now.heapUsed };
    peak = { ...base };
    timers.push(setInterval(() => { peak.rss = Math.max(peak.rss, process.memoryUsage().rss); }, 2));
    if (gcEveryMs !== undefined) {
      timers.push(
        setInterval(() => {
          gc();
          peak.heap = Math.max(peak.heap, process.memoryUsage().heapUsed);
        }, gcEveryMs),
      );
    }
  };
  const stop = (): Told => {
    for (const timer of timers.splice(0)) clearInterval(timer);
    peak.rss = Math.max(peak.rss, process.memoryUsage().rss);
    return { rssMb: mb(peak.rss - base.rss), liveMb: mb(peak.heap - base.heap) };
  };
  const tell = (message: Told) => process.send?.(message);
  process.on("message", (ask: Ask) => {
    if ("start" in ask) {
      start(ask.gcEveryMs);
      tell({ rssMb: 0, liveMb: 0 });
    } else if ("stop" in ask) {
      tell(stop());
    } else {
      start(ask.gcEveryMs);
      // What an export that holds everything does: all sessions read in one go, then one text.
      void store.readUserSessions(ask.buffered, undefined, 1_000_000).then((sessions) => {
        JSON.stringify({ sessions });
        tell(stop());
      });
    }
  });
  process.on("disconnect", () => process.exit(0));
  tell({ port: Number(new URL(baseUrl).port) });
}

main().catch((error: unknown) => {
  process.stderr.write(`export server: could not start: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
