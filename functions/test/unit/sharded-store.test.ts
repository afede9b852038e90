import { resolveConfig } from "../../src/config";
import { silentLog } from "../../src/log/log";
import { createOfflineSender } from "../../src/notify/offline-sender";
import { composeInstance } from "../../src/runtime/instance";
import { instancePositionOf, placedSessionId } from "../../src/sharding/session-ids";
import { StoreUnavailableError } from "../../src/store/errors";
import { MemoryConnectionStore } from "../../src/store/memory-connection-store";
import { MemoryStore } from "../../src/store/memory-store";
import type { SessionStore } from "../../src/store/session-store";
import { ShardedStore } from "../../src/store/sharded-store";
import type { SweepCursor, SweepPage } from "../../src/store/sweep-page";
import { FaultyStore } from "../support/faulty-store";
import { appendAt, CREATED_AT, endAt, exchange, newSession, TEMPLATE } from "../support/fixtures";
import { recordingLog } from "../support/recording-log";
import { NO_TOKENS } from "../support/service-env";

/**
 * An instance that counts the ids its clean-up queries answer: on a database each is a whole
 * session node sent over the wire, history included.
 */
class CountingInstance extends MemoryStore {
  answered = 0;
  queries = 0;

  override async findIdleSessions(cutoff: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage> {
    return this.counted(await super.findIdleSessions(cutoff, after, limit));
  }

  override async findClosedSessions(cutoff: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage> {
    return this.counted(await super.findClosedSessions(cutoff, after, limit));
  }

  private counted(page: SweepPage): SweepPage {
    this.queries += 1;
    this.answered += page.keys.length;
    return page;
  }
}

/** The ids of the page of idle sessions after `after`. */
const idleIds = async (store: SessionStore, limit: number, after?: SweepCursor) => (await store.findIdleSessions(CUTOFF, after, limit)).keys;

const CUTOFF = CREATED_AT + 1_000;

/** `count` instances and a store over them. */
function instances(count: number): { readonly all: CountingInstance[]; readonly sharded: ShardedStore } {
  const all = Array.from({ length: count }, () => new CountingInstance());
  return { all, sharded: new ShardedStore(all, silentLog) };
}

/** `count` sessions on the instance at `position`, idle since before the cutoff, oldest first. */
async function idleOn(all: readonly CountingInstance[], position: number, count: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < count; i += 1) {
    const session = newSession({ created_at: CREATED_AT + i }, placedSessionId(position, all.length));
    await all[position]?.createSession(session);
    ids.push(session.id);
  }
  return ids;
}

/** `count` sessions on the instance at `position`, closed before the cutoff. */
async function closedOn(all: readonly CountingInstance[], position: number, count: number): Promise<string[]> {
  const ids = await idleOn(all, position, count);
  for (const [i, id] of ids.entries()) await all[position]?.updateState(id, endAt(CREATED_AT + 100 + i));
  return ids;
}

const answeredInAll = (all: readonly CountingInstance[]) => all.reduce((sum, instance) => sum + instance.answered, 0);

describe("ShardedStore's clean-up queries", () => {
  it.each([2, 4])("answer a batch from %i instances that each hold more, having them send one batch in all", async (count) => {
    const { all, sharded } = instances(count);
    for (let position = 0; position < count; position += 1) await idleOn(all, position, 8);

    expect(await idleIds(sharded, 5)).toHaveLength(5);
    expect(answeredInAll(all)).toBe(5);
  });

  it("send one batch in all for closed sessions too", async () => {
    const { all, sharded } = instances(4);
    for (let position = 0; position < 4; position += 1) await closedOn(all, position, 6);

    expect((await sharded.findClosedSessions(CUTOFF, undefined, 5)).keys).toHaveLength(5);
    expect(answeredInAll(all)).toBe(5);
  });

  it("fill a batch from the next instances when the first has too little, and come back short only when none has more", async () => {
    const { all, sharded } = instances(3);
    const first = await idleOn(all, 0, 2);
    const third = await idleOn(all, 2, 4);

    const batch = await idleIds(sharded, 5);
    expect(new Set(batch)).toEqual(new Set([...first, ...third.slice(0, 3)]));
    expect(await idleIds(sharded, 7)).toHaveLength(6);
    expect(answeredInAll(all)).toBe(5 + 6);
  });

  it("hand a batch over in turns, each instance's oldest first", async () => {
    const { all, sharded } = instances(2);
    const [a0, a1] = await idleOn(all, 0, 2);
    const [b0, b1, b2] = await idleOn(all, 1, 3);

    expect(await idleIds(sharded, 10)).toEqual([a0, b0, a1, b1, b2]);
  });

  it("let a backlog that stays on one instance (its changes keep failing) fill no more than every other batch of two instances", async () => {
    const { all, sharded } = instances(2);
    await idleOn(all, 0, 6);
    const [waiting] = await idleOn(all, 1, 1);

    // Nothing found is handled, as when every change fails: each batch comes back full.
    const batches = [await idleIds(sharded, 3), await idleIds(sharded, 3)];
    expect(batches.map((batch) => batch.length)).toEqual([3, 3]);
    expect(batches.flat()).toContain(waiting);
  });

  it("answer a batch from the other instances when one instance's query fails, logging the failure", async () => {
    const all = [new CountingInstance(), new CountingInstance()];
    const failing = new FaultyStore(all[0]!);
    const { log, entries } = recordingLog();
    const sharded = new ShardedStore([failing.store, all[1]!], log);
    const first = await idleOn(all, 0, 2);
    const second = await idleOn(all, 1, 4);
    failing.arm("findIdleSessions", "before");

    const page = await sharded.findIdleSessions(CUTOFF, undefined, 3);
    expect(page.keys).toEqual(second.slice(0, 3));
    expect(entries).toEqual([
      {
        level: "warn",
        message: "clean-up query failed on one database instance; the others go on",
        fields: { query: "find idle sessions", instance: 0, error: "StoreUnavailableError", detail: "database unavailable during findIdleSessions (injected before)" },
      },
    ]);
    // Once it answers again, its work comes back with the rest: the next page asks it from where it stood.
    expect(await idleIds(sharded, 10, page.next)).toEqual([first[0], second[3], first[1]]);
    expect(await idleIds(sharded, 10)).toHaveLength(6);
  });

  it("page each instance on from where its own last page ended, and ask none again once it answered a page short", async () => {
    const { all, sharded } = instances(2);
    const [a0, a1, a2] = await idleOn(all, 0, 3);
    const [b0] = await idleOn(all, 1, 1);

    // Nothing found is handled, as when every change fails: the sessions stay idle, and no page brings one again.
    const first = await sharded.findIdleSessions(CUTOFF, undefined, 2);
    const second = await sharded.findIdleSessions(CUTOFF, first.next, 2);
    const third = await sharded.findIdleSessions(CUTOFF, second.next, 2);
    expect([first.keys, second.keys, third.keys]).toEqual([[a0, a1], [a2, b0], []]);
    expect({ answered: all.map((instance) => instance.answered), queries: all.map((instance) => instance.queries) }).toEqual({ answered: [3, 1], queries: [3, 1] });
  });

  it("keep each query's turn to lead apart: a full batch of closed sessions does not decide which instance the next batch of idle ones asks first", async () => {
    const { all, sharded } = instances(2);
    const idle = [await idleOn(all, 0, 6), await idleOn(all, 1, 6)];
    await closedOn(all, 0, 6);
    await closedOn(all, 1, 6);

    const first = await sharded.findIdleSessions(CUTOFF, undefined, 3);
    expect((await sharded.findClosedSessions(CUTOFF, undefined, 3)).keys).toHaveLength(3);
    const second = await sharded.findIdleSessions(CUTOFF, first.next, 3);
    expect([first.keys, second.keys]).toEqual([idle[0]?.slice(0, 3), idle[1]?.slice(0, 3)]);
  });

  it("begin the next batch, after one its caller's time cut short, at the first instance it did not ask", async () => {
    const { all, sharded } = instances(3);
    const ids = [await idleOn(all, 0, 2), await idleOn(all, 1, 2), await idleOn(all, 2, 2)];
    // Runs whose step has time for one instance: the time is up once the lead was asked.
    const stopped = () => true;

    const runs = [];
    for (let run = 0; run < 3; run += 1) runs.push((await sharded.findIdleSessions(CUTOFF, undefined, 10, stopped)).keys);
    expect(runs).toEqual(ids);
  });

  it("ask first, until a batch moves the lead on, the instance the store was given to start at (a random one, deployed)", async () => {
    const all = Array.from({ length: 3 }, () => new CountingInstance());
    const sharded = new ShardedStore(all, silentLog, 2);
    const ids = [await idleOn(all, 0, 2), await idleOn(all, 1, 2), await idleOn(all, 2, 2)];
    const runs = [];
    for (let run = 0; run < 3; run += 1) runs.push((await sharded.findIdleSessions(CUTOFF, undefined, 10, () => true)).keys);
    expect(runs).toEqual([ids[2], ids[0], ids[1]]);
  });

  it("not ask first, in the next batch, an instance whose query failed in this one", async () => {
    const all = [new CountingInstance(), new CountingInstance(), new CountingInstance()];
    const failing = new FaultyStore(all[1]!);
    const sharded = new ShardedStore([all[0]!, failing.store, all[2]!], silentLog);
    await idleOn(all, 0, 3);
    const third = await idleOn(all, 2, 2);
    // Out of reach for the two batches that ask it.
    failing.arm("findIdleSessions", "before");
    failing.arm("findIdleSessions", "before");

    // A full batch from the first instance alone hands the lead to the second, not asked in it.
    expect(await idleIds(sharded, 3)).toHaveLength(3);
    // The second fails, the others answer short: every instance was asked.
    expect(await idleIds(sharded, 10)).toHaveLength(3 + 2);
    // A run whose step has time for one instance: it goes to one that answers.
    expect((await sharded.findIdleSessions(CUTOFF, undefined, 10, () => true)).keys).toEqual(third);
  });
});

const URLS = ["https://one.firebaseio.com", "https://two.firebaseio.com", "https://three.firebaseio.com"];

/**
 * A third instance appended to DATABASE_INSTANCES: while the deploy rolls out (each function, and
 * each of its instances, moves to the new list at its own time), function instances with the old
 * list and with the new one serve the same databases, and an updated one issues ids naming the
 * third instance.
 */
describe("ShardedStore during the deploy that appends an instance", () => {
  it("refuses a keyed create's repeat as unavailable on a function instance still on the old list, so that an updated one creates the session where its id names", async () => {
    const [home, second, third] = [new MemoryStore(), new MemoryStore(), new FaultyStore(new MemoryStore())];
    await home.seedTemplates({ tester: TEMPLATE });
    const parts = { connectionStore: new MemoryConnectionStore(), identity: NO_TOKENS, log: silentLog, allowOffline: true, pushSender: createOfflineSender(silentLog) };
    const newStore = new ShardedStore([home, second, third.store], silentLog);
    const updated = composeInstance(resolveConfig({ DATABASE_INSTANCES: URLS.join(",") }, { requireAuth: false }), {
      ...parts,
      store: newStore,
      databaseUrls: URLS,
      newSessionId: () => placedSessionId(2, 3),
    });
    const previous = composeInstance(resolveConfig({ DATABASE_INSTANCES: URLS.slice(0, 2).join(",") }, { requireAuth: false }), {
      ...parts,
      store: new ShardedStore([home, second], silentLog),
      databaseUrls: URLS.slice(0, 2),
    });
    const create = { userId: "rolling-user", templateId: "tester", idempotencyKey: "create-1" };

    // The updated function instance claims the key for an id on the new instance; its write there fails.
    third.arm("createSession", "before");
    await expect(updated.sessions.create(create)).rejects.toThrow(StoreUnavailableError);
    // The client's retry reaches a function instance still on the old list: refused (503), nothing stored.
    await expect(previous.sessions.create(create)).rejects.toThrow(StoreUnavailableError);
    expect((await home.findIdleSessions(Number.MAX_SAFE_INTEGER, undefined, 10)).keys).toEqual([]);
    expect((await second.findIdleSessions(Number.MAX_SAFE_INTEGER, undefined, 10)).keys).toEqual([]);
    // The next retry reaches an updated one, which creates it on the instance its id names.
    const created = await updated.sessions.create(create);
    expect(created.replayed).toBe(false);
    expect(instancePositionOf(created.sessionId)).toBe(2);
    expect(await third.store.readSessionMeta(created.sessionId)).toMatchObject({ user_id: "rolling-user" });
    expect(await home.readSessionMeta(created.sessionId)).toBeNull();
  });

  it("answers not found for reads of a session whose id names an instance past its list, and refuses every write to it", async () => {
    const [home, second] = [new MemoryStore(), new MemoryStore()];
    const old = new ShardedStore([home, second], silentLog);
    const session = newSession({ user_id: "rolling-user" }, placedSessionId(2, 3));
    const kept = newSession({ user_id: "rolling-user" }, placedSessionId(1, 3));
    await old.createSession(kept);

    expect(await old.readSessionMeta(session.id)).toBeNull();
    expect(await old.readSessionState(session.id)).toBeNull();
    expect(await old.readExchange(session.id, 1)).toBeNull();
    expect(await old.readSummary(session.id)).toBeNull();
    expect(await old.readPartialReplies(session.id)).toEqual({});

    const writes: [string, () => Promise<unknown>][] = [
      ["createSession", () => old.createSession(session)],
      ["updateState", () => old.updateState(session.id, endAt(CREATED_AT + 1))],
      ["updateStateReadingKey", () => old.updateStateReadingKey(session.id, endAt(CREATED_AT + 1), "key")],
      ["appendExchange", () => old.appendExchange(session.id, exchange("1"), appendAt(CREATED_AT + 1))],
      ["writePartial", () => old.writePartial(session.id, "partial", { text: "x", seq_after: 0, updated_at: CREATED_AT })],
      ["writeSummary", () => old.writeSummary(session.id, { text: "x", through: 2, updated_at: CREATED_AT })],
      ["deleteSession", () => old.deleteSession(session.id)],
      ["deleteUserSessions", () => old.deleteUserSessions("rolling-user", [kept.id, session.id])],
    ];
    for (const [name, write] of writes) await expect(write().then(() => `${name} went through`)).rejects.toThrow(StoreUnavailableError);
    // Nothing landed on the home instance in its place; the session of an instance on the list was erased all the same.
    expect(await home.readSessionState(session.id)).toBeNull();
    expect(await second.readSessionState(kept.id)).toBeNull();
  });

  it("refuses to read a user's sessions after an id past its list (an updated instance's export cursor), rather than answer none are left", async () => {
    const old = new ShardedStore([new MemoryStore(), new MemoryStore()], silentLog);
    const [beyond, on] = [placedSessionId(2, 3), placedSessionId(1, 3)];
    expect([old.reaches(on), old.reaches(beyond)]).toEqual([true, false]);
    expect(await old.readUserSessions("rolling-user", on, 10)).toEqual([]);
    await expect(old.readUserSessions("rolling-user", beyond, 10)).rejects.toThrow(StoreUnavailableError);
  });
});
