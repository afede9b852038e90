import { recentMessages } from "../support/recent-messages";
import { eventually, streamCall, type ReceivedEvent, type StreamedAnswer } from "../support/event-stream-client";
import { createSession, describeEachStore, ROUTES, startHarness, type Harness } from "../support/http-harness";
import { anyUsage } from "../support/any-usage";
import { FaultyStore } from "../support/faulty-store";

const key = (name: string) => ({ "Idempotency-Key": `${name}-${Math.random().toString(36).slice(2)}` });
/**
 * Long enough that a timer firing late on a loaded machine (137 ms late at 40 ms, seen in CI beside
 * other work) stays within the heartbeat test's bound of three intervals of silence.
 */
const HEARTBEAT_MS = 100;

/** The events' names in order, runs of deltas collapsed: `["delta", "done"]` for a well-formed stream. */
function shape(answer: StreamedAnswer): string[] {
  return answer.events.map((event) => event.event).filter((name, index, names) => name !== "delta" || names[index - 1] !== "delta");
}

function deltaTexts(events: readonly ReceivedEvent[]): string[] {
  return events.filter((event) => event.event === "delta").map((event) => (event.data as { text: string }).text);
}

function lastData(answer: StreamedAnswer): unknown {
  return answer.events.at(-1)?.data;
}

describeEachStore("streamed replies (Server-Sent Events)", (kind) => {
  let harness: Harness;

  beforeAll(async () => {
    harness = await startHarness({ store: kind, heartbeatMs: HEARTBEAT_MS });
  });
  afterAll(async () => harness.close());
  beforeEach(() => { harness.fake.reset(); });

  const stored = async (id: string) => ({
    state: await harness.api.store.readSessionState(id),
    history: (await recentMessages(harness.api.store, id, 100)).map((message) => message.content),
  });

  it.each([
    ["the original route", ROUTES.message],
    ["the function URL", ROUTES.directMessage],
  ])("streams on %s: deltas as the model writes, then done with the JSON body", async (_name, route) => {
    const id = await createSession(harness.api);
    const chunks = ["Once", " upon", " a", " time", "."];
    harness.fake.enqueue({ kind: "stream", chunks, chunkDelayMs: 60 });
    const answer = await streamCall(harness.api.baseUrl, route(id), { message: "a story" });

    expect(answer.status).toBe(200);
    expect(answer.headers.get("content-type")).toMatch(/^text\/event-stream/);
    expect(answer.headers.get("cache-control")).toBe("no-cache");
    expect(answer.headers.get("x-accel-buffering")).toBe("no");
    expect(harness.fake.requests[0]?.body.stream).toBe(true);
    expect(shape(answer)).toEqual(["delta", "done"]);
    const deltas = answer.events.filter((event) => event.event === "delta");
    expect(deltaTexts(deltas)).toEqual(chunks);
    // Each delta arrived as the model wrote it, not all at the end.
    expect(deltas.at(-1)!.at - deltas[0]!.at).toBeGreaterThanOrEqual(180);
    expect(lastData(answer)).toEqual({ success: true, response: "Once upon a time.", session_id: id, message_count: 1, truncated: false, usage: anyUsage() });
    expect(await stored(id)).toMatchObject({ state: { message_count: 1 }, history: ["a story", "Once upon a time."] });
  });

  it("streams when text/event-stream is one of several types listed; answers JSON otherwise, as before", async () => {
    const id = await createSession(harness.api);
    const listed = await streamCall(harness.api.baseUrl, ROUTES.message(id), { message: "one" }, { headers: { accept: "application/json, text/event-stream;q=0.9" } });
    expect(shape(listed)).toEqual(["delta", "done"]);
    for (const accept of ["application/json", "*/*", "text/event-stream;q=0"]) {
      const plain = await harness.api.call("POST", ROUTES.message(id), { message: accept }, { accept });
      expect(plain.status).toBe(200);
      expect(plain.headers.get("content-type")).toMatch(/^application\/json/);
      expect(plain.body).toMatchObject({ success: true, response: `reply #${accept === "application/json" ? 2 : accept === "*/*" ? 3 : 4} to: ${accept}` });
    }
  });

  it("the done body is the JSON a keyed repeat replays, with Idempotent-Replayed and no second model call", async () => {
    const id = await createSession(harness.api);
    const headers = key("streamed");
    harness.fake.enqueue({ kind: "stream", chunks: ["Kept", " once"], chunkDelayMs: 20, finishReason: "length" });
    const first = await streamCall(harness.api.baseUrl, ROUTES.message(id), { message: "keep" }, { headers });
    expect(lastData(first)).toEqual({ success: true, response: "Kept once", session_id: id, message_count: 1, truncated: true, usage: anyUsage() });

    for (const instance of [harness.api, await harness.instance()]) {
      const json = await instance.call("POST", ROUTES.message(id), { message: "keep" }, headers);
      expect(json.status).toBe(200);
      expect(json.headers.get("idempotent-replayed")).toBe("true");
      expect(json.body).toEqual(lastData(first));
      // A repeat that asks for a stream gets the replay whole too: there is nothing left to stream.
      const again = await streamCall(instance.baseUrl, ROUTES.directMessage(id), { message: "keep" }, { headers });
      expect(again.events).toEqual([]);
      expect(again.headers.get("idempotent-replayed")).toBe("true");
      expect(again.json).toEqual(lastData(first));
    }
    expect(harness.fake.requests).toHaveLength(1);
    expect((await stored(id)).state).toMatchObject({ message_count: 1 });
  });

  it("a keyed repeat sent while the first still streams waits for it, then replays its result", async () => {
    const id = await createSession(harness.api);
    const headers = key("while-streaming");
    harness.fake.enqueue({ kind: "stream", chunks: ["slow", " but", " sure"], chunkDelayMs: 100 });
    let repeat: Promise<Awaited<ReturnType<Harness["api"]["call"]>>> | undefined;
    const first = await streamCall(harness.api.baseUrl, ROUTES.message(id), { message: "once" }, {
      headers,
      hangUpAfter: (event) => {
        // Sent once the first is visibly under way, and not awaited here: it waits for the first.
        if (event.event === "delta" && !repeat) repeat = harness.api.call("POST", ROUTES.message(id), { message: "once" }, headers);
        return false;
      },
    });
    const replay = await repeat!;
    expect(replay.status).toBe(200);
    expect(replay.headers.get("idempotent-replayed")).toBe("true");
    expect(replay.body).toEqual(lastData(first));
    expect(harness.fake.requests).toHaveLength(1);
  });

  it("sends a comment line as heartbeat while the model is quiet", async () => {
    const id = await createSession(harness.api);
    harness.fake.enqueue({ kind: "stream", chunks: ["a", " pause", " here"], chunkDelayMs: HEARTBEAT_MS * 4 });
    const answer = await streamCall(harness.api.baseUrl, ROUTES.message(id), { message: "wait" });
    expect(shape(answer)).toEqual(["delta", "done"]);
    expect(answer.comments.length).toBeGreaterThanOrEqual(3);
    for (const comment of answer.comments) expect(comment.text).toBe("keep-alive");
    // Between the first delta and the last, no silence much longer than the interval.
    const times = [...answer.events.map((event) => event.at), ...answer.comments.map((comment) => comment.at)].sort((x, y) => x - y);
    const gaps = times.slice(1).map((time, index) => time - times[index]!);
    expect(Math.max(...gaps)).toBeLessThan(HEARTBEAT_MS * 3);
  });

  it("a model failure after the first delta ends the stream with an error event; nothing is stored and the next message works", async () => {
    const id = await createSession(harness.api);
    await streamCall(harness.api.baseUrl, ROUTES.message(id), { message: "before" });
    harness.fake.reset();
    const headers = key("broken");
    harness.fake.enqueue({ kind: "stream", chunks: ["half", " a", " reply"], chunkDelayMs: 20, cutAfter: 2 });
    const broken = await streamCall(harness.api.baseUrl, ROUTES.message(id), { message: "lost" }, { headers });

    expect(broken.status).toBe(200);
    expect(shape(broken)).toEqual(["delta", "error"]);
    expect(deltaTexts(broken.events)).toEqual(["half", " a"]);
    expect(lastData(broken)).toEqual({ success: false, error: { code: "MODEL_UNAVAILABLE", message: expect.any(String) } });
    expect(await stored(id)).toMatchObject({ state: { message_count: 1 }, history: ["before", "reply #1 to: before"] });

    // The claim was given up: a retry with the same key runs the message again, and it is stored once.
    const retried = await streamCall(harness.api.baseUrl, ROUTES.message(id), { message: "lost" }, { headers });
    expect(shape(retried)).toEqual(["delta", "done"]);
    expect(lastData(retried)).toMatchObject({ success: true, message_count: 2 });
    expect(harness.fake.requests).toHaveLength(2);
    // The broken reply left no trace in the context.
    expect(harness.fake.requests[1]!.body.messages.slice(1).map((message) => message.content)).toEqual(["before", "reply #1 to: before", "lost"]);
  });

  it("an error event after the first delta gives the wait the JSON answer's Retry-After would have: retry_after_seconds", async () => {
    let faulty: FaultyStore | undefined;
    const failing = await startHarness({ store: kind, wrapStore: (store) => (faulty = new FaultyStore(store)).store });
    try {
      const id = await createSession(failing.api);
      failing.fake.enqueue({ kind: "stream", chunks: ["said", " in", " full"], chunkDelayMs: 10 });
      faulty!.arm("appendExchange", "before");
      const lost = await streamCall(failing.api.baseUrl, ROUTES.message(id), { message: "kept?" });
      expect(shape(lost)).toEqual(["delta", "error"]);
      expect(lastData(lost)).toEqual({ success: false, error: { code: "DATABASE_UNAVAILABLE", message: expect.any(String), retry_after_seconds: 1 } });
      // Answered as a whole, the same failure's wait is its header, and its body names none.
      failing.fake.enqueue({ kind: "reply", text: "said in full" });
      faulty!.arm("appendExchange", "before");
      const whole = await failing.api.call("POST", ROUTES.message(id), { message: "kept?" });
      expect(whole.status).toBe(503);
      expect(whole.headers.get("retry-after")).toBe("1");
      expect(whole.body).toEqual({ success: false, error: { code: "DATABASE_UNAVAILABLE", message: expect.any(String) } });
    } finally {
      await failing.close();
    }
  });

  it("answers as JSON, with its status, whatever is decided before the first delta", async () => {
    const id = await createSession(harness.api);
    const unknown = await streamCall(harness.api.baseUrl, ROUTES.message("00000000-0000-4000-8000-000000000000"), { message: "hi" });
    expect(unknown.status).toBe(404);
    expect(unknown.json).toMatchObject({ success: false, error: { code: "SESSION_NOT_FOUND" } });

    const invalid = await streamCall(harness.api.baseUrl, ROUTES.message(id), { message: "" });
    expect(invalid.status).toBe(400);
    expect(invalid.json).toMatchObject({ error: { code: "INVALID_REQUEST" } });

    harness.fake.enqueue({ kind: "status", status: 429, headers: { "retry-after": "7" } });
    const busy = await streamCall(harness.api.baseUrl, ROUTES.message(id), { message: "busy" });
    expect(busy.status).toBe(503);
    expect(busy.headers.get("retry-after")).toBe("7");
    expect(busy.json).toMatchObject({ error: { code: "MODEL_UNAVAILABLE" } });
    // A provider's absurd wait reaches the client as at most a day, in whole seconds.
    harness.fake.enqueue({ kind: "status", status: 429, headers: { "retry-after": "9".repeat(400) } });
    expect((await streamCall(harness.api.baseUrl, ROUTES.message(id), { message: "busy" })).headers.get("retry-after")).toBe("86400");

    // A reply that is blank fails before anything is shown.
    harness.fake.enqueue({ kind: "stream", chunks: [" ", " "] });
    const blank = await streamCall(harness.api.baseUrl, ROUTES.message(id), { message: "blank" });
    expect(blank.status).toBe(502);
    expect(blank.json).toMatchObject({ error: { code: "MODEL_ERROR" } });

    await harness.api.call("DELETE", ROUTES.end(id));
    const ended = await streamCall(harness.api.baseUrl, ROUTES.message(id), { message: "late" });
    expect(ended.status).toBe(410);
    expect(ended.json).toMatchObject({ error: { code: "SESSION_ENDED" } });
    expect((await stored(id)).state).toMatchObject({ message_count: 0 });
  });

  it("a client that hangs up mid-stream does not lose the exchange: the instance finishes and stores it", async () => {
    const id = await createSession(harness.api);
    const chunks = ["still", " written", " after", " you", " left"];
    harness.fake.enqueue({ kind: "stream", chunks, chunkDelayMs: 50 });
    const cut = await streamCall(harness.api.baseUrl, ROUTES.message(id), { message: "bye" }, { hangUpAfter: (event) => event.event === "delta" });
    expect(deltaTexts(cut.events)).toEqual(["still"]);

    const state = await eventually(() => harness.api.store.readSessionState(id), (value) => value?.message_count === 1);
    expect(state).toMatchObject({ status: "active", message_count: 1 });
    expect((await stored(id)).history).toEqual(["bye", "still written after you left"]);
    expect(harness.fake.requests).toHaveLength(1);

    // The instance is none the worse: the next message streams.
    const next = await streamCall(harness.api.baseUrl, ROUTES.message(id), { message: "back" });
    expect(lastData(next)).toMatchObject({ success: true, message_count: 2 });
  });
}, { sharded: true });
