import type { ErasureRecord, ErasureRule } from "../../store/conversation-records";
import type { CreateKey, UserUsage } from "../../store/records";
import { isRefusedCreateKey, lastClaimedAt, type UsageRule } from "../../store/session-store";
import { keptApart, type UsagePolicy } from "../ledger/limits";

/*
 * The rules of an erasure, as pure functions of the stored records: its own record (what is
 * being erased, how far it got) and the user's usage record (which refuses new sessions and
 * messages while the first pass runs, and keeps its counters throughout).
 */

/**
 * A request to erase `userId`'s data: recorded before anything is deleted. Asked again, it
 * starts over from now (what the user created since is erased too) and keeps the sessions and
 * connections recorded so far for the second pass. `takeOverAfterMs`: when the sweep may finish
 * it, should the request die (longer than a request can run). `cutoff` (now unless given): what
 * was created up to it is erased, `requested_at` in the record; a later one (a deleted Auth user's:
 * ErasureService.eraseDeletedUser) is in the future, and a request made meanwhile never moves it back.
 */
export function beginErasure(userId: string, now: number, takeOverAfterMs: number, cutoff: number = now): ErasureRule<ErasureRecord> {
  return (record) => {
    const next: ErasureRecord = {
      user_id: userId,
      requested_at: Math.max(record?.requested_at ?? cutoff, cutoff),
      phase: "erasing",
      due_at: now + takeOverAfterMs,
      ...(record?.sessions ? { sessions: record.sessions } : {}),
      ...(record?.connections ? { connections: record.connections } : {}),
    };
    return { outcome: next, next };
  };
}

/**
 * The sweep takes over an erasure that is due at `now` (a first pass whose request died, or the
 * second pass): it runs the pass now, and another sweep may after `takeOverAfterMs`, should this
 * one fail or die; meanwhile the erasures due after it come first. One no longer due (a request
 * began it again, another sweep took it over) or gone is left alone (null).
 */
export function takeOverErasure(now: number, takeOverAfterMs: number): ErasureRule<ErasureRecord | null> {
  return (record) => {
    if (!record || record.due_at > now) return { outcome: null };
    const next: ErasureRecord = { ...record, due_at: now + takeOverAfterMs };
    return { outcome: next, next };
  };
}

/** What a second pass deleted again before it stopped (see pauseErasure): session ids, connection ids. */
export interface ErasedAgain {
  readonly sessions: readonly string[];
  readonly connections: readonly string[];
}

/**
 * A pass the sweep took over (`taken`, the record as its takeover left it) stopped when the run's
 * time was up: it runs no more, so its takeover ends at `at` (when it stopped) instead of when it
 * lapses (the function's timeout, up to an hour): the next run takes the pass over again, behind
 * the erasures due before `at`. What a second pass deleted again (`erased`) leaves the record, so
 * the next run goes on from there instead of starting over (else a user with more than a run can
 * delete would never be finished); the first pass's record keeps all it deleted, for the second.
 * A record no longer the one taken over (a request began it again, another sweep took it) is left alone.
 */
export function pauseErasure(taken: ErasureRecord, at: number, erased: ErasedAgain = { sessions: [], connections: [] }): ErasureRule<boolean> {
  return (record) => {
    if (!record || record.phase !== taken.phase || record.requested_at !== taken.requested_at || record.due_at !== taken.due_at) return { outcome: false };
    const next: ErasureRecord = { ...record, due_at: Math.min(record.due_at, at) };
    const sessions = without(record.sessions, erased.sessions);
    const connections = without(record.connections, erased.connections);
    if (sessions) next.sessions = sessions;
    else delete next.sessions;
    if (connections) next.connections = connections;
    else delete next.connections;
    return { outcome: true, next };
  };
}

/** `entries` without the keys `ids`; undefined when none is left. */
function without<T>(entries: Readonly<Record<string, T>> | undefined, ids: readonly string[]): Record<string, T> | undefined {
  if (!entries) return undefined;
  const gone = new Set(ids);
  const kept = Object.entries(entries).filter(([id]) => !gone.has(id));
  return kept.length === 0 ? undefined : Object.fromEntries(kept);
}

/**
 * The first pass of the erasure requested at `requestedAt` is over: the second one is due at
 * `finalPassAt`. A request made since has taken the record over, and settles it itself (false).
 */
export function settleErasure(requestedAt: number, finalPassAt: number): ErasureRule<boolean> {
  return (record) => {
    if (record?.requested_at !== requestedAt) return { outcome: false };
    return { outcome: true, next: { ...record, phase: "settling", due_at: finalPassAt } };
  };
}

/** After the second pass: the record goes, unless a request made since needs it. */
export function finishErasure(requestedAt: number): ErasureRule<boolean> {
  return (record) => (record?.phase === "settling" && record.requested_at === requestedAt ? { outcome: true, next: null } : { outcome: false });
}

/** Adds connections (by id, the other user's key) to the record, for the second pass; nothing when there is no record. */
export function recordConnections(connections: Readonly<Record<string, string>>): ErasureRule<undefined> {
  return (record) => {
    if (!record || Object.keys(connections).length === 0) return { outcome: undefined };
    return { outcome: undefined, next: { ...record, connections: { ...record.connections, ...connections } } };
  };
}

/**
 * Marks the user as being erased since `requestedAt` (a usage record is made if there is none,
 * with a full message bucket): their new sessions and messages are refused until the mark is
 * cleared. A later request's mark stays: an earlier request's mark that lands late never replaces
 * it. Erasing never resets a limit; what else changes is what `forget` forgets (forgetSessions): the
 * sessions an earlier attempt of this erasure deleted already (a first pass retried, or taken over
 * by the sweep), which no scan finds again once gone, so that they leave the active count now
 * rather than at the second pass.
 */
export function markErasing(requestedAt: number, messagesPerMinute: number, forget?: UsageRule<undefined>): UsageRule<undefined> {
  return (usage) => {
    const marked = { ...(usage ?? { tokens: messagesPerMinute, refilled_at: requestedAt }), erasing: Math.max(usage?.erasing ?? requestedAt, requestedAt) };
    return { outcome: undefined, next: forget?.(marked).next ?? marked };
  };
}

/**
 * Clears the mark of the erasure requested at `requestedAt`, and that of any request before it (a
 * later request's mark stays). An earlier request's mark can land after this one cleared its own
 * (its transaction was slow, then its request died or ran out of time): the erasure record now
 * carries this request's time, so no pass of that earlier request will clear it, and this one's
 * second pass must (ErasureService), or the user would stay refused for good.
 */
export function clearErasing(requestedAt: number): UsageRule<undefined> {
  return (usage) => {
    if (usage?.erasing === undefined || usage.erasing > requestedAt) return { outcome: undefined };
    const { erasing, ...rest } = usage;
    return { outcome: undefined, next: rest };
  };
}

/**
 * Forgets erased sessions in the usage record at `now`: they no longer count as active, and their
 * context bounds and end marks go (the record then names none of them). The message bucket and the
 * day's tokens stay, and so do the open reservations of their messages still running (a reply
 * streaming in another tab): the day's count holds each until it settles, so they are kept apart,
 * as a session's end keeps them (limits.ts keptApart: when admitted, what it holds, its day, no
 * session named), and a message the daily limit refuses meanwhile waits for them, not for 00:00
 * UTC; those lapsed by `now` (`policy.requestTimeoutMs`: no shorter than the function's timeout) go.
 */
export function forgetSessions(sessionIds: readonly string[], now: number, policy: Pick<UsagePolicy, "requestTimeoutMs">): UsageRule<undefined> {
  const erased = new Set(sessionIds);
  return (usage) => {
    if (!usage) return { outcome: undefined };
    const keep = <T>(entries: Readonly<Record<string, T>> | undefined) => (entries ? Object.fromEntries(Object.entries(entries).filter(([id]) => !erased.has(id))) : undefined);
    const sessions = keep(usage.sessions);
    const contexts = keep(usage.contexts);
    const ended = keep(usage.ended);
    const { sessions: before, contexts: was, ended: marked, released_held: _apart, ...rest } = usage;
    const size = (entries: object | undefined) => Object.keys(entries ?? {}).length;
    const changed = size(sessions) !== size(before) || size(contexts) !== size(was) || size(ended) !== size(marked);
    if (!changed) return { outcome: undefined };
    const apart = keptApart(usage, (id) => erased.has(id), now, policy);
    return { outcome: undefined, next: { ...rest, ...(sessions ? { sessions } : {}), ...(contexts ? { contexts } : {}), ...(ended ? { ended } : {}), ...(apart ? { released_held: apart } : {}) } };
  };
}

/**
 * Whether both passes delete the create key `claim` of the user, whatever its session: claimed,
 * and last taken over, at or before the cutoff (`lastClaimedAt`). A repeat that took the key over
 * after the cutoff keeps it, though the key was first claimed before: admitted once the first pass
 * has cleared the mark, it creates its session then (created after the cutoff, kept), and later
 * retries replay that session (docs/api.md); refused, it marks the key, which the second pass
 * deletes once no session came of it (`isAbandonedCreateKey`). A take-over of an older version,
 * with no time recorded, counts at the claim's time.
 */
export function isErasedCreateKey(claim: CreateKey, cutoff: number): boolean {
  return lastClaimedAt(claim) <= cutoff;
}

/**
 * Whether the second pass may delete the create key `claim` of the user once its session is found
 * not to exist: last claimed or taken over after the cutoff (those up to it go whatever their
 * session: `isErasedCreateKey`), its last claim or take-over refused for the erasure
 * (`isRefusedCreateKey`: a create refused so whose claim a repeat took over, refused too, which
 * neither gives back; or a key claimed before the cutoff whose repeat took it over after it and was
 * refused), and claimed, and last taken over, at or before `over` (the pass's time less a lease and
 * a database deadline), so that no request of it still runs (the one whose claim was taken over
 * may have been admitted before the user was marked). Any other key with no session stays: a
 * create admitted after the first pass whose write failed (`503`, its fate unknown) keeps its key
 * for its retry. One that a repeat took over with no time recorded (an older version's) may be
 * running: it stays.
 */
export function isAbandonedCreateKey(claim: CreateKey, cutoff: number, over: number): boolean {
  if (isErasedCreateKey(claim, cutoff) || claim.created_at > over) return false;
  return isRefusedCreateKey(claim) && lastClaimedAt(claim) <= over;
}

/**
 * Which of `ids` the second pass forgets once it has deleted them again: those under which it
 * removed a session created up to `cutoff` (`deleted`), and those still counted from up to it. A
 * count from after it under an id found empty is a keyed create's retry's (counted at the time its
 * session is created with, a round trip before that write lands): that session is kept, and so is
 * its count. One from up to it is an erased session's, left by an earlier attempt whose deletion
 * landed and whose change to the usage record was lost, which no scan finds again.
 */
export function againForgotten(usage: UserUsage | null, ids: readonly string[], deleted: ReadonlySet<string>, cutoff: number): string[] {
  return ids.filter((id) => {
    const countedAt = usage?.sessions?.[id];
    return deleted.has(id) || (countedAt !== undefined && countedAt <= cutoff);
  });
}
