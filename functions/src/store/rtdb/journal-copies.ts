import { remember, type Copied } from "./journal";

/**
 * Which creation of a node a state is (a session's `created_at`, carried in its state): an id can
 * name a node deleted and created again (an erased session a keyed create's retry creates anew),
 * whose journal entries take the same names as the earlier one's. Undefined where none is told (a
 * connection's state, a session state of an older version).
 */
export type Creation = number | undefined;

/**
 * What one instance knows of its journals' copies (journal.ts, connection-journal.ts): per node
 * (a session, a connection), the journal entries whose copy the server acknowledged, which the
 * next transaction drops from the state; and the copies sent and not yet acknowledged. Each node's
 * knowledge is of one creation of it, and answers for that creation only: entries known copied of
 * an earlier one would drop the new one's, of the same names, before any copy of them.
 */
export class JournalCopies {
  private readonly copied = new Map<string, { readonly creation: Creation; readonly entries: Copied }>();
  private readonly inFlight = new Set<Promise<void>>();

  /** The entries known to be copied for `id` as created at `creation`, undefined when nothing is known of that creation. */
  known(id: string, creation?: Creation): Copied | undefined {
    const known = this.copied.get(id);
    return known !== undefined && known.creation === creation ? known.entries : undefined;
  }

  /** What a commit on `creation` left known (a plan's `known`; undefined changes nothing). */
  keep(id: string, known: Copied | undefined, creation?: Creation): void {
    if (known !== undefined) this.copied.set(id, { creation, entries: known });
  }

  /** Forgets `id`: no longer followed, so a late acknowledgement must not bring back what is known of it. */
  forget(id: string): void {
    this.copied.delete(id);
  }

  /**
   * A copy of `entries` of the node as created at `creation` sent (`sending`): once it is
   * acknowledged, they are known as copied, if `stillWanted` then (the node is still followed, or
   * closing and used at once), in place of anything known of another creation. Returns the copy.
   */
  sent(id: string, sending: Promise<void>, entries: Copied, stillWanted: () => boolean, creation?: Creation): Promise<void> {
    return sending.then(() => {
      if (stillWanted()) this.copied.set(id, { creation, entries: remember(this.known(id, creation), entries) });
    });
  }

  /** A copy not awaited: kept track of, its failure dropped (whoever transacts next copies again). */
  track(copy: Promise<void>): void {
    const tracked = copy.catch(() => undefined).finally(() => this.inFlight.delete(tracked));
    this.inFlight.add(tracked);
  }

  /** Resolves once every copy sent so far is acknowledged (or failed). */
  async settled(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }
}
