import { FAULT_KINDS, type FaultKind } from "./chaos";
import { isModelFailure, statusLabel, type CheckResult } from "./check";
import { optionsAsArgs, type SoakOptions } from "./options";
import type { Plan } from "./plan";
import { requestOf, type Attempt, type Journal } from "./workload";

export interface ReportInput {
  readonly options: SoakOptions;
  readonly mode: string;
  readonly storeLabel: string;
  /** `FIREBASE_DATABASE_EMULATOR_HOST=...` when the run used a database, for the command that repeats it. */
  readonly envPrefix: string;
  readonly plan: Plan;
  readonly journal: Journal;
  readonly modelCalls: number;
  readonly injected: Readonly<Record<FaultKind, number>>;
  readonly check: CheckResult;
  /** What the instances logged of failed requests other than model failures. */
  readonly serverErrors: readonly string[];
}

/** Inconsistencies listed in full; the rest are counted. */
const LISTED = 40;

/** The figures of a run, as lines to print. */
export function report(input: ReportInput): string[] {
  const { options, plan, journal, check } = input;
  const { attempts } = journal;
  const seconds = journal.durationMs / 1000;
  const sent = new Set(attempts.filter((a) => a.op === "message").map((a) => a.message));
  const injectedTotal = FAULT_KINDS.reduce((sum, kind) => sum + input.injected[kind], 0);
  const retries = attempts.filter((a) => a.reason !== "first");
  const problems = check.problems;
  return [
    `Chatify soak: ${problems.length === 0 ? "PASS" : "FAIL"}`,
    `  mode                 ${input.mode}: ${input.storeLabel}`,
    `  settings             seed ${options.seed}, ${options.instances} instances, concurrency ${options.concurrency}, failure rate ${options.failureRate}, model timeout ${options.modelTimeoutMs} ms (1 retry), time limit ${options.timeLimitMs / 1000} s`,
    `  sessions             ${plan.sessions.length} planned, ${journal.sessionIds.filter((id) => id !== undefined).length} created (${plan.sessions.filter((s) => s.createKey !== undefined).length} with Idempotency-Key), ${attempts.filter((a) => a.op === "end" && a.status === 200).length} ended mid-way`,
    `  messages             ${plan.messages.length} planned, ${sent.size} sent (${plan.messages.filter((m) => m.key !== undefined && sent.has(m.index)).length} with Idempotency-Key), tasks run ${journal.tasksRun}/${plan.tasks.length}${journal.stoppedByTimeLimit ? " (time limit reached)" : ""}`,
    `  requests sent        ${attempts.length} (create ${count(attempts, (a) => a.op === "create")}, message ${count(attempts, (a) => a.op === "message")}, end ${count(attempts, (a) => a.op === "end")})`,
    `  responses by status  ${tally(attempts.map(statusLabel))}`,
    `  replays              ${count(attempts, (a) => a.replayed)} (Idempotent-Replayed: true; message ${count(attempts, (a) => a.replayed && a.op === "message")}, create ${count(attempts, (a) => a.replayed && a.op === "create")})`,
    `  retries              ${retries.length} (${tally(retries.map((a) => `${a.op} ${a.reason}`))}; ${onAnotherInstance(attempts)} on another instance than the first attempt)`,
    `  model calls          ${input.modelCalls}, faults injected ${injectedTotal}: ${FAULT_KINDS.map((kind) => `${kind} ${input.injected[kind]}`).join(", ")}`,
    `  model failures seen  ${check.modelFailureAnswers} answers 502/503/504 from the model`,
    `  unexpected 5xx       ${count(attempts, (a) => a.status >= 500 && !isModelFailure(a))}`,
    `  stored               ${check.storedSessions} sessions, ${check.storedExchanges} exchanges checked`,
    `  duration             ${seconds.toFixed(1)} s`,
    `  throughput           ${(attempts.length / seconds).toFixed(1)} requests/s, ${(check.storedExchanges / seconds).toFixed(1)} stored exchanges/s`,
    `  inconsistencies      ${problems.length}`,
    ...problems.slice(0, LISTED).map((problem) => `    - ${problem}`),
    ...(problems.length > LISTED ? [`    ... and ${problems.length - LISTED} more`] : []),
    ...(input.serverErrors.length > 0 ? [`  server errors logged ${tally(input.serverErrors)}`] : []),
    ...(problems.length > 0
      ? [
          `  repeat with          ${input.envPrefix}npm run soak -- ${optionsAsArgs(options)}`,
          `                       (plan and faults follow the seed; timing does not, so a race may need a few runs)`,
        ]
      : []),
  ];
}

function count(attempts: readonly Attempt[], test: (attempt: Attempt) => boolean): number {
  return attempts.filter(test).length;
}

/** "a: 3, b: 1", most frequent first. */
function tally(labels: readonly string[]): string {
  const counts = new Map<string, number>();
  for (const label of labels) counts.set(label, (counts.get(label) ?? 0) + 1);
  if (counts.size === 0) return "none";
  return [...counts]
    .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
    .map(([label, n]) => `${label}: ${n}`)
    .join(", ");
}

/** Attempts sent to another instance than the first attempt of the same request. */
function onAnotherInstance(attempts: readonly Attempt[]): number {
  const firstInstance = new Map(attempts.filter((a) => a.reason === "first").map((a) => [requestOf(a), a.instance]));
  return count(attempts, (a) => a.reason !== "first" && firstInstance.get(requestOf(a)) !== a.instance);
}
