import type { ChatModel, Completion, CompletionRequest, ReplySink } from "./chat-model";
import { abandonedError, ModelError } from "./errors";

export interface RetryPolicy {
  /** Retries after the first attempt. */
  readonly maxRetries: number;
  /** The longest wait between attempts; a provider asking for more gets no retry (the client gets its Retry-After). */
  readonly maxWaitMs: number;
  /** First backoff; it doubles with each retry, with jitter. */
  readonly baseDelayMs?: number;
  /** Waits between attempts; should wake early when `signal` aborts (the caller gave up). */
  readonly sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  readonly random?: () => number;
}

/**
 * Retries transient model failures (timeouts, 429s, 5xx, lost connections) with exponential
 * backoff, honouring the provider's Retry-After up to `maxWaitMs`. The total time stays
 * bounded: attempts x timeout + retries x maxWaitMs. A streamed call is retried only until its
 * first delta: past it the caller has shown text that another attempt would not continue, unless
 * its sink can still take the text back (`restart` answers true), which it is asked before the
 * wait. Once the request's `signal` aborts, nothing is retried: the caller no longer waits for the
 * answer.
 */
export function withRetries(model: ChatModel, policy: RetryPolicy): ChatModel {
  const sleep = policy.sleep ?? abortableSleep;
  const random = policy.random ?? Math.random;
  const base = policy.baseDelayMs ?? 250;
  return {
    name: model.name,
    async complete(request: CompletionRequest, sink?: ReplySink): Promise<Completion> {
      // Whether this attempt wrote to the sink: whether that text reached anyone for good only
      // the sink knows (held back for moderation it has not; sent down a stream it has), so
      // `restart` asks it.
      const progress = { written: false };
      const relay: ReplySink | undefined = sink && {
        write: (text) => {
          progress.written = true;
          sink.write(text);
        },
      };
      for (let attempt = 0; ; attempt += 1) {
        try {
          return await model.complete(request, relay);
        } catch (error) {
          if (request.signal?.aborted) throw error;
          if (!(error instanceof ModelError) || !error.retryable || attempt >= policy.maxRetries) throw error;
          if (error.retryAfterMs !== undefined && error.retryAfterMs > policy.maxWaitMs) throw error;
          // Taken back before the wait, not after it: text held back for a verdict would
          // otherwise be passed on to the client during the wait, past recall.
          if (progress.written) {
            if (!sink?.restart?.()) throw error;
            progress.written = false;
          }
          await sleep(error.retryAfterMs ?? Math.min(base * 2 ** attempt * (0.5 + random()), policy.maxWaitMs), request.signal);
          if (request.signal?.aborted) throw abandonedError(error);
        }
      }
    },
  };
}

/** Waits `ms`, or less if `signal` aborts first (the caller then has no use for the rest of the wait). */
function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((wake) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      wake();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}
