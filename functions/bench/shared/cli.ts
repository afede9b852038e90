import { send } from "./http-client";

/** What the bench programs share as command-line programs. */

/** The command line or the environment asks for something the run does not take; the usage text follows. */
export class UsageError extends Error {}

/** The run cannot start (no database); nothing was checked or measured. */
export class SetupError extends Error {}

/**
 * The `--name=value` and `--name value` flags of `argv`, by name (the last of a repeated flag wins).
 * Anything else, a name not in `knownFlags`, or a flag without a value is a UsageError.
 */
export function readFlags(argv: readonly string[], knownFlags: Iterable<string>): Map<string, string> {
  const known = new Set(knownFlags);
  const given = new Map<string, string>();
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i] ?? "";
    const match = /^--([a-z-]+)(?:=(.*))?$/.exec(arg);
    if (!match?.[1]) throw new UsageError(`unexpected argument "${arg}"`);
    if (!known.has(match[1])) throw new UsageError(`unknown option --${match[1]}`);
    const value = match[2] ?? argv[(i += 1)];
    if (value === undefined) throw new UsageError(`--${match[1]} needs a value`);
    given.set(match[1], value);
  }
  return given;
}

/**
 * Each option's text: from `--name=value` (or `--name value`) in `argv`, else from
 * `${envPrefix}NAME` in the environment (upper case, dashes as underscores), else its default.
 * A flag not in `defaults` is a UsageError.
 */
export function optionReader<Flag extends string>(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
  envPrefix: string,
  defaults: Readonly<Record<Flag, string>>,
): (flag: Flag) => string {
  const given = readFlags(argv, Object.keys(defaults));
  return (flag) => given.get(flag) ?? (env[`${envPrefix}${flag.toUpperCase().replaceAll("-", "_")}`]?.trim() || defaults[flag]);
}

/** `text` as an integer from `min` to `max`, else a UsageError that names `--flag`. */
export function integerOption(flag: string, text: string, min: number, max: number): number {
  const value = Number(text.trim());
  if (text.trim() === "" || !Number.isInteger(value) || value < min || value > max) {
    throw new UsageError(`--${flag} takes integers from ${min} to ${max}, got "${text}"`);
  }
  return value;
}

/**
 * The Realtime Database of FIREBASE_DATABASE_EMULATOR_HOST, checked to answer (asked for
 * `probeNamespace`), or undefined when none is set: the run then uses the embedded store.
 */
export async function databaseFromEnv(env: Readonly<Record<string, string | undefined>>, probeNamespace: string): Promise<string | undefined> {
  const host = env.FIREBASE_DATABASE_EMULATOR_HOST || undefined;
  if (host !== undefined) await probeDatabase(host, probeNamespace);
  return host;
}

/** Fails fast, and says so, when no Realtime Database answers at `host` (asked for `namespace`). */
export async function probeDatabase(host: string, namespace: string): Promise<void> {
  const answer = await send(`http://${host}/.json?ns=${namespace}&shallow=true`, { method: "GET", timeoutMs: 3000 });
  if (answer.status >= 200 && answer.status <= 299) return;
  throw new SetupError(`FIREBASE_DATABASE_EMULATOR_HOST=${host}: no Realtime Database answers there (${answer.error ?? `answered ${answer.status}`})`);
}

/**
 * Runs `main` on the command-line arguments and exits with its code: `--help` prints `usage`
 * instead; a UsageError or SetupError exits 2 with its message (and `usage` after a UsageError),
 * anything else thrown exits 1. Messages start with `name`.
 */
export function runCli(name: string, main: (argv: readonly string[]) => Promise<number>, usage: string): void {
  const argv = process.argv.slice(2);
  const run = async (): Promise<number> => {
    if (argv.includes("--help")) {
      console.log(usage);
      return 0;
    }
    return main(argv);
  };
  run().then(
    (code) => {
      // firebase-admin and keep-alive sockets may hold the loop open: the verdict is in.
      process.exit(code);
    },
    (error: unknown) => {
      if (error instanceof UsageError || error instanceof SetupError) {
        console.error(`${name}: ${error.message}${error instanceof UsageError ? `\n${usage}` : ""}`);
        process.exit(2);
      }
      console.error(`${name}: failed`, error);
      process.exit(1);
    },
  );
}

/** Ends the run as failed if it is still going `afterMs` after now: a stuck run says so instead of hanging. */
export function stopIfStuck(name: string, afterMs: number): void {
  setTimeout(() => {
    console.error(`${name}: FAIL: still running ${afterMs / 1000} s after the start, past its time limit`);
    process.exit(1);
  }, afterMs).unref();
}
