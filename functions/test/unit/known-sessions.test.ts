import { randomUUID } from "node:crypto";
import { ForbiddenError, SessionNotFoundError } from "../../src/session/errors";
import { StoreUnavailableError } from "../../src/store/errors";
import { KnownSessions } from "../../src/session/known-sessions";
import { userKey } from "../../src/session/ledger/limits";
import { MemoryStore } from "../../src/store/memory-store";
import { newSession } from "../support/fixtures";

/**
 * The embedded store's reads, with the hints KnownSessions gives an adapter recorded: what it would
 * follow, and what it would hold on a guess; the ids in `beyond` name an instance past its list.
 */
function hintedStore(store: MemoryStore, beyond: ReadonlySet<string>) {
  const hints: string[] = [];
  const reads: string[] = [];
  const guess = (what: string) => {
    hints.push(`guess ${what}`);
    return () => { hints.push(`withdraw ${what}`); };
  };
  return {
    hints,
    reads,
    readSessionMeta: (sessionId: string) => {
      reads.push(sessionId);
      return store.readSessionMeta(sessionId);
    },
    reaches: (sessionId: string) => !beyond.has(sessionId),
    readWindow: (sessionId: string, limit: number) => store.readWindow(sessionId, limit),
    guessSession: (sessionId: string) => guess(`state ${sessionId}`),
    prepareSession: (sessionId: string) => { hints.push(`hold state ${sessionId}`); },
    guessUsage: (key: string) => guess(`usage ${key}`),
    prepareUsage: (key: string) => { hints.push(`hold usage ${key}`); },
  };
}

describe("KnownSessions", () => {
  let store: MemoryStore;
  let hints: string[];
  let reads: string[];
  let known: KnownSessions;
  const beyond = new Set<string>();
  const owner = { uid: "owner-uid" };
  const visitor = { uid: "visitor-uid", anonymous: true };

  beforeEach(() => {
    store = new MemoryStore();
    beyond.clear();
    const hinted = hintedStore(store, beyond);
    hints = hinted.hints;
    reads = hinted.reads;
    known = new KnownSessions(hinted, { maxSessions: 10, sessionTtlMs: 60_000 }, () => 0);
  });

  it("follows the caller's session and usage from beside the read of its fields, and keeps following them once the session is found to be theirs", async () => {
    const session = newSession({ user_id: owner.uid });
    await store.createSession(session);
    expect((await known.owned(session.id, owner)).meta).toEqual(session.meta);
    expect(hints).toEqual([`guess usage ${userKey(owner.uid)}`, `guess state ${session.id}`, `hold state ${session.id}`, `hold usage ${userKey(owner.uid)}`]);
    // Remembered: the next request gives no hint at all.
    hints.length = 0;
    await known.owned(session.id, owner);
    expect(hints).toEqual([]);
  });

  it("withdraws both guesses for a session that does not exist (404), holding nothing", async () => {
    const id = randomUUID();
    await expect(known.owned(id, visitor)).rejects.toBeInstanceOf(SessionNotFoundError);
    expect(hints).toEqual([`guess usage ${userKey(visitor.uid)}`, `guess state ${id}`, `withdraw usage ${userKey(visitor.uid)}`, `withdraw state ${id}`]);
  });

  it("withdraws both guesses for another user's session (403), holding nothing and remembering nothing of it", async () => {
    const session = newSession({ user_id: owner.uid });
    await store.createSession(session);
    await expect(known.owned(session.id, visitor)).rejects.toBeInstanceOf(ForbiddenError);
    expect(hints).toEqual([`guess usage ${userKey(visitor.uid)}`, `guess state ${session.id}`, `withdraw usage ${userKey(visitor.uid)}`, `withdraw state ${session.id}`]);
    // Not remembered: its owner's first request here still reads it and holds what they transact on.
    hints.length = 0;
    await known.owned(session.id, owner);
    expect(hints).toContain(`hold state ${session.id}`);
  });

  it("holds the state of a session found for a request without a token, guessing no usage record", async () => {
    const session = newSession({ user_id: owner.uid });
    await store.createSession(session);
    await known.owned(session.id, undefined);
    expect(hints).toEqual([`guess state ${session.id}`, `hold state ${session.id}`]);
  });

  it("reads the fields again when the state just read is of another creation under the id than the one remembered, and only then", async () => {
    const earlier = newSession({ user_id: owner.uid, created_at: 1_000, system_prompt: "The erased session's." });
    await store.createSession(earlier);
    expect((await known.owned(earlier.id, owner)).meta).toEqual(earlier.meta);
    // Erased, then created again under its id (a keyed create's retry): its state says which creation it is.
    await store.deleteSession(earlier.id);
    const again = newSession({ user_id: owner.uid, created_at: 5_000, system_prompt: "The new session's." }, earlier.id);
    await store.createSession({ ...again, state: { ...again.state, created_at: 5_000 } });
    reads.length = 0;
    // Asked without a state, or with a state an older version wrote (no created_at): what is remembered.
    expect((await known.owned(earlier.id, owner)).meta).toEqual(earlier.meta);
    expect((await known.owned(earlier.id, owner, again.state)).meta).toEqual(earlier.meta);
    expect(reads).toEqual([]);
    const state = await store.readSessionState(earlier.id);
    expect((await known.owned(earlier.id, owner, state ?? undefined)).meta).toEqual(again.meta);
    // Remembered in its place.
    expect((await known.owned(earlier.id, owner)).meta).toEqual(again.meta);
    expect(reads).toEqual([earlier.id]);
  });

  it("refuses a session on an instance past the list as unavailable (retried), before any read or guess, remembering nothing", async () => {
    // Stored where this instance's store would read it, so only the refusal stands between it and an answer.
    const session = newSession({ user_id: owner.uid });
    await store.createSession(session);
    beyond.add(session.id);
    await expect(known.owned(session.id, owner)).rejects.toBeInstanceOf(StoreUnavailableError);
    expect({ reads, hints }).toEqual({ reads: [], hints: [] });
    // Nothing remembered of it: once its instance is reached, it is read and held as any other.
    beyond.clear();
    expect((await known.owned(session.id, owner)).meta).toEqual(session.meta);
    expect(hints).toEqual([`guess usage ${userKey(owner.uid)}`, `guess state ${session.id}`, `hold state ${session.id}`, `hold usage ${userKey(owner.uid)}`]);
  });
});
