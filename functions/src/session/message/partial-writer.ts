import type { ReplySink } from "../../llm/chat-model";
import type { PartialReply } from "../../store/records";

/**
 * The wait after the first partial write. 500 ms, not 250: a reply streamed over 5 s then costs
 * 4 partial writes, not 5, which pays for its index entry's update of its own (the copy is no
 * longer sent from the root: RtdbStore.copyJournal) within the budget of 10 writes.
 */
export const PARTIAL_FIRST_INTERVAL_MS = 500;
/** The longest wait between partial writes (PARTIAL_MAX_INTERVAL_MS); see PartialWriter. */
export const PARTIAL_MAX_INTERVAL_MS = 2_000;

/**
 * The text of a reply being written, sent to the database as it grows: the first piece at once
 * (the client sees the reply start without waiting), then writes further apart as the reply goes
 * on: the waits double from `firstIntervalMs` up to `maxIntervalMs` (500, 1,000, 2,000 ms by
 * default), so a reply streamed over 5 s costs 4 partial writes (at 0, 0.5, 1.5 and 3.5 s)
 * instead of 20 at a steady 250 ms, and a long one one write per `maxIntervalMs`. Each
 * write carries the whole text so far (a client that joins late, or reloads, needs no history):
 * with the waits doubling, the text sent in all stays under about twice the reply's length (the
 * cost bench's section f measured the form against appended deltas; docs/costs.md).
 * `send` is fire-and-forget: nothing here is ever awaited, so the reply's path does not wait
 * for the database. Once stopped, nothing more is written: a write after the commit that removes
 * the partial would leave it behind.
 */
export class PartialWriter implements ReplySink {
  private text = "";
  private sentText: string | undefined;
  private lastWriteAt = Number.NEGATIVE_INFINITY;
  /** The wait after the latest write: doubles with each write, up to `maxIntervalMs`. */
  private interval: number;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private stopped = false;

  constructor(
    /** Sends the partial (null: removes it), fire-and-forget. */
    private readonly send: (partial: PartialReply | null) => void,
    /** The `message_count` the request's claim saw: the exchange this becomes is numbered after it. */
    private readonly seqAfter: number,
    /** Epoch ms for `updated_at`, which clients compare with their clock to spot a dead request's partial. */
    private readonly clock: () => number,
    private readonly maxIntervalMs: number = PARTIAL_MAX_INTERVAL_MS,
    /** Monotonic ms for the throttle: a test's frozen clock must not stop the writes. */
    private readonly monotonic: () => number = () => performance.now(),
    firstIntervalMs: number = PARTIAL_FIRST_INTERVAL_MS,
  ) {
    this.interval = Math.min(firstIntervalMs, maxIntervalMs);
  }

  /** Whether a partial may be stored (so the commit or a failure must remove it). */
  get written(): boolean {
    return this.sentText !== undefined;
  }

  write(piece: string): void {
    if (this.stopped) return;
    this.text += piece;
    this.schedule();
  }

  /**
   * A retried model call starts its text over: the next write replaces the partial with the new
   * text, so the partial can always be taken back (once stopped, nothing more is written at all).
   */
  restart(): boolean {
    if (!this.stopped) this.text = "";
    return true;
  }

  /** No more writes: the reply is complete and its commit removes what was written. */
  stop(): void {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** No more writes, and what was written is removed: the request failed, nothing will replace it. */
  discard(): void {
    this.stop();
    if (this.written) this.send(null);
    this.sentText = undefined;
  }

  private schedule(): void {
    if (this.timer !== undefined) return;
    const wait = this.lastWriteAt + this.interval - this.monotonic();
    if (wait <= 0) {
      this.flush();
      return;
    }
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flush();
    }, wait);
    // A pending write never keeps a process alive on its own.
    this.timer.unref();
  }

  private flush(): void {
    if (this.stopped || this.text === "" || this.text === this.sentText) return;
    // The first write opens the ramp; each later one doubles the wait before the next.
    if (this.lastWriteAt !== Number.NEGATIVE_INFINITY) this.interval = Math.min(this.interval * 2, this.maxIntervalMs);
    this.lastWriteAt = this.monotonic();
    this.sentText = this.text;
    this.send({ text: this.text, seq_after: this.seqAfter, updated_at: this.clock() });
  }
}
