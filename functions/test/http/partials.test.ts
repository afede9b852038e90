import { recentMessages } from "../support/recent-messages";
import { randomUUID } from "node:crypto";
import { deleteApp, type FirebaseApp } from "firebase/app";
import type { Database } from "firebase/database";
import { streamCall } from "../support/event-stream-client";
import { lastUser, type RecordedRequest, type Scripted } from "../support/fake-openai-server";
import { appendAt, exchange } from "../support/fixtures";
import type { SessionStore } from "../../src/store/session-store";
import { createSession, ROUTES, startHarness, type Harness, type Instance } from "../support/http-harness";
import { describeWithRtdb } from "../support/rtdb";
import { FaultyStore } from "../support/faulty-store";
import { SessionWatcher, webClient, type Seen } from "../support/session-watcher";

describeWithRtdb("live partial replies in the Realtime Database, seen by a web SDK client", () => {
  let harness: Harness;
  const apps: FirebaseApp[] = [];

  /**
   * A page: a web SDK app of its own on the harness's database, signed out: no rules are loaded into
   * this namespace, so it reads everything. The contract under database.rules.json (the owner, signed
   * in, sees it; another user is denied) is held in test/rules/live-partials-rules.test.ts.
   */
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

  /** What the documented client shows: render() of docs/api.md (the clock check left out: everything here is fresh). */
  const shown = (seen: Seen) => {
    const completed = new Set(seen.stored.map((message) => message.partial));
    return seen.partials
      .filter((partial) => !completed.has(partial.key) && seen.stored.slice(2 * partial.seq_after).every((message) => message.role === "user" || message.partial !== undefined))
      .map((partial) => partial.text);
  };
  const slowReply = ["The", " slow", " reply", " keeps", " growing", " for", " a", " while", " longer", " still."];
  /** "quick" answers at once; anything else is the slow reply, a word every 250 ms. */
  const quickAndSlow = (request: RecordedRequest): Scripted =>
    lastUser(request) === "quick" ? { kind: "stream", chunks: ["Quick", " answer."], chunkDelayMs: 50 } : { kind: "stream", chunks: slowReply, chunkDelayMs: 250 };
  /** A session of a user of its own (the suite's sessions would pass one user's active sessions). */
  const ownSession = () => createSession(harness.api, "friendly-assistant", `user_${randomUUID().slice(0, 8)}`);

  it("keeps showing the slower of two replies growing after the quicker one's exchange landed, and names in each stored reply the partial it completed", async () => {
    const id = await ownSession();
    const watcher = new SessionWatcher(page(), id);
    await watcher.until(() => true);
    harness.fake.chaos = quickAndSlow;
    const slow = harness.api.call("POST", ROUTES.message(id), { message: "slow" });
    // The slow one is writing its partial before the quick one is sent: both claims see no exchange.
    await watcher.until((seen) => seen.partials.length === 1);
    const quick = await harness.api.call("POST", ROUTES.message(id), { message: "quick" });
    expect(quick.status).toBe(200);
    expect((await slow).status).toBe(200);
    await watcher.until((seen) => seen.messages.length === 4 && seen.partials.length === 0);
    watcher.close();

    const quickLanded = watcher.seen.findIndex((seen) => seen.messages.length === 2);
    const after = watcher.seen.slice(quickLanded, watcher.seen.findIndex((seen) => seen.messages.length === 4));
    // The slow reply's partial is in the database, and grows, after the quick exchange landed...
    const stored = after.flatMap((seen) => seen.partials.map((partial) => partial.text));
    expect(new Set(stored).size).toBeGreaterThanOrEqual(2);
    // ...and the documented client shows it.
    expect(after.map(shown)).toEqual(after.map((seen) => seen.partials.map((partial) => partial.text)));
    // Each reply names the partial it completed (the slow one's key, seen while it grew, on the slow reply).
    const slowKey = after[0]?.partials[0]?.key;
    const replies = watcher.seen.at(-1)!.stored.filter((message) => message.role === "assistant");
    expect(replies.map((reply) => [reply.content, reply.partial === slowKey])).toEqual([["Quick answer.", false], [slowReply.join(""), true]]);
    expect(replies.every((reply) => typeof reply.partial === "string")).toBe(true);
  });

  it("answers GET /session/{id} with the slower reply still being written after the quicker one's exchange landed", async () => {
    const id = await ownSession();
    const watcher = new SessionWatcher(page(), id);
    await watcher.until(() => true);
    harness.fake.chaos = quickAndSlow;
    const slow = harness.api.call("POST", ROUTES.message(id), { message: "slow" });
    await watcher.until((seen) => seen.partials.length === 1);
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "quick" })).status).toBe(200);
    // The quick exchange is stored; the slow reply is still being written (its partial is in the database).
    await watcher.until((seen) => seen.messages.length === 2 && seen.partials.length === 1);
    const read = await harness.api.call("GET", ROUTES.get(id));
    const inDatabase = watcher.seen.at(-1)!.partials.map((partial) => ({ key: partial.key, text: partial.text }));
    const answered = (read.body.partials as { key: string; text: string }[]).map((partial) => ({ key: partial.key, text: partial.text }));
    expect((await slow).status).toBe(200);
    watcher.close();
    const session = read.body.session as { message_count: number };
    // The partial is answered as the database held it: by its key, its text as far as it was written.
    expect({ message_count: session.message_count, writing: answered.map(({ key }) => key) }).toEqual({ message_count: 1, writing: inDatabase.map(({ key }) => key) });
    expect(slowReply.join("").startsWith(answered[0]?.text ?? "-")).toBe(true);
  });

  it("answers GET /session/{id} without a partial whose reply is stored, found before the page when needed, and with one only other replies came after", async () => {
    const id = await ownSession();
    const store = harness.api.store;
    const partial = (text: string) => ({ text, seq_after: 0, updated_at: Date.now() });
    // Exchange 1 completed partial "done-1"; exchanges 2 and 3 others'. Both partials claimed at 0.
    await store.appendExchange(id, exchange("1"), appendAt(Date.now()), "done-1");
    await store.appendExchange(id, exchange("2"), appendAt(Date.now()), "other-2");
    await store.appendExchange(id, exchange("3"), appendAt(Date.now()), "other-3");
    // Read as a listener could, between a reply's commit and its copy: its partial is still there.
    await store.writePartial(id, "done-1", partial("answer"));
    await store.writePartial(id, "writing", partial("still wri"));
    expect(Object.keys(await store.readPartialReplies(id)).sort()).toEqual(["done-1", "writing"]);
    const keys = async (query: string) => ((await harness.api.call("GET", `${ROUTES.get(id)}${query}`)).body.partials as { key: string }[]).map((entry) => entry.key);
    expect(await keys("")).toEqual(["writing"]);
    // A page of exchange 3 alone: the replies before it are read to find the one "done-1" completed.
    expect(await keys("?limit=2")).toEqual(["writing"]);
  });

  it("answers GET /session/{id} without a partial that a reply stored without a key came after: the count rule for replies stored before keys", async () => {
    const id = await ownSession();
    const store = harness.api.store;
    await store.writePartial(id, "writing", { text: "still wri", seq_after: 0, updated_at: Date.now() });
    await store.writePartial(id, "later", { text: "after it", seq_after: 1, updated_at: Date.now() });
    await store.appendExchange(id, exchange("1"), appendAt(Date.now()));
    const keys = ((await harness.api.call("GET", ROUTES.get(id))).body.partials as { key: string }[]).map((entry) => entry.key);
    expect(keys).toEqual(["later"]);
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

  it("removes a failed message's partial when its own removal is lost: the claim's release removes it too", async () => {
    const faults: FaultyStore[] = [];
    const faulty = await startHarness({ store: "rtdb", wrapStore: (store) => { faults.push(new FaultyStore(store)); return faults.at(-1)!.store; } });
    try {
      const id = await createSession(faulty.api);
      faulty.fake.enqueue({ kind: "stream", chunks, chunkDelayMs: 30, cutAfter: 2 });
      // The first write lands; the removal, when the model breaks off, never reaches the database (the instance going away).
      faults[0]!.arm("writePartial", "before", 1);
      expect((await faulty.api.call("POST", ROUTES.message(id), { message: "a story" })).status).toBe(503);
      expect(faults[0]!.failed).toEqual(["writePartial"]);
      // Kept, no claim would name it (the release dropped it), so no commit nor the sweep would
      // remove it, and it would be shown as a live reply beside the next exchange.
      expect((await faulty.api.call("POST", ROUTES.message(id), { message: "next" })).status).toBe(200);
      const view = await faulty.api.call("GET", ROUTES.get(id));
      expect({ messages: (view.body.messages as unknown[]).length, partials: view.body.partials }).toEqual({ messages: 2, partials: [] });
    } finally {
      await faulty.close();
    }
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

describeWithRtdb("live partial replies of a session another instance ends while the reply is being written", () => {
  let harness: Harness;
  let elsewhere: Instance;
  /** The first instance's partial writes, held back while set: sent, not landed yet; `sent` is told of each. */
  let held: { readonly sends: (() => void)[]; readonly sent: () => void } | undefined;
  const apps: FirebaseApp[] = [];

  /** Its store's calls not answered yet: what a message still does after its answer (the claim's release). */
  const running = new Set<Promise<unknown>>();

  /**
   * The first instance's store: its partial writes are held in order while `held` is set (a
   * removal after a write then comes after it, as on one connection), and its calls in flight are in `running`.
   */
  function watchedStore(store: SessionStore): SessionStore {
    const track = <T>(call: Promise<T>): Promise<T> => {
      running.add(call);
      return call.finally(() => running.delete(call));
    };
    return new Proxy(store, {
      get(target, property) {
        const value: unknown = Reflect.get(target, property, target);
        if (typeof value !== "function") return value;
        if (property !== "writePartial") {
          return (...args: unknown[]) => {
            const result: unknown = Reflect.apply(value, target, args);
            return result instanceof Promise ? track(result) : result;
          };
        }
        return (...args: Parameters<SessionStore["writePartial"]>) =>
          track(
            new Promise<void>((resolve, reject) => {
              const send = () => { target.writePartial(...args).then(resolve, reject); };
              if (!held) {
                send();
                return;
              }
              held.sends.push(send);
              held.sent();
            }),
          );
      },
    });
  }

  /** Once the message answered: what it still does (its claim's release, and that copy) is done before the next test or the close. */
  async function messageDone(): Promise<void> {
    while (running.size > 0) await Promise.allSettled([...running]);
  }

  beforeAll(async () => {
    // The first instance started is `harness.api`: only its writes are held.
    let instances = 0;
    // A model call as long as the slow reply's, and more: the harness's own 3 s would cut it off.
    harness = await startHarness({ store: "rtdb", env: { OPENAI_TIMEOUT_MS: "8000" }, wrapStore: (store) => (++instances === 1 ? watchedStore(store) : store) });
    elsewhere = await harness.instance();
  });
  afterAll(async () => {
    await Promise.all(apps.map((app) => deleteApp(app)));
    await harness.close();
  });

  function watch(id: string): SessionWatcher {
    const { app, database } = webClient(harness.namespace ?? "");
    apps.push(app);
    return new SessionWatcher(database, id);
  }
  /** The index of the first event at or after `from` that `accept` takes, once there is one. */
  async function after(watcher: SessionWatcher, from: number, accept: (seen: Seen) => boolean): Promise<number> {
    const taken = (seen: Seen, index: number) => index >= from && accept(seen);
    await watcher.until((seen) => taken(seen, watcher.seen.indexOf(seen)));
    return watcher.seen.findIndex(taken);
  }
  const partialTexts = (seen: readonly Seen[]) => seen.flatMap((event) => event.partials.map((partial) => partial.text));
  /** A reply the model writes over ~3 s, a word every 400 ms: partial writes at about 0.4, 0.9 and 1.9 s, each text longer. */
  const slowStory = () => { harness.fake.enqueue({ kind: "stream", chunks: Array.from({ length: 8 }, (_, i) => `word${i} `), chunkDelayMs: 400 }); };

  it("shows no reply being written once the session is ended, while the cut-off message runs on to its model call's end", async () => {
    const id = await createSession(harness.api, "friendly-assistant", `user-${randomUUID()}`);
    const watcher = watch(id);
    slowStory();
    const sending = harness.api.call("POST", ROUTES.message(id), { message: "a long story" });
    const written = await after(watcher, 0, (seen) => seen.partials.length === 1);
    // Ended on the other instance, whose closing copy removes the partial.
    expect((await elsewhere.call("DELETE", ROUTES.end(id))).status).toBe(200);
    const removed = await after(watcher, written, (seen) => seen.partials.length === 0);
    // The message goes on until the model is done, then finds the session closed: nothing stored.
    expect((await sending).status).toBe(410);
    await messageDone();
    const read = await elsewhere.call("GET", ROUTES.get(id));
    watcher.close();
    expect(read.body.session).toMatchObject({ status: "ended" });
    expect({ shown: partialTexts(watcher.seen.slice(removed)), listed: read.body.partials }).toEqual({ shown: [], listed: [] });
  });

  it("removes a partial write that lands after the session was ended, as soon as the instance learns of the end", async () => {
    const id = await createSession(harness.api, "friendly-assistant", `user-${randomUUID()}`);
    const watcher = watch(id);
    slowStory();
    let settled = false;
    const sending = harness.api.call("POST", ROUTES.message(id), { message: "a long story" }).finally(() => { settled = true; });
    const written = await after(watcher, 0, (seen) => seen.partials.length === 1);
    // The next write is sent before the end, and lands only after it (and after the closing copy's removal).
    const sends: (() => void)[] = [];
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { reject(new Error("no partial write was sent after the first")); }, 5_000);
      held = { sends, sent: () => { clearTimeout(timer); resolve(); } };
    });
    expect((await elsewhere.call("DELETE", ROUTES.end(id))).status).toBe(200);
    const removed = await after(watcher, written, (seen) => seen.partials.length === 0);
    held = undefined;
    for (const send of sends) send();
    const back = await after(watcher, removed, (seen) => seen.partials.length === 1);
    // Back in the ended session, and gone again before another write, while the message still runs: not left to its end.
    const gone = await after(watcher, back, (seen) => seen.partials.length === 0);
    expect({ shown: new Set(partialTexts(watcher.seen.slice(back, gone))).size, settled }).toEqual({ shown: 1, settled: false });
    expect((await sending).status).toBe(410);
    await messageDone();
    watcher.close();
    expect(partialTexts(watcher.seen.slice(gone))).toEqual([]);
  });
});
