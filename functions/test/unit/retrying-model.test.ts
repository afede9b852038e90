import type { ChatModel, Completion, CompletionRequest, ReplySink } from "../../src/llm/chat-model";
import { ModelError } from "../../src/llm/errors";
import { withRetries, type RetryPolicy } from "../../src/llm/retrying-model";
import { HELLO_REQUEST } from "../support/fixtures";

const REQUEST = HELLO_REQUEST;
const ANSWER: Completion = { text: "hi", truncated: false, model: "gpt-test" };

/** A streamed attempt: these deltas, then the outcome. */
interface Streamed {
  readonly deltas: readonly string[];
  readonly then: Completion | Error;
}

/** A model that answers each call with the next scripted step: an error to throw, a completion, or deltas and then one of those. */
class ScriptedModel implements ChatModel {
  readonly name = "scripted";
  readonly requests: CompletionRequest[] = [];
  readonly listeners: (ReplySink | undefined)[] = [];

  constructor(private readonly script: (Completion | Error | string | Streamed)[]) {}

  async complete(request: CompletionRequest, sink?: ReplySink): Promise<Completion> {
    this.requests.push(request);
    this.listeners.push(sink);
    let step = this.script.shift();
    if (step === undefined) throw new Error("the script ran out");
    if (typeof step === "object" && "deltas" in step) {
      for (const delta of step.deltas) sink?.write(delta);
      step = step.then;
    }
    // A thrown string stands for anything that is not an Error at all.
    // eslint-disable-next-line @typescript-eslint/only-throw-error
    if (step instanceof Error || typeof step === "string") throw step;
    return step;
  }
}

const unavailable = (retryAfterMs?: number) => new ModelError("unavailable", "busy", retryAfterMs === undefined ? {} : { retryAfterMs });
const timeout = () => new ModelError("timeout", "slow");
const serverError = () => new ModelError("bad_response", "status 500", { retryable: true });

/** The decorator around `script`, with waits recorded instead of slept and jitter fixed (0.5: a factor of exactly 1). */
function setup(script: (Completion | Error | string | Streamed)[], policy: Partial<RetryPolicy> = {}) {
  const inner = new ScriptedModel(script);
  const waits: number[] = [];
  const model = withRetries(inner, {
    maxRetries: 3,
    maxWaitMs: 10_000,
    baseDelayMs: 100,
    sleep: async (ms) => {
      waits.push(ms);
    },
    random: () => 0.5,
    ...policy,
  });
  return { inner, model, waits };
}

describe("withRetries", () => {
  it("answers at once when the model does, keeping its name and the request", async () => {
    const { inner, model, waits } = setup([ANSWER]);
    await expect(model.complete(REQUEST)).resolves.toBe(ANSWER);
    expect(model.name).toBe("scripted");
    expect(inner.requests).toEqual([REQUEST]);
    expect(inner.requests[0]).toBe(REQUEST);
    expect(waits).toEqual([]);
  });

  it("retries retryable errors of every kind until the model answers", async () => {
    const { inner, model, waits } = setup([unavailable(), timeout(), serverError(), ANSWER]);
    await expect(model.complete(REQUEST)).resolves.toBe(ANSWER);
    expect(inner.requests).toHaveLength(4);
    expect(waits).toEqual([100, 200, 400]);
  });

  it("gives up after maxRetries retries, rethrowing the last error", async () => {
    const last = unavailable();
    const { inner, model, waits } = setup([timeout(), unavailable(), last, ANSWER], { maxRetries: 2 });
    await expect(model.complete(REQUEST)).rejects.toBe(last);
    expect(inner.requests).toHaveLength(3);
    expect(waits).toHaveLength(2);
  });

  it("never retries with maxRetries 0", async () => {
    const error = timeout();
    const { inner, model, waits } = setup([error, ANSWER], { maxRetries: 0 });
    await expect(model.complete(REQUEST)).rejects.toBe(error);
    expect(inner.requests).toHaveLength(1);
    expect(waits).toEqual([]);
  });

  it.each([
    ["a bad_response", new ModelError("bad_response", "status 400")],
    ["an error marked not retryable", new ModelError("unavailable", "no model is configured", { retryable: false })],
    ["a not-retryable error with a short Retry-After", new ModelError("bad_response", "status 400", { retryAfterMs: 10, retryable: false })],
    ["a plain Error", new TypeError("x is undefined")],
    ["an error of another kind", Object.assign(new Error("looks retryable"), { retryable: true, failure: "timeout" })],
  ])("never retries %s", async (_name, error) => {
    const { inner, model, waits } = setup([error, ANSWER]);
    await expect(model.complete(REQUEST)).rejects.toBe(error);
    expect(inner.requests).toHaveLength(1);
    expect(waits).toEqual([]);
  });

  it("never retries something thrown that is not an Error", async () => {
    const { inner, model } = setup(["boom", ANSWER]);
    await expect(model.complete(REQUEST)).rejects.toBe("boom");
    expect(inner.requests).toHaveLength(1);
  });

  it("waits what the provider asked for, up to maxWaitMs, instead of backing off", async () => {
    const { inner, model, waits } = setup([unavailable(2_500), unavailable(0), unavailable(10_000), ANSWER]);
    await expect(model.complete(REQUEST)).resolves.toBe(ANSWER);
    expect(inner.requests).toHaveLength(4);
    expect(waits).toEqual([2_500, 0, 10_000]);
  });

  it("gives up at once when the provider asks for more than maxWaitMs, passing its Retry-After on", async () => {
    const tooLong = unavailable(10_001);
    const { inner, model, waits } = setup([tooLong, ANSWER]);
    const failure = model.complete(REQUEST);
    await expect(failure).rejects.toBe(tooLong);
    await expect(failure).rejects.toMatchObject({ retryAfterMs: 10_001, retryAfterSeconds: 11 });
    expect(inner.requests).toHaveLength(1);
    expect(waits).toEqual([]);
  });

  it("gives up midway when a later attempt asks for too long", async () => {
    const tooLong = unavailable(60_000);
    const { inner, model, waits } = setup([timeout(), tooLong, ANSWER]);
    await expect(model.complete(REQUEST)).rejects.toBe(tooLong);
    expect(inner.requests).toHaveLength(2);
    expect(waits).toEqual([100]);
  });

  it("doubles the backoff with each retry, capped at maxWaitMs", async () => {
    const { model, waits } = setup([timeout(), timeout(), timeout(), timeout(), timeout(), ANSWER], { maxRetries: 5, maxWaitMs: 500 });
    await expect(model.complete(REQUEST)).resolves.toBe(ANSWER);
    expect(waits).toEqual([100, 200, 400, 500, 500]);
  });

  it.each([
    [0, [50, 100, 200]],
    [0.25, [75, 150, 300]],
    [0.999, [149.9, 299.8, 599.6]],
  ])("jitters each backoff by a factor of 0.5 + random() (random %p)", async (random, expected) => {
    const { model, waits } = setup([timeout(), timeout(), timeout(), ANSWER], { random: () => random });
    await expect(model.complete(REQUEST)).resolves.toBe(ANSWER);
    expect(waits).toHaveLength(expected.length);
    waits.forEach((wait, i) => {
      expect(wait).toBeCloseTo(expected[i] ?? Number.NaN, 6);
    });
  });

  it("starts from 250 ms by default", async () => {
    const { model, waits } = setup([timeout(), timeout(), ANSWER], { baseDelayMs: undefined });
    await expect(model.complete(REQUEST)).resolves.toBe(ANSWER);
    expect(waits).toEqual([250, 500]);
  });

  it("really sleeps between attempts without an injected sleep", async () => {
    const inner = new ScriptedModel([timeout(), unavailable(30), ANSWER]);
    const model = withRetries(inner, { maxRetries: 2, maxWaitMs: 1_000, baseDelayMs: 20, random: () => 0.5 });
    const started = performance.now();
    await expect(model.complete(REQUEST)).resolves.toBe(ANSWER);
    // 20 ms of backoff, then the 30 ms asked for (timers may fire a millisecond early).
    expect(performance.now() - started).toBeGreaterThanOrEqual(48);
    expect(inner.requests).toHaveLength(3);
  });

  describe("once the caller gives up (its signal aborted)", () => {
    it("retries nothing, however retryable the failure, and never waits", async () => {
      const caller = new AbortController();
      caller.abort();
      const error = timeout();
      const { inner, model, waits } = setup([error, ANSWER]);
      await expect(model.complete({ ...REQUEST, signal: caller.signal })).rejects.toBe(error);
      expect(inner.requests).toHaveLength(1);
      expect(waits).toEqual([]);
    });

    it("makes no further attempt when the signal aborts during the wait", async () => {
      const caller = new AbortController();
      const first = unavailable();
      const { inner, model, waits } = setup([first, ANSWER], {
        sleep: async (ms) => {
          waits.push(ms);
          caller.abort();
        },
      });
      const failure = model.complete({ ...REQUEST, signal: caller.signal });
      await expect(failure).rejects.toMatchObject({ name: "ModelError", failure: "timeout", retryable: false, message: "the call was abandoned" });
      await expect(failure).rejects.toHaveProperty("cause", first);
      expect(inner.requests).toHaveLength(1);
      expect(waits).toEqual([100]);
    });

    it("wakes from its own sleep at the abort rather than waiting the backoff out", async () => {
      const caller = new AbortController();
      const inner = new ScriptedModel([timeout(), ANSWER]);
      const model = withRetries(inner, { maxRetries: 1, maxWaitMs: 10_000, baseDelayMs: 5_000, random: () => 0.5 });
      const started = performance.now();
      setTimeout(() => { caller.abort(); }, 30);
      await expect(model.complete({ ...REQUEST, signal: caller.signal })).rejects.toMatchObject({ retryable: false, message: "the call was abandoned" });
      expect(performance.now() - started).toBeLessThan(1_000);
      expect(inner.requests).toHaveLength(1);
    });
  });

  describe("streamed calls", () => {
    it("passes no listener on when the caller streams nothing", async () => {
      const { inner, model } = setup([ANSWER]);
      await expect(model.complete(REQUEST)).resolves.toBe(ANSWER);
      expect(inner.listeners).toEqual([undefined]);
    });

    it("passes each delta on, in order, and returns the completion", async () => {
      const { model } = setup([{ deltas: ["h", "i"], then: ANSWER }]);
      const deltas: string[] = [];
      await expect(model.complete(REQUEST, { write: (text) => deltas.push(text) })).resolves.toBe(ANSWER);
      expect(deltas).toEqual(["h", "i"]);
    });

    it("retries a failure that came before the first delta; the caller sees only the retry's deltas", async () => {
      const { inner, model, waits } = setup([{ deltas: [], then: timeout() }, unavailable(), { deltas: ["h", "i"], then: ANSWER }]);
      const deltas: string[] = [];
      await expect(model.complete(REQUEST, { write: (text) => deltas.push(text) })).resolves.toBe(ANSWER);
      expect(inner.requests).toHaveLength(3);
      expect(waits).toEqual([100, 200]);
      expect(deltas).toEqual(["h", "i"]);
    });

    it("never retries after the first delta, however retryable the failure", async () => {
      const broke = unavailable();
      const { inner, model, waits } = setup([{ deltas: ["half a"], then: broke }, ANSWER]);
      const deltas: string[] = [];
      await expect(model.complete(REQUEST, { write: (text) => deltas.push(text) })).rejects.toBe(broke);
      expect(inner.requests).toHaveLength(1);
      expect(waits).toEqual([]);
      expect(deltas).toEqual(["half a"]);
    });

    it("after a retried failure, a failure past the retry's first delta is final too", async () => {
      const broke = timeout();
      const { inner, model } = setup([timeout(), { deltas: ["x"], then: broke }, ANSWER]);
      await expect(model.complete(REQUEST, { write: () => undefined })).rejects.toBe(broke);
      expect(inner.requests).toHaveLength(2);
    });

    it("retries past a delta when the sink can take the text back: restart before the wait, then the deltas start over", async () => {
      const seen: string[] = [];
      const { inner, model } = setup([{ deltas: ["half", " a"], then: unavailable() }, { deltas: ["h", "i"], then: ANSWER }], {
        sleep: async (ms) => {
          seen.push(`<wait ${ms}>`);
        },
      });
      await expect(model.complete(REQUEST, { write: (text) => seen.push(text), restart: () => { seen.push("<restart>"); return true; } })).resolves.toBe(ANSWER);
      expect(inner.requests).toHaveLength(2);
      expect(seen).toEqual(["half", " a", "<restart>", "<wait 100>", "h", "i"]);
    });

    it("retries past a delta no more when the sink answers that the text is past recall", async () => {
      const broke = unavailable();
      const restarts: number[] = [];
      const { inner, model, waits } = setup([{ deltas: ["half a"], then: broke }, ANSWER]);
      await expect(model.complete(REQUEST, { write: () => undefined, restart: () => { restarts.push(1); return false; } })).rejects.toBe(broke);
      expect({ requests: inner.requests.length, waits, restarts }).toEqual({ requests: 1, waits: [], restarts: [1] });
    });

    it("asks the sink again after each attempt that wrote, and not after one that did not", async () => {
      const restarts: number[] = [];
      const { inner, model } = setup([{ deltas: ["a"], then: timeout() }, timeout(), { deltas: ["b"], then: unavailable() }, ANSWER]);
      await expect(model.complete(REQUEST, { write: () => undefined, restart: () => { restarts.push(inner.requests.length); return true; } })).resolves.toBe(ANSWER);
      expect(restarts).toEqual([1, 3]);
    });

    it("calls restart only when text was passed on, and keeps the retry budget", async () => {
      const broke = unavailable();
      const restarts: number[] = [];
      const { model } = setup([timeout(), { deltas: ["x"], then: broke }, ANSWER], { maxRetries: 1 });
      await expect(model.complete(REQUEST, { write: () => undefined, restart: () => { restarts.push(1); return true; } })).rejects.toBe(broke);
      // One retry allowed: the second failure is final, with or without text.
      expect(restarts).toEqual([]);
    });
  });
});
