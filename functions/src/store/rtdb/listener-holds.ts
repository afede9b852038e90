import type { Database } from "firebase-admin/database";

/**
 * The nodes an instance keeps listening to: the `state` of the sessions it serves and the usage
 * records of their users. With a listener, the SDK holds the server's current value, so a
 * transaction's first attempt starts from it instead of a blind guess (which the server refuses,
 * costing a round trip), and a read of the node costs none. Each listener receives every change
 * of its node, so they are few and short-lived: least recently used first out, and dropped after
 * `idleMs` unused.
 */
export class ListenerHolds {
  private readonly held = new Map<string, { lastUsed: number; stop: () => void }>();
  /** Drops idle holds on an instance that gets no more requests (unref'd: it keeps no process alive). */
  private sweeper: NodeJS.Timeout | undefined;

  constructor(
    private readonly db: Database,
    private readonly max: number,
    private readonly idleMs: number,
    /** Called when a node is no longer listened to, so what is known of it can be forgotten too. */
    private readonly onRelease: (path: string) => void = () => undefined,
    private readonly clock: () => number = Date.now,
  ) {}

  /** Listens to `path` (again most recently used); true when it was listened to already. */
  hold(path: string): boolean {
    const now = this.clock();
    const entry = this.held.get(path);
    if (entry) {
      // Re-inserted: a Map iterates in insertion order, which keeps the least recently used first.
      this.held.delete(path);
      this.held.set(path, { ...entry, lastUsed: now });
    } else if (this.max > 0) {
      const ref = this.db.ref(path);
      const listener = () => undefined;
      // A cancelled listen (rules, a deleted app) simply ends the hold.
      ref.on("value", listener, () => { this.release(path); });
      this.held.set(path, { lastUsed: now, stop: () => { ref.off("value", listener); } });
    }
    this.trim(now);
    if (!this.sweeper && this.held.size > 0) {
      this.sweeper = setInterval(() => { this.trim(this.clock()); }, Math.max(1_000, this.idleMs / 2));
      this.sweeper.unref();
    }
    return entry !== undefined;
  }

  isHeld(path: string): boolean {
    return this.held.has(path);
  }

  releaseAll(): void {
    for (const path of [...this.held.keys()]) this.release(path);
    this.trim(this.clock());
  }

  private release(path: string): void {
    const entry = this.held.get(path);
    if (!entry) return;
    this.held.delete(path);
    entry.stop();
    this.onRelease(path);
  }

  private trim(now: number): void {
    for (const [path, entry] of this.held) {
      if (this.held.size <= this.max && now - entry.lastUsed <= this.idleMs) break;
      this.release(path);
    }
    if (this.held.size === 0 && this.sweeper) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }
}
