import { isDeepStrictEqual } from "node:util";
import type { ChatMessage, ReplyUsage, Template } from "../../src/store/records";
import type { SessionStore } from "../../src/store/session-store";
import { lastUserText, type PromptMessage } from "./chaos";
import type { MessagePlan, Plan } from "./plan";
import { readStored, type StoredSession, type StoredView } from "./stored";
import { requestOf, type Attempt, type Journal } from "./workload";

export interface CheckInput {
  readonly plan: Plan;
  readonly journal: Journal;
  readonly store: SessionStore;
  readonly templates: Readonly<Record<string, Template>>;
  /** Every prompt the fake OpenAI server received. */
  readonly prompts: readonly (readonly PromptMessage[])[];
  /** The prompt each reply answered, by the reply's text. */
  readonly promptOfReply: ReadonlyMap<string, readonly PromptMessage[]>;
  /** Model calls that were made to fail. */
  readonly injectedFailures: number;
}

export interface CheckResult {
  readonly problems: readonly string[];
  readonly storedSessions: number;
  readonly storedExchanges: number;
  /** Answers that reported a model failure (502/503/504 with the model's codes). */
  readonly modelFailureAnswers: number;
}

/** The answers an injected model fault may cause. */
const MODEL_FAULT_ANSWERS = new Set(["502 MODEL_ERROR", "503 MODEL_UNAVAILABLE", "504 MODEL_TIMEOUT"]);

export function isModelFailure(attempt: Pick<Attempt, "status" | "code">): boolean {
  return MODEL_FAULT_ANSWERS.has(statusLabel(attempt));
}

export function statusLabel(attempt: Pick<Attempt, "status" | "code">): string {
  return attempt.status === 0 ? "no answer" : `${attempt.status}${attempt.code === undefined ? "" : ` ${attempt.code}`}`;
}

/** Checks what the database holds against every answer the run got. */
export async function checkRun(input: CheckInput): Promise<CheckResult> {
  const problems: string[] = [];
  const problem = (text: string) => { problems.push(text); };
  const { plan, journal } = input;
  const stored = await readStored(input.store, plan, journal.sessionIds, problem);
  const bySession = new Map(stored.sessions.map((session) => [session.index, session]));
  const attemptsOf = groupBy(journal.attempts, requestOf);

  for (const session of plan.sessions) checkCreate(attemptsOf.get(`create ${session.index}`) ?? [], session.createKey !== undefined, `session s${session.index}`, problem);
  const endedAt = new Map<number, number>();
  for (const session of stored.sessions) {
    const ended = checkEnd(session, attemptsOf.get(`end ${session.index}`) ?? [], problem);
    if (ended !== undefined) endedAt.set(session.index, ended);
  }
  let modelFailureAnswers = 0;
  for (const message of plan.messages) {
    const attempts = attemptsOf.get(`message ${message.index}`) ?? [];
    const endAttempts = attemptsOf.get(`end ${message.session}`) ?? [];
    modelFailureAnswers += attempts.filter(isModelFailure).length;
    const context = { stored, sessionId: journal.sessionIds[message.session], endedAt: endedAt.get(message.session), endStarts: endAttempts.map((a) => a.started) };
    checkMessage(message, attempts, context, (text) => { problem(`${text}; attempts: ${timeline(attempts, journal.startedAt)}`); });
  }
  if (modelFailureAnswers > input.injectedFailures) {
    problem(`${modelFailureAnswers} answers report a model failure, but only ${input.injectedFailures} model calls were made to fail`);
  }
  checkPrompts(input, stored, bySession, problem);
  return { problems, storedSessions: stored.sessions.length, storedExchanges: stored.exchanges, modelFailureAnswers };
}

/** Every attempt 201; with a key, one session for all, answered identically, created once. */
function checkCreate(attempts: readonly Attempt[], keyed: boolean, where: string, problem: (text: string) => void): void {
  for (const attempt of attempts) if (attempt.status !== 201) problem(`${where}: create answered ${statusLabel(attempt)} ${attempt.error ?? ""}`);
  const created = attempts.filter((attempt) => attempt.status === 201);
  if (created.length === 0) return;
  if (!keyed) {
    if (created.some((attempt) => attempt.replayed)) problem(`${where}: a create without Idempotency-Key is marked replayed`);
    return;
  }
  const originals = created.filter((attempt) => !attempt.replayed);
  if (originals.length !== 1) problem(`${where}: ${originals.length} of ${created.length} keyed creates claim to have created the session`);
  const first = created[0];
  if (first && created.some((attempt) => !isDeepStrictEqual(attempt.body, first.body))) {
    problem(`${where}: keyed creates answered differently: ${created.map((attempt) => JSON.stringify(attempt.body)).join(" | ")}`);
  }
}

/** One end 200, the others 410; the session is stored ended with the count the end reported. Returns when the end answered. */
function checkEnd(session: StoredSession, attempts: readonly Attempt[], problem: (text: string) => void): number | undefined {
  const where = `session s${session.index} (${session.id})`;
  const ok = attempts.filter((attempt) => attempt.status === 200);
  for (const attempt of attempts) {
    if (attempt.status !== 200 && statusLabel(attempt) !== "410 SESSION_ENDED") problem(`${where}: end answered ${statusLabel(attempt)} ${attempt.error ?? ""}`);
  }
  const ended = ok[0];
  if (attempts.length > 0 && ok.length !== 1) problem(`${where}: ${ok.length} of ${attempts.length} concurrent ends answered 200`);
  const state = session.state;
  if (!state) return ended?.finished;
  if (!ended) {
    if (attempts.length === 0 && state.status !== "active") problem(`${where}: never ended, but stored as ${state.status}`);
    return undefined;
  }
  if (state.status !== "ended") problem(`${where}: ended (200), but stored as ${state.status}`);
  if (ended.body.message_count !== state.message_count) {
    problem(`${where}: the end reported message_count ${String(ended.body.message_count)}, but ${state.message_count} exchanges are stored: an exchange was taken after the end`);
  }
  return ended.finished;
}

interface MessageContext {
  readonly stored: StoredView;
  readonly sessionId: string | undefined;
  /** When the end of the session answered 200. */
  readonly endedAt: number | undefined;
  readonly endStarts: readonly number[];
}

/**
 * Stored exactly when some attempt got 200; every 200 names the stored exchange; with a key, one
 * original and identical replays; only the expected failures; nothing but 410 or a replay after
 * the end.
 */
function checkMessage(message: MessagePlan, attempts: readonly Attempt[], context: MessageContext, problem: (text: string) => void): void {
  if (attempts.length === 0) return;
  const where = `message m${message.index} ${JSON.stringify(message.text)} (session s${message.session}${message.key === undefined ? "" : `, key ${message.key}`})`;
  const located = context.stored.byText.get(message.text)?.[0];
  const ok = attempts.filter((attempt) => attempt.status === 200);
  if (ok.length > 0 && !located) problem(`${where}: answered 200, but not stored`);
  if (ok.length === 0 && located) problem(`${where}: stored as exchange ${located.seq}, but no attempt got 200 (${attempts.map(statusLabel).join(", ")})`);
  for (const attempt of ok) {
    const expected = located && {
      success: true,
      response: located.reply,
      session_id: context.sessionId,
      message_count: located.seq,
      truncated: false,
      ...(located.usage ? { usage: answeredUsage(located.usage) } : {}),
    };
    if (expected && !isDeepStrictEqual(attempt.body, expected)) problem(`${where}: answered ${JSON.stringify(attempt.body)}, but stored ${JSON.stringify(expected)}`);
  }
  const originals = ok.filter((attempt) => !attempt.replayed);
  if (message.key === undefined && ok.length !== originals.length) problem(`${where}: marked replayed without an Idempotency-Key`);
  if (message.key !== undefined && ok.length > 0 && originals.length !== 1) problem(`${where}: ${originals.length} of ${ok.length} answers are not marked replayed (expected exactly 1)`);
  const first = ok[0];
  if (first && ok.some((attempt) => !isDeepStrictEqual(attempt.body, first.body))) problem(`${where}: replays differ from the original: ${ok.map((attempt) => JSON.stringify(attempt.body)).join(" | ")}`);

  for (const attempt of attempts) {
    const label = statusLabel(attempt);
    const endBegun = context.endStarts.some((start) => start < attempt.finished);
    const allowed =
      attempt.status === 200 ||
      isModelFailure(attempt) ||
      (label === "410 SESSION_ENDED" && endBegun) ||
      (label === "409 IDEMPOTENCY_IN_PROGRESS" && message.key !== undefined);
    if (!allowed) problem(`${where}: attempt on instance ${attempt.instance} (${attempt.reason}) answered ${label}${attempt.error === undefined ? "" : ` (${attempt.error})`}${attempt.status >= 500 ? " - an unexpected 5xx" : ""}`);
    if (context.endedAt !== undefined && attempt.started > context.endedAt && label !== "410 SESSION_ENDED" && !(attempt.status === 200 && attempt.replayed)) {
      problem(`${where}: sent after the session's end had answered, yet answered ${label}${attempt.replayed ? " (replayed)" : ""}`);
    }
  }
}

/** The usage an answer gives for a stored reply: its own model call's counts and cost, without what the service keeps for itself (the API's contract). */
function answeredUsage({ prompt_tokens, completion_tokens, total_tokens, estimated, cost_usd }: ReplyUsage): Record<string, unknown> {
  return { prompt_tokens, completion_tokens, total_tokens, ...(estimated ? { estimated } : {}), ...(cost_usd === undefined ? {} : { cost_usd }) };
}

/**
 * Every prompt carried the template's system prompt and, as history, the last `context_window`
 * messages of the stored conversation as of some exchange; the prompt that produced a stored
 * reply saw only exchanges before it.
 */
function checkPrompts(input: CheckInput, stored: StoredView, bySession: ReadonlyMap<number, StoredSession>, problem: (text: string) => void): void {
  const planned = new Map(input.plan.messages.map((message) => [message.text, message]));
  for (const prompt of input.prompts) {
    const text = lastUserText(prompt);
    const message = planned.get(text);
    const session = message && bySession.get(message.session);
    const template = message && input.templates[input.plan.sessions[message.session]?.templateId ?? ""];
    if (!message || !session || !template) {
      problem(`the model was asked about ${JSON.stringify(text)}, which no stored session of the run was sent`);
      continue;
    }
    const where = `prompt for message m${message.index} (session s${message.session})`;
    if (prompt[0]?.role !== "system" || prompt[0].content !== template.personalityPrompt) problem(`${where}: does not start with the template's system prompt`);
    historyEnd(prompt.slice(1, -1), session.messages, template.context_window ?? 0, where, problem);
  }
  for (const [text, places] of stored.byText) {
    const place = places[0];
    const prompt = place && input.promptOfReply.get(place.reply);
    if (!place) continue;
    if (!prompt) {
      problem(`stored reply ${JSON.stringify(place.reply)} (to ${JSON.stringify(text)}) is no reply the model gave`);
      continue;
    }
    const session = bySession.get(place.session);
    const window = input.templates[input.plan.sessions[place.session]?.templateId ?? ""]?.context_window ?? 0;
    const end = session ? historyEnd(prompt.slice(1, -1), session.messages, window, `prompt of s${place.session}#${place.seq}`, () => undefined) : undefined;
    if (end !== undefined && end > 2 * (place.seq - 1)) problem(`s${place.session}#${place.seq}: its prompt already held exchange ${end / 2} of the session`);
  }
}

/**
 * Checks that `history` is the last `window` messages of `conversation` up to an exchange
 * boundary; returns that boundary (a message count), or undefined when it is not.
 */
function historyEnd(history: readonly PromptMessage[], conversation: readonly ChatMessage[], window: number, where: string, problem: (text: string) => void): number | undefined {
  if (history.length === 0) return 0;
  const last = history[history.length - 1];
  const end = conversation.findIndex((message) => message.role === last?.role && message.content === last.content) + 1;
  if (window === 0 || end === 0 || end % 2 !== 0) {
    problem(`${where}: its history ends with ${JSON.stringify(last?.content)}, which is no stored reply of the session`);
    return undefined;
  }
  const expected = conversation.slice(Math.max(0, end - window), end).map(({ role, content }) => ({ role, content }));
  if (!isDeepStrictEqual(history.map(({ role, content }) => ({ role, content })), expected)) {
    problem(`${where}: its history is not the last ${window} stored messages before exchange ${end / 2 + 1}`);
    return undefined;
  }
  return end;
}

/** "first on #1 at 812-1530 ms: 200, ..." (times from the start of the run). */
function timeline(attempts: readonly Attempt[], origin: number): string {
  const ms = (at: number) => Math.round(at - origin);
  return attempts.map((a) => `${a.reason} on #${a.instance} at ${ms(a.started)}-${ms(a.finished)} ms: ${statusLabel(a)}${a.replayed ? " (replayed)" : ""}`).join(", ");
}

function groupBy<T>(items: readonly T[], key: (item: T) => string): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const group = groups.get(key(item)) ?? [];
    group.push(item);
    groups.set(key(item), group);
  }
  return groups;
}
