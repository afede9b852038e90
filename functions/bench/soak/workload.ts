import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { send, type Answer, type Request } from "../shared/http-client";
import { randomFor, type Random } from "../shared/random";
import { routeForm, ROUTE_FORMS, type RouteForm } from "./route-forms";
import type { MessagePlan, Plan, SessionPlan, Task } from "./plan";

/** Why an attempt was sent. */
export type Reason = "first" | "copy" | "after-failure" | "late-repeat";

/** One HTTP request of the run and what it got. Times are `performance.now()` milliseconds. */
export interface Attempt extends Answer {
  readonly op: "create" | "message" | "end";
  readonly session: number;
  /** The planned message, for `message` attempts. */
  readonly message?: number;
  readonly instance: number;
  readonly reason: Reason;
  readonly started: number;
  readonly finished: number;
}

/** Which logical request an attempt belongs to: a planned message, or a session's create or end. */
export function requestOf(attempt: Pick<Attempt, "op" | "session" | "message">): string {
  return attempt.op === "message" ? `message ${String(attempt.message)}` : `${attempt.op} ${attempt.session}`;
}

export interface Journal {
  readonly attempts: Attempt[];
  /** The id each planned session got (undefined when its creation failed). */
  readonly sessionIds: (string | undefined)[];
  readonly tasksRun: number;
  readonly stoppedByTimeLimit: boolean;
  /** `performance.now()` at the start, the origin of the times in problem reports. */
  readonly startedAt: number;
  readonly durationMs: number;
}

export interface WorkloadOptions {
  readonly seed: number;
  readonly concurrency: number;
  readonly timeLimitMs: number;
}

/** A request to one of the instances, by its path. */
interface Routed extends Request {
  readonly path: string;
}

/** Attempts of one keyed message, at most: a client that retries, then gives up. */
const MAX_KEYED_ATTEMPTS = 5;

/** Creates every session, then runs the tasks, `concurrency` at a time, until done or out of time. */
export async function runWorkload(plan: Plan, instances: readonly string[], options: WorkloadOptions): Promise<Journal> {
  const attempts: Attempt[] = [];
  const sessionIds: (string | undefined)[] = plan.sessions.map(() => undefined);
  const started = performance.now();
  const deadline = started + options.timeLimitMs;

  /** Sends one request on `instance`, by a route form drawn from `random`, and records it. */
  async function attempt(
    what: { op: Attempt["op"]; session: number; message?: number },
    instance: number,
    reason: Reason,
    random: Random,
    request: (form: RouteForm) => Routed,
  ): Promise<Attempt> {
    const { path, ...sent } = request(routeForm(random.int(ROUTE_FORMS)));
    const at = performance.now();
    const answer = await send(`${instances[instance] ?? ""}${path}`, sent);
    const record: Attempt = { ...answer, ...what, instance, reason, started: at, finished: performance.now() };
    attempts.push(record);
    return record;
  }

  async function create(session: SessionPlan): Promise<void> {
    const random = randomFor(options.seed, "create", session.index);
    const body = { user_id: session.userId, template_id: session.templateId };
    const headers: Record<string, string> = session.createKey === undefined ? {} : { "Idempotency-Key": session.createKey };
    const post = (instance: number, reason: Reason) =>
      attempt({ op: "create", session: session.index }, instance, reason, random, (form) => ({ method: "POST", path: form.create, body, headers }));
    const first = await Promise.all(random.distinct(instances.length, session.createCopies).map((instance, i) => post(instance, i === 0 ? "first" : "copy")));
    const later = session.createKey === undefined ? [] : [await post(random.int(instances.length), "late-repeat")];
    const id = [...first, ...later].map((answer) => answer.body.session_id).find((value) => typeof value === "string");
    sessionIds[session.index] = typeof id === "string" ? id : undefined;
  }

  /** Sends a message (`copies` at once), then, with a key, retries it while it fails; or, `late`, repeats it once. */
  async function message(planned: MessagePlan, random: Random, late: boolean): Promise<void> {
    const id = sessionIds[planned.session];
    if (id === undefined) return;
    const headers: Record<string, string> = planned.key === undefined ? {} : { "Idempotency-Key": planned.key };
    const what = { op: "message", session: planned.session, message: planned.index } as const;
    const post = (instance: number, reason: Reason) =>
      attempt(what, instance, reason, random, (form) => ({ method: "POST", path: form.message(id), body: { message: planned.text }, headers }));
    if (late) {
      await post(random.int(instances.length), "late-repeat");
      return;
    }
    const firstInstances = random.distinct(instances.length, planned.copies);
    let last = await Promise.all(firstInstances.map((instance, i) => post(instance, i === 0 ? "first" : "copy")));
    let instance = firstInstances[0] ?? 0;
    for (let sent = last.length; planned.key !== undefined && sent < MAX_KEYED_ATTEMPTS && last.every(retryable); sent += 1) {
      await sleep(last.some((answer) => answer.status === 409) ? random.between(200, 600) : random.between(10, 150));
      if (random.chance(0.5)) instance = random.int(instances.length);
      last = [await post(instance, "after-failure")];
    }
  }

  async function end(session: number, copies: number, random: Random): Promise<void> {
    const id = sessionIds[session];
    if (id === undefined) return;
    await Promise.all(
      random.distinct(instances.length, copies).map((instance, i) =>
        attempt({ op: "end", session }, instance, i === 0 ? "first" : "copy", random, (form) => ({ method: "DELETE", path: form.end(id) })),
      ),
    );
  }

  async function run(task: Task, index: number): Promise<void> {
    const random = randomFor(options.seed, "task", index);
    switch (task.kind) {
      case "message":
        return message(task.message, random, false);
      case "repeat":
        return message(task.message, random, true);
      case "end":
        return end(task.session, task.copies, random);
    }
  }

  await pool(plan.sessions, options.concurrency, create, () => false);
  const tasksRun = await pool(plan.tasks, options.concurrency, run, () => performance.now() >= deadline);
  return { attempts, sessionIds, tasksRun, stoppedByTimeLimit: tasksRun < plan.tasks.length, startedAt: started, durationMs: performance.now() - started };
}

/** Worth sending again with the same key: a model failure, or the first request still running. */
function retryable(answer: Answer): boolean {
  return answer.status === 409 || answer.status >= 500 || answer.status === 0;
}

/** Runs `work` over `items` in order, `concurrency` at a time; returns how many were started. */
async function pool<T>(items: readonly T[], concurrency: number, work: (item: T, index: number) => Promise<void>, stop: () => boolean): Promise<number> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length && !stop()) {
      const index = next;
      next += 1;
      const item = items[index];
      if (item !== undefined) await work(item, index);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return next;
}
