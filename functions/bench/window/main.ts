import { performance } from "node:perf_hooks";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { databaseFromEnv, runCli, stopIfStuck } from "../shared/cli";
import { sendMeasured, sessionWithHistory, type Sample } from "./measure";
import { parseOptions, USAGE, type WindowBenchOptions } from "./options";
import { cacheReport, maxMessagesRead, maxPromptMessages, memoryReport, modeReport, type Memory, type SizeResult } from "./report";
import { startRig, type CacheMode, type Rig } from "./rig";

/**
 * The window bench: for histories of growing length, the latency and the data read of each
 * message, with the session cache off (cold) and on (warm). It shows that a message's work
 * and reads are bounded by the template's context window, not by the history; exit code 1
 * when a message ever reads more history messages than the window.
 *
 *   npm run bench:window -- --sizes 0,100,1000,5000 --messages 40
 *   FIREBASE_DATABASE_EMULATOR_HOST=127.0.0.1:9000 npm run bench:window
 */
async function main(argv: readonly string[]): Promise<number> {
  const options = parseOptions(argv, process.env);
  stopIfStuck("window-bench", options.timeLimitMs);
  const databaseHost = await databaseFromEnv(process.env, "window-bench-probe");
  const rig = await startRig({ window: options.window, databaseHost });
  console.log(header(rig, options).join("\n"));
  try {
    await warmUp(rig, options.window);
    const prefilled = await prefill(rig, options.sizes);
    collectGarbage();
    const samples = await measure(rig, prefilled, options.messages);
    const results: SizeResult[] = prefilled.map((entry, i) => ({ ...entry, samples: samples[i] ?? { cold: [], warm: [] } }));
    const finalMemory = memoryNow();
    const maxRead = maxMessagesRead(results);
    const maxPrompt = maxPromptMessages(results);
    const pass = maxRead <= options.window && maxPrompt <= options.window + 2;
    console.log(
      [
        "",
        ...modeReport("cold", results),
        "",
        ...modeReport("warm", results),
        "",
        ...cacheReport(results),
        "",
        ...memoryReport(results, finalMemory, rig.mode === "memory"),
        "",
        `check: history messages read by one message, at most ${maxRead}: ${maxRead <= options.window ? "within" : "ABOVE"} the window (${options.window})`,
        `check: prompt sent to the model, at most ${maxPrompt} messages: ${maxPrompt <= options.window + 2 ? "within" : "ABOVE"} system + window + new message (${options.window + 2})`,
        `Window bench: ${pass ? "PASS" : "FAIL"}`,
      ].join("\n"),
    );
    return pass ? 0 : 1;
  } finally {
    await rig.close();
  }
}

function header(rig: Rig, options: WindowBenchOptions): string[] {
  return [
    `Window bench on ${rig.mode === "rtdb" ? "the Realtime Database" : "the embedded store"}`,
    `  store      ${rig.label}`,
    `  model      openai SDK (composeInstance + modelFromConfig) -> fake OpenAI server at ${rig.fake.baseUrl}, instant replies`,
    `  messages   SessionService.send of the runtime (no HTTP layer), one at a time, round-robin over lengths and modes, after ${WARM_UP_MESSAGES} warm-up messages per mode`,
    "             REQUIRE_AUTH=false, limits raised; history = exchanges stored before a session's first measured message (each adds one)",
    `  settings   context_window ${options.window}, ${options.messages} messages per history length and mode, histories ${options.sizes.join(", ")} exchanges`,
    "  pre-fill   straight through the store: appendExchange with the session module's appendRule, one session per mode",
  ];
}

const MODES: readonly CacheMode[] = ["cold", "warm"];
/** Messages per mode on a throwaway session before anything is measured. */
const WARM_UP_MESSAGES = 30;

interface Prefilled {
  readonly history: number;
  readonly sessions: Readonly<Record<CacheMode, string>>;
  readonly prefillMs: number;
  readonly memory: Memory;
}

/** One session per history length and mode, the lengths in turn, the two sessions of a length at once. */
async function prefill(rig: Rig, sizes: readonly number[]): Promise<Prefilled[]> {
  const prefilled: Prefilled[] = [];
  for (const history of sizes) {
    const started = performance.now();
    const [cold, warm] = await Promise.all(MODES.map((mode) => sessionWithHistory(rig, `bench-${mode}-${history}`, history)));
    if (cold === undefined || warm === undefined) throw new Error("a session is missing");
    const prefillMs = performance.now() - started;
    prefilled.push({ history, sessions: { cold, warm }, prefillMs, memory: memoryNow() });
    console.log(`  pre-filled 2 sessions of ${history} exchanges in ${(prefillMs / 1000).toFixed(1)} s`);
  }
  return prefilled;
}

/**
 * `count` messages to every session, one at a time, round-robin over the lengths and modes:
 * whatever slows the machine down for a while (GC, another process) touches every length alike.
 */
async function measure(rig: Rig, prefilled: readonly Prefilled[], count: number): Promise<Record<CacheMode, Sample[]>[]> {
  const samples = prefilled.map(() => ({ cold: [] as Sample[], warm: [] as Sample[] }));
  const started = performance.now();
  for (let i = 0; i < count; i += 1) {
    for (const [index, entry] of prefilled.entries()) {
      for (const mode of MODES) samples[index]?.[mode].push(await sendMeasured(rig, mode, entry.sessions[mode], entry.history + i + 1));
    }
  }
  console.log(`  measured ${count * prefilled.length * MODES.length} messages in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  return samples;
}

/** Messages on a throwaway session in both modes first: compiled code and an open database connection for every length alike. */
async function warmUp(rig: Rig, window: number): Promise<void> {
  for (const mode of MODES) {
    const sessionId = await sessionWithHistory(rig, `bench-warm-up-${mode}`, window);
    for (let i = 1; i <= WARM_UP_MESSAGES; i += 1) await sendMeasured(rig, mode, sessionId, window + i);
  }
}

/** Memory after a full GC, when one can be forced. */
function memoryNow(): Memory {
  const afterGc = collectGarbage();
  const usage = process.memoryUsage();
  return { rssMb: usage.rss / 2 ** 20, heapUsedMb: usage.heapUsed / 2 ** 20, afterGc };
}

/**
 * A full GC now, so that neither the figures of memory nor a measured message pay for the garbage
 * of what came before (a pre-fill). The flag is set at run time: `npm run bench:window` runs plain `node`.
 * False when no GC could be forced.
 */
function collectGarbage(): boolean {
  setFlagsFromString("--expose-gc");
  const gc = runInNewContext("typeof gc === 'function' ? gc : undefined") as (() => void) | undefined;
  gc?.();
  return gc !== undefined;
}

runCli("window-bench", main, USAGE);
