import { namesCaller, type Identity } from "../../auth/identity";
import { entryOf, type ConversationEntry, type ConversationPosition, type ListedConversation, type PositionedMessage, type StoredConversation } from "../../store/conversation-records";
import type { PartialReply, SessionMeta, SessionState, SessionStatus, TokenUsage, UserUsage } from "../../store/records";
import { NO_USAGE } from "../ledger/token-usage";
import type { ConversationStore, ErasureStore, HistoryStore, LedgerStore, StateStore } from "../../store/session-store";
import { StoreDataError } from "../../store/errors";
import { messageKey } from "../../store/message-keys";
import { ForbiddenError, SessionNotFoundError } from "../errors";
import { userKey } from "../ledger/limits";
import { ownedMeta } from "../known-sessions";
import { expiredIfIdle, type SessionPolicy } from "../session-rules";
import { conversationTitle } from "./title";

/** The most stored messages a read looks back before its page for the replies that complete live partials (see `live`). */
const LOOKBACK_MESSAGES = 200;

/** Index entries read at once by `completes` (small records, unlike the sessions an export reads). */
const INDEX_SCAN_PAGE = 100;

export interface ConversationServiceOptions {
  readonly store: Pick<StateStore, "readSessionMeta" | "guessSession" | "prepareSession" | "readSessionState"> &
    Pick<HistoryStore, "readWindow" | "readMessages"> &
    Pick<ConversationStore, "listConversations" | "readPartialReplies" | "readUserSessions" | "scanConversationIndex" | "reaches"> &
    Pick<ErasureStore, "readErasedSessions"> &
    Pick<LedgerStore, "readUsage">;
  readonly clock: () => number;
  readonly policy: SessionPolicy;
  /** A partial reply not written for longer than this belongs to a request that died (the function's timeout). */
  readonly partialStaleMs: number;
}

/** A conversation as a list shows it. */
export interface ConversationSummary {
  readonly sessionId: string;
  readonly templateId: string;
  readonly templateName: string;
  /** As a request would find it now: an active session idle past its TTL is expired. */
  readonly status: SessionStatus;
  readonly createdAt: number;
  readonly lastActivity: number;
  readonly messageCount: number;
  readonly title?: string;
}

export interface ConversationPage {
  readonly conversations: readonly ConversationSummary[];
  /** Where the next page starts; absent on the last page. */
  readonly next?: ConversationPosition;
}

export type { PositionedMessage };

/**
 * A reply being written, with its key (its request's random claim owner, revealing nothing): what
 * ties it to the reply that completes it, so that a client follows one reply while others land.
 */
export interface LivePartial extends PartialReply {
  readonly key: string;
}

/** One conversation, read by its owner: its fields, a page of its messages, the replies being written. */
export interface ConversationView {
  readonly summary: ConversationSummary;
  /** What the session's model calls used so far, summary calls included. */
  readonly usage: TokenUsage;
  /** In conversation order; the newest page unless `before` was given. */
  readonly messages: readonly PositionedMessage[];
  /** Replies being written (first page only), as a client listening to the database would show them, with their keys. */
  readonly partials: readonly LivePartial[];
  /** The position the next (older) page ends before; absent when this page starts at the first message. */
  readonly before?: number;
}

/** The rules of reading a user's own conversations: the list, one conversation, everything for an export. */
export class ConversationService {
  constructor(private readonly options: ConversationServiceOptions) {}

  /**
   * The user these requests act for: the signed-in caller, or without a token `userId` (trusted,
   * as every route trusts a `user_id` where no token is required). A different `userId` beside a
   * token is refused, as `createSession` refuses it.
   */
  owner(caller: Identity | undefined, userId: string | undefined): string {
    if (caller && userId !== undefined && !namesCaller(userId, caller)) throw new ForbiddenError("user_id does not match the signed-in user");
    const owner = caller?.uid ?? userId;
    if (owner === undefined) throw new Error("a request for a user's conversations needs a caller or a user_id");
    return owner;
  }

  /**
   * A page of the user's conversations, newest activity first, after `after`. Read beside it, the
   * sessions an erasure under way has deleted are left out: a message's copy that lands after the
   * erasure's first pass writes their entry back, whole when it is exchange 1's (which carries the
   * entry's head), until the second pass deletes it again. The page then holds fewer. Not an entry
   * created after the erasure's cutoff: a keyed create's retry creates its session again under the
   * id its key fixes, which the first pass deleted, and the user keeps it (so does the second pass).
   * A late copy of the erased session may write its fields over that session's entry, so such an
   * entry is listed from the session's own state (see createdAgain).
   */
  async list(userId: string, limit: number, after?: ConversationPosition): Promise<ConversationPage> {
    const { store } = this.options;
    // One more than the page: whether a next page exists, without a query to find out.
    const [found, erased] = await Promise.all([store.listConversations(userId, limit + 1, after), store.readErasedSessions(userKey(userId))]);
    const page = found.slice(0, limit);
    const last = page.at(-1);
    const now = this.options.clock();
    const shown = erased ? (await Promise.all(page.map(async (listed) => (erased.ids.has(listed.sessionId) ? this.createdAgain(listed, erased.requestedAt) : listed)))).filter((listed) => listed !== undefined) : page;
    const judged = await this.judgeIdle(shown, now);
    return {
      conversations: shown.map(({ sessionId, entry }) => this.listed(sessionId, entry, judged.get(sessionId) ?? this.indexStatus(entry, now))),
      ...(found.length > limit && last ? { next: { lastActivity: last.entry.last_activity, sessionId: last.sessionId } } : {}),
    };
  }

  /**
   * The entry of an id the erasure under way deleted, as the session under it now has it: none
   * when no session was created there after the cutoff (`requestedAt`). A late copy of the erased
   * session (a message's, sent before the first pass) writes its fields over the entry of the one
   * a keyed create's retry created again under the id: exchange 1's head (its title, its
   * `created_at`), its count and activity. So the entry is read from the session's own state, its
   * title from the entry only when its `created_at` says this creation wrote it, else from its own
   * first message, until the second pass writes the entry again from the session. Rare (ids an
   * erasure recorded, while it runs): a read each. A session on its way (the retry writes the
   * entry first) or out of reach keeps its entry when that says created after the cutoff.
   */
  private async createdAgain(listed: ListedConversation, requestedAt: number): Promise<ListedConversation | undefined> {
    const { store } = this.options;
    const { sessionId, entry } = listed;
    const state = await store.readSessionState(sessionId).catch(() => null);
    if (state?.created_at === undefined) return entry.created_at > requestedAt ? listed : undefined;
    if (state.created_at <= requestedAt) return undefined;
    const own = entry.created_at === state.created_at;
    const opening = !own && state.message_count > 0 ? await store.readMessages(sessionId, 1, 1).catch(() => []) : [];
    const title = own ? entry.title : opening[0]?.role === "user" ? conversationTitle(opening[0].content) : undefined;
    return { sessionId, entry: entryOf({ template_id: entry.template_id, template_name: entry.template_name, created_at: state.created_at }, state, title) };
  }

  /**
   * One conversation of `caller`'s (or anyone's without a token, as the other routes): another
   * user's is refused as `sendMessage` refuses it, revealing nothing more. Its messages are read
   * across the journal, so a client never sees a gap after what `sendMessage` answered.
   */
  async read(sessionId: string, caller: Identity | undefined, page: { readonly limit: number; readonly before?: number }): Promise<ConversationView> {
    const { store } = this.options;
    const meta = await this.owned(sessionId, caller);
    const { before, limit } = page;
    const [state, read, opening, partials] = await Promise.all([
      store.readSessionState(sessionId),
      before === undefined ? this.newest(sessionId, limit) : this.before(sessionId, before, limit),
      store.readMessages(sessionId, 1, 1),
      before === undefined ? store.readPartialReplies(sessionId) : Promise.resolve({}),
    ]);
    if (!state) throw new SessionNotFoundError(sessionId);
    const messages = before === undefined ? await this.newestWhole(sessionId, read, state.message_count, limit) : read;
    const oldest = messages[0]?.position;
    const title = opening[0]?.role === "user" ? conversationTitle(opening[0].content) : undefined;
    return {
      summary: this.summary(sessionId, meta, state, title),
      usage: state.usage ?? NO_USAGE,
      messages,
      partials: await this.live(sessionId, partials, state, messages),
      ...(oldest !== undefined && oldest > 1 ? { before: oldest } : {}),
    };
  }

  /**
   * Every session of the user, one at a time in id order after `after` (instance by instance
   * when sharded: the store's order), read `pageSize` at a time:
   * an export holds one page in memory, however much the user has.
   */
  async *sessions(userId: string, after: string | undefined, pageSize: number): AsyncGenerator<StoredConversation> {
    let cursor = after;
    for (;;) {
      const page = await this.options.store.readUserSessions(userId, cursor, pageSize);
      for (const session of page) yield whole(session);
      if (page.length < pageSize) return;
      cursor = page.at(-1)?.id;
    }
  }

  /**
   * Whether `sessions(userId, after, ...)` reads every session of the user this function instance
   * is asked for. Not when the cursor (`after`) or the user's index names a session on a database
   * instance past this instance's list: during the rollout that appends an instance
   * (docs/sharding.md), a function instance still on the old list reads none of the new instance's
   * sessions, and the export would end without them as if complete. The index is read whole, a
   * page at a time, as the erasure reads it to find the same sessions.
   */
  async completes(userId: string, after: string | undefined): Promise<boolean> {
    const { store } = this.options;
    if (after !== undefined && !store.reaches(after)) return false;
    for (let from: string | undefined; ; ) {
      const page = await store.scanConversationIndex(userId, from, INDEX_SCAN_PAGE);
      if (page.some(({ id }) => !store.reaches(id))) return false;
      if (page.length < INDEX_SCAN_PAGE) return true;
      from = page.at(-1)?.id;
    }
  }

  /** The user's usage record (their counters), or null. */
  usage(userId: string): Promise<UserUsage | null> {
    return this.options.store.readUsage(userKey(userId));
  }

  /**
   * A session's state as a request would find it now: one idle past the TTL is expired, with the
   * end its expiry records, though the sweep has not recorded it yet.
   */
  asNow(state: SessionState): SessionState {
    return expiredIfIdle(state, this.options.clock(), this.options.policy);
  }

  /**
   * The status of the entries that look idle past the TTL while their index says active, as a
   * request would find it: by the session's own rule on its state, which an index entry cannot
   * apply (it carries no claims; a message that arrived before the TTL and is still answered keeps
   * the session active). The sweep records expiry, so such entries are few: one read each, all at
   * once, and none (no round trip more) when the page has none. A session gone meanwhile (erased,
   * or a create that never stored it), or whose state cannot be read, keeps the status its entry gives.
   */
  private async judgeIdle(page: readonly ListedConversation[], now: number): Promise<ReadonlyMap<string, SessionStatus>> {
    const idle = page.filter(({ entry }) => entry.closed === undefined && entry.status === "active" && this.indexStatus(entry, now) === "expired");
    if (idle.length === 0) return new Map();
    // A read that fails (the session's instance out of reach) leaves its entry's status, as a
    // session gone does: the list is the home instance's read, and one instance down must not fail it.
    const states = await Promise.all(idle.map(({ sessionId }) => this.options.store.readSessionState(sessionId).catch(() => null)));
    return new Map(idle.flatMap(({ sessionId }, i) => {
      const state = states[i];
      return state ? [[sessionId, expiredIfIdle(state, now, this.options.policy).status] as const] : [];
    }));
  }

  /** The status an index entry gives at `now`: an active session idle past the TTL is expired. */
  private indexStatus(entry: ConversationEntry, now: number): SessionStatus {
    // Once closed, closed for good, whatever a late copy wrote into `status`.
    if (entry.closed !== undefined) return entry.closed;
    return entry.status === "active" && now - entry.last_activity > this.options.policy.idleTtlMs ? "expired" : entry.status;
  }

  /**
   * A closed entry's figures are those its closing copies wrote where no earlier commit's copy
   * writes (a late one sets `message_count` and `last_activity` back, and a closed session has no
   * next copy to set them right); entries closed before those fields existed show their own.
   */
  private listed(sessionId: string, entry: ConversationEntry, status: SessionStatus): ConversationSummary {
    const closed = entry.closed !== undefined;
    return {
      sessionId,
      templateId: entry.template_id,
      templateName: entry.template_name,
      status,
      createdAt: entry.created_at,
      lastActivity: (closed ? entry.closed_activity : undefined) ?? entry.last_activity,
      messageCount: (closed ? entry.closed_count : undefined) ?? entry.message_count,
      ...(entry.title === undefined ? {} : { title: entry.title }),
    };
  }

  private summary(sessionId: string, meta: SessionMeta, state: SessionState, title: string | undefined): ConversationSummary {
    return {
      sessionId,
      templateId: meta.template_id,
      templateName: meta.template_name,
      status: this.asNow(state).status,
      createdAt: meta.created_at,
      lastActivity: state.last_activity,
      messageCount: state.message_count,
      ...(title === undefined ? {} : { title }),
    };
  }

  /** The session's fields, for a `caller` it belongs to (ownedMeta: its state followed only then). */
  private owned(sessionId: string, caller: Identity | undefined): Promise<SessionMeta> {
    return ownedMeta(this.options.store, sessionId, caller);
  }

  /** The newest `limit` messages: the window, which merges the journal and never ends in a gap. */
  private async newest(sessionId: string, limit: number): Promise<PositionedMessage[]> {
    const { messages, through } = await this.options.store.readWindow(sessionId, limit);
    const start = 2 * through - messages.length + 1;
    return messages.map((message, i) => ({ position: start + i, message }));
  }

  /**
   * The newest page, the window's when it is whole: `limit` messages (or all there are) up to
   * the session's count, read beside it. The window keeps only the messages after its last gap
   * (what a prompt needs, its reads given up on after a few tries), and a message missing at its
   * end moves its numbering; so a window short of that, or short of the count (a commit landing
   * between the two reads, or the newest messages missing), is read again across those
   * positions as any other page is, which tells a copy on its way from a message removed from
   * the store: that is bad stored data (StoreDataError), as every read of a page it falls in
   * answers it. A whole window, the usual case, costs no read more.
   */
  private async newestWhole(sessionId: string, page: PositionedMessage[], count: number, limit: number): Promise<PositionedMessage[]> {
    const last = page.at(-1)?.position ?? 0;
    if (last >= 2 * count && page.length === Math.min(limit, last)) return page;
    const end = Math.max(last, 2 * count);
    const first = Math.max(1, end - limit + 1);
    const messages = await this.options.store.readMessages(sessionId, first, end);
    return messages.map((message, i) => ({ position: first + i, message }));
  }

  /** The `limit` messages before position `before`. */
  private async before(sessionId: string, before: number, limit: number): Promise<PositionedMessage[]> {
    const first = Math.max(1, before - limit);
    const messages = await this.options.store.readMessages(sessionId, first, before - 1);
    return messages.map((message, i) => ({ position: first + i, message }));
  }

  /**
   * The partials a listening client would show (docs/api.md, live partial replies), none once the
   * session is closed: not completed by a stored reply (which carries the partial's key), not left by a request that died. A reply
   * stored without a key (before replies carried them) hides every partial it comes after, as the
   * count rule did: it may be theirs. The replies after the earliest live partial's `seq_after`
   * are the page's (read across the journal, so a reply committed and not yet copied counts),
   * and those before the page read when it does not reach back so far (at most
   * LOOKBACK_MESSAGES: a partial older than that is taken as overtaken, as the count rule took it).
   */
  private async live(sessionId: string, partials: Readonly<Record<string, PartialReply>>, state: SessionState, page: readonly PositionedMessage[]): Promise<LivePartial[]> {
    const now = this.options.clock();
    // A closed session is answering nothing: a partial written after its closing copy removed
    // them (a message cut off by an end on another instance, still running) is never stored.
    if (expiredIfIdle(state, now, this.options.policy).status !== "active") return [];
    const fresh = Object.entries(partials).filter(([, partial]) => now - partial.updated_at <= this.options.partialStaleMs);
    if (fresh.length === 0) return [];
    const pageFrom = page[0]?.position ?? 2 * state.message_count + 1;
    const wanted = Math.max(1, 2 * Math.min(...fresh.map(([, partial]) => partial.seq_after)) + 1, pageFrom - LOOKBACK_MESSAGES);
    const earlier = wanted < pageFrom ? await this.options.store.readMessages(sessionId, wanted, pageFrom - 1) : [];
    // A hole in what was read (a copy not landed yet) leaves the replies after it known, not those before.
    const known = earlier.length === pageFrom - wanted ? wanted : pageFrom;
    const replies = [...earlier.map((message, i) => ({ position: wanted + i, message })), ...page].filter(({ position, message }) => position >= known && message.role === "assistant");
    return fresh
      .filter(([key, partial]) => {
        // The count rule where the replies after it are not all known.
        if (2 * partial.seq_after + 1 < known) return state.message_count <= partial.seq_after;
        return !replies.some(({ position, message }) => position > 2 * partial.seq_after && (message.partial === undefined || message.partial === key));
      })
      .map(([key, partial]) => ({ key, ...partial }))
      // A stable order while they grow (a key never changes, `updated_at` does): a client that
      // takes the last one keeps the same one.
      .sort((a, b) => a.seq_after - b.seq_after || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }
}

/**
 * `session` as an export gives it: its messages are read in one snapshot with its state (the
 * journal's exchanges merged), so every position up to twice its count is there, none on its way.
 * One missing was removed from the store (by hand, or lost by an older version): bad stored data
 * (StoreDataError), as every read of a page it falls in answers it, never a session written with
 * a gap in its history. The part ends there with the error (export-writer.ts).
 */
function whole(session: StoredConversation): StoredConversation {
  let expected = 1;
  for (const { position } of session.messages) {
    if (position > expected) break;
    if (position === expected) expected += 1;
  }
  if (expected <= 2 * session.state.message_count) {
    throw new StoreDataError(`userSessions/${session.id}/messages/${messageKey(expected)}`, "missing, though the session's message_count includes it");
  }
  return session;
}
