import { randomUUID } from "node:crypto";
import type { ChatModel, Completion, CompletionRequest, DeltaListener } from "../llm/chat-model";
import type { ChatMessage, Exchange, GenerationSettings, ReplyUsage, SessionMeta, SessionState, SessionSummary, Template, TokenUsage } from "../store/records";
import type { HistoryWindow, Ruled, SessionStore } from "../store/session-store";
import { StoreDataError } from "../store/errors";
import { lastMessages, nextWindowStart, planPrompt, type PromptPlan } from "./context-window";
import { modelFacts } from "../llm/model-table";
import { callUsage, type CallUsage } from "./call-usage";
import { backlog, SUMMARY_CALL_TOKENS, SUMMARY_MAX_TOKENS, SUMMARY_PROMPT_TOKENS, SummaryCall, type SummaryResult } from "./rolling-summary";
import type { Log } from "../log/log";
import { calibration, estimateMessageTokens, estimatePromptTokens, estimateRecurring, MAX_TOKENS_PER_CHAR, REPLY_PRIMING_TOKENS, TOKENS_PER_MESSAGE } from "./token-estimate";
import { ServiceLedger } from "./service-cap";
import { addUsage } from "./token-usage";
import { addressKey, admitAddress, refundAddress } from "./address-limit";
import type { Identity } from "../auth/identity";
import {
  ForbiddenError,
  IdempotencyInProgressError,
  IdempotencyKeyReusedError,
  LimitExceededError,
  PromptTooLargeError,
  SessionClosedError,
  SessionNotFoundError,
  TemplateNotFoundError,
} from "./errors";
import { resolveGenerationSettings } from "./generation-settings";
import { fingerprint, keyHash } from "./idempotency";
import { admitMessage, admitSession, refundMessage, releaseSession, settleTokens, type Reservation, type Spent, type TokenNeed, type UsagePolicy } from "./limits";
import {
  appendRule,
  claimRequest,
  endRule,
  releaseClaim,
  type AppendOutcome,
  type ClaimOutcome,
  type RequestClaim,
  type SessionPolicy,
} from "./session-rules";
import { PartialWriter } from "./partial-writer";
import { WarmCache } from "./warm-cache";

export interface SessionServiceOptions {
  readonly store: SessionStore;
  readonly model: ChatModel;
  /** Structured figures only: never a message's text. */
  readonly log: Log;
  readonly clock: () => number;
  readonly newSessionId: () => string;
  /** History messages sent to the model when the template sets none. */
  readonly defaultContextWindow: number;
  readonly policy: SessionPolicy;
  /** Per-user limits. */
  readonly usage: UsagePolicy;
  /** How long a claimed `Idempotency-Key` holds off repeats: longer than a model call can take. */
  readonly keyLeaseMs: number;
  /** Write replies' text so far as partials (where the store has readers for them). */
  readonly livePartials: boolean;
  /** How long a keyed repeat waits for the first request's result before answering 409. */
  readonly keyWaitMs: number;
  /** How often a repeat polls for the result of the request it waits for. */
  readonly keyPollMs?: number;
  /**
   * The longest user message (MAX_MESSAGE_CHARS): what a cold instance reserves of the deployment's
   * daily cap for each history message it has not seen (see serviceReservation). Default 4,000.
   */
  readonly maxMessageChars?: number;
  readonly cache: {
    readonly templateTtlMs: number;
    readonly sessionTtlMs: number;
    readonly maxSessions: number;
  };
}

export interface CreatedSession {
  readonly sessionId: string;
  readonly meta: SessionMeta;
  /** The answer repeats the one given to an earlier request with the same `Idempotency-Key`. */
  readonly replayed: boolean;
}

export interface Reply {
  readonly sessionId: string;
  readonly text: string;
  readonly truncated: boolean;
  readonly messageCount: number;
  readonly replayed: boolean;
  /** What the reply's model call used (absent on the replay of an exchange stored before usage was recorded). */
  readonly usage?: TokenUsage;
}

export interface EndedSession {
  readonly sessionId: string;
  readonly meta: SessionMeta;
  readonly state: SessionState;
}

/**
 * What an instance remembers of a session between requests: the immutable fields, and the
 * last messages as of a known `message_count`, reused only when the database still reports
 * exactly that count.
 */
interface WarmSession {
  readonly meta: SessionMeta;
  /** Where the owner's usage is kept: a hash, worth computing once. */
  readonly userKey: string;
  readonly tail?: { readonly messageCount: number; readonly messages: readonly ChatMessage[] };
}

/** A signed-in caller may act only on their own sessions. */
function assertOwner(meta: SessionMeta, caller: Identity | undefined): void {
  if (caller && caller.uid !== meta.user_id) throw new ForbiddenError("this session belongs to another user");
}

/** Where a user's usage is kept: a hash, so that any user id makes a valid database key. */
function userKey(userId: string): string {
  return keyHash("user", userId);
}

/**
 * The session holds all the exchanges it may: no wait helps, so Retry-After is the idle TTL,
 * after which the session expires and stops counting against the user's active sessions.
 */
function exchangeLimit(policy: SessionPolicy): LimitExceededError {
  return new LimitExceededError("exchanges", seconds(policy.idleTtlMs));
}

/** What a message's claim came to, before the model call. */
type SlotOutcome =
  | { readonly kind: "claimed"; readonly messageCount: number; readonly alone: boolean }
  | { readonly kind: "done"; readonly seq: number }
  | { readonly kind: "in-progress"; readonly retryAfterMs: number }
  | Exclude<ClaimOutcome, { kind: "claimed" } | { kind: "done" } | { kind: "busy" }>;

/** The one place where a refused claim or commit becomes its error. */
function refusal(outcome: Exclude<SlotOutcome | AppendOutcome, { kind: "claimed" } | { kind: "done" } | { kind: "appended" } | { kind: "duplicate" }>, policy: SessionPolicy): Error {
  switch (outcome.kind) {
    case "closed":
      return new SessionClosedError(outcome.status);
    case "limit":
      return exchangeLimit(policy);
    case "reused":
      return new IdempotencyKeyReusedError();
    case "in-progress":
      return new IdempotencyInProgressError(seconds(outcome.retryAfterMs));
    case "lost":
      // The claim lapsed before the commit (the request outran its lease): the client's retry
      // with the key finds whichever request stored the exchange.
      return new IdempotencyInProgressError(1);
  }
}

/** A message's claim: under its key's hash when it has an `Idempotency-Key`, else under a random id. */
function requestClaim(message: string, idempotencyKey: string | undefined): RequestClaim {
  const owner = randomUUID();
  return idempotencyKey === undefined
    ? { hash: `r-${owner}`, fingerprint: "", owner, remember: false }
    : { hash: keyHash("sendMessage", idempotencyKey), fingerprint: fingerprint(message), owner, remember: true };
}

/** `work`, whose failure is reported only to whoever awaits it: it may be dropped unawaited when the request is refused. */
function settledLater<T>(work: Promise<T>): Promise<T> {
  work.catch(() => undefined);
  return work;
}

/** Whole seconds for a Retry-After header, at least one. */
function seconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000));
}

/**
 * What a message may use in tokens beyond its session's last call, for the daily limit's
 * reservation (see admitMessage); refuses a message that cannot fit the model's context at all.
 */
function tokenNeed(meta: SessionMeta, message: string): TokenNeed {
  const { settings } = meta;
  const system = REPLY_PRIMING_TOKENS + estimateRecurring(meta.system_prompt);
  const added = estimatePromptTokens([{ role: "user", content: message }]);
  const model = modelFacts(settings.model);
  if (model && system + added + settings.max_tokens > model.contextTokens) {
    throw new PromptTooLargeError(system + added + settings.max_tokens, model.contextTokens);
  }
  // A summary may join the prompt, and its call runs beside the reply's.
  const summary = settings.summary ? SUMMARY_PROMPT_TOKENS + SUMMARY_CALL_TOKENS : 0;
  return { fresh: added + settings.max_tokens + summary, firstPrompt: system };
}

/** The reply's model call: the session's settings and the planned prompt. */
function completionRequest(meta: SessionMeta, plan: PromptPlan): CompletionRequest {
  const { settings } = meta;
  return {
    model: settings.model,
    messages: plan.messages,
    temperature: settings.temperature,
    max_tokens: settings.max_tokens,
    presence_penalty: settings.presence_penalty,
    frequency_penalty: settings.frequency_penalty,
  };
}

/**
 * History messages read and kept warm: the window, and with a summary the exchange before it too,
 * so that what leaves the window with the next message is at hand for its summary call, unread.
 */
function heldMessages(settings: GenerationSettings): number {
  return windowMessages(settings) + (settings.summary ? 2 : 0);
}

/**
 * The most history messages a prompt sends. With a summary, at least the last exchange, whatever
 * the template says: a summary made beside a reply is first sent with the next message, so it
 * cannot hold the exchange just before that message.
 */
function windowMessages(settings: GenerationSettings): number {
  return settings.summary ? Math.max(2, settings.context_window) : settings.context_window;
}

/** A prompt as planned, with what the rolling summary needs of it. */
interface Planned extends PromptPlan {
  /** The history messages sent, oldest first, and the position of the first of them (of the new message when none). */
  readonly sentMessages: readonly ChatMessage[];
  readonly firstSent: number;
  readonly calibration: number;
}

/** The position of a window's first message (exchange n's messages are 2n-1 and 2n). */
function firstPosition(window: HistoryWindow): number {
  return 2 * window.through - window.messages.length + 1;
}

/** The session's last call whose usage the provider reported, with the estimate made of its prompt: what calibrates the next estimate. */
function lastReported(messages: readonly ChatMessage[]): { prompt_tokens: number; prompt_estimate: number } | undefined {
  for (let i = messages.length - 1; i >= 0; i -= 1) {
    const usage = messages[i]?.usage;
    if (usage && !usage.estimated && usage.prompt_estimate !== undefined && usage.prompt_estimate > 0) {
      return { prompt_tokens: usage.prompt_tokens, prompt_estimate: usage.prompt_estimate };
    }
  }
  return undefined;
}

/** The reply call's own usage, as an answer gives it, from what is stored with the exchange. */
function replyCallUsage(usage: ReplyUsage): TokenUsage {
  const { prompt_estimate, summary, ...call } = usage;
  return call;
}

/** What the ledgers settle a reservation with: the calls' tokens and cost (nothing when no call was made). */
function spentOf(usage: TokenUsage | undefined): { tokens: number; costUsd?: number } {
  if (!usage) return { tokens: 0 };
  return usage.cost_usd === undefined ? { tokens: usage.total_tokens } : { tokens: usage.total_tokens, costUsd: usage.cost_usd };
}

/** MAX_MESSAGE_CHARS' default, when the service is not told the deployment's. */
const DEFAULT_MAX_MESSAGE_CHARS = 4_000;

/**
 * What a message reserves of the deployment's daily cap: an upper bound of its calls, with the
 * history it will send estimated from the instance's warm window (the estimate never counts low),
 * or, on a cold instance, as the window at its longest: each message a user message of
 * `maxMessageChars` at the estimate's highest price or a reply of `max_tokens`, whichever is more.
 * The settlement, beside the commit, brings it down to what was spent; near the cap, in-flight
 * reservations are refused early, never late.
 */
function serviceReservation(warm: WarmSession, need: TokenNeed, maxMessageChars: number): number {
  const { settings } = warm.meta;
  const count = windowMessages(settings);
  const history = warm.tail
    ? lastMessages(warm.tail.messages, count).reduce((sum, message) => sum + estimateMessageTokens(message.content), 0)
    : count * Math.max(settings.max_tokens, MAX_TOKENS_PER_CHAR * maxMessageChars + 1 + TOKENS_PER_MESSAGE);
  return Math.ceil(need.firstPrompt + need.fresh + Math.min(history, settings.context_tokens ?? history));
}

/** Templates are few; this only bounds an instance's memory if ids are many. */
const MAX_CACHED_TEMPLATES = 256;

/** The session module: the rules of creating, talking in and ending a chat session. */
export class SessionService {
  private readonly templates: WarmCache<string, Template>;
  private readonly sessions: WarmCache<string, WarmSession>;
  private readonly serviceLedger: ServiceLedger;

  constructor(private readonly options: SessionServiceOptions) {
    const { cache, clock } = options;
    this.templates = new WarmCache(MAX_CACHED_TEMPLATES, cache.templateTtlMs, clock);
    this.sessions = new WarmCache(cache.maxSessions, cache.sessionTtlMs, clock);
    this.serviceLedger = new ServiceLedger(options.store, options.usage.serviceTokensPerDay ?? 0);
  }

  /**
   * Creates a session for `caller` when signed in (a different `userId` is refused), else for
   * `userId`. With an `idempotencyKey`, repeats return the session the first request created.
   */
  async create(input: { userId?: string; templateId: string; idempotencyKey?: string; caller?: Identity; address?: string }): Promise<CreatedSession> {
    const { store, clock, newSessionId, defaultContextWindow } = this.options;
    if (input.caller && input.userId !== undefined && input.userId !== input.caller.uid) {
      throw new ForbiddenError("user_id does not match the signed-in user");
    }
    const userId = input.caller?.uid ?? input.userId;
    if (userId === undefined) throw new Error("a session needs a user: a caller or a user_id");
    const template = await this.template(input.templateId);
    const now = clock();
    let sessionId = newSessionId();
    if (input.idempotencyKey !== undefined) {
      // The key fixes the session id: whichever request gets there first creates that session.
      const claimed = await store.claimCreateKey(keyHash(`createSession\u0000${userId}`, input.idempotencyKey), {
        fingerprint: fingerprint(input.templateId),
        session_id: sessionId,
        created_at: now,
      });
      if (claimed.fingerprint !== fingerprint(input.templateId)) throw new IdempotencyKeyReusedError();
      sessionId = claimed.session_id;
      if (await store.readSessionState(sessionId)) return { sessionId, meta: (await this.warmSession(sessionId)).meta, replayed: true };
    }
    await this.admitSession(userId, sessionId, now, input.caller, input.address);

    const meta: SessionMeta = {
      user_id: userId,
      template_id: input.templateId,
      template_name: template.name,
      system_prompt: template.personalityPrompt,
      settings: resolveGenerationSettings(template, defaultContextWindow),
      created_at: now,
    };
    const state: SessionState = { status: "active", message_count: 0, last_activity: now, idle_since: now };
    let created: "created" | "exists";
    try {
      created = await store.createSession({ id: sessionId, meta, state });
    } catch (error) {
      await store.updateUsage(userKey(userId), releaseSession(sessionId)).catch(() => undefined);
      throw error;
    }
    if (created === "exists") return { sessionId, meta: (await this.warmSession(sessionId)).meta, replayed: true };
    this.sessions.set(sessionId, { meta, userKey: userKey(meta.user_id), tail: { messageCount: 0, messages: [] } });
    return { sessionId, meta, replayed: false };
  }

  /**
   * Counts the new session against its user's active sessions and, for a caller anyone could be
   * (no ID token, or an anonymous one), against its network address's sessions per hour: both
   * at once, each giving back what it took when the other refuses.
   */
  private async admitSession(userId: string, sessionId: string, now: number, caller: Identity | undefined, address: string | undefined): Promise<void> {
    const { store, usage } = this.options;
    const perHour = usage.addressSessionsPerHour ?? 0;
    const bucket = perHour > 0 && address !== undefined && (!caller || caller.anonymous === true) ? addressKey(address) : undefined;
    const [user, network] = await Promise.allSettled([
      store.updateUsage(userKey(userId), admitSession(sessionId, now, usage)),
      bucket === undefined ? Promise.resolve({ admitted: true } as const) : store.updateAddressUsage(bucket, admitAddress(now, perHour)),
    ]);
    const userAdmitted = user.status === "fulfilled" && user.value.admitted;
    const networkAdmitted = network.status === "fulfilled" && network.value.admitted;
    if (userAdmitted && networkAdmitted) return;
    // Off the reply's path: a lost give-back only delays a slot (the session stops counting at its idle TTL, the bucket refills).
    if (userAdmitted) void store.updateUsage(userKey(userId), releaseSession(sessionId)).catch(() => undefined);
    if (networkAdmitted && bucket !== undefined) void store.updateAddressUsage(bucket, refundAddress(perHour)).catch(() => undefined);
    if (user.status === "rejected") throw user.reason;
    if (network.status === "rejected") throw network.reason;
    if (!user.value.admitted) throw new LimitExceededError("sessions", seconds(user.value.retryAfterMs));
    if (!network.value.admitted) throw new LimitExceededError("address", seconds(network.value.retryAfterMs));
  }

  /**
   * One message, in two database round trips on a warm instance: the claim of a slot and the
   * usage admission (which reserves the message's tokens), sent together, then the model call,
   * then the commit of the exchange, beside which the reservation is settled and a rolling
   * summary written. With `onDelta`, the reply's text is passed on as the model writes it;
   * everything else is the same: a failure after a delta still stores nothing and frees the
   * claim, and a replay passes no delta (the caller answers it whole).
   */
  async send(input: { sessionId: string; message: string; idempotencyKey?: string; caller?: Identity; onDelta?: DeltaListener }): Promise<Reply> {
    const { store, clock, policy } = this.options;
    const { sessionId } = input;
    const receivedAt = clock();
    const warm = await this.warmSession(sessionId, input.caller);
    // Ownership first: nothing else about another user's session is revealed.
    assertOwner(warm.meta, input.caller);
    const need = tokenNeed(warm.meta, input.message);
    const claim = requestClaim(input.message, input.idempotencyKey);
    const user = warm.userKey;

    // A cold instance reads the history beside the claim; a warm one has it, as of a count the claim checks.
    const coldHistory = warm.tail ? undefined : settledLater(this.readHistory(sessionId, warm));
    // The summary goes into the prompt: read beside the claim too (a listened node costs no round trip).
    const summaryRead = warm.meta.settings.summary ? settledLater(store.readSummary(sessionId)) : undefined;
    const [claiming, admitting, capping] = await Promise.allSettled([
      this.claimSlot(sessionId, claim, receivedAt),
      store.updateUsage(user, admitMessage(sessionId, receivedAt, this.options.usage, need)),
      this.serviceLedger.reserve(serviceReservation(warm, need, this.options.maxMessageChars ?? DEFAULT_MAX_MESSAGE_CHARS), receivedAt),
    ]);
    const serviceHeld = capping.status === "fulfilled" && capping.value?.admitted ? capping.value.reservation : undefined;
    const giveBackService = () => void this.serviceLedger.settle(serviceHeld, { tokens: 0 });
    // One step failed (the database): give back what the others took, then fail.
    if (claiming.status === "rejected" || admitting.status === "rejected" || capping.status === "rejected") {
      if (claiming.status === "fulfilled" && claiming.value.kind === "claimed") this.release(sessionId, claim);
      if (admitting.status === "fulfilled" && admitting.value.admitted) this.refund(user, sessionId, admitting.value.reservation, true);
      giveBackService();
      throw [claiming, admitting, capping].find((step): step is PromiseRejectedResult => step.status === "rejected")?.reason;
    }
    const [claimed, admission, capped] = [claiming.value, admitting.value, capping.value];
    if (claimed.kind !== "claimed") {
      // A replay or a refusal costs the user nothing: what was taken goes back, off the reply's path.
      if (admission.admitted) this.refund(user, sessionId, admission.reservation, true);
      giveBackService();
      if (claimed.kind === "done") return this.replay(sessionId, claimed.seq);
      throw refusal(claimed, policy);
    }
    if (!admission.admitted || capped?.admitted === false) {
      this.release(sessionId, claim);
      if (admission.admitted) this.refund(user, sessionId, admission.reservation, true);
      giveBackService();
      if (!admission.admitted) throw new LimitExceededError(admission.limit, seconds(admission.retryAfterMs));
      throw new LimitExceededError("service", seconds(capped?.admitted === false ? capped.retryAfterMs : 0));
    }
    const { reservation } = admission;

    // The reply's text so far, beside the session, for clients that listen to it (streamed or not,
    // so the model is asked for deltas whenever the store has readers). Keyed by the claim's random
    // owner: concurrent messages never collide, and the key reveals nothing of an Idempotency-Key.
    const partial = new PartialWriter(
      (value) => void store.writePartial(sessionId, claim.owner, value).catch(() => undefined),
      claimed.messageCount,
      clock,
    );
    const onDelta = this.options.livePartials && store.partialsReadable
      ? (text: string) => {
          partial.add(text);
          input.onDelta?.(text);
        }
      : input.onDelta;
    let window: HistoryWindow;
    let plan: Planned;
    let summaryCall: SummaryCall | undefined;
    let completion: Completion;
    try {
      window = await this.history(sessionId, warm, claimed.messageCount, coldHistory);
      // A summary that cannot be read is left out of this prompt: it never holds a message up.
      const summary = summaryRead ? await summaryRead.catch(() => null) : null;
      plan = this.plan(warm.meta, window, summary, input.message);
      summaryCall = this.startSummary(sessionId, warm.meta, window, plan, summary, input.message);
      // Text already sent down an HTTP stream cannot be taken back; a partial in the database can,
      // so without a stream the model call keeps its retries past the first delta.
      completion = await this.options.model.complete(completionRequest(warm.meta, plan), onDelta, input.onDelta || !onDelta ? undefined : () => { partial.restart(); });
    } catch (error) {
      // Free the slot now; if this is lost too, the claim lapses with its lease.
      partial.discard();
      this.release(sessionId, claim);
      // Of the reservations, only what a summary call may have used stays counted.
      const spent = summaryCall?.finish().usage;
      if (spent) void this.settle(user, sessionId, reservation, spent, undefined);
      else this.refund(user, sessionId, reservation, false);
      void this.serviceLedger.settle(serviceHeld, spentOf(spent));
      throw error;
    }
    // Stopped before the commit is sent: a write after the update that removes the partial would leave it behind.
    partial.stop();

    // The summary is kept if its call has finished by now; else it is abandoned: the reply never waits.
    const summarised: SummaryResult = summaryCall?.finish() ?? {};
    const { usage: reply, refused } = callUsage(completion, { promptEstimate: plan.promptEstimate, maxTokens: warm.meta.settings.max_tokens, model: warm.meta.settings.model });
    this.logBounds(sessionId, refused, summarised);
    const usage: ReplyUsage = {
      ...reply,
      prompt_estimate: plan.promptEstimate,
      ...(warm.meta.settings.context_tokens === undefined ? {} : { window_from: plan.firstSent }),
      ...(summarised.usage ? { summary: summarised.usage } : {}),
    };
    const answeredAt = Math.max(clock(), receivedAt);
    const exchange: Exchange = {
      user: { role: "user", content: input.message, timestamp: receivedAt },
      assistant: { role: "assistant", content: completion.text, timestamp: answeredAt, ...(completion.truncated ? { truncated: true } : {}), usage },
    };
    const calls = summarised.usage ? addUsage(reply, summarised.usage) : reply;
    // Sent with the commit, not after it: neither adds a round trip. The reservation is settled
    // whatever the commit's fate: the provider charged the calls either way.
    const sideWrites: Promise<unknown>[] = [
      this.settle(user, sessionId, reservation, calls, { context: reply.total_tokens, claimedCount: claimed.messageCount, alone: claimed.alone }),
      this.serviceLedger.settle(serviceHeld, spentOf(calls)),
    ];
    if (summarised.summary) sideWrites.push(store.writeSummary(sessionId, summarised.summary).catch(() => false));
    let result: Ruled<AppendOutcome>;
    try {
      result = await store.appendExchange(sessionId, exchange, appendRule({ receivedAt, answeredAt, policy, claim, usage: calls }), partial.written ? claim.owner : undefined);
    } catch (error) {
      // The commit's fate is unknown; if it landed, its copy removes the partial too, harmlessly twice.
      partial.discard();
      throw error;
    }
    await Promise.all(sideWrites);
    // Only an appended exchange's copy removes the partial; every other outcome removes it here.
    if (!result.found || result.outcome.kind !== "appended") partial.discard();
    if (!result.found) throw new SessionNotFoundError(sessionId);
    const { outcome } = result;
    if (outcome.kind === "duplicate") return this.replay(sessionId, outcome.seq);
    if (outcome.kind !== "appended") {
      // Refused at the commit: free the slot, so a repeat waiting on this key learns at once.
      this.release(sessionId, claim);
      throw refusal(outcome, policy);
    }
    // The new tail is known only when no other exchange landed between our claim and our commit.
    if (outcome.seq === claimed.messageCount + 1) {
      const messages = lastMessages([...window.messages, exchange.user, exchange.assistant], heldMessages(warm.meta.settings));
      this.sessions.set(sessionId, { ...warm, tail: { messageCount: outcome.seq, messages } });
    }
    return {
      sessionId,
      text: exchange.assistant.content,
      truncated: exchange.assistant.truncated === true,
      messageCount: result.state.message_count,
      replayed: false,
      usage: reply,
    };
  }

  async end(sessionId: string, caller?: Identity): Promise<EndedSession> {
    const { store, clock, policy } = this.options;
    const { meta } = await this.warmSession(sessionId);
    assertOwner(meta, caller);
    const result = await store.updateState(sessionId, endRule(clock(), policy));
    if (!result.found) throw new SessionNotFoundError(sessionId);
    if (result.outcome.kind === "closed") throw new SessionClosedError(result.outcome.status);
    // A lost release only delays the slot: an unused session stops counting after the idle TTL.
    await store.updateUsage(userKey(meta.user_id), releaseSession(sessionId)).catch(() => undefined);
    return { sessionId, meta, state: result.state };
  }

  /**
   * The prompt: the template's, the summary (messages it covers are not sent again), the window
   * that fits the session's token budget, and the new message. A token window never reaches back
   * past where the session's last prompt began: so each prompt holds at most the last one, its
   * reply and what landed since, which is what the daily limit's reservation counts on.
   */
  private plan(meta: SessionMeta, window: HistoryWindow, summary: SessionSummary | null, message: string): Planned {
    const { settings } = meta;
    const first = firstPosition(window);
    const lastFrom = settings.context_tokens === undefined ? undefined : window.messages.at(-1)?.usage?.window_from;
    const skip = Math.max(0, Math.max(summary?.through ?? 0, (lastFrom ?? 0) - 1) - first + 1);
    const history = window.messages.slice(skip);
    const factor = calibration(lastReported(window.messages));
    const plan = planPrompt({
      systemPrompt: meta.system_prompt,
      ...(summary ? { summary: summary.text } : {}),
      history,
      maxMessages: windowMessages(settings),
      ...(settings.context_tokens === undefined ? {} : { contextTokens: settings.context_tokens }),
      calibration: factor,
      userMessage: message,
    });
    return { ...plan, sentMessages: history.slice(history.length - plan.sent), firstSent: 2 * window.through - plan.sent + 1, calibration: factor };
  }

  /**
   * Starts the summary call when messages leave the window, now or with the next message, that
   * the summary does not hold yet: those still in hand are taken from the window, older ones
   * read, beside the reply's call.
   */
  private startSummary(sessionId: string, meta: SessionMeta, window: HistoryWindow, plan: Planned, summary: SessionSummary | null, message: string): SummaryCall | undefined {
    const { settings } = meta;
    if (!settings.summary) return undefined;
    const nextTokenStart = settings.context_tokens === undefined
      ? 0
      : nextWindowStart({
          systemPrompt: meta.system_prompt,
          summaryTokens: SUMMARY_PROMPT_TOKENS,
          sent: plan.sentMessages,
          firstSent: plan.firstSent,
          userMessage: message,
          replyTokens: settings.max_tokens,
          contextTokens: settings.context_tokens,
          calibration: plan.calibration,
        });
    const due = backlog(summary?.through ?? 0, { through: window.through, firstSent: Math.max(plan.firstSent, nextTokenStart), maxMessages: windowMessages(settings) });
    if (!due) return undefined;
    const first = firstPosition(window);
    const messages = due.first >= first
      ? Promise.resolve(window.messages.slice(due.first - first, due.last - first + 1))
      : this.options.store.readMessages(sessionId, due.first, due.last).then((read) => {
          // A gap (a copy not landed yet) would summarise around a hole: the next message tries again.
          if (read.length !== due.last - due.first + 1) throw new Error("the backlog is not all stored yet");
          return read;
        });
    return new SummaryCall(this.options.model, settings, summary, messages, due.first, this.options.clock);
  }

  /**
   * Claims a slot for the request: its own, or the number of the exchange an earlier request
   * with this key stored, or why not. While another request holds the key, waits for that one's
   * result as long as the time budget allows (then 409: the client retries later with the key).
   */
  private async claimSlot(sessionId: string, claim: RequestClaim, receivedAt: number): Promise<SlotOutcome> {
    const { store, clock, policy, keyLeaseMs, keyWaitMs, keyPollMs = 200 } = this.options;
    // Bounded by the time budget, not the lease: waiting out a dead request's lease would outlive the function.
    const giveUpAt = receivedAt + keyWaitMs;
    for (;;) {
      const result = await store.updateStateReadingKey(sessionId, claimRequest(claim, clock(), keyLeaseMs, policy), claim.remember ? claim.hash : undefined);
      if (!result.found) throw new SessionNotFoundError(sessionId);
      const { outcome, record, state } = result;
      if (record && outcome.kind !== "done") {
        // The key's exchange is done and its record moved out of the state: a repeat.
        if (outcome.kind === "claimed") this.release(sessionId, claim);
        return record.fingerprint === claim.fingerprint ? { kind: "done", seq: record.seq } : { kind: "reused" };
      }
      if (outcome.kind === "claimed") return { kind: "claimed", messageCount: state.message_count, alone: outcome.alone };
      if (outcome.kind !== "busy") return outcome;
      // Give up on a claim found live past the wait allowed; after waiting, claim again, but only
      // within the wait: a claim at its end would start a model call the function's time cannot hold.
      if (clock() >= giveUpAt) return { kind: "in-progress", retryAfterMs: outcome.leaseUntil - clock() };
      await this.awaitKey(sessionId, claim, Math.min(outcome.leaseUntil, giveUpAt), keyPollMs);
      if (clock() >= giveUpAt) return { kind: "in-progress", retryAfterMs: outcome.leaseUntil - clock() };
    }
  }

  /** Polls the session until the key's claim is gone (done, released or lapsed) or `until` passes. */
  private async awaitKey(sessionId: string, claim: RequestClaim, until: number, pollMs: number): Promise<void> {
    const { store, clock } = this.options;
    while (clock() < until) {
      await new Promise((wake) => setTimeout(wake, Math.max(1, Math.min(pollMs, until - clock()))));
      // On the database, a read of the listened state costs no round trip.
      const state = await store.readSessionState(sessionId);
      const entry = state?.requests?.[claim.hash];
      if (!entry || entry.seq !== undefined || state.status !== "active") return;
    }
  }

  /**
   * Gives back a reservation (and with `token` the message token), off the reply's path; if that
   * is lost, the bucket refills anyway and the day's count keeps the reservation: never too low.
   */
  private refund(userKey: string, sessionId: string, reservation: Reservation, token: boolean): void {
    void this.options.store.updateUsage(userKey, refundMessage(this.options.usage, sessionId, reservation, token)).catch(() => undefined);
  }

  /**
   * Settles a reservation with what the message's calls spent (`exchange`: what the session's
   * context bound needs of the reply, once its commit is sent). A lost settlement leaves the
   * reservation counted.
   */
  private settle(userKey: string, sessionId: string, reservation: Reservation, spent: TokenUsage, exchange: Spent["exchange"]): Promise<void> {
    const rule = settleTokens(sessionId, reservation, {
      tokens: spent.total_tokens,
      ...(spent.cost_usd === undefined ? {} : { costUsd: spent.cost_usd }),
      ...(exchange === undefined ? {} : { exchange }),
    });
    return this.options.store.updateUsage(userKey, rule).catch(() => undefined);
  }

  /**
   * Says when a provider's usage report was not believed, or a summary came back over its bound:
   * the figures only, never the text.
   */
  private logBounds(sessionId: string, refused: CallUsage["refused"], summarised: SummaryResult): void {
    const { log } = this.options;
    if (refused) log.warn("provider usage out of bounds, estimated instead", { session_id: sessionId, call: "reply", ...refused });
    if (summarised.refusedUsage) log.warn("provider usage out of bounds, estimated instead", { session_id: sessionId, call: "summary", ...summarised.refusedUsage });
    if (summarised.cutFrom !== undefined) log.warn("summary over its bound, cut", { session_id: sessionId, estimated_tokens: summarised.cutFrom, bound: SUMMARY_MAX_TOKENS });
  }

  /** Gives up a claim, off the reply's path; if that is lost too, the claim lapses with its lease. */
  private release(sessionId: string, claim: RequestClaim): void {
    void this.options.store.updateState(sessionId, releaseClaim(claim)).catch(() => undefined);
  }

  private async replay(sessionId: string, seq: number): Promise<Reply> {
    const exchange = await this.options.store.readExchange(sessionId, seq);
    if (!exchange) throw new StoreDataError(`userSessions/${sessionId}/messages`, `exchange ${seq} named by an idempotency key is missing`);
    const usage = exchange.assistant.usage;
    return {
      sessionId,
      text: exchange.assistant.content,
      truncated: exchange.assistant.truncated === true,
      messageCount: seq,
      replayed: true,
      ...(usage ? { usage: replyCallUsage(usage) } : {}),
    };
  }

  private async template(templateId: string): Promise<Template> {
    const cached = this.templates.get(templateId);
    if (cached) return cached;
    const template = await this.options.store.readTemplate(templateId);
    if (!template) throw new TemplateNotFoundError(templateId);
    this.templates.set(templateId, template);
    return template;
  }

  /**
   * The session's fixed fields, from the warm cache or read. A signed-in `caller` can only act on
   * their own sessions, so their usage record is the one a message's admission will need: on a
   * miss it is fetched beside the fields (for a warm one, the last message already fetched it).
   */
  private async warmSession(sessionId: string, caller?: Identity): Promise<WarmSession> {
    const cached = this.sessions.get(sessionId);
    if (cached) return cached;
    if (caller) this.options.store.prepareUsage(userKey(caller.uid));
    const meta = await this.options.store.readSessionMeta(sessionId);
    if (!meta) throw new SessionNotFoundError(sessionId);
    const warm = { meta, userKey: userKey(meta.user_id) };
    this.sessions.set(sessionId, warm);
    return warm;
  }

  /**
   * The window as of `messageCount` exchanges (the count the claim saw): the warm tail when it is
   * as of that count, else the history read beside the claim when it reaches that far, else a read.
   */
  private async history(sessionId: string, warm: WarmSession, messageCount: number, early: Promise<HistoryWindow> | undefined): Promise<HistoryWindow> {
    if (warm.tail?.messageCount === messageCount) return { messages: [...warm.tail.messages], through: messageCount };
    const window = early ? await early : undefined;
    if (window && window.through >= messageCount) return window;
    return this.readHistory(sessionId, warm);
  }

  private readHistory(sessionId: string, warm: WarmSession): Promise<HistoryWindow> {
    return this.options.store.readWindow(sessionId, heldMessages(warm.meta.settings));
  }
}
