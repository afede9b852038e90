import { ChaosMonkey } from "./chaos";
import { checkRun } from "./check";
import { databaseFromEnv, runCli, stopIfStuck } from "../shared/cli";
import { SOAK_TEMPLATES, startCluster } from "./cluster";
import { parseOptions, USAGE } from "./options";
import { makePlan } from "./plan";
import { report } from "./report";
import { runWorkload } from "./workload";

/**
 * The soak test: several instances on one store, many sessions and concurrent messages,
 * random model faults, Idempotency-Key retries and sessions ended mid-way; then every stored
 * session is checked against every answer. Exit code 1 on any inconsistency or unexpected 5xx.
 *
 *   npm run soak -- --seed 7 --messages 1000
 *   FIREBASE_DATABASE_EMULATOR_HOST=127.0.0.1:9000 npm run soak
 */
async function main(argv: readonly string[]): Promise<number> {
  const options = parseOptions(argv, process.env);
  stopIfStuck("soak", options.timeLimitMs + HARD_STOP_GRACE_MS);
  const databaseHost = await databaseFromEnv(process.env, "soak-probe");
  const chaos = new ChaosMonkey(options.seed, options.failureRate, options.modelTimeoutMs);
  const cluster = await startCluster({ instances: options.instances, chaos: chaos.decide, modelTimeoutMs: options.modelTimeoutMs, databaseHost, databases: options.databases });
  console.log(`Soak on ${cluster.mode === "rtdb" ? "the Realtime Database" : "the embedded store"}: ${cluster.label}; seed ${options.seed} ...`);
  try {
    const plan = makePlan(options, Object.keys(SOAK_TEMPLATES));
    const journal = await runWorkload(plan, cluster.instances, options);
    const check = await checkRun({
      plan,
      journal,
      store: cluster.store,
      templates: SOAK_TEMPLATES,
      prompts: cluster.fake.requests.map((request) => request.body.messages),
      promptOfReply: chaos.promptOfReply,
      injectedFailures: chaos.failures,
    });
    const lines = report({
      options,
      mode: cluster.mode,
      storeLabel: cluster.label,
      envPrefix: databaseHost === undefined ? "" : `FIREBASE_DATABASE_EMULATOR_HOST=${databaseHost} `,
      plan,
      journal,
      modelCalls: chaos.calls,
      injected: chaos.injected,
      check,
      serverErrors: cluster.serverErrors,
    });
    console.log(lines.join("\n"));
    return check.problems.length === 0 ? 0 : 1;
  } finally {
    await cluster.close();
  }
}

/** A run that outlives its time limit by this much is stuck (beyond every timeout of the soak). */
const HARD_STOP_GRACE_MS = 90_000;

runCli("soak", main, USAGE);
