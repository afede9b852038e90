import { optionReader, UsageError } from "../shared/cli";

/** What a soak run does; every field can be set by `--name=value` (or `--name value`) or by `SOAK_NAME`. */
export interface SoakOptions {
  readonly sessions: number;
  /** Messages planned in all (each a distinct text); retries of keyed ones come on top. */
  readonly messages: number;
  /** Tasks in flight at once (a task is one logical request with its retries). */
  readonly concurrency: number;
  /** Instances (runtime + local server each) sharing the store. */
  readonly instances: number;
  /** Fraction of model calls answered with a fault. */
  readonly failureRate: number;
  /** Fraction of messages sent with an Idempotency-Key (and retried). */
  readonly keyedRate: number;
  /** Fraction of sessions ended mid-way. */
  readonly endRate: number;
  /** Fraction of sessions created with an Idempotency-Key, by several attempts. */
  readonly createKeyRate: number;
  readonly seed: number;
  /** No new task starts after this; tasks in flight finish. */
  readonly timeLimitMs: number;
  /** Per attempt; the model may be retried once (OPENAI_MAX_RETRIES=1). */
  readonly modelTimeoutMs: number;
  /** Database instances sessions are spread over (namespaces of the one server; docs/sharding.md). */
  readonly databases: number;
}

interface Spec {
  readonly key: keyof SoakOptions;
  readonly flag: string;
  readonly fallback: number;
  readonly min: number;
  readonly max: number;
  readonly integer: boolean;
  readonly help: string;
}

const SPECS: readonly Spec[] = [
  { key: "sessions", flag: "sessions", fallback: 40, min: 1, max: 10_000, integer: true, help: "sessions created" },
  { key: "messages", flag: "messages", fallback: 600, min: 0, max: 1_000_000, integer: true, help: "messages planned" },
  { key: "concurrency", flag: "concurrency", fallback: 24, min: 1, max: 1_000, integer: true, help: "tasks in flight" },
  { key: "instances", flag: "instances", fallback: 3, min: 1, max: 32, integer: true, help: "instances sharing the store" },
  { key: "failureRate", flag: "failure-rate", fallback: 0.2, min: 0, max: 1, integer: false, help: "fraction of model calls that get a fault" },
  { key: "keyedRate", flag: "keyed-rate", fallback: 0.35, min: 0, max: 1, integer: false, help: "fraction of messages with an Idempotency-Key" },
  { key: "endRate", flag: "end-rate", fallback: 0.3, min: 0, max: 1, integer: false, help: "fraction of sessions ended mid-way" },
  { key: "createKeyRate", flag: "create-key-rate", fallback: 0.2, min: 0, max: 1, integer: false, help: "fraction of creates with an Idempotency-Key" },
  { key: "seed", flag: "seed", fallback: 1, min: 0, max: 4_294_967_295, integer: true, help: "seed of the plan and of the faults" },
  { key: "timeLimitMs", flag: "time-limit", fallback: 120, min: 1, max: 86_400, integer: false, help: "seconds after which no new task starts" },
  { key: "modelTimeoutMs", flag: "model-timeout-ms", fallback: 1_000, min: 100, max: 60_000, integer: true, help: "OPENAI_TIMEOUT_MS of the instances" },
  { key: "databases", flag: "databases", fallback: 1, min: 1, max: 16, integer: true, help: "database instances sessions are spread over (Realtime Database only)" },
];

export const USAGE = [
  "usage: npm run soak -- [--name=value ...]   (or SOAK_NAME=value, e.g. SOAK_FAILURE_RATE=0.3)",
  ...SPECS.map((spec) => `  --${spec.flag.padEnd(18)} ${spec.help} (default ${spec.fallback})`),
  "Set FIREBASE_DATABASE_EMULATOR_HOST to run on that Realtime Database instead of the embedded store.",
].join("\n");

/** Options from argv first, then the environment, then the defaults. */
export function parseOptions(argv: readonly string[], env: Readonly<Record<string, string | undefined>>): SoakOptions {
  const textOf = optionReader(argv, env, "SOAK_", Object.fromEntries(SPECS.map((spec) => [spec.flag, String(spec.fallback)])));
  const values: Partial<Record<keyof SoakOptions, number>> = {};
  for (const spec of SPECS) {
    const raw = textOf(spec.flag);
    const value = raw.trim() === "" ? spec.fallback : Number(raw);
    if (!Number.isFinite(value) || value < spec.min || value > spec.max || (spec.integer && !Number.isInteger(value))) {
      throw new UsageError(`--${spec.flag} must be ${spec.integer ? "an integer" : "a number"} from ${spec.min} to ${spec.max}, got "${raw}"`);
    }
    values[spec.key] = value;
  }
  const read = (key: keyof SoakOptions): number => values[key] ?? 0;
  return {
    sessions: read("sessions"),
    messages: read("messages"),
    concurrency: read("concurrency"),
    instances: read("instances"),
    failureRate: read("failureRate"),
    keyedRate: read("keyedRate"),
    endRate: read("endRate"),
    createKeyRate: read("createKeyRate"),
    seed: read("seed"),
    timeLimitMs: read("timeLimitMs") * 1000,
    modelTimeoutMs: read("modelTimeoutMs"),
    databases: read("databases"),
  };
}

/** The command-line arguments that give `options` again. */
export function optionsAsArgs(options: SoakOptions): string {
  return SPECS.map((spec) => `--${spec.flag} ${spec.key === "timeLimitMs" ? options.timeLimitMs / 1000 : options[spec.key]}`).join(" ");
}
