import type { Identity } from "../auth/identity";
import { ofCreation, type ChatMessage, type GenerationSettings, type SessionMeta, type SessionState } from "../store/records";
import { StoreUnavailableError } from "../store/errors";
import type { ConversationStore, HistoryStore, HistoryWindow, LedgerStore, StateStore } from "../store/session-store";
import { lastMessages, windowMessages } from "./prompt/context-window";
import { ForbiddenError, SessionNotFoundError } from "./errors";
import { userKey } from "./ledger/limits";
import { WarmCache } from "./warm-cache";

/**
 * What an instance knows of a session between requests: the immutable fields, and the last
 * messages as of a known exchange count (`tail`), reused only when the database still reports
 * exactly that count, for the same creation of the session (records.ts `ofCreation`).
 */
export interface KnownSession {
  readonly id: string;
  readonly meta: SessionMeta;
  /** Where the owner's usage is kept: a hash, worth computing once. */
  readonly userKey: string;
  readonly tail?: { readonly exchangeCount: number; readonly messages: readonly ChatMessage[] };
}

/**
 * History messages read and kept warm: the window, and with a summary the exchange before it too,
 * so that what leaves the window with the next message is at hand for its summary call, unread.
 */
export function heldMessages(settings: GenerationSettings): number {
  return windowMessages(settings) + (settings.summary ? 2 : 0);
}

/**
 * The sessions this instance has served: their fixed fields and recent history, kept warm, never
 * trusted past the database. Asked for by what changes a session (a message, streamed or not, an
 * end, a create's replay), never by a plain read (a GET: ConversationService), which is why a
 * session this instance cannot reach is refused here as unavailable rather than not found.
 */
export class KnownSessions {
  private readonly cache: WarmCache<string, KnownSession>;

  constructor(
    private readonly store: Pick<StateStore, "readSessionMeta" | "guessSession" | "prepareSession"> &
      Pick<HistoryStore, "readWindow"> &
      Pick<LedgerStore, "guessUsage" | "prepareUsage"> &
      Pick<ConversationStore, "reaches">,
    cache: { readonly maxSessions: number; readonly sessionTtlMs: number },
    clock: () => number,
  ) {
    this.cache = new WarmCache(cache.maxSessions, cache.sessionTtlMs, clock);
  }

  /**
   * The session's fixed fields, from the warm cache or read, for a `caller` it belongs to (a
   * signed-in caller may act only on their own sessions; nothing else about another user's
   * session is revealed). A signed-in caller's usage record is the one a message's admission
   * will need: on a miss it is fetched beside the fields. `seen`: the session's state as just
   * read; a remembered session of another creation than that state's is read again.
   */
  async owned(sessionId: string, caller: Identity | undefined, seen?: SessionState): Promise<KnownSession> {
    const cached = this.cache.get(sessionId);
    if (cached && (seen === undefined || ofCreation(seen, cached.meta.created_at))) {
      ownedBy(cached.meta, caller);
      return cached;
    }
    // Forgotten before the read: should that fail, nothing of the other creation is left to answer from.
    if (cached) this.forget(sessionId);
    return this.read(sessionId, caller);
  }

  /** Forgets what is remembered of a session: found to be another creation under its id than the state's. */
  forget(sessionId: string): void {
    this.cache.delete(sessionId);
  }

  /** Remembers a session, with its history as of `tail` when known. */
  remember(session: KnownSession): void {
    this.cache.set(session.id, session);
  }

  /** Remembers the session's history as of `exchangeCount` exchanges (the window's messages and those it holds besides). */
  rememberTail(session: KnownSession, exchangeCount: number, messages: readonly ChatMessage[]): void {
    this.cache.set(session.id, { ...session, tail: { exchangeCount, messages: lastMessages(messages, heldMessages(session.meta.settings)) } });
  }

  /**
   * The window as of `exchangeCount` exchanges (the count the claim saw): the warm tail when it is
   * as of that count, else the history read ahead when it reaches that far, else a read.
   */
  async windowAsOf(session: KnownSession, exchangeCount: number, readAhead: Promise<HistoryWindow> | undefined): Promise<HistoryWindow> {
    if (session.tail?.exchangeCount === exchangeCount) return { messages: [...session.tail.messages], through: exchangeCount };
    const window = readAhead ? await readAhead : undefined;
    if (window && window.through >= exchangeCount) return window;
    return this.readWindow(session);
  }

  /** The history a prompt of the session may need, read from the database. */
  readWindow(session: KnownSession): Promise<HistoryWindow> {
    return this.store.readWindow(session.id, heldMessages(session.meta.settings));
  }

  /**
   * A session this instance does not know: its fields read, with what a message transacts on (its
   * state, the caller's usage record) followed from beside that read, not after it. On guesses,
   * confirmed once the session is found to be the caller's and withdrawn otherwise: requests
   * naming sessions that do not exist (404), or that belong to others (403), would push out what
   * the adapter follows of the sessions this instance serves (an anonymous sign-in mints callers
   * at will). Remembered only then, for the same reason.
   *
   * A session on a database instance past this instance's list (docs/sharding.md: during the
   * rollout that appends one, an updated instance created it) is refused as the database being
   * unavailable (503, retried) before any read or guess: its fields would be read from the home
   * instance, which does not hold it, and the 404 would tell the client the session is gone (the
   * page closes the conversation; an end would never release its active-session slot). The retry
   * reaches an updated instance. A forged id naming such a position gets the same 503.
   */
  private async read(sessionId: string, caller: Identity | undefined): Promise<KnownSession> {
    if (!this.store.reaches(sessionId)) throw new StoreUnavailableError("read session (its instance is past this list)");
    const usage = caller ? userKey(caller.uid) : undefined;
    const { store } = this;
    const meta = await ownedMeta(store, sessionId, caller, usage === undefined ? undefined : { guess: () => store.guessUsage(usage), confirm: () => { store.prepareUsage(usage); } });
    const session = { id: sessionId, meta, userKey: userKey(meta.user_id) };
    this.cache.set(sessionId, session);
    return session;
  }
}

/**
 * The fields of session `sessionId`, when `caller` may act on it (anyone without a token, else its
 * owner only), read with the session's state followed from beside the read, not after it, and
 * `also` (another follow the request will need) likewise: each on a guess, confirmed once the
 * session is found to be the caller's and withdrawn otherwise, so that requests naming sessions
 * that do not exist (404) or that are another user's (403) take no place among the follows of the
 * sessions this instance serves (for KnownSessions and ConversationService alike).
 */
export async function ownedMeta(
  store: Pick<StateStore, "readSessionMeta" | "guessSession" | "prepareSession">,
  sessionId: string,
  caller: Identity | undefined,
  also?: { readonly guess: () => () => void; readonly confirm: () => void },
): Promise<SessionMeta> {
  const withdraws = [...(also === undefined ? [] : [also.guess()]), store.guessSession(sessionId)];
  let meta: SessionMeta;
  try {
    const found = await store.readSessionMeta(sessionId);
    if (!found) throw new SessionNotFoundError(sessionId);
    meta = ownedBy(found, caller);
  } catch (error) {
    for (const withdraw of withdraws) withdraw();
    throw error;
  }
  store.prepareSession(sessionId);
  also?.confirm();
  return meta;
}

/** `meta`, when `caller` may act on its session: anyone without a token, else its owner only. */
function ownedBy(meta: SessionMeta, caller: Identity | undefined): SessionMeta {
  if (caller && caller.uid !== meta.user_id) throw new ForbiddenError("this session belongs to another user");
  return meta;
}
