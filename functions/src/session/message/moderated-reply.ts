import type { Completion, ReplySink } from "../../llm/chat-model";
import type { LogFields } from "../../log/log";
import type { MessageModeration } from "../../moderation/message-moderation";

/** The reply's model call, given the signal that abandons it and the sink it writes to. */
export type ModelCall = (signal: AbortSignal | undefined, sink: ReplySink | undefined) => Promise<Completion>;

/**
 * The reply's model call with the user's message moderated beside it: both start together, so
 * the reply waits for the slower of the two, never for their sum. Until the verdict is in, what
 * the model writes is held back (no delta to the caller, no partial in the database); a clean
 * verdict (or an outage let through) passes it on at once, in one piece, and the rest as it comes.
 * A model call that fails while its text is still held failed before the caller's first delta,
 * so it may be retried (OPENAI_MAX_RETRIES) whatever the caller reads: the retry starts over unseen.
 * A refusal (flagged, an outage refused, a server that cannot moderate) abandons the model call
 * and drops what was held: the caller sees nothing of the reply, and a RefusedReply says what
 * became of the call, which the provider bills all the same. A model failure first abandons the
 * check. Without moderation (MODERATION off) it is the model call alone, unchanged.
 */
export async function moderatedReply(moderation: MessageModeration | undefined, text: string, fields: LogFields, call: ModelCall, sink: ReplySink | undefined): Promise<Completion> {
  if (!moderation) return call(undefined, sink);
  const held = sink && new HeldSink(sink);
  const model = new AbortController();
  const check = new AbortController();
  let refusal: { readonly error: unknown } | undefined;
  let finished: Completion | undefined;
  const verdict = moderation.admit(text, fields, check.signal).then(
    () => { held?.release(); },
    (error: unknown) => {
      refusal = { error };
      held?.drop();
      model.abort();
      throw error;
    },
  );
  const completion = call(model.signal, held).then(
    (reply) => {
      finished = reply;
      return reply;
    },
    (error: unknown) => {
      check.abort();
      throw error;
    },
  );
  try {
    // The first failure wins; the other call, abandoned, settles unobserved.
    const [reply] = await Promise.all([completion, verdict]);
    return reply;
  } catch (error) {
    if (!refusal || refusal.error !== error) throw error;
    throw new RefusedReply(error, finished ? { completion: finished } : "abandoned");
  }
}

/**
 * Moderation refused the message once its model call had started. `refusal` is the verdict's
 * error, what the caller is answered; `call` is what became of the model call, which the provider
 * bills whatever becomes of the message: its completion when it had finished, else "abandoned"
 * (aborted mid-call: its prompt and what it had written are billed, or all of it when the provider
 * finishes it anyway).
 */
export class RefusedReply extends Error {
  override readonly name = "RefusedReply";

  constructor(
    readonly refusal: unknown,
    readonly call: { readonly completion: Completion } | "abandoned",
  ) {
    super("moderation refused the message after its model call started", { cause: refusal });
  }
}

/**
 * A sink that holds what it is given until `release` (then passes it on, and everything after)
 * or `drop` (then passes nothing on, ever). A retried model call starts its text over: while the
 * text is held, nothing of it has reached the sink behind (neither the client's stream nor the
 * live partial), so forgetting it takes it all back, whatever that sink is; once released, the
 * sink behind decides (a partial alone can take text back, a client's stream cannot).
 */
class HeldSink implements ReplySink {
  private held: string[] | undefined = [];
  private dropped = false;

  constructor(private readonly inner: ReplySink) {}

  write(text: string): void {
    if (this.dropped) return;
    if (this.held) this.held.push(text);
    else this.inner.write(text);
  }

  restart(): boolean {
    if (this.held === undefined && !this.dropped) return this.inner.restart?.() ?? false;
    // Still held, or dropped (nothing is ever passed on): nobody has seen any of it.
    this.held?.splice(0);
    return true;
  }

  release(): void {
    const held = this.held;
    this.held = undefined;
    if (!this.dropped && held && held.length > 0) this.inner.write(held.join(""));
  }

  drop(): void {
    this.dropped = true;
    this.held = undefined;
  }
}
