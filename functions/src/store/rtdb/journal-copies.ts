import { remember, type Copied } from "./journal";

/**
 * What one instance knows of its journals' copies (journal.ts, connection-journal.ts): per node
 * (a session, a connection), the journal entries whose copy the server acknowledged, which the
 * next transaction drops from the state; and the copies sent and not yet acknowledged.
 */
export class JournalCopies {
  private readonly copied = new Map<string, Copied>();
  private readonly inFlight = new Set<Promise<void>>();

  /** The entries known to be copied for `id`, undefined when nothing is known. */
  known(id: string): Copied | undefined {
    return this.copied.get(id);
  }

  /** What a commit left known (a plan's `known`; undefined changes nothing). */
  keep(id: string, known: Copied | undefined): void {
    if (known !== undefined) this.copied.set(id, known);
  }

  /** Forgets `id`: no longer followed, so a late acknowledgement must not bring back what is known of it. */
  forget(id: string): void {
    this.copied.delete(id);
  }

  /**
   * A copy of `entries` sent (`sending`): once it is acknowledged, they are known as copied, if
   * `stillWanted` then (the node is still followed, or closing and used at once). Returns the copy.
   */
  sent(id: string, sending: Promise<void>, entries: Copied, stillWanted: () => boolean): Promise<void> {
    return sending.then(() => {
      if (stillWanted()) this.copied.set(id, remember(this.copied.get(id), entries));
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
