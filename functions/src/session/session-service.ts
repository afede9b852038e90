import { namesCaller, type Identity } from "../auth/identity";
import type { ChatModel, ReplySink } from "../llm/chat-model";
import type { Log } from "../log/log";
import type { MessageModeration } from "../moderation/message-moderation";
import { ofCreation, type CreateKey, type SessionMeta, type SessionState, type Template } from "../store/records";
import { StoreDataError, StoreUnavailableError } from "../store/errors";
import type { SessionStore } from "../store/session-store";
import { addressKey, admitAddress, refundAddress } from "./ledger/address-limit";
import { ErasureInProgressError } from "./erasure/erasure-errors";
import { ForbiddenError, IdempotencyKeyReusedError, LimitExceededError, SessionClosedError, SessionNotFoundError, TemplateNotFoundError } from "./errors";
import { commit } from "./message/exchange-commit";
import { resolveGenerationSettings } from "./prompt/generation-settings";
import { fingerprint, keyHash } from "./idempotency";
import { KnownSessions, type KnownSession } from "./known-sessions";
import { admitSession, releaseEnded, releaseSession, userKey, type Admission, type UsagePolicy } from "./ledger/limits";
import { admit, type Admitted } from "./message/message-admission";
import type { MessageContext } from "./message/message-context";
import { seconds } from "./message/refusals";
import { replay, type Reply } from "./message/reply";
import { generate } from "./message/reply-generation";
import { PARTIAL_MAX_INTERVAL_MS } from "./message/partial-writer";
import { ServiceLedger } from "./ledger/service-cap";
import { endRule, type SessionPolicy } from "./session-rules";
import { WarmCache } from "./warm-cache";

export type { Reply } from "./message/reply";

export interface SessionServiceOptions {
  readonly store: SessionStore;
  readonly model: ChatModel;
  /** Structured figures only: never a message's text. */
  readonly log: Log;
  readonly clock: () => number;
  /** A new session's id; with several database instances, the id names its instance (sharding/session-ids.ts). */
  readonly newSessionId: () => string;
  /**
   * Gives back an id from `newSessionId` that no session will have (its create refused, or a keyed
   * repeat taking the first request's id), so that such creates do not steer where sessions go.
   */
  readonly giveBackSessionId?: (id: string) => void;
  /** History messages sent to the model when the template sets none. */
  readonly defaultContextWindow: number;
  readonly policy: SessionPolicy;
  /** Per-user limits, the deployment's cap and the per-address limit. */
  readonly usage: UsagePolicy;
  /** How long a claimed `Idempotency-Key` holds off repeats: longer than a model call can take. */
  readonly keyLeaseMs: number;
  /** Write replies' text so far as partials (where the store has readers for them). */
  readonly livePartials: boolean;
  /** The longest wait between two writes of a partial (default PARTIAL_MAX_INTERVAL_MS). */
  readonly partialMaxIntervalMs?: number;
  /** How long a keyed repeat waits for the first request's result before answering 409. */
  readonly keyWaitMs: number;
  /**
   * How long a message kept out of the session's last exchanges by running claims alone waits for
   * them (runtime/time-budget.ts); default `keyWaitMs`.
   */
  readonly claimWaitMs?: number;
  /** How often a repeat polls for the result of the request it waits for (default 200 ms). */
  readonly keyPollMs?: number;
  /**
   * The longest user message (MAX_MESSAGE_CHARS): what a cold instance reserves of the deployment's
   * daily cap for each history message it has not seen. Default 4,000.
   */
  readonly maxMessageChars?: number;
  readonly cache: {
    readonly templateTtlMs: number;
    readonly sessionTtlMs: number;
    readonly maxSessions: number;
  };
  /** With MODERATION on: each message is checked beside its model call, and kept only when it may go on. */
  readonly moderation?: MessageModeration;
}

export interface CreatedSession {
  readonly sessionId: string;
  readonly meta: SessionMeta;
  /** The answer repeats the one given to an earlier request with the same `Idempotency-Key`. */
  readonly replayed: boolean;
}

export interface EndedSession {
  readonly sessionId: string;
  readonly meta: SessionMeta;
  readonly state: SessionState;
}

/** A message to send: `stream`, when the caller reads the reply as the model writes it. */
export interface MessageInput {
  readonly sessionId: string;
  readonly message: string;
  readonly idempotencyKey?: string;
  readonly caller?: Identity;
  readonly stream?: ReplySink;
}

/**
 * A `createSession` key with its record: one this request claimed itself (its own session id and
 * time: see `releaseClaim`), or another request's claim it took over (see `refuseTakeOver`).
 */
interface CreateClaim {
  readonly hash: string;
  readonly key: CreateKey;
}

/** Templates are few; this only bounds an instance's memory if ids are many. */
const MAX_CACHED_TEMPLATES = 256;

/** The session module: the rules of creating, talking in and ending a chat session. */
export class SessionService {
  private readonly templates: WarmCache<string, Template>;
  private readonly known: KnownSessions;
  private readonly context: MessageContext;

  constructor(private readonly options: SessionServiceOptions) {
    const { cache, clock, store } = options;
    this.templates = new WarmCache(MAX_CACHED_TEMPLATES, cache.templateTtlMs, clock);
    this.known = new KnownSessions(store, cache, clock);
    this.context = {
      store,
      model: options.model,
      clock,
      log: options.log,
      policy: options.policy,
      usage: options.usage,
      serviceLedger: new ServiceLedger(store, options.usage.serviceTokensPerDay ?? 0),
      known: this.known,
      keyLeaseMs: options.keyLeaseMs,
      keyWaitMs: options.keyWaitMs,
      claimWaitMs: options.claimWaitMs ?? options.keyWaitMs,
      keyPollMs: options.keyPollMs ?? 200,
      livePartials: options.livePartials,
      partialMaxIntervalMs: options.partialMaxIntervalMs ?? PARTIAL_MAX_INTERVAL_MS,
      maxMessageChars: options.maxMessageChars ?? 4_000,
      ...(options.moderation ? { moderation: options.moderation } : {}),
    };
  }

  /**
   * Creates a session for `caller` when signed in (a different `userId` is refused), else for
   * `userId`. With an `idempotencyKey`, repeats return the session the first request created.
   */
  async create(input: { userId?: string; templateId: string; idempotencyKey?: string; caller?: Identity; address?: string }): Promise<CreatedSession> {
    const { store, clock, newSessionId, defaultContextWindow } = this.options;
    if (input.caller && input.userId !== undefined && !namesCaller(input.userId, input.caller)) {
      throw new ForbiddenError("user_id does not match the signed-in user");
    }
    const userId = input.caller?.uid ?? input.userId;
    if (userId === undefined) throw new Error("a session needs a user: a caller or a user_id");
    const now = clock();
    let template: Template;
    try {
      template = await this.template(input.templateId);
    } catch (error) {
      // A keyed repeat of a create whose template was deleted since, or whose stored values went bad
      // (an operator's edit): the session it made stands on its own, its settings frozen in its meta.
      // A new keyed create still gets the error, once its claim is given back.
      if ((error instanceof TemplateNotFoundError || error instanceof StoreDataError) && input.idempotencyKey !== undefined) {
        // The claim needs an id; no session gets it, whatever the claim finds (keyedCreate gives back another's).
        const candidate = newSessionId();
        const keyed = await this.keyedCreate(userId, input.templateId, input.idempotencyKey, candidate, now);
        if (keyed.replayed) return keyed;
        await this.releaseClaim(keyed.claim);
        if (keyed.claim) this.giveBack(candidate);
      }
      throw error;
    }
    // Drawn once the template is known: a create refused before it takes no turn of placement.
    const candidate = newSessionId();
    let sessionId = candidate;
    let claim: CreateClaim | undefined;
    let takenOver: CreateClaim | undefined;
    if (input.idempotencyKey !== undefined) {
      const keyed = await this.keyedCreate(userId, input.templateId, input.idempotencyKey, candidate, now);
      if (keyed.replayed) return keyed;
      sessionId = keyed.sessionId;
      claim = keyed.claim;
      takenOver = keyed.takenOver;
    }
    try {
      await this.admitSession(userId, sessionId, now, input.caller, input.address, input.idempotencyKey === undefined ? undefined : { claim });
    } catch (error) {
      // Refused: no session comes of this claim (admitSession gave it back). Not on a database
      // failure, whose admission may have counted the session: a retry with the key then creates that same session.
      if (error instanceof ErasureInProgressError || error instanceof LimitExceededError) {
        if (error instanceof ErasureInProgressError) await this.refuseTakeOver(takenOver);
        // This request's own id only: another request's claimed id is that request's session.
        if (sessionId === candidate) this.giveBack(candidate);
      }
      throw error;
    }

    const meta: SessionMeta = {
      user_id: userId,
      template_id: input.templateId,
      template_name: template.name,
      system_prompt: template.personalityPrompt,
      settings: resolveGenerationSettings(template, defaultContextWindow),
      created_at: now,
    };
    // Its state carries its creation time too: which creation of the id it is (records.ts ofCreation).
    const state: SessionState = { status: "active", message_count: 0, last_activity: now, idle_since: now, created_at: now };
    let created: "created" | "exists";
    try {
      created = await store.createSession({ id: sessionId, meta, state });
    } catch (error) {
      // A keyed create's count stays, whichever request took it: its session may exist all the same
      // (this write landed with its answer lost, or a repeat stored it meanwhile), and the key keeps
      // its id for the retry, which finds it counted and takes nothing. One that never lands lapses
      // at the idle TTL: high, never low. An unkeyed create's id reaches no retry: its count goes
      // back (should the write have landed after all, the session, listed but never answered with,
      // is counted again by its first message only within the limit).
      if (input.idempotencyKey === undefined) await store.updateUsage(userKey(userId), releaseSession(sessionId)).catch(() => undefined);
      throw error;
    }
    if (created === "exists") {
      // Created by a repeat meanwhile: read, not what this instance may remember of an earlier creation under the id.
      this.known.forget(sessionId);
      return { sessionId, meta: (await this.known.owned(sessionId, undefined)).meta, replayed: true };
    }
    this.known.remember({ id: sessionId, meta, userKey: userKey(userId), tail: { exchangeCount: 0, messages: [] } });
    return { sessionId, meta, replayed: false };
  }

  /**
   * One message, in three steps and two database round trips on a warm instance: its admission
   * (the claim of a slot, the user's limits and the deployment's cap, sent together), the reply's
   * generation (the model call, with a summary call beside it), and the commit of the exchange
   * (beside which the reservations are settled). `stream` gets the reply's text as the model
   * writes it; everything else is the same: a failure after some text still stores nothing and
   * frees the slot, and a replay streams nothing (the caller answers it whole). Whatever the
   * message holds while in flight, its `InFlightMessage` gives back on every way it can end.
   */
  async send(input: MessageInput): Promise<Reply> {
    const receivedAt = this.options.clock();
    const { session, admission } = await this.admitted(input, receivedAt);
    if (admission.kind === "replay") return replay(this.options.store, session.id, admission.seq);
    const { message, readAhead } = admission;
    let generated;
    try {
      generated = await generate(this.context, message, input.message, readAhead, input.stream);
    } catch (error) {
      // The model call failed: one that failed before it ended as refused already, in generate.
      message.end({ kind: "failed" });
      throw error;
    }
    return commit(this.context, message, generated, input.message, receivedAt);
  }

  /**
   * The message's session, owned by its caller, and its admission. What this instance remembers
   * may be of an earlier creation under the id (erased since, then created again by a keyed
   * create's retry): the admission, told so by its claim, takes nothing and forgets it; the fields
   * are read, and the message admitted again on them. Yet another creation meanwhile is left to
   * the client's retry (503).
   */
  private async admitted(input: MessageInput, receivedAt: number): Promise<{ session: KnownSession; admission: Exclude<Admitted, { kind: "renewed" }> }> {
    for (let attempt = 0; ; attempt += 1) {
      // Ownership first: nothing else about another user's session is revealed.
      const session = await this.known.owned(input.sessionId, input.caller);
      const admission = await admit(this.context, session, input.message, input.idempotencyKey, receivedAt);
      if (admission.kind !== "renewed") return { session, admission };
      if (attempt > 0) throw new StoreUnavailableError("claim (the session was created again meanwhile)");
    }
  }

  async end(sessionId: string, caller?: Identity): Promise<EndedSession> {
    const { store, clock, policy, usage } = this.options;
    const known = await this.known.owned(sessionId, caller);
    const owner = known.userKey;
    const now = clock();
    // An end whose transaction fails (503, its fate unknown) releases nothing: it may not have
    // landed, and uncounting a session still active would let its user create past the limit. The
    // client's retry of the end finds it ended and releases it below; without one, the ended
    // session counts until the idle TTL.
    const result = await store.updateState(sessionId, endRule(now, policy));
    if (!result.found) throw new SessionNotFoundError(sessionId);
    const { outcome } = result;
    // Ended now, or closed already: a repeat of an end whose answer (or release) was lost, or an end
    // of a session that expired. Either way it is closed for good, so releasing it is sure and
    // idempotent. An expired session's count may outlive its expiry (a message that failed near the
    // TTL counted it from its arrival, and its give-back may be lost): the user's end frees the slot
    // at once. A failed release fails the end (503): an answered end, 200 or 410, is one no client
    // retries, so it would hold the slot until the idle TTL; the retry finds the session closed
    // (410) and releases it.
    await store.updateUsage(owner, releaseEnded(sessionId, now, usage));
    if (outcome.kind === "closed") throw new SessionClosedError(outcome.status);
    // The answer's fields are those of the session it ended: read again when what this instance
    // remembered is of an earlier creation under the id (the same owner: a create key names its user).
    const { meta } = ofCreation(result.state, known.meta.created_at) ? known : await this.known.owned(sessionId, caller, result.state);
    return { sessionId, meta, state: result.state };
  }

  /**
   * Counts the new session against its user's active sessions and, for a caller anyone could be
   * (no ID token, or an anonymous one), against its network address's sessions per hour: both
   * at once. An unkeyed create refused by one gives back what the other took (and, when its user's
   * admission failed with its fate unknown, the count that may have made), off the reply's path:
   * its id is its own and reaches no other request.
   *
   * A `keyed` create's session is admitted again by its repeats (the first still writing it, or
   * failed with its fate unknown), each admitted as the first would be, but counted once: a repeat
   * finding it counted, or paid for by its address, takes nothing, and may go on to create it
   * where another request holding the key was refused. So a keyed create refused gives its own
   * claim back first (`keyed.claim`, in its transaction, awaited) and what its admission took only
   * once that claim went: no repeat took it over, and none can name this session any more (a
   * later one claims the key anew, for an id of its own). A claim a repeat took over, or whose
   * release failed, and a take-over (no claim of its own) leave what they took, whichever request
   * it was: the repeat may be creating the session on it. Those counts err high, never low: the
   * session stops counting at its idle TTL, the token comes back as the bucket refills. A keyed
   * create whose admission failed keeps what either ledger took: its retry creates that session.
   */
  private async admitSession(
    userId: string,
    sessionId: string,
    now: number,
    caller: Identity | undefined,
    address: string | undefined,
    keyed: { readonly claim: CreateClaim | undefined } | undefined,
  ): Promise<void> {
    const { store, usage } = this.options;
    const perHour = usage.addressSessionsPerHour ?? 0;
    const bucket = perHour > 0 && address !== undefined && (!caller || caller.anonymous === true) ? addressKey(address) : undefined;
    // Noted by a hash: an address's bucket is no user's, so no erasure comes for it, and must not name their session.
    const paidFor = keyed ? keyHash("address session", sessionId) : undefined;
    const [user, network] = await Promise.allSettled([
      store.updateUsage(userKey(userId), admitSession(sessionId, now, usage)),
      bucket === undefined ? Promise.resolve({ admitted: true } as const) : store.updateAddressUsage(bucket, admitAddress(now, perHour, paidFor)),
    ]);
    const userAdmitted = user.status === "fulfilled" && user.value.admitted;
    const networkAdmitted = network.status === "fulfilled" && network.value.admitted;
    const giveBackUser = () => store.updateUsage(userKey(userId), releaseSession(sessionId)).catch(() => undefined);
    const giveBackNetwork = () => (bucket === undefined ? undefined : store.updateAddressUsage(bucket, refundAddress(perHour, paidFor)).catch(() => undefined));
    if (!userAdmitted || !networkAdmitted) {
      if (!keyed) {
        // Off the reply's path: a lost give-back only delays a slot (the session stops counting at its idle TTL, the bucket refills).
        if (took(user)) void giveBackUser();
        if (took(network)) void giveBackNetwork();
      } else if (user.status === "fulfilled" && network.status === "fulfilled" && (await this.releaseClaim(keyed.claim))) {
        await Promise.all([took(user) ? giveBackUser() : undefined, took(network) ? giveBackNetwork() : undefined]);
      }
    }
    // The user's admission failed with its fate unknown: it may have counted the session. An
    // unkeyed create's id is its own, fresh, and reaches no retry, and create() writes no session
    // after this failure: kept, the count would hold a slot for the idle TTL for a session that
    // never exists. Released in a transaction sent after the admission's on the same record, so it
    // cannot overtake one still on its way (the memory store applies each call as it is made, the
    // SDK an instance's transactions on a node in order). A keyed create keeps it: its retry
    // creates that session and finds it counted. The address bucket's own unknown fate gives
    // nothing back: a refund of a take that never landed would count the address low.
    if (user.status === "rejected" && !keyed) void giveBackUser();
    if (user.status === "rejected") throw user.reason;
    if (network.status === "rejected") throw network.reason;
    if (!user.value.admitted && user.value.erasing) throw new ErasureInProgressError(seconds(user.value.retryAfterMs));
    if (!user.value.admitted) throw new LimitExceededError("sessions", seconds(user.value.retryAfterMs));
    if (!network.value.admitted) throw new LimitExceededError("address", seconds(network.value.retryAfterMs));
  }

  /**
   * The session a create with `idempotencyKey` names: the key fixes the session id, so whichever
   * request gets there first creates that session, and a repeat replays it once it exists. A repeat
   * that finds another request's claim takes it over in the claim's transaction (`adoptedClaim`):
   * it may create the session where the first was refused, so the first's give-back must leave the
   * key, and with it what the first's admission took, which the repeat's may have found (admitSession).
   */
  private async keyedCreate(
    userId: string,
    templateId: string,
    idempotencyKey: string,
    sessionId: string,
    now: number,
  ): Promise<(CreatedSession & { readonly replayed: true }) | { readonly replayed: false; readonly sessionId: string; readonly claim?: CreateClaim; readonly takenOver?: CreateClaim }> {
    const { store } = this.options;
    const hash = keyHash(`createSession\u0000${userId}`, idempotencyKey);
    const key: CreateKey = { fingerprint: fingerprint(templateId), session_id: sessionId, created_at: now, user_key: userKey(userId) };
    const claimed = await store.claimCreateKey(hash, key);
    // Another request's claim (a repeat, or a reused key): it names its own session, never this id.
    if (claimed.session_id !== sessionId) this.giveBack(sessionId);
    if (claimed.fingerprint !== fingerprint(templateId)) throw new IdempotencyKeyReusedError();
    const existing = await store.readSessionState(claimed.session_id);
    if (!existing) {
      // The session id is this request's own, fresh: the stored key is this claim, not an earlier
      // request's. Else it is another request's claim, which this one took over: the record as it left it.
      return { replayed: false, sessionId: claimed.session_id, ...(claimed.session_id === sessionId ? { claim: { hash, key } } : { takenOver: { hash, key: claimed } }) };
    }
    return { sessionId: claimed.session_id, meta: (await this.known.owned(claimed.session_id, undefined, existing)).meta, replayed: true };
  }

  /**
   * Deletes the create key this request claimed for a session it was then refused (its user being
   * erased, a limit, its template gone). Left, it would name the user and a session never made until
   * its 24 h TTL: past both passes of the erasure that refused it, whose cutoff its claim time is
   * after. Only while the key is still this claim and no repeat took it over, in a transaction: a
   * request that claimed it since keeps it, and a repeat that found it may have created its session
   * meanwhile (the key then stays to its TTL, a retry taking it over again; or, that repeat refused
   * for an erasure too, until its second pass finds no session came of it: refuseTakeOver). Otherwise a retry with
   * the key claims it anew, as a first request would. Awaited (a
   * deployed instance gets no CPU once it has answered); a failure leaves the refusal the answer,
   * and the key to its TTL. True only when the key went: no request can then create this claim's
   * session, so what its admission took may go back (admitSession); kept, or its fate unknown, false.
   */
  private async releaseClaim(claim: CreateClaim | undefined): Promise<boolean> {
    if (!claim) return false;
    return this.options.store.releaseCreateKey(claim.hash, claim.key).catch((error: unknown) => {
      this.options.log.warn("create key release failed", { error: error instanceof Error ? error.name : typeof error });
      return false;
    });
  }

  /**
   * Marks the key this request took over (another request's claim, its session not stored) as
   * refused for the user's erasure: neither request gives it back (the one that claimed it no
   * longer may, this one having perhaps been admitted where it was not; this one holds no claim of
   * its own), and the erasure's second pass deletes the keys so marked, once no session came of
   * them, and no others: a key with no session may be a create whose fate is unknown (`503`), which
   * its retry needs (ErasureService). Only while the record is still the one this take-over left,
   * in a transaction: a repeat that took it over since may be creating its session. Awaited; a
   * failure leaves the refusal the answer, and the key to its TTL.
   */
  private async refuseTakeOver(takenOver: CreateClaim | undefined): Promise<void> {
    if (!takenOver) return;
    await this.options.store.refuseCreateKey(takenOver.hash, takenOver.key).catch((error: unknown) => {
      this.options.log.warn("create key refusal mark failed", { error: error instanceof Error ? error.name : typeof error });
    });
  }

  /** Gives back the placement turn of `sessionId`, drawn by this request and had by no session. */
  private giveBack(sessionId: string): void {
    this.options.giveBackSessionId?.(sessionId);
  }

  private async template(templateId: string): Promise<Template> {
    const cached = this.templates.get(templateId);
    if (cached) return cached;
    const template = await this.options.store.readTemplate(templateId);
    if (!template) throw new TemplateNotFoundError(templateId);
    this.templates.set(templateId, template);
    return template;
  }
}

/** Whether an admission took a slot, and so has one to give back: admitted, and not as counted already. */
function took(settled: PromiseSettledResult<Admission>): boolean {
  return settled.status === "fulfilled" && settled.value.admitted && settled.value.already === undefined;
}
