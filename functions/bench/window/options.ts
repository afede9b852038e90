import { integerOption, optionReader, UsageError } from "../shared/cli";

/** What a window-bench run does; set by `--name=value` (or `--name value`) or by `BENCH_NAME`. */
export interface WindowBenchOptions {
  /** History lengths, in exchanges, pre-filled before the measured messages. */
  readonly sizes: readonly number[];
  /** Measured messages per history length and mode. */
  readonly messages: number;
  /** The template's context_window: history messages sent to the model, and the most a message may read. */
  readonly window: number;
  /** Past this the run stops itself and fails. */
  readonly timeLimitMs: number;
}

/** The service's limit on exchanges per session, less room for the measured messages. */
const MAX_HISTORY = 90_000;

const DEFAULTS = { sizes: "0,100,1000,5000", messages: "40", window: "10", "time-limit": "240" } as const;
type Flag = keyof typeof DEFAULTS;

export const USAGE = [
  "usage: npm run bench:window -- [--name=value ...]   (or BENCH_NAME=value, e.g. BENCH_SIZES=0,100,1000)",
  `  --sizes        history lengths in exchanges, comma-separated (default ${DEFAULTS.sizes}; at most ${MAX_HISTORY})`,
  `  --messages     measured messages per history length and mode (default ${DEFAULTS.messages}; 1 to 1000)`,
  `  --window       the template's context_window (default ${DEFAULTS.window}; 1 to 200)`,
  `  --time-limit   seconds after which the run stops itself and fails (default ${DEFAULTS["time-limit"]})`,
  "Set FIREBASE_DATABASE_EMULATOR_HOST to run on that Realtime Database instead of the embedded store.",
].join("\n");

/** Options from argv first, then the environment, then the defaults. */
export function parseOptions(argv: readonly string[], env: Readonly<Record<string, string | undefined>>): WindowBenchOptions {
  const raw = optionReader<Flag>(argv, env, "BENCH_", DEFAULTS);
  const integer = (flag: Flag, min: number, max: number): number => integerOption(flag, raw(flag), min, max);
  const sizes = raw("sizes")
    .split(",")
    .map((part) => integerOption("sizes", part, 0, MAX_HISTORY));
  if (new Set(sizes).size !== sizes.length) throw new UsageError("--sizes must not repeat a length");
  return {
    sizes: [...sizes].sort((a, b) => a - b),
    messages: integer("messages", 1, 1_000),
    window: integer("window", 1, 200),
    timeLimitMs: integer("time-limit", 10, 3_600) * 1000,
  };
}
