import type { DataSnapshot, Database } from "firebase-admin/database";

/**
 * The nodes an instance keeps listening to: the `state` of the sessions it serves and the usage
 * records of their users. With a listener, the SDK holds the server's current value, so a
 * transaction's first attempt starts from it instead of a blind guess (which the server refuses,
 * costing a round trip), and a read of the node costs none. Each listener receives every change
 * of its node, so they are few and short-lived: least recently used first out, and dropped after
 * `idleMs` unused. A node held on a guess (see `guess`) pushes none out and is not counted
 * against `max` until a use confirms it.
 */
export class ListenerHolds {
  private readonly held = new Map<string, { lastUsed: number; stop: () => void; guessed: boolean }>();
  /** Holds not on a guess: the ones `max` bounds. */
  private confirmed = 0;
  /** Drops idle holds on an instance that gets no more requests (unref'd: it keeps no process alive). */
  private sweeper: NodeJS.Timeout | undefined;

  constructor(
    private readonly db: Database,
    private readonly max: number,
    private readonly idleMs: number,
    /** Called when a node is no longer listened to, so what is known of it can be forgotten too. */
    private readonly onRelease: (path: string) => void = () => undefined,
    private readonly clock: () => number = Date.now,
    /** Called each time a held node's listener finds it absent (deleted, or not there yet), for the same. */
    private readonly onAbsent: (path: string) => void = () => undefined,
  ) {}

  /** Listens to `path` (again most recently used); true when it was listened to already. */
  hold(path: string): boolean {
    return this.take(path, false);
  }

  /**
   * Listens to `path` before it is known to exist (a node a request names, listened to beside
   * the read that tells): the returned function drops it unless a `hold` confirmed it meanwhile
   * (another request that found it). Otherwise requests for nodes that do not exist would push
   * out the holds of those in use; a guess is confirmed or withdrawn within its request, and
   * dropped as idle if neither.
   */
  guess(path: string): () => void {
    this.take(path, true);
    return () => {
      if (this.held.get(path)?.guessed) this.release(path);
    };
  }

  /**
   * Calls `then`, once, when `path` holds a value that `matches` (at once when the value held
   * does), until the returned stop is called; nothing when `path` is not held. Answered from the
   * listen the hold keeps: the SDK sends no listen of its own for a second listener of a node it
   * listens to. That listener keeps the listen open past a release of the hold, until it is
   * answered or stopped. (A function to stop, not an AbortSignal: each message asks, and an
   * AbortController's abort makes a DOMException with its stack, a cost the cost bench showed.)
   */
  whenValue(path: string, matches: (snapshot: DataSnapshot) => boolean, then: () => void): () => void {
    if (!this.held.has(path)) return () => undefined;
    const ref = this.db.ref(path);
    let listening = true;
    const stop = (): void => {
      if (!listening) return;
      listening = false;
      ref.off("value", onValue);
    };
    const onValue = (snapshot: DataSnapshot): void => {
      if (!matches(snapshot)) return;
      stop();
      then();
    };
    // A cancelled listen (rules, a deleted app) tells nothing more.
    ref.on("value", onValue, stop);
    return stop;
  }

  isHeld(path: string): boolean {
    return this.held.has(path);
  }

  releaseAll(): void {
    for (const path of [...this.held.keys()]) this.release(path);
    this.trim(this.clock());
  }

  private take(path: string, guessed: boolean): boolean {
    const now = this.clock();
    const entry = this.held.get(path);
    if (entry) {
      if (entry.guessed && !guessed) this.confirmed += 1;
      // Re-inserted: a Map iterates in insertion order, which keeps the least recently used first.
      this.held.delete(path);
      this.held.set(path, { ...entry, lastUsed: now, guessed: entry.guessed && guessed });
    } else if (this.max > 0) {
      const ref = this.db.ref(path);
      const listener = (snapshot: DataSnapshot) => {
        if (!snapshot.exists()) this.onAbsent(path);
      };
      // A cancelled listen (rules, a deleted app) simply ends the hold.
      ref.on("value", listener, () => { this.release(path); });
      this.held.set(path, { lastUsed: now, stop: () => { ref.off("value", listener); }, guessed });
      if (!guessed) this.confirmed += 1;
    }
    this.trim(now);
    if (!this.sweeper && this.held.size > 0) {
      this.sweeper = setInterval(() => { this.trim(this.clock()); }, Math.max(1_000, this.idleMs / 2));
      this.sweeper.unref();
    }
    return entry !== undefined;
  }

  private release(path: string): void {
    const entry = this.held.get(path);
    if (!entry) return;
    this.held.delete(path);
    if (!entry.guessed) this.confirmed -= 1;
    entry.stop();
    this.onRelease(path);
  }

  private trim(now: number): void {
    for (const [path, entry] of this.held) {
      const idle = now - entry.lastUsed > this.idleMs;
      if (!idle && this.confirmed <= this.max) break;
      if (idle || !entry.guessed) this.release(path);
    }
    if (this.held.size === 0 && this.sweeper) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }
}
