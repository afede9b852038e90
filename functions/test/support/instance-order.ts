/*
 * The order a store over several database instances answers in (docs/sharding.md), stated from
 * the port's single-instance order: what the contracts expect of a ShardedStore. Without
 * `instanceOf` (one instance), the order as it is.
 */

type InstanceOf = ((id: string) => number) | undefined;

/**
 * `expected` (oldest first) as a clean-up query answers it: each instance's oldest first, the
 * instances taken in turns, `limit` in all. Where `limit` cuts the answers short, the ids come
 * from the instance asked first (ShardedStore's `everywhere`): the first, for a store's first batch.
 */
export function inTurns(expected: readonly string[], instanceOf: InstanceOf, limit = expected.length): string[] {
  if (instanceOf === undefined) return expected.slice(0, limit);
  const queues = new Map<number, string[]>();
  for (const id of expected) queues.set(instanceOf(id), [...(queues.get(instanceOf(id)) ?? []), id]);
  const lists = [...queues].sort(([a], [b]) => a - b).map(([, ids]) => ids);
  const turns: string[] = [];
  for (let turn = 0; turns.length < limit && lists.some((ids) => turn < ids.length); turn += 1) {
    for (const ids of lists) if (ids[turn] !== undefined && turns.length < limit) turns.push(ids[turn] ?? "");
  }
  return turns;
}

/** `ids` (in id order) as a user's sessions are read whole: instance by instance, each in id order. */
export function byInstance(ids: readonly string[], instanceOf: InstanceOf): string[] {
  return instanceOf === undefined ? [...ids] : [...ids].sort((a, b) => instanceOf(a) - instanceOf(b));
}
