import { fork, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { deleteApp, initializeApp } from "firebase-admin/app";
import { getDatabase, type Database } from "firebase-admin/database";
import { silentLog } from "../../src/log/log";
import { composeInstance } from "../../src/runtime/instance";
import { RtdbStore } from "../../src/store/rtdb/rtdb-store";
import { NO_TOKENS, serviceConfig } from "../../test/support/service-env";
import { integerOption, optionReader, runCli, SetupError, stopIfStuck } from "../shared/cli";
import { fmt, median, table } from "../shared/figures";
import { send } from "../shared/http-client";
import { countsSince, RtdbWire } from "../cost/rtdb-wire";
import { goalTable, type Goal } from "../cost/report";
import type { Told } from "./export-server";
import { seedUser } from "./seed";

const USAGE = `Conversations bench (issue 16): what listing, exporting and erasing a user's conversations cost.
  npm run bench:conversations -- [--sessions 1000] [--pages 10] [--export-sessions 200] [--messages 100] [--rounds 3] [--heap-mb 256]
Options (or CONVERSATIONS_BENCH_<NAME> in the environment):
  --sessions         sessions of the user whose list is paged (default 1000)
  --pages            pages read one after the other, 20 conversations each (default 10)
  --export-sessions  sessions of the user who is exported and erased (default 200)
  --messages         messages in each of those sessions (default 100)
  --rounds           interleaved rounds of each measured case (default 3)
  --heap-mb          the service's V8 heap (--max-old-space-size), about half of a 512 MiB instance as the cost bench takes it;
                     0: uncapped (default 256)
Needs rtdb-wire (RTDB_WIRE_DIR, else ../shared/rtdb-wire): its /.wire/stats counts what each request read.`;

const MINUTE = 60_000;

/** Every part of `userId`'s export from `on`, following the cursors; its size. */
async function exportAll(on: ExportServer, userId: string): Promise<{ parts: number; bytes: number }> {
  let cursor: string | undefined;
  let parts = 0;
  let bytes = 0;
  do {
    const answer = await send(`${on.baseUrl}/api/v1/chatbot/me/export?user_id=${userId}${cursor ? `&cursor=${cursor}` : ""}`, { method: "GET" });
    if (answer.status !== 200 || answer.body.error) throw new Error(`export failed: ${answer.status} ${JSON.stringify(answer.body.error)}`);
    parts += 1;
    bytes += JSON.stringify(answer.body).length;
    cursor = typeof answer.body.next_cursor === "string" ? answer.body.next_cursor : undefined;
  } while (cursor);
  return { parts, bytes };
}

/** The service in a child process of its own: it measures its own memory when asked. */
class ExportServer {
  private readonly waiting: ((told: Told) => void)[] = [];
  private constructor(
    readonly baseUrl: string,
    /** The environment it was started with, for another like it. */
    readonly env: NodeJS.ProcessEnv,
    private readonly child: ChildProcess,
  ) {
    child.on("message", (told: Told) => this.waiting.shift()?.(told));
  }

  static start(env: NodeJS.ProcessEnv): Promise<ExportServer> {
    const heap = Number(env.BENCH_HEAP_MB ?? "0");
    const execArgv = ["--expose-gc", ...(heap > 0 ? [`--max-old-space-size=${heap}`] : [])];
    const child = fork(join(__dirname, "export-server.js"), [], { env, execArgv, stdio: ["ignore", "inherit", "inherit", "ipc"] });
    return new Promise((resolve, reject) => {
      child.once("exit", (code) => { reject(new SetupError(`the service exited with ${code ?? "a signal"} before listening`)); });
      child.once("message", (told: Told) => {
        if ("port" in told) resolve(new ExportServer(`http://127.0.0.1:${told.port}`, env, child));
      });
    });
  }

  ask(message: object): Promise<Told> {
    return new Promise((resolve) => {
      this.waiting.push(resolve);
      this.child.send(message);
    });
  }

  stop(): void {
    this.child.kill();
  }
}

async function main(argv: readonly string[]): Promise<number> {
  const option = optionReader(argv, process.env, "CONVERSATIONS_BENCH_", { sessions: "1000", pages: "10", "export-sessions": "200", messages: "100", rounds: "3", "heap-mb": "256" });
  const listed = integerOption("sessions", option("sessions"), 20, 100_000);
  const pages = integerOption("pages", option("pages"), 2, 1_000);
  const exported = integerOption("export-sessions", option("export-sessions"), 1, 10_000);
  const messages = 2 * Math.ceil(integerOption("messages", option("messages"), 2, 200) / 2);
  const rounds = integerOption("rounds", option("rounds"), 1, 100);
  const heapMb = integerOption("heap-mb", option("heap-mb"), 0, 16_384);
  stopIfStuck("conversations-bench", 900_000);
  const started = performance.now();
  const wire = await RtdbWire.startAsTheDatabase();
  const ns = `conversations-bench-${randomUUID().slice(0, 8)}`;
  await wire.seedTemplates(ns);
  const app = initializeApp({ projectId: "demo-chatify", databaseURL: `https://${ns}.firebaseio.com` }, "bench");
  const db = getDatabase(app);
  const store = new RtdbStore(db, 60_000);
  const server = await ExportServer.start({ ...process.env, BENCH_PROJECT_ID: ns, FIREBASE_DATABASE_EMULATOR_HOST: wire.host, BENCH_HEAP_MB: String(heapMb) });
  const goals: Goal[] = [];
  console.log(
    `Conversations bench: rtdb-wire at ${wire.host} (stand-in: its /.wire/stats), the service in a child process (V8 heap ${heapMb > 0 ? `${heapMb} MiB` : "uncapped"}), ${rounds} interleaved rounds, medians\n`,
  );
  try {
    goals.push(...(await listing(wire, ns, db, store, server, listed, pages, rounds)));
    goals.push(...(await exportAndErase(wire, ns, db, store, server, exported, messages, rounds)));
  } finally {
    server.stop();
    store.close();
    await deleteApp(app);
    await wire.close();
  }
  console.log(["Goals", ...goalTable(goals), `Ran in ${((performance.now() - started) / 1000).toFixed(0)} s.`].join("\n"));
  return 0;
}

/** What one request read from the database (UTF-16 units both ways, as /.wire/stats counts them) and how long it took. */
async function measured(wire: RtdbWire, ns: string, request: () => Promise<unknown>): Promise<{ units: number; ms: number }> {
  const before = await wire.counts(ns);
  const started = performance.now();
  await request();
  const ms = performance.now() - started;
  return { units: countsSince(before, await wire.counts(ns)).units, ms };
}

/** a. Listing: page 1 and page N of a user with many sessions, page 1 of a user with few, against reading them all by user_id. */
async function listing(wire: RtdbWire, ns: string, db: Database, store: RtdbStore, server: ExportServer, sessions: number, pages: number, rounds: number): Promise<Goal[]> {
  const many = `many-${randomUUID().slice(0, 8)}`;
  const few = `few-${randomUUID().slice(0, 8)}`;
  await seedUser(store, db, many, sessions, 0, "list");
  await seedUser(store, db, few, 40, 0, "list");
  const list = (userId: string, cursor?: string) => send(`${server.baseUrl}/api/v1/chatbot/sessions?user_id=${userId}&limit=20${cursor ? `&cursor=${cursor}` : ""}`, { method: "GET" });
  // The first request of an instance reads the cursor secret: not a page's cost.
  await list(few);
  const samples = { first: [] as number[], last: [] as number[], few: [] as number[], firstMs: [] as number[], lastMs: [] as number[] };
  for (let round = 0; round < rounds; round += 1) {
    let cursor: string | undefined;
    for (let page = 1; page <= pages; page += 1) {
      let answer: Awaited<ReturnType<typeof list>> | undefined;
      const cost = await measured(wire, ns, async () => (answer = await list(many, cursor)));
      cursor = String(answer?.body.next_cursor);
      if (page === 1) {
        samples.first.push(cost.units);
        samples.firstMs.push(cost.ms);
      }
      if (page === pages) {
        samples.last.push(cost.units);
        samples.lastMs.push(cost.ms);
      }
    }
    samples.few.push((await measured(wire, ns, () => list(few))).units);
  }
  // Without the index: what a client reads to list its sessions by the query database.rules.json allows on user_id.
  const byQuery = await measured(wire, ns, () => db.ref("userSessions").orderByChild("user_id").equalTo(many).once("value"));
  const [first, last, small] = [median(samples.first), median(samples.last), median(samples.few)];
  console.log(
    [
      `a. Listing ${sessions} conversations of one user, ${pages} pages of 20 one after the other (units read from the database per page)`,
      ...table([
        ["case", "units", "ms"],
        [`page 1 of ${sessions}`, fmt(first), fmt(median(samples.firstMs), 1)],
        [`page ${pages} of ${sessions}`, fmt(last), fmt(median(samples.lastMs), 1)],
        ["page 1 of 40", fmt(small), ""],
        [`baseline: all ${sessions} by user_id (no index)`, fmt(byQuery.units), fmt(byQuery.ms, 1)],
      ]),
      `  page ${pages} / page 1: x${fmt(last / first, 2)}; page 1 of ${sessions} / of 40: x${fmt(first / small, 2)}; the index's page / the query: x${fmt(first / byQuery.units, 3)}`,
      "",
    ].join("\n"),
  );
  return [
    { name: `a. listing: units per page, page 1 / page ${pages} of ${sessions}`, measured: `${fmt(first)} / ${fmt(last)}`, goal: "the same, within noise (10%)", met: Math.abs(last - first) <= 0.1 * first, filed: "-" },
    { name: `a. listing: page 1 of ${sessions} / of 40 sessions`, measured: `${fmt(first)} / ${fmt(small)}`, goal: "constant in sessions", met: Math.abs(first - small) <= 0.1 * small, filed: "-" },
  ];
}

/** b. Export: the service's peak memory streaming one user's data, against reading it all then writing it; c. erase of that user. */
async function exportAndErase(wire: RtdbWire, ns: string, db: Database, store: RtdbStore, server: ExportServer, sessions: number, messages: number, rounds: number): Promise<Goal[]> {
  const userId = `export-${randomUUID().slice(0, 8)}`;
  const word = `w${randomUUID().replaceAll("-", "")}`;
  await seedUser(store, db, userId, sessions, messages, word);
  // Twice as much data: what an export that holds one session at a time does not grow with.
  const double = `double-${randomUUID().slice(0, 8)}`;
  await seedUser(store, db, double, 2 * sessions, messages, "double");
  // Each sample in a fresh process (memory a process once grew to stays its RSS), warmed up by a
  // tiny export (its code compiled); "V8 alone": collections when V8 decides; "full GC every 20 ms":
  // the memory the work holds, as a process short of memory would collect it.
  const tiny = `tiny-${randomUUID().slice(0, 8)}`;
  await seedUser(store, db, tiny, 2, 4, "warm-up");
  const GC_MS = 20;
  const cases = [
    { name: `streamed (the route), ${sessions} sessions, V8 alone`, user: userId, mode: "streamed", gcEveryMs: undefined, rss: [] as number[], live: [] as number[] },
    { name: `baseline (all read, one JSON text), ${sessions} sessions, V8 alone`, user: userId, mode: "buffered", gcEveryMs: undefined, rss: [] as number[], live: [] as number[] },
    { name: `streamed, ${sessions} sessions, full GC every ${GC_MS} ms`, user: userId, mode: "streamed", gcEveryMs: GC_MS, rss: [] as number[], live: [] as number[] },
    { name: `baseline, ${sessions} sessions, full GC every ${GC_MS} ms`, user: userId, mode: "buffered", gcEveryMs: GC_MS, rss: [] as number[], live: [] as number[] },
    { name: `streamed, ${2 * sessions} sessions, full GC every ${GC_MS} ms`, user: double, mode: "streamed", gcEveryMs: GC_MS, rss: [] as number[], live: [] as number[] },
    { name: `baseline, ${2 * sessions} sessions, full GC every ${GC_MS} ms`, user: double, mode: "buffered", gcEveryMs: GC_MS, rss: [] as number[], live: [] as number[] },
  ];
  const times: number[] = [];
  let shape = { parts: 0, bytes: 0 };
  for (let round = 0; round < rounds; round += 1) {
    for (const entry of round % 2 === 0 ? cases : [...cases].reverse()) {
      const fresh = await ExportServer.start(server.env);
      try {
        await exportAll(fresh, tiny);
        let told: Told;
        if (entry.mode === "buffered") {
          told = await fresh.ask({ buffered: entry.user, ...(entry.gcEveryMs === undefined ? {} : { gcEveryMs: entry.gcEveryMs }) });
        } else {
          await fresh.ask({ start: true, ...(entry.gcEveryMs === undefined ? {} : { gcEveryMs: entry.gcEveryMs }) });
          const started = performance.now();
          const size = await exportAll(fresh, entry.user);
          if (entry.user === userId && entry.gcEveryMs === undefined) {
            shape = size;
            times.push(performance.now() - started);
          }
          told = await fresh.ask({ stop: true });
        }
        if ("rssMb" in told) {
          entry.rss.push(told.rssMb);
          entry.live.push(told.liveMb);
        }
      } finally {
        fresh.stop();
      }
    }
  }
  const rss = (index: number) => median(cases[index]?.rss ?? []);
  const live = (index: number) => median(cases[index]?.live ?? []);
  console.log(
    [
      `b. Export of one user: ${sessions} sessions x ${messages} messages, ${fmt(shape.bytes / 2 ** 20, 1)} MiB of JSON in ${shape.parts} parts: the service's peak memory growth during it, MiB`,
      "   (each sample a fresh process warmed up by a tiny export; live heap: the most in use right after a full GC)",
      ...table([
        ["case", "peak RSS growth", "peak live heap", "RSS runs"],
        ...cases.map((entry, i) => [entry.name, fmt(rss(i), 1), entry.gcEveryMs === undefined ? "" : fmt(live(i), 1), entry.rss.map((value) => fmt(value, 1)).join(" ")]),
      ]),
      `  streamed / baseline, RSS: x${fmt(rss(0) / rss(1), 2)} (V8 alone), x${fmt(rss(2) / rss(3), 2)} (full GCs); twice the data: streamed x${fmt(rss(4) / rss(2), 2)} RSS, x${fmt(live(4) / live(2), 2)} live,`,
      `  baseline x${fmt(rss(5) / rss(3), 2)} RSS, x${fmt(live(5) / live(3), 2)} live. V8 alone, a fresh process first grows its young generation (32 MiB here) and keeps what it`,
      `  promoted until its first full collection, whatever the work; a whole export of ${sessions} sessions took ${fmt(median(times), 0)} ms`,
      "",
    ].join("\n"),
  );

  const erasing = await measured(wire, ns, () => send(`${server.baseUrl}/api/v1/chatbot/me?user_id=${userId}`, { method: "DELETE" }));
  // The second pass, by the sweep of another instance once every request that raced the first has ended.
  const sweeper = composeInstance(serviceConfig("http://127.0.0.1:9/v1"), { store, identity: NO_TOKENS, log: silentLog });
  const report = await sweeper.maintain(Date.now() + 10 * MINUTE);
  const everything = JSON.stringify((await db.ref().once("value")).val());
  const left = [userId, word].filter((needle) => everything.includes(needle));
  console.log(
    [
      `c. Erase of that user: ${fmt(erasing.ms, 0)} ms for the first pass (one request), ${fmt(erasing.units)} units; the sweep finished ${report.erasuresFinished} erasure(s);`,
      `  a scan of the whole database afterwards (${fmt(everything.length)} characters) finds the user's id: ${left.includes(userId) ? "YES" : "no"}, their words: ${left.includes(word) ? "YES" : "no"}`,
      "",
    ].join("\n"),
  );
  return [
    { name: `b. export ${sessions} x ${messages}: peak RSS growth, full GCs (baseline)`, measured: `${fmt(rss(2), 1)} MiB (${fmt(rss(3), 1)})`, goal: "< 50 MiB", met: rss(2) < 50, filed: "-" },
    { name: "b. the same, V8 alone, fresh process (baseline)", measured: `${fmt(rss(0), 1)} MiB (${fmt(rss(1), 1)})`, goal: "< 50 MiB", met: rss(0) < 50, filed: "-" },
    { name: "b. twice the data: streamed live heap x (baseline x)", measured: `x${fmt(live(4) / live(2), 2)} (x${fmt(live(5) / live(3), 2)})`, goal: "flat", met: live(4) < 1.5 * live(2), filed: "-" },
    { name: "c. erase completes; nothing left of the user", measured: `${report.erasuresFinished} finished; ${left.length} found`, goal: "1; 0", met: report.erasuresFinished === 1 && left.length === 0, filed: "-" },
  ];
}

runCli("conversations-bench", main, USAGE);
