/**
 * Where a page of a clean-up query ended on one database instance: the value the query orders by,
 * then the key, of the page's last record (the order of the query: by value, then by key).
 */
export interface SweepPosition {
  readonly key: string;
  readonly value: number;
}

/**
 * Where a clean-up pass has got to, one entry per database instance the query spans, in the order
 * of the store's list (one for a store on one instance): after the position there; `"end"` once
 * that instance answered a page short (nothing more there for this pass); undefined, from its start.
 * The pass pages on from it instead of asking from the oldest again: a record that stays in the
 * query (one whose change keeps failing: unreadable, say) keeps its place among the oldest, and a
 * page's worth of them would otherwise be all that every run reaches.
 */
export type SweepCursor = readonly (SweepPosition | "end" | undefined)[];

/** A page of a clean-up query: the keys of its records, oldest first, and where the next page starts (pass it as `after`). */
export interface SweepPage {
  readonly keys: readonly string[];
  readonly next: SweepCursor;
}

/**
 * The page after `after` of a query on one database instance: `query` answers up to `limit`
 * records after `from` (from the oldest when undefined), in the query's order.
 */
export async function pageOnOneInstance(
  after: SweepCursor | undefined,
  limit: number,
  query: (from: SweepPosition | undefined, limit: number) => Promise<readonly SweepPosition[]>,
): Promise<SweepPage> {
  const from = after?.[0];
  if (from === "end" || limit <= 0) return { keys: [], next: [from] };
  const found = await query(from, limit);
  const last = found.at(-1);
  return { keys: found.map(({ key }) => key), next: [last === undefined || found.length < limit ? "end" : last] };
}

/**
 * The page after `after` of `records` (by key) whose `field` is at most `cutoff`, as a query on a
 * database answers it: for a store that holds its records in memory.
 */
export function pageOfRecords<R>(records: Iterable<readonly [string, R]>, field: (record: R) => number | undefined, cutoff: number, after: SweepCursor | undefined, limit: number): Promise<SweepPage> {
  const found: SweepPosition[] = [];
  for (const [key, record] of records) {
    const value = field(record);
    if (value !== undefined && value <= cutoff) found.push({ key, value });
  }
  found.sort(compareSweep);
  return pageOnOneInstance(after, limit, async (from, wanted) => found.filter((entry) => from === undefined || compareSweep(entry, from) > 0).slice(0, wanted));
}

/** The order of a query: by value, then by key. */
function compareSweep(x: SweepPosition, y: SweepPosition): number {
  return x.value - y.value || (x.key < y.key ? -1 : x.key > y.key ? 1 : 0);
}
