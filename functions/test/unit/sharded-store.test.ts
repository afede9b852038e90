import { placedSessionId } from "../../src/sharding/session-ids";
import { MemoryStore } from "../../src/store/memory-store";
import { ShardedStore } from "../../src/store/sharded-store";
import { CREATED_AT, endAt, newSession } from "../support/fixtures";

/**
 * An instance that counts the ids its clean-up queries answer: on a database each is a whole
 * session node sent over the wire, history included.
 */
class CountingInstance extends MemoryStore {
  answered = 0;

  override async findIdleSessions(cutoff: number, limit: number): Promise<string[]> {
    return this.counted(await super.findIdleSessions(cutoff, limit));
  }

  override async findClosedSessions(cutoff: number, limit: number): Promise<string[]> {
    return this.counted(await super.findClosedSessions(cutoff, limit));
  }

  private counted(ids: string[]): string[] {
    this.answered += ids.length;
    return ids;
  }
}

const CUTOFF = CREATED_AT + 1_000;

/** `count` instances and a store over them. */
function instances(count: number): { readonly all: CountingInstance[]; readonly sharded: ShardedStore } {
  const all = Array.from({ length: count }, () => new CountingInstance());
  return { all, sharded: new ShardedStore(all) };
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

    expect(await sharded.findIdleSessions(CUTOFF, 5)).toHaveLength(5);
    expect(answeredInAll(all)).toBe(5);
  });

  it("send one batch in all for closed sessions too", async () => {
    const { all, sharded } = instances(4);
    for (let position = 0; position < 4; position += 1) await closedOn(all, position, 6);

    expect(await sharded.findClosedSessions(CUTOFF, 5)).toHaveLength(5);
    expect(answeredInAll(all)).toBe(5);
  });

  it("fill a batch from the next instances when the first has too little, and come back short only when none has more", async () => {
    const { all, sharded } = instances(3);
    const first = await idleOn(all, 0, 2);
    const third = await idleOn(all, 2, 4);

    const batch = await sharded.findIdleSessions(CUTOFF, 5);
    expect(new Set(batch)).toEqual(new Set([...first, ...third.slice(0, 3)]));
    expect(await sharded.findIdleSessions(CUTOFF, 7)).toHaveLength(6);
    expect(answeredInAll(all)).toBe(5 + 6);
  });

  it("hand a batch over in turns, each instance's oldest first", async () => {
    const { all, sharded } = instances(2);
    const [a0, a1] = await idleOn(all, 0, 2);
    const [b0, b1, b2] = await idleOn(all, 1, 3);

    expect(await sharded.findIdleSessions(CUTOFF, 10)).toEqual([a0, b0, a1, b1, b2]);
  });

  it("let a backlog that stays on one instance (its changes keep failing) fill no more than every other batch of two instances", async () => {
    const { all, sharded } = instances(2);
    await idleOn(all, 0, 6);
    const [waiting] = await idleOn(all, 1, 1);

    // Nothing found is handled, as when every change fails: each batch comes back full.
    const batches = [await sharded.findIdleSessions(CUTOFF, 3), await sharded.findIdleSessions(CUTOFF, 3)];
    expect(batches.map((batch) => batch.length)).toEqual([3, 3]);
    expect(batches.flat()).toContain(waiting);
  });
});
