import { ConfigError, type Config } from "../config";
import { MAINTENANCE_TIMEOUT_SECONDS } from "../function-options";

/** How a message's time is shared out, derived from the params and checked at instance start. */
export interface TimeBudget {
  /** The longest a model call can take: every attempt timing out, every retry waiting its most. */
  readonly modelMs: number;
  /**
   * How long a message's claim holds its slot, from the clock reading it is taken with: the
   * function timeout. That reading comes after its request began, so the claim outlasts the
   * request however many database calls follow it (DB_STEPS lists them; near the deployment's cap
   * there are more), and a live request is never overtaken, by a keyed repeat or by the sweep; a
   * request that died is overtaken when the platform would have ended it.
   */
  readonly leaseMs: number;
  /** How long a keyed repeat waits for the first request's result before answering 409. */
  readonly keyWaitMs: number;
  /**
   * How long a message whose claim running claims alone keep out of the session's last exchanges
   * waits for them (session/message/slot-claim.ts claimSlot): the time left, as for a keyed repeat,
   * and at most one database deadline. The wait is for a claim given back a round trip after it
   * was taken (a keyed repeat that turned out a replay), or by a message that failed; one whose
   * model call runs keeps its slot for seconds, and a longer function timeout would only hold the
   * refused request, and its rate limit token, longer.
   */
  readonly claimWaitMs: number;
}

/**
 * Sequential database calls a message is given time for, each up to DB_TIMEOUT_MS: the claim and
 * the commit, which every message makes, and two of those some make: a cold instance's read of the
 * session before the claim; after it, the window read when the instance's copy is behind the claim's
 * count (known-sessions.ts windowAsOf), the older messages a lagging summary's catch-up reads, and
 * the deployment cap's top-up (reply-generation.ts withCatchUp, holdPlannedCalls). All six would
 * need 66 s with the defaults, past the deployed 60 s, so the budget counts four (a warm instance
 * behind the session: claim, window, top-up, commit); the lease does not depend on the count.
 */
const DB_STEPS = 4;
/** Kept free of any step, for the response itself and the platform's own work. */
const MARGIN_MS = 1_000;

/**
 * The time budget of a message, which must fit the function's timeout (by default the one it was
 * deployed with, TIMEOUT_SECONDS): a request that runs past it is killed by the platform mid-way,
 * with no answer. Throws a ConfigError naming the params. With MODERATION on, the check runs beside
 * the model call, started with it (session/message/moderated-reply.ts), and is one attempt of at
 * most OPENAI_TIMEOUT_MS (llm/openai-moderation.ts): never longer than the model time, which has
 * at least that attempt, so it adds nothing here. The token checks before a message (App Check, the
 * ID token: auth/token-checks.ts, up to 5 s each) are not counted: one that reaches its deadline
 * ends the request, and one that succeeds near it is a slow Google endpoint, a tail like the database
 * calls past DB_STEPS (docs/time-budget.md); both at 5 s would not fit the deployed defaults.
 */
export function timeBudget(config: Config, functionTimeoutMs: number = config.deploy.timeoutSeconds * 1000): TimeBudget {
  const { timeoutMs, maxRetries, maxRetryWaitMs } = config.openai;
  const modelMs = (maxRetries + 1) * timeoutMs + maxRetries * maxRetryWaitMs;
  const databaseMs = DB_STEPS * config.dbTimeoutMs;
  const spare = functionTimeoutMs - MARGIN_MS - Math.max(modelMs, moderationMs(config)) - databaseMs;
  if (spare < 0) {
    throw new ConfigError(
      `the time budget of a message exceeds the function timeout (${functionTimeoutMs / 1000} s, TIMEOUT_SECONDS): ` +
        `OPENAI_TIMEOUT_MS x (OPENAI_MAX_RETRIES + 1) + OPENAI_MAX_RETRY_WAIT_MS x OPENAI_MAX_RETRIES = ${modelMs} ms of model time, ` +
        `plus ${DB_STEPS} x DB_TIMEOUT_MS = ${databaseMs} ms of database time, plus ${MARGIN_MS} ms margin, is ${-spare} ms too long; ` +
        `lower OPENAI_TIMEOUT_MS, OPENAI_MAX_RETRIES, OPENAI_MAX_RETRY_WAIT_MS or DB_TIMEOUT_MS, or raise TIMEOUT_SECONDS`,
    );
  }
  return { modelMs, leaseMs: functionTimeoutMs, keyWaitMs: spare, claimWaitMs: Math.min(spare, config.dbTimeoutMs) };
}

/**
 * Sequential database calls a user-to-user message may wait for: a cold instance's read of the
 * connection, the transaction that stores the message, and one spare for a contended retry.
 */
const CONNECTION_DB_STEPS = 3;

/**
 * The longest a moderation check may take (0 with MODERATION off): one attempt, no retry
 * (llm/openai-moderation.ts), bounded by the SDK's timeout of OPENAI_TIMEOUT_MS.
 */
function moderationMs(config: Config): number {
  return config.moderation.enabled ? config.openai.timeoutMs : 0;
}

/**
 * A user-to-user message's time: its database calls, with MODERATION on the check that comes
 * before its transaction (there is no model call to run it beside: connections/connection-service.ts),
 * then at most NOTIFICATION_DEADLINE_MS for its notification; it must fit the function's timeout
 * too, or the platform kills a message after storing it, with no answer. Throws a ConfigError
 * naming the params.
 */
export function checkConnectionBudget(config: Config, functionTimeoutMs: number = config.deploy.timeoutSeconds * 1000): void {
  const moderation = moderationMs(config);
  const needed = CONNECTION_DB_STEPS * config.dbTimeoutMs + moderation + config.notifications.deadlineMs + MARGIN_MS;
  if (needed > functionTimeoutMs) {
    const checked = moderation > 0;
    throw new ConfigError(
      `a user-to-user message's time budget exceeds the function timeout (${functionTimeoutMs / 1000} s, TIMEOUT_SECONDS): ${CONNECTION_DB_STEPS} x DB_TIMEOUT_MS + ` +
        `${checked ? "OPENAI_TIMEOUT_MS (its moderation check, MODERATION on) + " : ""}NOTIFICATION_DEADLINE_MS + ${MARGIN_MS} ms margin = ${needed} ms; ` +
        `lower DB_TIMEOUT_MS${checked ? ", OPENAI_TIMEOUT_MS" : ""} or NOTIFICATION_DEADLINE_MS, or raise TIMEOUT_SECONDS`,
    );
  }
}

/**
 * What the scheduled clean-up keeps free at the end of its timeout: no batch starts in it, so the
 * one under way can end. A batch is a query, then the changes it found sent at once, each within
 * DB_TIMEOUT_MS; an erasure's pass is a few such calls one after another. At least a minute, at
 * least CLEAN_UP_TAIL_DB_STEPS database deadlines.
 */
const CLEAN_UP_TAIL_MS = 60_000;
const CLEAN_UP_TAIL_DB_STEPS = 4;

/**
 * How long the scheduled clean-up may go on starting batches (session/maintenance.ts shares it out
 * among the run's steps): its timeout less the tail above. Its batch budgets grow with the database
 * instances (a run gives each the batches one would get), and this keeps the run within its
 * timeout however many there are: the platform would end it mid-batch, and its report unlogged.
 */
export function maintenanceRunMs(config: Config, timeoutSeconds: number = MAINTENANCE_TIMEOUT_SECONDS): number {
  return Math.max(0, timeoutSeconds * 1000 - Math.max(CLEAN_UP_TAIL_MS, CLEAN_UP_TAIL_DB_STEPS * config.dbTimeoutMs));
}

/**
 * How long after a session's close is recorded the copy it sends may still land (retention deletes
 * no session whose close is more recent: session-rules.ts retentionRule). A close goes by the `now`
 * of the request or the clean-up run that makes it, which commits it at most its timeout later (a
 * request's: `functionTimeoutMs`, its lease; the run's: MAINTENANCE_TIMEOUT_SECONDS, the longer by
 * default) and sends the copy then, which lands within a database deadline unless its instance is
 * cut off from the database (docs/sessions-over-time.md: the limit of this).
 */
export function closingCopyLandsWithinMs(config: Config, functionTimeoutMs: number): number {
  return Math.max(functionTimeoutMs, MAINTENANCE_TIMEOUT_SECONDS * 1000) + config.dbTimeoutMs;
}
