import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { deleteApp, initializeApp } from "firebase-admin/app";
import { getFunctions } from "firebase-admin/functions";
import { freePort, startEmulators, type RunningEmulators } from "../../test/support/child-process";
import { fmt, median, table } from "../shared/figures";

const PROJECT_ID = "demo-notify-bench";
const MIN_BACKOFF_SECONDS = 1;

/**
 * The task queue function of the throwaway project: it reports each run (and its retry count) to
 * the bench over HTTP, and fails the first attempt of a task that asks for it, so the queue's retry shows.
 */
const TASK_FUNCTION = `
const { onTaskDispatched } = require("firebase-functions/v2/tasks");
exports.notifyTask = onTaskDispatched({ retryConfig: { maxAttempts: 3, minBackoffSeconds: ${MIN_BACKOFF_SECONDS} } }, async (request) => {
  const { port, n, failFirst } = request.data;
  await fetch("http://127.0.0.1:" + port + "/ran", { method: "POST", body: JSON.stringify({ n, retryCount: request.retryCount, ranAt: Date.now() }) });
  if (failFirst && request.retryCount === 0) throw new Error("the first attempt fails, as a failed FCM send would");
});
`;

interface Run {
  readonly n: number;
  readonly retryCount: number;
  readonly ranAt: number;
}

/** Receives the task function's reports, and wakes whoever waits for a given run. */
class RunLog {
  readonly runs: Run[] = [];
  private readonly server: Server;
  private readonly waiters: { readonly matches: (run: Run) => boolean; readonly wake: (run: Run) => void }[] = [];

  constructor() {
    this.server = createServer((request, response) => {
      let body = "";
      request.on("data", (chunk: Buffer) => (body += chunk.toString()));
      request.on("end", () => {
        const run = JSON.parse(body) as Run;
        this.runs.push(run);
        for (const waiter of this.waiters.filter((candidate) => candidate.matches(run))) {
          this.waiters.splice(this.waiters.indexOf(waiter), 1);
          waiter.wake(run);
        }
        response.end();
      });
    });
  }

  async listen(): Promise<number> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    return (this.server.address() as AddressInfo).port;
  }

  /** The run of task `n` at `retryCount`, once it has reported; undefined after `timeoutMs`. */
  awaitRun(n: number, retryCount: number, timeoutMs: number): Promise<Run | undefined> {
    const matches = (run: Run) => run.n === n && run.retryCount === retryCount;
    const done = this.runs.find(matches);
    if (done) return Promise.resolve(done);
    return new Promise((resolve) => {
      const timer = setTimeout(() => { resolve(undefined); }, timeoutMs);
      this.waiters.push({ matches, wake: (run) => { clearTimeout(timer); resolve(run); } });
    });
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => { resolve(); }));
  }
}

interface Emulator extends RunningEmulators {
  readonly tasksHost: string;
  readonly startMs: number;
}

/** `firebase emulators:start --only functions,tasks` on a throwaway project holding TASK_FUNCTION. */
async function startEmulator(functionsDir: string): Promise<Emulator> {
  const dir = mkdtempSync(join(tmpdir(), "notify-bench-"));
  mkdirSync(join(dir, "functions"));
  symlinkSync(join(functionsDir, "node_modules"), join(dir, "functions", "node_modules"));
  // The emulator checks that the function's package declares firebase-admin and firebase-functions.
  const dependencies = { "firebase-admin": "*", "firebase-functions": "*" };
  writeFileSync(join(dir, "functions", "package.json"), JSON.stringify({ name: "notify-bench", private: true, main: "index.js", engines: { node: "24" }, dependencies }));
  writeFileSync(join(dir, "functions", "index.js"), TASK_FUNCTION);
  const [functions, tasks, hub, logging] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
  const at = (port: number) => ({ host: "127.0.0.1", port });
  const ports = { singleProjectMode: true, functions: at(functions), tasks: at(tasks), hub: at(hub), logging: at(logging), ui: { enabled: false } };
  writeFileSync(join(dir, "firebase.json"), JSON.stringify({ functions: [{ source: "functions", codebase: "default", runtime: "nodejs24" }], emulators: ports }));
  const started = performance.now();
  const emulators = await startEmulators(dir, ["--project", PROJECT_ID, "--only", "functions,tasks"]);
  return { ...emulators, tasksHost: `127.0.0.1:${tasks}`, startMs: performance.now() - started };
}

/**
 * Whether firebase-tools runs a Cloud Tasks emulator offline for an onTaskDispatched function, and
 * what handing a notification to it would cost: firebase-admin's `taskQueue().enqueue()` (the
 * call a message's answer would wait for), the time until the task runs (a first task, which
 * starts the function's worker, then `tasks` more one at a time, then `tasks` at once), the
 * queue's retry of a failed attempt, and a task id enqueued twice.
 */
export async function measureTaskQueue(functionsDir: string, tasks: number): Promise<string[]> {
  const runLog = new RunLog();
  const port = await runLog.listen();
  const emulator = await startEmulator(functionsDir);
  // Read by firebase-admin when getFunctions() builds its client: the queue is the emulator's, authorised with its fixed "owner" token.
  process.env.CLOUD_TASKS_EMULATOR_HOST = emulator.tasksHost;
  const app = initializeApp(
    {
      projectId: PROJECT_ID,
      // Named, so that firebase-admin does not ask the (absent) metadata server for the account that signs each task.
      serviceAccountId: `bench@${PROJECT_ID}.iam.gserviceaccount.com`,
      credential: { getAccessToken: async () => ({ access_token: "unused", expires_in: 3600 }) },
    },
    "notify-bench-tasks",
  );
  const queue = getFunctions(app).taskQueue("notifyTask");
  const lines: string[] = [`  emulators ready in ${fmt(emulator.startMs / 1000, 1)} s (functions + Cloud Tasks, offline)`];
  try {
    const timed = async (n: number, data: Record<string, unknown> = {}) => {
      const started = performance.now();
      const enqueuedAt = Date.now();
      await queue.enqueue({ port, n, ...data });
      return { enqueueMs: performance.now() - started, enqueuedAt };
    };
    const cold = await timed(0);
    const coldRun = await runLog.awaitRun(0, 0, 60_000);

    const oneByOne: { enqueueMs: number; runMs: number | undefined }[] = [];
    for (let n = 1; n <= tasks; n += 1) {
      const { enqueueMs, enqueuedAt } = await timed(n);
      const run = await runLog.awaitRun(n, 0, 30_000);
      oneByOne.push({ enqueueMs, runMs: run && run.ranAt - enqueuedAt });
    }

    const burstAt = Date.now();
    const burst = await Promise.all(Array.from({ length: tasks }, (_, index) => timed(1000 + index)));
    const burstRuns = await Promise.all(burst.map((_, index) => runLog.awaitRun(1000 + index, 0, 60_000)));

    await timed(2000, { failFirst: true });
    const [firstAttempt, retry] = await Promise.all([runLog.awaitRun(2000, 0, 30_000), runLog.awaitRun(2000, 1, 30_000)]);

    await queue.enqueue({ port, n: 3000 }, { id: "notify-conn-1-m000000001" });
    const duplicate = await queue.enqueue({ port, n: 3001 }, { id: "notify-conn-1-m000000001" }).then(
      () => "accepted (a second task)",
      (error: unknown) => `refused: ${(error as { code?: string }).code ?? String(error)}`,
    );

    const ms = (value: number | undefined) => (value === undefined ? "did not run" : fmt(value));
    const runTimes = oneByOne.map((entry) => entry.runMs).filter((value) => value !== undefined);
    const burstTimes = burstRuns.map((run, index) => run && run.ranAt - (burst[index]?.enqueuedAt ?? burstAt)).filter((value) => value !== undefined);
    lines.push(
      ...table([
        ["", "enqueue ms (median)", "enqueued to run, ms (median)", "max", "ran"],
        ["first task (starts the worker)", fmt(cold.enqueueMs), ms(coldRun && coldRun.ranAt - cold.enqueuedAt), "", coldRun ? "1/1" : "0/1"],
        [`${tasks} one at a time`, fmt(median(oneByOne.map((entry) => entry.enqueueMs))), fmt(median(runTimes)), fmt(Math.max(...runTimes)), `${runTimes.length}/${tasks}`],
        [`${tasks} at once`, fmt(median(burst.map((entry) => entry.enqueueMs))), fmt(median(burstTimes)), fmt(Math.max(...burstTimes)), `${burstTimes.length}/${tasks}`],
      ]),
      `  a failed first attempt retried after ${ms(firstAttempt && retry && retry.ranAt - firstAttempt.ranAt)} ms (minBackoffSeconds ${MIN_BACKOFF_SECONDS})`,
      `  the same task id enqueued twice: ${duplicate}`,
    );
  } catch (error) {
    lines.push(`  FAILED: ${(error as Error).message}`, "  emulator output:", ...emulator.output().split("\n").map((line) => `    ${line}`));
  } finally {
    await deleteApp(app);
    await emulator.stop();
    await runLog.close();
  }
  return lines;
}
