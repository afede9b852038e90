import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { freshNamespace } from "../../test/support/rtdb";
import { serviceEnv } from "../../test/support/service-env";
import { createSession, sendMessage } from "../shared/http-client";
import { ChildServer } from "./child-server";
import { fmt, median, table } from "../shared/figures";
import { skippedSection, type Section } from "./report";
import type { CostOptions } from "./options";

/**
 * The environment of a server under test: this process's, with the service's params for the fake
 * model. Neither the database host nor PLAIN_BURN_MS is the child's unless its caller gives it: a
 * shell's PLAIN_BURN_MS would slow the baseline itself. A user's day of tokens is raised too:
 * section d's one session spends the default 200,000 in about 350 messages, so `--messages 800`
 * stopped at 429 TOKEN_LIMIT.
 */
export function childEnv(modelBaseUrl: string): Record<string, string | undefined> {
  const { FIREBASE_DATABASE_EMULATOR_HOST: _host, PLAIN_BURN_MS: _burn, ...inherited } = process.env;
  return { ...inherited, ...serviceEnv(modelBaseUrl, { USER_TOKENS_PER_DAY: "1000000000" }) };
}

/** Issue 18's goals for section c: database-mode throughput at least this share of the plain server's, CPU per message at most this many times the floor's. */
const THROUGHPUT_GOAL = 0.85;
const CPU_GOAL = 1.3;

/**
 * Sections c, d and e of the cost bench: the servers under test each in a child process of its
 * own (the plain baseline, the service with the embedded store, the service on the database,
 * uncapped and with its heap capped); the load generator and the fake model stay in
 * this process, whose CPU is reported beside the server's.
 */
export interface Servers {
  readonly plain: ChildServer;
  readonly embedded: ChildServer;
  readonly database: ChildServer | undefined;
  /** The floor of database mode: the same database operations per message and nothing else (floor-server.ts). */
  readonly floor: ChildServer | undefined;
  /** The same floor writing records of the service's shapes (floor-records.ts): what the records cost, apart from the service's code. */
  readonly floorRecords: ChildServer | undefined;
  readonly capped: readonly ChildServer[];
  /** The plain server spinning more CPU per message, one per `--burn-ms` value: what a CPU per message allows (plain-server.ts). */
  readonly burned: readonly ChildServer[];
  stop(): void;
}

/**
 * `databaseHost`: rtdb-wire's, or undefined to leave the database modes out. `heapMb`: also a
 * database-mode service with its heap capped at each. `burnMs`: also a plain server spinning each
 * that many ms of CPU per message.
 */
export async function startServers(modelBaseUrl: string, databaseHost: string | undefined, heapMb: readonly number[], burnMs: readonly number[]): Promise<Servers> {
  const env = childEnv(modelBaseUrl);
  const onDatabase = (prefix: string) => ({ ...env, FIREBASE_DATABASE_EMULATOR_HOST: databaseHost, BENCH_PROJECT_ID: freshNamespace(prefix) });
  const started: ChildServer[] = [];
  const start = async (name: string, script: string, childEnv: typeof env, execArgv: string[] = []) => {
    const server = await ChildServer.start(name, script, childEnv, execArgv);
    started.push(server);
    return server;
  };
  try {
    return {
      plain: await start("plain", "plain-server.js", env),
      embedded: await start("service, embedded store", "service-server.js", env),
      database: databaseHost === undefined ? undefined : await start("service, database", "service-server.js", onDatabase("cost-c")),
      floor: databaseHost === undefined ? undefined : await start("floor: its database operations", "floor-server.js", onDatabase("cost-floor")),
      floorRecords: databaseHost === undefined ? undefined : await start("floor, the service's records", "floor-server.js", { ...onDatabase("cost-floor-records"), FLOOR_RECORDS: "service" }),
      capped:
        databaseHost === undefined
          ? []
          : await Promise.all(heapMb.map((mb) => start(`service, database, heap ${mb} MiB`, "service-server.js", onDatabase("cost-e"), [`--max-old-space-size=${mb}`]))),
      burned: await Promise.all(burnMs.map((ms) => start(`plain, ${ms} ms more CPU per message`, "plain-server.js", { ...env, PLAIN_BURN_MS: String(ms) }))),
      stop: () => { for (const server of started) server.stop(); },
    };
  } catch (error) {
    for (const server of started) server.stop();
    throw error;
  }
}

interface Run {
  readonly rate: number;
  readonly failed: number;
  /** CPU cores used on average during the run, by the server and by this process. */
  readonly serverCores: number;
  readonly benchCores: number;
  readonly fullGcs: number;
  readonly peakRssMb: number;
}

/** Every session sends message after message for `seconds`; messages answered per second (those still in flight at the end count). */
async function throughputRun(server: ChildServer, sessionIds: readonly string[], seconds: number): Promise<Run> {
  const before = await server.usage();
  const cpu = process.cpuUsage();
  const started = performance.now();
  const deadline = started + seconds * 1000;
  let done = 0;
  let failed = 0;
  await Promise.all(
    sessionIds.map(async (sessionId, session) => {
      for (let n = 0; performance.now() < deadline; n += 1) {
        try {
          await sendMessage(server.baseUrl, sessionId, `Load message ${n} of session ${session}: how are you today?`);
          done += 1;
        } catch (error) {
          if (failed === 0) console.error(`  ${server.name}: ${error instanceof Error ? error.message : String(error)}`);
          failed += 1;
          await sleep(50);
        }
      }
    }),
  );
  const elapsedMs = performance.now() - started;
  const after = await server.usage();
  const benchCpu = process.cpuUsage(cpu);
  return {
    rate: done / (elapsedMs / 1000),
    failed,
    serverCores: (after.cpuMs - before.cpuMs) / elapsedMs,
    benchCores: (benchCpu.user + benchCpu.system) / 1000 / elapsedMs,
    fullGcs: after.fullGcs - before.fullGcs,
    peakRssMb: after.peakRssMb,
  };
}

/**
 * c and e. Throughput of each server at `sessions` concurrent sessions with a `modelMs` model:
 * a short warm-up run each, then `runs` rounds in which every server runs once, in rotating order.
 */
export async function throughput(servers: Servers, options: CostOptions, setModelDelay: (ms: number) => void, skipped: string | undefined): Promise<{ c: Section; e: Section }> {
  setModelDelay(options.modelMs);
  const forC = options.only.includes("c") ? [servers.plain, servers.embedded, servers.floor, servers.floorRecords].filter((server) => server !== undefined) : [];
  // The spinning servers after the service: the floor and the service stay close in each round.
  const list = [...forC, servers.database, ...servers.burned, ...servers.capped].filter((server) => server !== undefined);
  const sessions = new Map<ChildServer, string[]>();
  for (const server of list) {
    sessions.set(server, await Promise.all(Array.from({ length: options.sessions }, (_, i) => createSession(server.baseUrl, `load-${i}`))));
    await throughputRun(server, sessions.get(server) ?? [], Math.min(2, options.seconds));
  }
  const runs = new Map<ChildServer, Run[]>(list.map((server) => [server, []]));
  for (let round = 0; round < options.runs; round += 1) {
    for (let i = 0; i < list.length; i += 1) {
      const server = list[(i + round) % list.length];
      if (server) runs.get(server)?.push(await throughputRun(server, sessions.get(server) ?? [], options.seconds));
    }
  }
  const of = (server: ChildServer | undefined, pick: (run: Run) => number): number => median((server && runs.get(server)?.map(pick)) ?? []);
  const rate = (server: ChildServer | undefined): number => of(server, (run) => run.rate);
  const row = (server: ChildServer): string[] => {
    const rates = runs.get(server)?.map((run) => run.rate) ?? [];
    return [
      server.name,
      fmt(rate(server), 1),
      `${fmt(Math.min(...rates), 1)}-${fmt(Math.max(...rates), 1)}`,
      `${fmt(rate(server) / rate(servers.plain), 2)}x`,
      fmt(of(server, (run) => (run.serverCores * 1000) / run.rate), 2),
      fmt(of(server, (run) => run.serverCores), 2),
      fmt(of(server, (run) => run.benchCores), 2),
      String(runs.get(server)?.reduce((sum, run) => sum + run.failed, 0) ?? 0),
    ];
  };
  const ratio = rate(servers.database) / rate(servers.plain);
  const cpuPerMessage = (server: ChildServer | undefined): number[] => (server && runs.get(server)?.map((run) => (run.serverCores * 1000) / run.rate)) ?? [];
  const databaseCpu = cpuPerMessage(servers.database);
  const floorCpu = cpuPerMessage(servers.floor);
  const floorRatio = median(databaseCpu) / median(floorCpu);
  // The same ratio round by round: the floor's own CPU per message moves by up to a third between
  // runs, and two servers measured in the same round share more of the machine's state.
  const floorPerRound = databaseCpu.map((cpu, round) => cpu / (floorCpu[round] ?? Number.NaN)).filter(Number.isFinite);
  const recordsRatio = median(cpuPerMessage(servers.floorRecords)) / median(floorCpu);
  const c: Section = {
    lines: [
      `c. Throughput (goals: database mode >= ${THROUGHPUT_GOAL}x the plain server; its CPU per message <= ${CPU_GOAL}x the floor's, issue 18)`,
      ...table([
        ["server", "msg/s", "range", "vs plain", "CPU ms/msg", "server cores", "bench cores", "failed"],
        ...[servers.plain, servers.embedded, servers.database, servers.floor, servers.floorRecords, ...servers.burned].filter((server) => server !== undefined).map(row),
      ]),
      ...cpuBudgetLines(servers, rate, (server) => median(cpuPerMessage(server))),
      ...(servers.floorRecords
        ? [
            `  CPU per message: the floor with the service's records ${fmt(recordsRatio, 2)}x the floor's; the service ${fmt(floorRatio / recordsRatio, 2)}x the floor with its records`,
            "  (the same operations; what is left is the service's own code: validation, identity, limits, the journal, the HTTP answer).",
          ]
        : []),
      `  ${options.sessions} sessions each sending message after message for ${options.seconds} s per run, fake model answering after ${options.modelMs} ms,`,
      `  rtdb-wire at 0 ms; ${options.runs} interleaved runs per server (rotating order) after a ${Math.min(2, options.seconds)} s warm-up each; medians.`,
      "  Each server in a child process; cores: CPU time / wall time of the server's process and of the bench process (load generator,",
      "  model; rtdb-wire runs in a process of its own); CPU ms/msg: the server's CPU time per message answered, the figure the other processes on the machine move least.",
      ...(servers.database ? [] : [`  database mode skipped: ${skipped ?? "no database"}`]),
    ],
    goals: [
      { name: "c. database-mode throughput vs plain", measured: servers.database ? `${fmt(ratio, 2)}x (${spreadOf(runs.get(servers.database)?.map((run) => run.rate) ?? [], rate(servers.plain))})` : "-", goal: `>= ${THROUGHPUT_GOAL}x`, met: servers.database ? ratio >= THROUGHPUT_GOAL : undefined, filed: "0.70x; 0.57x (issue 18)" },
      { name: "c. database-mode CPU per message vs the floor", measured: servers.floor ? `${fmt(floorRatio, 2)}x (${fmt(median(databaseCpu), 2)} vs ${fmt(median(floorCpu), 2)} ms; ${byRound(floorPerRound)})` : "-", goal: `<= ${CPU_GOAL}x`, met: servers.floor ? floorRatio <= CPU_GOAL : undefined, filed: "about 2x (5.5 vs 2.8 ms)" },
    ],
  };
  const { database, capped } = servers;
  const heaps = options.heapMb.join(" and ");
  if (!database || capped.length === 0) {
    return { c, e: skippedSection("e. Memory", skipped ?? "no database", [{ name: `e. database mode, heap ${heaps} MiB vs uncapped`, goal: "a figure", filed: "0.41-0.51x" }]) };
  }
  const memoryRow = (server: ChildServer) => [
    server.name,
    fmt(rate(server), 1),
    `${fmt(rate(server) / rate(database), 2)}x`,
    fmt(of(server, (run) => (run.serverCores * 1000) / run.rate), 2),
    fmt(Math.max(...(runs.get(server)?.map((run) => run.peakRssMb) ?? []))),
    fmt(of(server, (run) => run.fullGcs)),
  ];
  const e: Section = {
    lines: [
      `e. Memory: database-mode throughput with the service's V8 heap capped at ${heaps} MiB (--max-old-space-size) vs uncapped, as in c`,
      ...table([["server", "msg/s", "vs uncapped", "CPU ms/msg", "peak RSS MiB", "full GCs per run"], memoryRow(database), ...capped.map(memoryRow)]),
      "  peak RSS: the child's maxRSS over its life (sessions, warm-up and every run); full GCs: major collections in one run (median).",
    ],
    goals: capped.map((server, i) => ({
      name: `e. database mode, heap ${options.heapMb[i] ?? "?"} MiB vs uncapped`,
      measured: `${fmt(rate(server) / rate(database), 2)}x, CPU x${fmt(of(server, (run) => run.serverCores / run.rate) / of(database, (run) => run.serverCores / run.rate), 1)}, ${fmt(of(server, (run) => run.fullGcs))} full GCs, peak RSS ${fmt(Math.max(...(runs.get(server)?.map((run) => run.peakRssMb) ?? [])))} MiB`,
      goal: "a figure",
      met: undefined,
      filed: "0.41-0.51x (128 MiB)",
    })),
  };
  return { c, e };
}

/** The ratio round by round, its range and median; "-" without a round that gave one. */
function byRound(ratios: readonly number[]): string {
  if (ratios.length === 0) return "by round -";
  return `by round ${fmt(Math.min(...ratios), 2)}-${fmt(Math.max(...ratios), 2)}x, median ${fmt(median(ratios), 2)}x`;
}

/**
 * What CPU per message the throughput goal allows on this bench: the plain server and its spinning
 * copies, by CPU per message, and where their throughput falls under the goal's share of the plain
 * server's for good (the last fall, linear between the settings on either side: a noisy setting
 * above the goal after a fall does not count as the budget), beside what the floor spends.
 */
function cpuBudgetLines(servers: Servers, rate: (server: ChildServer) => number, cpu: (server: ChildServer) => number): string[] {
  if (servers.burned.length === 0) return [];
  const points = [servers.plain, ...servers.burned].map((server) => ({ cpu: cpu(server), ratio: rate(server) / rate(servers.plain) })).sort((a, b) => a.cpu - b.cpu);
  const spent = servers.floor ? `; the floor spends ${fmt(cpu(servers.floor), 2)} ms, the service ${servers.database ? fmt(cpu(servers.database), 2) : "-"} ms` : "";
  if (!points.every((point) => Number.isFinite(point.cpu) && Number.isFinite(point.ratio))) return ["  CPU budget: n/a (a server answered no message in a round)."];
  let fall = -1;
  for (let i = 1; i < points.length; i += 1) if ((points[i - 1]?.ratio ?? 0) >= THROUGHPUT_GOAL && (points[i]?.ratio ?? 1) < THROUGHPUT_GOAL) fall = i;
  const after = points[fall];
  const before = points[fall - 1];
  if (!after || !before) return [`  CPU budget: the plain server with ${points.map((point) => `${fmt(point.cpu, 2)} ms`).join(", ")} of CPU per message did not cross ${THROUGHPUT_GOAL}x of itself${spent}.`];
  const budget = before.cpu + ((before.ratio - THROUGHPUT_GOAL) * (after.cpu - before.cpu)) / (before.ratio - after.ratio);
  return [
    `  CPU budget: spinning more CPU per message, the plain server falls under ${THROUGHPUT_GOAL}x of itself at about ${fmt(budget, 2)} ms per message`,
    `  (between its settings measured at ${fmt(before.cpu, 2)} and ${fmt(after.cpu, 2)} ms)${spent}: a server spending more cannot meet the goal here, whatever its work.`,
  ];
}

/**
 * d. Per message latency, the service with the embedded store vs the plain server: one session
 * each, sequential messages, instant model, the two servers in turn message by message.
 */
export async function perMessage(servers: Servers, messages: number, setModelDelay: (ms: number) => void): Promise<Section> {
  setModelDelay(0);
  const pair = [servers.embedded, servers.plain];
  const sessionIds = await Promise.all(pair.map((server) => createSession(server.baseUrl, "per-message")));
  const times: number[][] = pair.map(() => []);
  const send = async (index: number, n: number): Promise<number> => {
    const server = pair[index];
    if (!server) return 0;
    const started = performance.now();
    await sendMessage(server.baseUrl, sessionIds[index] ?? "", `Message number ${n}: what do you think of that, in a few words?`);
    return performance.now() - started;
  };
  for (let n = 0; n < 50; n += 1) for (const index of [0, 1]) await send(index, n);
  const before = await Promise.all(pair.map((server) => server.usage()));
  for (let n = 0; n < messages; n += 1) {
    for (const index of n % 2 === 0 ? [0, 1] : [1, 0]) times[index]?.push(await send(index, n + 50));
  }
  const after = await Promise.all(pair.map((server) => server.usage()));
  const ms = times.map((list) => median(list));
  const cpu = pair.map((_, i) => ((after[i]?.cpuMs ?? 0) - (before[i]?.cpuMs ?? 0)) / messages);
  const [serviceMs = 0, plainMs = 0] = ms;
  const [serviceCpu = 0, plainCpu = 0] = cpu;
  const ratio = serviceMs / plainMs;
  return {
    lines: [
      "d. Per message, embedded store vs plain server (goal: <= 1.1x)",
      ...table([
        ["server", "median ms", "CPU ms per message"],
        ...pair.map((server, i) => [server.name, fmt(ms[i] ?? 0, 2), fmt(cpu[i] ?? 0, 2)]),
        ["ratio", `${fmt(ratio, 2)}x`, `${fmt(serviceCpu / plainCpu, 2)}x`],
      ]),
      `  ${messages} sequential messages per server to one session each, the two servers in turn, after 50 each to warm up; instant model.`,
      "  ms: wall time of the HTTP request from this process; CPU: the server process's user+system time over all the messages.",
    ],
    goals: [{ name: "d. per message, embedded vs plain", measured: `${fmt(ratio, 2)}x (CPU ${fmt(serviceCpu / plainCpu, 2)}x)`, goal: "<= 1.1x", met: ratio <= 1.1, filed: "1.39x (CPU 1.55x)" }],
  };
}

/** The range of `rates` as ratios to `baseline`'s median: how far apart the runs were. */
function spreadOf(rates: readonly number[], baseline: number): string {
  return `${fmt(Math.min(...rates) / baseline, 2)}-${fmt(Math.max(...rates) / baseline, 2)}x`;
}
