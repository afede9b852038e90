import { integerOption, optionReader, UsageError } from "../shared/cli";

/** What a message-cost bench run does; every field can be set by `--name=value` (or `--name value`) or by `COST_BENCH_NAME`. */
export interface CostOptions {
  /** Sections to run, of "abcdef". */
  readonly only: string;
  /** a: interleaved rounds; each measures every case once at 0 ms and once at `latencyMs`. */
  readonly rounds: number;
  readonly latencyMs: number;
  /** b: history lengths (exchanges already stored) at which the wire traffic of a message is measured. */
  readonly history: readonly number[];
  /** b: messages measured at each history length. */
  readonly perPoint: number;
  /** c, e: concurrent sessions, model delay, seconds per run, interleaved runs per server. */
  readonly sessions: number;
  readonly modelMs: number;
  readonly seconds: number;
  readonly runs: number;
  /** c: CPU per message (ms) added to the plain server, one server each: the throughput a CPU per message allows. */
  readonly burnMs: readonly number[];
  /** d: sequential messages per server. */
  readonly messages: number;
  /** e: the capped service's --max-old-space-size. */
  readonly heapMb: readonly number[];
  /** f: how many other sessions each server listens to, one server per count. */
  readonly held: readonly number[];
  /** f: measured batches of sequential messages per server. */
  readonly heldBatches: number;
  /** Past this the run stops itself and fails. */
  readonly timeLimitMs: number;
}

interface Spec {
  readonly flag: string;
  readonly fallback: string;
  readonly help: string;
}

const SPECS: readonly Spec[] = [
  { flag: "only", fallback: "abcdef", help: "sections to run, e.g. ab (a round trips, b wire traffic, c throughput, d per message, e memory, f held listeners)" },
  { flag: "rounds", fallback: "20", help: "a: interleaved rounds (each case once at 0 ms and once at --latency-ms per round)" },
  { flag: "latency-ms", fallback: "20", help: "a: rtdb-wire latency of the slow runs" },
  { flag: "history", fallback: "10,100", help: "b: history lengths (exchanges stored) at which a message's traffic is measured" },
  { flag: "per-point", fallback: "5", help: "b: messages measured at each history length" },
  { flag: "sessions", fallback: "50", help: "c, e: concurrent sessions" },
  { flag: "model-ms", fallback: "200", help: "c, e: delay of every model reply" },
  { flag: "seconds", fallback: "5", help: "c, e: seconds per throughput run" },
  { flag: "runs", fallback: "3", help: "c, e: interleaved throughput runs per server" },
  { flag: "burn-ms", fallback: "1,2,3", help: "c: a plain server per value spinning that many ms of CPU per message: the CPU per message the throughput goal allows (0: none)" },
  { flag: "messages", fallback: "300", help: "d: sequential messages per server" },
  { flag: "heap-mb", fallback: "128,256", help: "e: --max-old-space-size of each capped service (about half of a 256 MiB and a 512 MiB instance)" },
  { flag: "held", fallback: "0,250", help: "f: other sessions each server has served and listens to, one server per count" },
  { flag: "held-batches", fallback: "6", help: "f: measured batches of 50 sequential messages per server" },
  { flag: "time-limit", fallback: "600", help: "seconds after which the run stops itself and fails" },
];

export const USAGE = [
  "usage: npm run bench -- [--name=value ...]   (or COST_BENCH_NAME=value, e.g. COST_BENCH_ROUNDS=25)",
  ...SPECS.map((spec) => `  --${spec.flag.padEnd(12)} ${spec.help} (default ${spec.fallback})`),
  "The database parts (a, b, and the database modes of c and e) need rtdb-wire: RTDB_WIRE_DIR, else ../shared/rtdb-wire",
  "beside the project; without it they are skipped, and say so. The window bench is `npm run bench:window`.",
].join("\n");

/** Options from argv first, then the environment, then the defaults. */
export function parseOptions(argv: readonly string[], env: Readonly<Record<string, string | undefined>>): CostOptions {
  const raw = optionReader(argv, env, "COST_BENCH_", Object.fromEntries(SPECS.map((spec) => [spec.flag, spec.fallback])));
  const integer = (flag: string, min: number, max: number): number => integerOption(flag, raw(flag), min, max);
  /** A comma-separated list, each distinct value once, in ascending order. */
  const integers = (flag: string, min: number, max: number): number[] =>
    [...new Set(raw(flag).split(",").map((part) => integerOption(flag, part, min, max)))].sort((a, b) => a - b);
  const only = raw("only");
  if (!/^[a-f]+$/.test(only)) throw new UsageError(`--only takes letters from a to f, got "${only}"`);
  return {
    only,
    rounds: integer("rounds", 1, 1_000),
    latencyMs: integer("latency-ms", 1, 1_000),
    history: integers("history", 1, 5_000),
    perPoint: integer("per-point", 1, 100),
    sessions: integer("sessions", 1, 1_000),
    modelMs: integer("model-ms", 0, 10_000),
    seconds: integer("seconds", 1, 600),
    runs: integer("runs", 1, 100),
    burnMs: integers("burn-ms", 0, 100).filter((ms) => ms > 0),
    messages: integer("messages", 1, 100_000),
    heapMb: integers("heap-mb", 16, 16_384),
    held: integers("held", 0, 2_000),
    heldBatches: integer("held-batches", 1, 100),
    timeLimitMs: integer("time-limit", 10, 86_400) * 1000,
  };
}
