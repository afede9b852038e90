/**
 * The `limit` last of `entries` by `order` (ties by key, so that every instance keeps the same
 * ones), oldest first: what a record keeps of what it remembers (a connection's recent and flagged
 * keys, a user's kept device removals), the oldest forgotten.
 */
export function newestEntries<V>(entries: Iterable<readonly [string, V]>, order: (value: V) => number, limit: number): [string, V][] {
  const sorted = [...entries].map(([key, value]): [string, V] => [key, value]).sort(([keyA, a], [keyB, b]) => order(a) - order(b) || (keyA < keyB ? 1 : keyA > keyB ? -1 : 0));
  return sorted.slice(-limit);
}
