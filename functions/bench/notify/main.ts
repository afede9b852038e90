import { resolve } from "node:path";
import { integerOption, optionReader, runCli, stopIfStuck, UsageError } from "../shared/cli";
import { sendCases, timeSends } from "./send-timing";
import { measureTaskQueue } from "./task-queue";

/** functions/, from build/bench/notify/. */
const FUNCTIONS_DIR = resolve(__dirname, "..", "..", "..");

const DEFAULTS = { rounds: "3", tokens: "20", "slow-ms": "2000", "retry-after": "2", hang: "0", "task-queue": "1", tasks: "10" } as const;

const USAGE = [
  "usage: npm run bench:notify -- [--name=value ...]   (or NOTIFY_BENCH_NAME=value)",
  "What a push notification costs the answer that waits for it, and the task queue that could take it instead:",
  "  a. sendEach time through the FCM adapter against a local fake FCM, per way FCM may answer",
  "  b. the Cloud Tasks emulator of firebase-tools: does it run offline, enqueue time, time until the task runs",
  `  --rounds       interleaved rounds of section a (default ${DEFAULTS.rounds}; a round takes about 7 + 4 x retry-after + slow-ms / 1000 s)`,
  `  --tokens       devices per notification (default ${DEFAULTS.tokens})`,
  `  --slow-ms      how late the slow case's answers come (default ${DEFAULTS["slow-ms"]})`,
  `  --retry-after  the Retry-After of the 503 case that sends one, seconds (default ${DEFAULTS["retry-after"]}; firebase-admin waits up to 60)`,
  `  --hang         1 adds a case where FCM never answers, once (82 s: firebase-admin's 15 s timeout, retried 4 times) (default ${DEFAULTS.hang})`,
  `  --task-queue   0 skips section b (default ${DEFAULTS["task-queue"]}; about 30 s)`,
  `  --tasks        tasks enqueued one at a time, then at once, in section b (default ${DEFAULTS.tasks})`,
].join("\n");

async function main(argv: readonly string[]): Promise<number> {
  const option = optionReader(argv, process.env, "NOTIFY_BENCH_", DEFAULTS);
  const flag = (name: "hang" | "task-queue") => {
    const value = option(name);
    if (value !== "0" && value !== "1") throw new UsageError(`--${name} takes 0 or 1, got "${value}"`);
    return value === "1";
  };
  const rounds = integerOption("rounds", option("rounds"), 1, 50);
  const tokens = integerOption("tokens", option("tokens"), 1, 2_000);
  const cases = sendCases({
    slowMs: integerOption("slow-ms", option("slow-ms"), 0, 120_000),
    retryAfterSeconds: integerOption("retry-after", option("retry-after"), 1, 60),
    hang: flag("hang"),
  });
  const taskQueue = flag("task-queue");
  const tasks = integerOption("tasks", option("tasks"), 1, 200);
  stopIfStuck("notify-bench", 30 * 60_000);

  console.log(`Notification bench, node ${process.version}, firebase-admin legacy HTTP/1.1 transport to a local fake FCM`);
  console.log(`\na. one notification to ${tokens} devices, ${rounds} interleaved rounds`);
  console.log((await timeSends(cases, rounds, tokens)).join("\n"));
  if (taskQueue) {
    console.log("\nb. Cloud Tasks emulator (firebase emulators:start --only functions,tasks), enqueue with firebase-admin");
    console.log((await measureTaskQueue(FUNCTIONS_DIR, tasks)).join("\n"));
  }
  return 0;
}

runCli("notify-bench", main, USAGE);
