import type { ConnectionErasure } from "../../connections/connection-erasure";
import type { Log } from "../../log/log";
import type { ErasureRecord } from "../../store/conversation-records";
import type { CreateKey } from "../../store/records";
import type { ConversationStore, ErasureStore, LedgerStore, StateStore, UsageRule } from "../../store/session-store";
import { userKey } from "../ledger/limits";
import { eachPage, inBatches, type BatchBudget } from "../maintenance";
import { againForgotten, beginErasure, clearErasing, finishErasure, forgetSessions, isAbandonedCreateKey, isErasedCreateKey, markErasing, pauseErasure, recordConnections, settleErasure, takeOverErasure, type ErasedAgain } from "./erasure-rules";

export interface ErasureOptions {
  readonly store: Pick<ConversationStore, "scanConversationIndex" | "readUserSessions" | "reaches"> & ErasureStore & Pick<LedgerStore, "updateUsage"> & Pick<StateStore, "readSessionState">;
  readonly clock: () => number;
  readonly log: Log;
  /** The message bucket a user without a usage record starts with (USER_MESSAGES_PER_MINUTE). */
  readonly messagesPerMinute: number;
  /** Longer than a request can run: then the sweep may finish a first pass whose request died. */
  readonly takeOverAfterMs: number;
  /**
   * When the second pass runs after the first: the longest a request that raced the erasure can
   * still write (a claim's lease, and one database deadline for a write already sent).
   */
  readonly finalPassAfterMs: number;
  /** Sessions per query and per deletion. */
  readonly batchSize: number;
  /** What connections between users hold of the user (their connections, pairs, devices): erased in both passes, after the sessions. */
  readonly connections?: ConnectionErasure;
}

export interface ErasureOutcome {
  /** The first pass finished: nothing of the user's is left but what a racing request may still write, which the second pass removes. */
  readonly complete: boolean;
  /** Sessions this run deleted. */
  readonly sessions: number;
  /** When the second pass is due (the sweep runs it at its first run after this). */
  readonly finalPassAt: number;
}

/**
 * How long Firebase Auth's ID tokens are accepted after they are issued: "Firebase ID tokens are
 * short lived and last for an hour" (https://firebase.google.com/docs/auth/admin/manage-sessions).
 * A token issued before its user was deleted is still verified until then: requests do not ask Auth
 * whether their user still exists (verifyIdToken's checkRevoked), which would add a round trip to
 * every message.
 */
export const ID_TOKEN_LIFETIME_MS = 60 * 60 * 1000;

/** Whether the time of a pass is up: checked before each page, so that a pass ends within its request's or run's time. */
type Stopped = () => boolean;

/** Due erasures per query of the sweep: each record is downloaded whole, with the ids of the sessions it deleted. */
const DUE_PER_QUERY = 20;

/**
 * Erases every node that holds a user's content (their sessions with everything under them, their
 * conversation index, their idempotency records; their connections with other users, with the
 * messages in them, and their devices: connections/connection-erasure.ts) and leaves their usage
 * counters, which hold no content and keep their limits. In two passes, both recorded first (`/erasures/{userKey}`):
 * the first deletes everything, while the user's usage record refuses their new sessions and
 * messages; the second, once every request that raced it has ended, deletes again whatever such
 * a request wrote late (a live partial, a copy to `messages`, a summary), then the record. Each
 * step is harmless to repeat, so a crash at any point is finished by a retry or by the sweep.
 */
export class ErasureService {
  constructor(private readonly options: ErasureOptions) {}

  /** Erases `userId`'s data: the first pass now, within `deadline` (epoch ms) if given; the second by the sweep. */
  async erase(userId: string, deadline?: number): Promise<ErasureOutcome> {
    const { store, clock, takeOverAfterMs } = this.options;
    const key = userKey(userId);
    const record = await store.updateErasure(key, beginErasure(userId, clock(), takeOverAfterMs));
    return this.requestPass(key, record, deadline);
  }

  /**
   * Erases the data of a user deleted from Firebase Auth at `deletedAt` (the event's time), within
   * `deadline` as `erase` does. No later event comes for them, but the ID tokens they were issued
   * before stay valid for up to ID_TOKEN_LIFETIME_MS, and an app still open keeps sending them. So
   * the cutoff is when the last of those expires (or now, when that has passed): the user stays
   * marked (their sessions, messages and connection requests refused) until the second pass, which
   * runs after the cutoff and erases what such a token wrote meanwhile (a write admitted before the
   * mark landed, a device). A retried event gives the same cutoff.
   */
  async eraseDeletedUser(userId: string, deletedAt: number, deadline?: number): Promise<ErasureOutcome> {
    const { store, clock, takeOverAfterMs } = this.options;
    const now = clock();
    const key = userKey(userId);
    const record = await store.updateErasure(key, beginErasure(userId, now, takeOverAfterMs, Math.max(now, deletedAt + ID_TOKEN_LIFETIME_MS)));
    return this.requestPass(key, record, deadline);
  }

  /**
   * The sweep: finishes first passes whose request died and runs the second passes that are due,
   * batch after batch until none is left or `budget` is spent (by default, until none is left);
   * returns how many erasures it finished. A due erasure is taken over before its pass runs (see
   * takeOverErasure), so one that fails is due again only after the others: it cannot come back at
   * the head of every batch, run after run, while those behind it wait. A pass stops page by page
   * once `budget.stopped` says so (a user with thousands of sessions outlasts a run), and the next
   * run goes on with it (pauseErasure).
   */
  async finishDue(now: number = this.options.clock(), budget: Omit<BatchBudget, "batchSize"> = { maxBatches: Number.POSITIVE_INFINITY }): Promise<number> {
    const { store } = this.options;
    const stopped: Stopped = budget.stopped ?? (() => false);
    return inBatches({ ...budget, batchSize: DUE_PER_QUERY }, (after) => store.findDueErasures(now, after, DUE_PER_QUERY), async (keys) => {
      let finished = 0;
      for (const key of keys) {
        // Once the step's time is up, the rest stay due for the next run.
        if (stopped()) break;
        if (await this.finishOne(key, now, stopped)) finished += 1;
      }
      return finished;
    });
  }

  /** The pass of `key`'s erasure that is due at `now`: whether it finished the erasure. */
  private async finishOne(key: string, now: number, stopped: Stopped): Promise<boolean> {
    const { store, clock, takeOverAfterMs } = this.options;
    // One user's failure must not stop the others: it is due again once its takeover lapses, for a later run.
    try {
      const taken = await store.updateErasure(key, takeOverErasure(now, takeOverAfterMs));
      if (taken?.phase === "settling") return await this.secondPass(key, taken, now, stopped);
      // A first pass stopped stays `erasing`, the user marked: the next run scans again what is left.
      if (taken && !(await this.firstPass(key, taken, stopped)).complete) await store.updateErasure(key, pauseErasure(taken, clock()));
    } catch (error) {
      this.options.log.warn("erasure sweep failed for one user", { error: error instanceof Error ? error.name : typeof error });
    }
    return false;
  }

  /**
   * A request's first pass, within `deadline`. Stopped when that time was up, the pass has ended
   * (it starts no page after, and every page it started is awaited), and the request runs no more:
   * so it hands its takeover back (pauseErasure), due at once, as a run of the sweep does with a
   * pass it stopped. Else the sweep would leave it, and the user refused `409
   * ERASURE_IN_PROGRESS`, until the takeover lapsed (the function's timeout from the request's
   * start: up to an hour, where a run comes every 15 minutes). A request that began the erasure
   * again since has its own record, which the hand-back leaves alone. Should the hand-back fail,
   * the takeover lapses as before.
   */
  private async requestPass(key: string, record: ErasureRecord, deadline: number | undefined): Promise<ErasureOutcome> {
    const { store, clock, log } = this.options;
    const outcome = await this.firstPass(key, record, this.until(deadline));
    if (!outcome.complete) {
      await store.updateErasure(key, pauseErasure(record, clock())).catch((error: unknown) => {
        log.warn("erasure hand-back to the sweep failed", { error: error instanceof Error ? error.name : typeof error });
      });
    }
    return outcome;
  }

  /** A request's time: up once `deadline` (epoch ms) has passed; never without one. */
  private until(deadline: number | undefined): Stopped {
    const { clock } = this.options;
    return deadline === undefined ? () => false : () => clock() > deadline;
  }

  private async firstPass(key: string, record: ErasureRecord, stopped: Stopped): Promise<ErasureOutcome> {
    const { store, clock, log, messagesPerMinute, finalPassAfterMs } = this.options;
    // What an earlier attempt of this pass deleted (recorded before it was) is forgotten with the
    // mark: its deletion may have landed with its usage change lost, and no scan here finds it again.
    await store.updateUsage(key, markErasing(record.requested_at, messagesPerMinute, this.forget(Object.keys(record.sessions ?? {}))));
    const sessions = await this.deleteSessions(key, record, stopped, false);
    const connections = sessions.stopped ? { count: 0, stopped: true } : await this.eraseConnections(key, record, stopped, true);
    if (connections.stopped || (await this.deleteCreateKeys(key, record, undefined, stopped))) {
      log.info("erasure", { pass: 1, complete: false, sessions: sessions.count, connections: connections.count });
      return { complete: false, sessions: sessions.count, finalPassAt: record.due_at };
    }
    // The second pass comes once no request admitted up to the cutoff can still write. A cutoff
    // still ahead (a deleted Auth user's, see eraseDeletedUser) keeps the user refused until then:
    // that pass clears the mark.
    const now = clock();
    const finalPassAt = Math.max(now, record.requested_at) + finalPassAfterMs;
    await store.updateErasure(key, settleErasure(record.requested_at, finalPassAt));
    if (record.requested_at <= now) await store.updateUsage(key, clearErasing(record.requested_at));
    log.info("erasure", { pass: 1, complete: true, sessions: sessions.count, connections: connections.count });
    return { complete: true, sessions: sessions.count, finalPassAt };
  }

  /**
   * Deletes again what the first pass deleted, and anything created before the request since, and
   * the user's create keys up to the cutoff and those refused for the erasure that no session came
   * of (deleteCreateKeys); then the record. Page by page until `stopped`: then what it
   * deleted again leaves the record, and the next run goes on with the rest (pauseErasure). `now`:
   * the run's time. A session created after the cutoff under a recorded id stays (eraseBatch).
   */
  private async secondPass(key: string, record: ErasureRecord, now: number, stopped: Stopped): Promise<boolean> {
    const { store, clock, batchSize, connections, log, finalPassAfterMs } = this.options;
    const again: { sessions: string[]; connections: string[] } = { sessions: [], connections: [] };
    const pause = async (erased: ErasedAgain) => {
      await store.updateErasure(key, pauseErasure(record, clock(), erased));
      log.info("erasure", { pass: 2, complete: false, sessions: erased.sessions.length });
      return false;
    };
    const recorded = Object.keys(record.sessions ?? {});
    for (let i = 0; i < recorded.length; i += batchSize) {
      if (stopped()) return pause(again);
      const page = recorded.slice(i, i + batchSize);
      await this.eraseBatch(key, record, page, { recording: false, again: true });
      again.sessions.push(...page);
    }
    if ((await this.deleteSessions(key, record, stopped, true)).stopped) return pause(again);
    const recordedConnections = connections ? Object.entries(record.connections ?? {}) : [];
    for (let i = 0; i < recordedConnections.length; i += batchSize) {
      if (stopped()) return pause(again);
      const page = recordedConnections.slice(i, i + batchSize);
      await connections?.eraseRecorded(record.user_id, Object.fromEntries(page));
      again.connections.push(...page.map(([id]) => id));
    }
    if ((await this.eraseConnections(key, record, stopped, false)).stopped) return pause(again);
    if (await this.deleteCreateKeys(key, record, now - finalPassAfterMs, stopped)) return pause(again);
    // The first pass cleared its own mark; an earlier request's that landed since goes now, while
    // the record that lets the sweep come back still exists (see clearErasing).
    await store.updateUsage(key, clearErasing(record.requested_at));
    const finished = await store.updateErasure(key, finishErasure(record.requested_at));
    log.info("erasure", { pass: 2, complete: finished, sessions: recorded.length });
    return finished;
  }

  /**
   * Every session of the user created up to the request: those of their index (entries whose
   * session is gone included), then those only a query on `user_id` finds (created before the
   * index). Page by page, each recorded before it is deleted (`again` in the second pass: see
   * eraseBatch); `stopped` when the pass's time was up first.
   */
  private async deleteSessions(key: string, record: ErasureRecord, stopped: Stopped, again: boolean): Promise<{ count: number; stopped: boolean }> {
    const { store, batchSize } = this.options;
    const userId = record.user_id;
    const sources = [
      (after: string | undefined) => store.scanConversationIndex(userId, after, batchSize),
      async (after: string | undefined) => (await store.readUserSessions(userId, after, batchSize)).map((session) => ({ id: session.id, createdAt: session.meta.created_at })),
    ];
    let count = 0;
    for (const scan of sources) {
      const ended = await eachPage(batchSize, stopped, scan, (session) => session.id, async (page) => {
        // What the user created after asking is theirs to keep.
        const ids = page.filter((session) => session.createdAt <= record.requested_at).map((session) => session.id);
        count += await this.eraseBatch(key, record, ids, { recording: true, again });
      });
      if (ended === "stopped") return { count, stopped: true };
    }
    return { count, stopped: false };
  }

  /**
   * The user's create keys that the erasure deletes: in both passes, those last claimed or taken
   * over up to the cutoff, whatever their session (isErasedCreateKey); in the second, given `over`
   * (the pass's time less a lease and a database deadline), also those claimed after it, marked
   * refused for the erasure, whose session does not exist, and whose requests are all over
   * (isAbandonedCreateKey): a create refused for the erasure whose claim the client's repeat took
   * over, refused too, is given back by neither (the first no longer may: the repeat could have
   * been admitted where it was not; the repeat holds no claim of its own), so the repeat marks it
   * (SessionService). A key a repeat took over after the cutoff stays in the first pass, though
   * first claimed before it: that repeat may be admitted once the mark is cleared, and its retries
   * replay the session it creates. An unmarked key with no session stays: a create whose write
   * failed with its fate unknown keeps it for its retry. A key whose session exists is a session
   * the user keeps. Each session read on its own database instance (create keys are on the home
   * one); a session on one this store does not reach may exist, and its key stays. Each key
   * deleted only while unchanged (deleteUnchangedCreateKey): a repeat taking it over between the
   * read and the delete writes its time into it, and may be creating its session. Page by page;
   * true when `stopped` first (the pass starts them over next run: what it deleted is gone).
   */
  private async deleteCreateKeys(key: string, record: ErasureRecord, over: number | undefined, stopped: Stopped): Promise<boolean> {
    const { store, batchSize } = this.options;
    const cutoff = record.requested_at;
    const abandoned = async (claim: CreateKey): Promise<boolean> =>
      over !== undefined && isAbandonedCreateKey(claim, cutoff, over) && store.reaches(claim.session_id) && !(await store.readSessionState(claim.session_id));
    const ended = await eachPage(batchSize, stopped, (after) => store.readUserCreateKeys(key, after, batchSize), (found) => found.hash, async (page) => {
      await Promise.all(
        page.map(async ({ hash, key: claim }) => {
          if (isErasedCreateKey(claim, cutoff) || (await abandoned(claim))) await store.deleteUnchangedCreateKey(hash, claim);
        }),
      );
    });
    return ended === "stopped";
  }

  /** The user's connections and devices, up to the request; each connection recorded before it is deleted when `record`. */
  private async eraseConnections(key: string, record: ErasureRecord, stopped: Stopped, recording: boolean): Promise<{ count: number; stopped: boolean }> {
    const { connections, store } = this.options;
    if (!connections) return { count: 0, stopped: false };
    return connections.erase(record.user_id, record.requested_at, {
      record: async (erased) => {
        if (recording) await store.updateErasure(key, recordConnections(erased));
      },
      stopped,
    });
  }

  /**
   * Deletes the user's sessions `ids`, recorded first when `recording`, then forgets them in the
   * usage record; returns how many it deleted. The first pass deletes them whole, in one update
   * (the mark refuses every create meanwhile). The second pass (`again`) keeps a session created
   * after the cutoff under one of the ids, and its count: the first pass deleted the session a
   * keyed create's write left (its answer lost), and the retry with that key, taking it over after
   * the cutoff, may create it again under the same id (the key fixes it) once the mark is cleared,
   * counted anew; that session is the user's, with its key (deleteCreateKeys). So each session is
   * decided on as stored when it is deleted (deleteUserSessionsUpTo): a check before a removal of
   * the whole would let a create landing between them be deleted. And only what that deletion
   * removed is forgotten, with what is counted from up to the cutoff (againForgotten): the retry
   * counts its session a round trip before its write lands, so an id found empty may be one
   * counted for a session on its way.
   */
  private async eraseBatch(key: string, record: ErasureRecord, ids: readonly string[], step: { readonly recording: boolean; readonly again: boolean }): Promise<number> {
    if (ids.length === 0) return 0;
    const { store } = this.options;
    if (step.recording) await store.recordErasedSessions(key, ids);
    if (!step.again) {
      await store.deleteUserSessions(record.user_id, ids);
      await store.updateUsage(key, this.forget(ids));
      return ids.length;
    }
    const deleted = await store.deleteUserSessionsUpTo(record.user_id, ids, record.requested_at);
    await store.updateUsage(key, (usage) => this.forget(againForgotten(usage, ids, deleted, record.requested_at))(usage));
    return deleted.size;
  }

  /**
   * Forgets the deleted sessions `ids` in the usage record now. Their messages' open reservations
   * are kept apart until they lapse: `takeOverAfterMs` is longer than a request can run (the
   * function's timeout, as the ledger's policy has it), so none still running lapses by it.
   */
  private forget(ids: readonly string[]): UsageRule<undefined> {
    const { clock, takeOverAfterMs } = this.options;
    return forgetSessions(ids, clock(), { requestTimeoutMs: takeOverAfterMs });
  }
}
