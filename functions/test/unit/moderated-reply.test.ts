import type { Completion, ReplySink } from "../../src/llm/chat-model";
import { ModelError } from "../../src/llm/errors";
import { MessageFlaggedError, ModerationAbandonedError, ModerationNotSupportedError, ModerationUnavailableError, type Moderator } from "../../src/llm/moderation";
import { messageModeration, type MessageModeration } from "../../src/moderation/message-moderation";
import { moderatedReply, RefusedReply, type ModelCall } from "../../src/session/message/moderated-reply";
import { recordingLog } from "../support/recording-log";

const COMPLETION: Completion = { text: "Hello there", truncated: false, model: "gpt-test" };

/** A promise settled from outside. */
function deferred<T>(): { promise: Promise<T>; resolve: (value: T) => void; reject: (error: unknown) => void } {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((ok, fail) => { resolve = ok; reject = fail; });
  return { promise, resolve, reject };
}

/** A model call the test drives: it writes to the sink it was given when told, and settles when told. */
function drivenCall() {
  const result = deferred<Completion>();
  const seen: { signal?: AbortSignal; sink?: ReplySink } = {};
  const call: ModelCall = (signal, sink) => {
    if (signal) seen.signal = signal;
    if (sink) seen.sink = sink;
    signal?.addEventListener("abort", () => { result.reject(new ModelError("timeout", "the call was abandoned", { retryable: false })); });
    return result.promise;
  };
  return { call, seen, result };
}

/** A moderation the test drives: its verdict settles when told, and it rejects as abandoned once its signal aborts. */
function drivenModeration() {
  const verdict = deferred<undefined>();
  const seen: { signal?: AbortSignal; text?: string } = {};
  const moderation: MessageModeration = {
    admit: (text, _fields, signal) => {
      seen.text = text;
      if (signal) seen.signal = signal;
      signal?.addEventListener("abort", () => { verdict.reject(new ModerationAbandonedError("abandoned")); });
      return verdict.promise;
    },
  };
  return { moderation, seen, verdict };
}

/** A sink that records what reaches it, and can take text back when `restartable`. */
function recordingSink(restartable: boolean): { sink: ReplySink; written: string[]; restarts: number[] } {
  const written: string[] = [];
  const restarts: number[] = [];
  const sink: ReplySink = { write: (text) => { written.push(text); } };
  return { sink: restartable ? { ...sink, restart: () => { restarts.push(written.length); return true; } } : sink, written, restarts };
}

/** Lets every settled promise's callbacks run. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

describe("moderatedReply: the model call with the message moderated beside it", () => {
  it("calls the model alone, unchanged, without moderation", async () => {
    const { call, seen, result } = drivenCall();
    const { sink, written } = recordingSink(false);
    const reply = moderatedReply(undefined, "hi", {}, call, sink);
    seen.sink?.write("Hello");
    expect(written).toEqual(["Hello"]);
    expect(seen.signal).toBeUndefined();
    result.resolve(COMPLETION);
    await expect(reply).resolves.toBe(COMPLETION);
  });

  it("starts both at once, holds the text until a clean verdict, then passes it on in one piece and the rest as it comes", async () => {
    const model = drivenCall();
    const check = drivenModeration();
    const { sink, written } = recordingSink(false);
    const reply = moderatedReply(check.moderation, "the user's text", {}, model.call, sink);
    expect(check.seen.text).toBe("the user's text");
    expect(model.seen.sink).toBeDefined();
    model.seen.sink?.write("Hel");
    model.seen.sink?.write("lo");
    expect(written).toEqual([]);
    check.verdict.resolve(undefined);
    await settle();
    expect(written).toEqual(["Hello"]);
    model.seen.sink?.write(" there");
    expect(written).toEqual(["Hello", " there"]);
    model.result.resolve(COMPLETION);
    await expect(reply).resolves.toBe(COMPLETION);
  });

  it("waits for the verdict when the model finishes first, and shows nothing until then", async () => {
    const model = drivenCall();
    const check = drivenModeration();
    const { sink, written } = recordingSink(false);
    let done = false;
    const reply = moderatedReply(check.moderation, "hi", {}, model.call, sink).finally(() => { done = true; });
    model.seen.sink?.write("Hello there");
    model.result.resolve(COMPLETION);
    await settle();
    expect({ done, written }).toEqual({ done: false, written: [] });
    check.verdict.resolve(undefined);
    await expect(reply).resolves.toBe(COMPLETION);
    expect(written).toEqual(["Hello there"]);
  });

  it("abandons the model call on a refusal, drops what it held and anything it writes after, and says the call was abandoned", async () => {
    const model = drivenCall();
    const check = drivenModeration();
    const { sink, written } = recordingSink(true);
    const reply = moderatedReply(check.moderation, "hi", {}, model.call, sink);
    model.seen.sink?.write("Never shown");
    const flagged = new MessageFlaggedError(["hate"]);
    check.verdict.reject(flagged);
    const refused = await reply.catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(RefusedReply);
    expect(refused).toMatchObject({ refusal: flagged, call: "abandoned" });
    expect(model.seen.signal?.aborted).toBe(true);
    model.seen.sink?.write(" nor this");
    expect(written).toEqual([]);
  });

  it("hands over the completion of a model call that finished before the refusal: the provider billed it", async () => {
    const model = drivenCall();
    const check = drivenModeration();
    const { sink, written } = recordingSink(false);
    const reply = moderatedReply(check.moderation, "hi", {}, model.call, sink);
    model.seen.sink?.write("Hello there");
    model.result.resolve(COMPLETION);
    await settle();
    const outage = new ModerationUnavailableError("timeout", "moderation: no verdict in time");
    check.verdict.reject(outage);
    const refused = await reply.catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(RefusedReply);
    expect(refused).toMatchObject({ refusal: outage, call: { completion: COMPLETION } });
    expect(written).toEqual([]);
  });

  it("abandons the check when the model fails first, and answers the model's failure", async () => {
    const model = drivenCall();
    const check = drivenModeration();
    const reply = moderatedReply(check.moderation, "hi", {}, model.call, undefined);
    const failure = new ModelError("unavailable", "busy");
    model.result.reject(failure);
    await expect(reply).rejects.toBe(failure);
    expect(check.seen.signal?.aborted).toBe(true);
  });

  it("forgets the held text when a retried call starts over, and lets the sink behind take back text once released", async () => {
    const model = drivenCall();
    const check = drivenModeration();
    const { sink, written, restarts } = recordingSink(true);
    const reply = moderatedReply(check.moderation, "hi", {}, model.call, sink);
    model.seen.sink?.write("First attempt");
    expect(model.seen.sink?.restart?.()).toBe(true);
    model.seen.sink?.write("Second");
    check.verdict.resolve(undefined);
    await settle();
    expect({ written, restarts }).toEqual({ written: ["Second"], restarts: [] });
    expect(model.seen.sink?.restart?.()).toBe(true);
    expect(restarts).toEqual([1]);
    model.result.resolve(COMPLETION);
    await reply;
  });

  it("takes held text back in front of a sink that cannot (a client's stream), since none of it reached the sink", async () => {
    const model = drivenCall();
    const check = drivenModeration();
    const { sink, written } = recordingSink(false);
    const reply = moderatedReply(check.moderation, "hi", {}, model.call, sink);
    model.seen.sink?.write("lost");
    expect(model.seen.sink?.restart?.()).toBe(true);
    model.seen.sink?.write("Second try");
    check.verdict.resolve(undefined);
    await settle();
    expect(written).toEqual(["Second try"]);
    model.result.resolve(COMPLETION);
    await reply;
  });

  it("cannot take text back once released into a sink that cannot (a client's stream): restart answers false, passing nothing again", async () => {
    const model = drivenCall();
    const check = drivenModeration();
    const { sink, written } = recordingSink(false);
    const reply = moderatedReply(check.moderation, "hi", {}, model.call, sink);
    model.seen.sink?.write("Shown");
    check.verdict.resolve(undefined);
    await settle();
    expect(model.seen.sink?.restart?.()).toBe(false);
    model.seen.sink?.write(" on");
    expect(written).toEqual(["Shown", " on"]);
    model.result.resolve(COMPLETION);
    await reply;
  });
});

describe("messageModeration: the verdict and the outage choice", () => {
  const moderator = (check: Moderator["check"]): Moderator => ({ name: "scripted", check });

  it("lets a clean message on, and refuses a flagged one naming its categories in the log, never its text", async () => {
    const { log, entries } = recordingLog();
    const clean = messageModeration(moderator(() => Promise.resolve({ flagged: false, categories: [] })), "open", log);
    await expect(clean.admit("fine", { session_id: "s1" })).resolves.toBeUndefined();
    const flagging = messageModeration(moderator(() => Promise.resolve({ flagged: true, categories: ["hate", "violence"] })), "open", log);
    const error = await flagging.admit("the secret text", { session_id: "s1" }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(MessageFlaggedError);
    expect((error as MessageFlaggedError).categories).toEqual(["hate", "violence"]);
    expect(entries).toEqual([{ level: "info", message: "message flagged", fields: { session_id: "s1", moderator: "scripted", categories: "hate,violence" } }]);
  });

  it("lets the message through on an outage when open, refuses it when closed, logging either way", async () => {
    const outage = () => Promise.reject(new ModerationUnavailableError("timeout", "moderation: the model did not answer in time"));
    const { log, entries } = recordingLog();
    await expect(messageModeration(moderator(outage), "open", log).admit("x", { session_id: "s2" })).resolves.toBeUndefined();
    await expect(messageModeration(moderator(outage), "closed", log).admit("x", { session_id: "s2" })).rejects.toBeInstanceOf(ModerationUnavailableError);
    expect(entries.map((entry) => [entry.level, entry.message, entry.fields?.failure])).toEqual([
      ["warn", "moderation unavailable, message let through unchecked", "timeout"],
      ["warn", "moderation unavailable, message refused", "timeout"],
    ]);
  });

  it("passes a configuration error and an abandon on as they are, whatever the choice", async () => {
    const notSupported = new ModerationNotSupportedError("no moderations endpoint");
    const abandoned = new ModerationAbandonedError("abandoned");
    const { log } = recordingLog();
    await expect(messageModeration(moderator(() => Promise.reject(notSupported)), "open", log).admit("x", {})).rejects.toBe(notSupported);
    await expect(messageModeration(moderator(() => Promise.reject(abandoned)), "open", log).admit("x", {})).rejects.toBe(abandoned);
  });
});
