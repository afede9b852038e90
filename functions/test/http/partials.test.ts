import { recentMessages } from "../support/recent-messages";
import { deleteApp, type FirebaseApp } from "firebase/app";
import type { Database } from "firebase/database";
import { streamCall } from "../support/event-stream-client";
import { createSession, ROUTES, startHarness, type Harness } from "../support/http-harness";
import { describeWithRtdb } from "../support/rtdb";
import { SessionWatcher, webClient } from "../support/session-watcher";

describeWithRtdb("live partial replies in the Realtime Database, seen by a web SDK client", () => {
  let harness: Harness;
  const apps: FirebaseApp[] = [];

  /** A page: a web SDK app of its own on the harness's database (no rules here: the stand-in enforces none). */
  function page(on: Harness = harness): Database {
    const { app, database } = webClient(on.namespace ?? "");
    apps.push(app);
    return database;
  }

  beforeAll(async () => {
    harness = await startHarness({ store: "rtdb" });
  });
  afterAll(async () => {
    await Promise.all(apps.map((app) => deleteApp(app)));
    await harness.close();
  });
  beforeEach(() => { harness.fake.reset(); });

  const chunks = ["Once", " upon", " a", " time", " there", " was", " a", " reply."];
  const reply = chunks.join("");

  it.each([
    ["a JSON request (the original route)", false],
    ["a streamed request", true],
  ])("shows the reply growing under partials, then the exchange in messages, never both: %s", async (_name, streamed) => {
    const id = await createSession(harness.api);
    const watcher = new SessionWatcher(page(), id);
    await watcher.until(() => true);
    harness.fake.enqueue({ kind: "stream", chunks, chunkDelayMs: 90 });
    const answer = streamed
      ? (await streamCall(harness.api.baseUrl, ROUTES.directMessage(id), { message: "a story" })).status
      : (await harness.api.call("POST", ROUTES.message(id), { message: "a story" })).status;
    expect(answer).toBe(200);
    await watcher.until((seen) => seen.messages.length === 2 && seen.partials.length === 0);
    watcher.close();

    const texts = watcher.partialTexts();
    // Throttled (at most four writes a second over ~0.7 s), but growing while the model wrote.
    expect(texts.length).toBeGreaterThanOrEqual(2);
    expect(texts.length).toBeLessThanOrEqual(5);
    for (const [index, text] of texts.entries()) {
      expect(reply.startsWith(text)).toBe(true);
      if (index > 0) expect(text.length).toBeGreaterThan(texts[index - 1]!.length);
    }
    const partials = watcher.seen.flatMap((seen) => seen.partials);
    expect(new Set(partials.map((partial) => partial.seq_after))).toEqual(new Set([0]));
    // The exchange arrives and the partial leaves in one update: no event shows both, none neither.
    const firstStored = watcher.seen.findIndex((seen) => seen.messages.length > 0);
    expect(watcher.seen.slice(firstStored).every((seen) => seen.partials.length === 0 && seen.messages.length === 2)).toBe(true);
    expect(watcher.seen[firstStored - 1]?.partials).toHaveLength(1);
    expect(watcher.seen.at(-1)?.messages).toEqual(["a story", reply]);
  });

  it("lets a page that reloads mid-reply resume from the partial", async () => {
    const id = await createSession(harness.api);
    const first = new SessionWatcher(page(), id);
    harness.fake.enqueue({ kind: "stream", chunks, chunkDelayMs: 90 });
    const sending = harness.api.call("POST", ROUTES.message(id), { message: "a story" });
    await first.until((seen) => seen.partials.length === 1);
    // The reload: the old page goes, a new one (a fresh SDK app, no cache) listens to the same session.
    first.close();
    const reloaded = new SessionWatcher(page(), id);
    await reloaded.until(() => true);
    const resumedAt = reloaded.seen[0];
    expect(resumedAt?.messages).toEqual([]);
    expect(resumedAt?.partials).toHaveLength(1);
    expect(reply.startsWith(resumedAt?.partials[0]?.text ?? "-")).toBe(true);
    expect((await sending).status).toBe(200);
    await reloaded.until((seen) => seen.messages.length === 2 && seen.partials.length === 0);
    reloaded.close();
  });

  it("removes the partial and stores nothing when the model fails mid-reply", async () => {
    const id = await createSession(harness.api);
    const watcher = new SessionWatcher(page(), id);
    // The harness does not retry model calls: the one attempt breaks off.
    harness.fake.enqueue({ kind: "stream", chunks, chunkDelayMs: 90, cutAfter: 4 });
    const answer = await harness.api.call("POST", ROUTES.message(id), { message: "a story" });
    expect(answer.status).toBe(503);
    expect(answer.body.error?.code).toBe("MODEL_UNAVAILABLE");
    await watcher.until((seen) => seen.partials.length === 0 && watcher.seen.some((earlier) => earlier.partials.length > 0));
    watcher.close();
    expect(watcher.partialTexts().every((text) => reply.startsWith(text))).toBe(true);
    expect(watcher.seen.every((seen) => seen.messages.length === 0)).toBe(true);
    expect(await harness.api.store.readSessionState(id)).toMatchObject({ message_count: 0 });
    expect(await recentMessages(harness.api.store, id, 10)).toEqual([]);
  });

  it("starts the partial over when a JSON request's model call is retried after some text", async () => {
    const retrying = await startHarness({ store: "rtdb", env: { OPENAI_MAX_RETRIES: "1", OPENAI_MAX_RETRY_WAIT_MS: "300" } });
    try {
      await retriedReply(retrying);
    } finally {
      await retrying.close();
    }
  });

  it("writes no partial of a JSON request's model call that broke off while moderation held its text: the retry's text alone", async () => {
    const moderated = await startHarness({ store: "rtdb", env: { MODERATION: "true", OPENAI_MAX_RETRIES: "1", OPENAI_MAX_RETRY_WAIT_MS: "300" } });
    try {
      const id = await createSession(moderated.api);
      const watcher = new SessionWatcher(page(moderated), id);
      // The first attempt breaks off while the verdict is still 600 ms away; the retry answers.
      moderated.fake.enqueue({ kind: "stream", chunks: ["Lost", " words"], chunkDelayMs: 10, cutAfter: 1 }, { kind: "stream", chunks, chunkDelayMs: 10 });
      moderated.fake.enqueueModeration({ kind: "verdict", flagged: false, delayMs: 600 });
      const answer = await moderated.api.call("POST", ROUTES.message(id), { message: "a story" });
      expect({ status: answer.status, response: answer.body.response }).toEqual({ status: 200, response: reply });
      expect(moderated.fake.requests).toHaveLength(2);
      await watcher.until((seen) => seen.messages.length === 2 && seen.partials.length === 0);
      watcher.close();
      expect(watcher.partialTexts().every((text) => reply.startsWith(text))).toBe(true);
      expect(watcher.seen.at(-1)?.messages).toEqual(["a story", reply]);
    } finally {
      await moderated.close();
    }
  });

  it("writes no partial and calls the model without streaming when LIVE_PARTIALS is false", async () => {
    const quiet = await startHarness({ store: "rtdb", env: { LIVE_PARTIALS: "false" } });
    try {
      const id = await createSession(quiet.api);
      const watcher = new SessionWatcher(page(quiet), id);
      const answer = await quiet.api.call("POST", ROUTES.message(id), { message: "a story" });
      expect(answer.status).toBe(200);
      await watcher.until((seen) => seen.messages.length === 2);
      watcher.close();
      expect(watcher.seen.every((seen) => seen.partials.length === 0)).toBe(true);
      expect(quiet.fake.requests.at(-1)?.body.stream).not.toBe(true);
    } finally {
      await quiet.close();
    }
  });

  async function retriedReply(harness: Harness): Promise<void> {
    const id = await createSession(harness.api);
    const watcher = new SessionWatcher(page(harness), id);
    harness.fake.enqueue({ kind: "stream", chunks: ["Lost", " words", " here", " and", " more"], chunkDelayMs: 90, cutAfter: 3 }, { kind: "stream", chunks, chunkDelayMs: 60 });
    const answer = await harness.api.call("POST", ROUTES.message(id), { message: "a story" });
    expect(answer.status).toBe(200);
    expect(answer.body.response).toBe(reply);
    await watcher.until((seen) => seen.messages.length === 2 && seen.partials.length === 0);
    watcher.close();
    // The first attempt's text was shown, then replaced by the retry's: a partial may start over.
    const texts = watcher.partialTexts();
    expect(texts[0]?.startsWith("Lost")).toBe(true);
    expect(reply.startsWith(texts.at(-1) ?? "-")).toBe(true);
    expect(watcher.seen.at(-1)?.messages).toEqual(["a story", reply]);
  }
});
