import { randomUUID } from "node:crypto";
import { keyHash } from "../../src/session/idempotency";
import { estimatePromptTokens } from "../../src/session/prompt/token-estimate";
import type { ServiceUsage } from "../../src/store/records";
import type { SessionStore } from "../../src/store/session-store";
import { eventually, streamCall } from "../support/event-stream-client";
import { fakeUsage, type RecordedRequest } from "../support/fake-openai-server";
import { createSession, describeEachStore, ROUTES, startHarness, type Answer, type Harness } from "../support/http-harness";
import { recordingLog, type Logged } from "../support/recording-log";
import { recordingPartials } from "../support/recording-partials";

const FLAGGED_TEXT = "a message the moderation model flags";

/**
 * What the first reply call of session `id`, abandoned mid-call, counts (docs/tokens.md): its
 * prompt's estimate (the system prompt and `message`) and all of its max_tokens; whether the
 * request reached the provider before the abort or not, nothing says.
 */
async function abandonedBound(store: SessionStore, id: string, message: string): Promise<number> {
  const meta = await store.readSessionMeta(id);
  if (!meta) throw new Error(`session ${id} has no meta`);
  return estimatePromptTokens([{ role: "system", content: meta.system_prompt }, { role: "user", content: message }]) + meta.settings.max_tokens;
}

/** What the fake provider billed for a call it finished with `reply`. */
function billed(request: RecordedRequest, reply: string): number {
  const usage = fakeUsage(request.body, reply);
  return usage.prompt_tokens + usage.completion_tokens;
}

async function serviceTotal(store: SessionStore): Promise<number> {
  const shards: Readonly<Record<string, ServiceUsage>> = await store.readServiceUsage();
  return Object.values(shards).reduce((sum, shard) => sum + shard.tokens, 0);
}

/**
 * MODERATION=true: each user message is checked with the fake server's /v1/moderations beside its
 * model call. A flagged message reaches no storage, no partial and no client, whichever way it
 * was asked for (plain JSON, Server-Sent Events); its model call, which the provider bills, is
 * counted all the same.
 */
describeEachStore("moderation of users' messages", (kind) => {
  let harness: Harness;
  /** The outage choice `closed`, on the same database. */
  let closed: Harness;
  const partials: (string | null)[] = [];
  const logged: Logged[] = [];

  beforeAll(async () => {
    const { log } = recordingLog(logged);
    harness = await startHarness({ store: kind, log, env: { MODERATION: "true" }, wrapStore: (store) => recordingPartials(store, partials) });
    closed = await startHarness({ store: kind, env: { MODERATION: "true", MODERATION_ON_OUTAGE: "closed" } });
  });
  afterAll(async () => {
    await harness.close();
    await closed.close();
  });
  beforeEach(() => {
    harness.fake.reset();
    closed.fake.reset();
    partials.length = 0;
    logged.length = 0;
    user = `user-${randomUUID()}`;
  });

  /** Each test's own user: what a refusal leaves of its usage is that session's alone. */
  let user: string;
  const session = (of = harness) => createSession(of.api, "friendly-assistant", user);

  /** Nothing of the message kept; its reservation settled with what its model call `counted` (0: a failed call). */
  async function nothingKept(id: string, answer: Answer | undefined, counted: number, store = harness.api.store): Promise<void> {
    expect(await store.readSessionState(id)).toMatchObject({ status: "active", message_count: 0 });
    expect(await store.readWindow(id, 10)).toEqual({ messages: [], through: 0 });
    expect(partials.filter((text) => text !== null)).toEqual([]);
    // The provider bills a call that finished or was abandoned: the user's day counts it, the rest of the reservation goes back.
    const usage = await store.updateUsage(keyHash("user", user), (record) => ({ outcome: record }));
    expect(usage?.daily?.tokens ?? 0).toBe(counted);
    expect(usage?.contexts?.[id]?.open ?? 0).toBe(0);
    if (answer) expect(JSON.stringify(answer.body)).not.toContain("reply");
  }

  it("checks each message with omni-moderation-latest through the model's base URL and key, and answers a clean one as before", async () => {
    const id = await session();
    const answer = await harness.api.call("POST", ROUTES.message(id), { message: "Hello there" });
    expect(answer.status).toBe(200);
    expect(answer.body.response).toBe("reply #1 to: Hello there");
    expect(harness.fake.moderationRequests).toHaveLength(1);
    expect(harness.fake.moderationRequests[0]).toMatchObject({ path: "/v1/moderations", body: { model: "omni-moderation-latest", input: "Hello there" } });
    expect(harness.fake.moderationRequests[0]?.headers.authorization).toBe("Bearer sk-test-key");
  });

  it("refuses a flagged message with 422 MESSAGE_FLAGGED: nothing stored, no partial, its model call abandoned and counted at its bound", async () => {
    const id = await session();
    // The model answers slowly and never completes: the verdict comes first and abandons it.
    harness.fake.enqueue({ kind: "hang" });
    harness.fake.enqueueModeration({ kind: "verdict", flagged: true, categories: ["harassment", "violence"], delayMs: 100 });
    const answer = await harness.api.call("POST", ROUTES.message(id), { message: FLAGGED_TEXT });
    expect(answer.status).toBe(422);
    expect(answer.body).toEqual({ success: false, error: { code: "MESSAGE_FLAGGED", message: "The message was flagged by moderation and was not sent" } });
    await harness.fake.noRequestHanging();
    await nothingKept(id, answer, await abandonedBound(harness.api.store, id, FLAGGED_TEXT));
    // The slot is free again: the next message is answered at once.
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "Hello again" })).status).toBe(200);
    // The log names the categories, never the text.
    expect(logged).toContainEqual({ level: "info", message: "message flagged", fields: { session_id: id, moderator: "openai", categories: "harassment,violence" } });
    expect(JSON.stringify(logged)).not.toContain(FLAGGED_TEXT);
  });

  it("streams nothing of a flagged message's reply, even when the model wrote it all before the verdict: a JSON 422, no event, the call counted as billed", async () => {
    const id = await session();
    const chunks = ["This", " reply", " is", " never", " shown."];
    harness.fake.enqueue({ kind: "stream", chunks });
    harness.fake.enqueueModeration({ kind: "verdict", flagged: true, categories: ["hate"], delayMs: 300 });
    const answer = await streamCall(harness.api.baseUrl, ROUTES.message(id), { message: FLAGGED_TEXT });
    expect(answer.status).toBe(422);
    expect(answer.events).toEqual([]);
    expect(answer.json?.error?.code).toBe("MESSAGE_FLAGGED");
    await nothingKept(id, undefined, billed(harness.fake.requests[0]!, chunks.join("")));
  });

  it("holds a streamed reply back until the verdict, then passes what was held in one delta and the rest as it comes", async () => {
    const id = await session();
    const chunks = ["One", " two", " three", " four"];
    harness.fake.enqueue({ kind: "stream", chunks, chunkDelayMs: 300 });
    // The verdict between the model's second chunk (at 600 ms) and its third (at 900 ms).
    harness.fake.enqueueModeration({ kind: "verdict", flagged: false, delayMs: 750 });
    const answer = await streamCall(harness.api.baseUrl, ROUTES.message(id), { message: "Count" });
    const deltas = answer.events.filter((event) => event.event === "delta");
    const texts = deltas.map((event) => (event.data as { text: string }).text);
    expect(texts.join("")).toBe(chunks.join(""));
    // Nothing before the verdict; then the first two chunks at once, the others as written.
    expect(deltas[0]!.at).toBeGreaterThanOrEqual(750);
    expect(texts[0]).toBe("One two");
    expect(texts.slice(1)).toEqual([" three", " four"]);
    expect(answer.events.at(-1)).toMatchObject({ event: "done", data: { success: true, response: chunks.join(""), message_count: 1 } });
    // Partials (where clients read them) began after the verdict too, with the held text.
    if (kind === "rtdb") expect(partials[0]).toBe("One two");
  });

  it("lets the message through when moderation is down and the choice is open (the default), and logs it", async () => {
    const id = await session();
    harness.fake.enqueueModeration({ kind: "status", status: 503 });
    const answer = await harness.api.call("POST", ROUTES.message(id), { message: "Hello through an outage" });
    expect(answer.status).toBe(200);
    expect(await harness.api.store.readSessionState(id)).toMatchObject({ message_count: 1 });
    const warning = logged.find((entry) => entry.message === "moderation unavailable, message let through unchecked");
    expect(warning?.fields).toMatchObject({ session_id: id, failure: "unavailable", status: 503 });
  });

  it("refuses the message with 503 MODERATION_UNAVAILABLE when moderation is down and the choice is closed, keeping nothing", async () => {
    const id = await session(closed);
    closed.fake.enqueue({ kind: "stream", chunks: ["never", " shown"], chunkDelayMs: 20 });
    closed.fake.enqueueModeration({ kind: "status", status: 500 });
    const answer = await streamCall(closed.api.baseUrl, ROUTES.message(id), { message: "Hello" });
    expect(answer.status).toBe(503);
    expect(answer.events).toEqual([]);
    expect(answer.json?.error?.code).toBe("MODERATION_UNAVAILABLE");
    expect(answer.headers.get("retry-after")).toBe("1");
    expect(await closed.api.store.readSessionState(id)).toMatchObject({ message_count: 0 });
  });

  it("answers a server without a moderations endpoint (404) as a configuration error, not an outage, whatever the choice", async () => {
    const id = await session();
    harness.fake.enqueue({ kind: "hang" });
    harness.fake.enqueueModeration({ kind: "status", status: 404 });
    const answer = await harness.api.call("POST", ROUTES.message(id), { message: "Hello" });
    expect(answer.status).toBe(500);
    expect(answer.body.error?.code).toBe("CONFIGURATION_ERROR");
    await harness.fake.noRequestHanging();
    await nothingKept(id, answer, await abandonedBound(harness.api.store, id, "Hello"));
    expect(logged.find((entry) => entry.message === "request failed")?.fields?.detail).toMatch(/no moderations endpoint.*turn MODERATION off/);
  });

  it("abandons the check when the model fails first, answering the model's failure at once", async () => {
    const id = await session();
    harness.fake.enqueue({ kind: "status", status: 503 });
    harness.fake.enqueueModeration({ kind: "hang" });
    const answer = await harness.api.call("POST", ROUTES.message(id), { message: "Hello" });
    expect(answer.body.error?.code).toBe("MODEL_UNAVAILABLE");
    // The hanging moderation request was given up on, not left open.
    await harness.fake.noRequestHanging();
    // A failed call counts as nothing.
    await nothingKept(id, answer, 0);
  });

  it("keeps a flagged message out of the session's history for good: a later prompt never sends it", async () => {
    const id = await session();
    harness.fake.enqueueModeration({ kind: "verdict", flagged: true, categories: ["harassment"] });
    expect((await harness.api.call("POST", ROUTES.message(id), { message: FLAGGED_TEXT })).status).toBe(422);
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "And now?" })).status).toBe(200);
    const prompt = harness.fake.requests.at(-1)?.body.messages.map((message) => message.content) ?? [];
    expect(prompt).not.toContain(FLAGGED_TEXT);
    expect(prompt.at(-1)).toBe("And now?");
  });

  it("answers a keyed repeat sent while the flagged first still runs with the first's 422, without a second model call", async () => {
    const id = await session();
    harness.fake.enqueue({ kind: "hang" }, { kind: "hang" });
    harness.fake.enqueueModeration(
      { kind: "verdict", flagged: true, categories: ["harassment"], delayMs: 600 },
      { kind: "verdict", flagged: true, categories: ["harassment"], delayMs: 600 },
    );
    const headers = { "Idempotency-Key": `key-${randomUUID()}` };
    const first = harness.api.call("POST", ROUTES.message(id), { message: FLAGGED_TEXT }, headers);
    await harness.fake.awaitModerationRequests(1);
    const repeat = harness.api.call("POST", ROUTES.message(id), { message: FLAGGED_TEXT }, headers);
    const [a, b] = await Promise.all([first, repeat]);
    expect([a.status, a.body.error?.code]).toEqual([422, "MESSAGE_FLAGGED"]);
    expect([b.status, b.body.error?.code]).toEqual([422, "MESSAGE_FLAGGED"]);
    await harness.fake.noRequestHanging();
    expect(harness.fake.requests).toHaveLength(1);
    expect(harness.fake.moderationRequests).toHaveLength(1);
    // The user's day charged for the one call only.
    await nothingKept(id, b, await abandonedBound(harness.api.store, id, FLAGGED_TEXT));
  });

  it("answers a keyed repeat of a flagged message sent after its answer with 422 too, without a model call, and a new body with the key as reused", async () => {
    const id = await session();
    harness.fake.enqueue({ kind: "hang" });
    harness.fake.enqueueModeration({ kind: "verdict", flagged: true, categories: ["harassment"], delayMs: 100 });
    const headers = { "Idempotency-Key": `key-${randomUUID()}` };
    const first = await harness.api.call("POST", ROUTES.message(id), { message: FLAGGED_TEXT }, headers);
    expect([first.status, first.body.error?.code]).toEqual([422, "MESSAGE_FLAGGED"]);
    await harness.fake.noRequestHanging();
    for (let time = 0; time < 2; time += 1) {
      const repeat = await harness.api.call("POST", ROUTES.message(id), { message: FLAGGED_TEXT }, headers);
      expect([repeat.status, repeat.body.error?.code]).toEqual([422, "MESSAGE_FLAGGED"]);
    }
    const other = await harness.api.call("POST", ROUTES.message(id), { message: "Something else" }, headers);
    expect([other.status, other.body.error?.code]).toEqual([422, "IDEMPOTENCY_KEY_REUSED"]);
    expect(harness.fake.requests).toHaveLength(1);
    expect(harness.fake.moderationRequests).toHaveLength(1);
    await nothingKept(id, undefined, await abandonedBound(harness.api.store, id, FLAGGED_TEXT));
  });

  it("lets a keyed message refused by a moderation outage run again on a retry with its key", async () => {
    const id = await session(closed);
    closed.fake.enqueueModeration({ kind: "status", status: 500 });
    const headers = { "Idempotency-Key": `key-${randomUUID()}` };
    const refused = await closed.api.call("POST", ROUTES.message(id), { message: "Hello" }, headers);
    expect([refused.status, refused.body.error?.code]).toEqual([503, "MODERATION_UNAVAILABLE"]);
    await eventually(() => closed.api.store.readSessionState(id), (state) => state?.requests === undefined);
    const retried = await closed.api.call("POST", ROUTES.message(id), { message: "Hello" }, headers);
    expect(retried.status).toBe(200);
  });

  /**
   * Until the verdict, the model's text is held back: nothing of it has reached the client or the
   * partial, so a model call that fails meanwhile failed before the first delta, and is retried
   * whatever the client reads (docs/api.md: retries "happen only before the first delta").
   */
  describe("with model retries (OPENAI_MAX_RETRIES=2)", () => {
    let retrying: Harness;
    const retried: (string | null)[] = [];
    beforeAll(async () => {
      retrying = await startHarness({ store: kind, env: { MODERATION: "true", OPENAI_MAX_RETRIES: "2" }, wrapStore: (store) => recordingPartials(store, retried) });
    });
    afterAll(async () => retrying.close());
    beforeEach(() => {
      retrying.fake.reset();
      retried.length = 0;
    });

    /** The first attempt writes a chunk and breaks off while the verdict is still 600 ms away; the retry answers. */
    const breaksOffWhileHeld = () => {
      retrying.fake.enqueue({ kind: "stream", chunks: ["lost", " words"], cutAfter: 1, chunkDelayMs: 10 });
      retrying.fake.enqueue({ kind: "stream", chunks: ["Second", " try"], chunkDelayMs: 10 });
      retrying.fake.enqueueModeration({ kind: "verdict", flagged: false, delayMs: 600 });
    };

    it("retries a model call that broke off while its text was held: a streamed request gets the retry's reply alone", async () => {
      const id = await session(retrying);
      breaksOffWhileHeld();
      const answer = await streamCall(retrying.api.baseUrl, ROUTES.message(id), { message: "hi" });
      expect({ status: answer.status, json: answer.json, events: answer.events.map((event) => event.event) }).toEqual({ status: 200, json: undefined, events: ["delta", "done"] });
      expect(answer.events[0]?.data).toEqual({ text: "Second try" });
      expect(answer.events.at(-1)?.data).toMatchObject({ success: true, response: "Second try", message_count: 1 });
      expect(retrying.fake.requests).toHaveLength(2);
      // Partials (where clients read them) never held the first attempt's text either.
      if (kind === "rtdb") expect(retried.filter((text) => text !== null)).toEqual(["Second try"]);
    });

    it("does not retry a call that broke off once the verdict had passed its text on to a streamed client: the stream ends with an error event", async () => {
      const id = await session(retrying);
      retrying.fake.enqueue({ kind: "stream", chunks: ["Shown", " then lost"], cutAfter: 1, firstChunkDelayMs: 300, chunkDelayMs: 10 });
      retrying.fake.enqueue({ kind: "stream", chunks: ["never", " asked"] });
      retrying.fake.enqueueModeration({ kind: "verdict", flagged: false });
      const answer = await streamCall(retrying.api.baseUrl, ROUTES.message(id), { message: "hi" });
      expect(answer.events.map((event) => [event.event, event.data])).toEqual([
        ["delta", { text: "Shown" }],
        ["error", { success: false, error: { code: "MODEL_UNAVAILABLE", message: expect.any(String) as unknown } }],
      ]);
      expect(retrying.fake.requests).toHaveLength(1);
      expect(await retrying.api.store.readSessionState(id)).toMatchObject({ message_count: 0 });
    });
  });

  /**
   * SERVICE_TOKENS_PER_DAY counts the model tokens the deployment uses: a flagged message's reply
   * call is billed by the provider whether it finished before the verdict or was abandoned, so it
   * counts, and messages that get flagged cannot carry the deployment past its cap.
   */
  describe("with the deployment's daily cap (SERVICE_TOKENS_PER_DAY)", () => {
    const CAP = 8 * 400;
    let capped: Harness;
    beforeAll(async () => {
      capped = await startHarness({ store: kind, clock: () => Date.parse("2026-12-06T12:00:00Z"), env: { MODERATION: "true", SERVICE_TOKENS_PER_DAY: String(CAP), USER_TOKENS_PER_DAY: "0" } });
    });
    afterAll(async () => capped.close());
    beforeEach(() => { capped.fake.reset(); });

    const flaggedMessage = async (): Promise<{ id: string; answer: Answer }> => {
      const id = await createSession(capped.api, "friendly-assistant", `user-${randomUUID()}`);
      capped.fake.enqueueModeration({ kind: "verdict", flagged: true, categories: ["harassment"], delayMs: 150 });
      return { id, answer: await capped.api.call("POST", ROUTES.message(id), { message: FLAGGED_TEXT }) };
    };

    it("counts a flagged message's reply call abandoned mid-reply at its bound", async () => {
      const before = await serviceTotal(capped.api.store);
      capped.fake.enqueue({ kind: "hang" });
      const { id, answer } = await flaggedMessage();
      expect(answer.status).toBe(422);
      await capped.fake.noRequestHanging();
      const bound = await abandonedBound(capped.api.store, id, FLAGGED_TEXT);
      await eventually(() => serviceTotal(capped.api.store), (total) => total === before + bound);
    });

    it("counts a flagged message's reply call the model finished before the verdict, until flagged messages alone reach its 429", async () => {
      // Each call billed at its bound, the service's estimate of its prompt and max_tokens: what its
      // message reserved (the ledger counts a report past that at the reservation).
      capped.fake.chaos = (request) => ({ kind: "reply", text: "a whole reply the provider billed", usage: { prompt_tokens: estimatePromptTokens(request.body.messages), completion_tokens: 50 } });
      const before = await serviceTotal(capped.api.store);
      let bounds = 0;
      let refused: Answer | undefined;
      for (let i = 0; i < 40 && !refused; i += 1) {
        const { id, answer } = await flaggedMessage();
        if (answer.status === 422) bounds += await abandonedBound(capped.api.store, id, FLAGGED_TEXT);
        else refused = answer;
      }
      expect({ status: refused?.status, code: refused?.body.error?.code }).toEqual({ status: 429, code: "SERVICE_TOKEN_LIMIT" });
      await eventually(() => serviceTotal(capped.api.store), (total) => total === before + bounds);
    }, 30_000);
  });
});

/**
 * A session counts against USER_MAX_ACTIVE_SESSIONS exactly as long as it can be active
 * (docs/sessions-over-time.md): a flagged message stored nothing, so the session expires at its TTL
 * from its last exchange, and its slot is free then, whatever its model call was billed.
 */
describeEachStore("the active-session limit after a flagged message near the idle TTL", (kind) => {
  const MINUTE = 60_000;
  let harness: Harness;
  let now = Date.parse("2026-03-01T00:00:00Z");

  beforeAll(async () => {
    harness = await startHarness({ store: kind, clock: () => now, env: { USER_MAX_ACTIVE_SESSIONS: "1", MODERATION: "true" } });
  });
  afterAll(async () => harness.close());
  beforeEach(() => {
    harness.fake.reset();
  });

  const create = (user: string): Promise<Answer> => harness.api.call("POST", ROUTES.create, { user_id: user, template_id: "friendly-assistant" });

  it.each([
    ["the model call finished before the verdict", false],
    ["the model call abandoned mid-reply", true],
  ])("frees the slot of a session that expired after its last message was flagged (%s)", async (_case, hang) => {
    const user = `user-${randomUUID()}`;
    const id = String((await create(user)).body.session_id);
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "hello" })).status).toBe(200);
    now += 59 * MINUTE;
    if (hang) harness.fake.enqueue({ kind: "hang" });
    harness.fake.enqueueModeration({ kind: "verdict", flagged: true, categories: ["harassment"], delayMs: 100 });
    const flagged = await harness.api.call("POST", ROUTES.message(id), { message: "a message the moderation model flags" });
    expect({ status: flagged.status, code: flagged.body.error?.code }).toEqual({ status: 422, code: "MESSAGE_FLAGGED" });
    await harness.fake.noRequestHanging();
    // Past the idle TTL counted from the last exchange (60 min by default): the session expired.
    now += 2 * MINUTE;
    // The give-back (sent off the reply's path) has landed: the message's reservation is settled.
    await eventually(
      () => harness.api.store.updateUsage(keyHash("user", user), (record) => ({ outcome: record })),
      (usage) => (usage?.daily?.tokens ?? 0) > 0 && (usage?.contexts?.[id]?.open ?? 0) === 0,
    );
    const next = await create(user);
    expect({ status: next.status, code: next.body.error?.code, retryAfter: next.headers.get("retry-after") }).toEqual({ status: 201, code: undefined, retryAfter: null });
  });
});

/**
 * A store whose next `updateUsage` call, once armed, waits until the test lets it through: a
 * settlement sent beside its commit that reaches the database after another message's admission,
 * as happens whenever two instances write the same usage record.
 */
class GatedUsage {
  private gate: { held: () => void; release: Promise<void> } | undefined;
  readonly store: SessionStore;

  constructor(inner: SessionStore) {
    this.store = new Proxy(inner, {
      get: (target, property, receiver) => {
        const value: unknown = Reflect.get(target, property, receiver);
        if (property !== "updateUsage" || typeof value !== "function") return value;
        return async (...args: unknown[]) => {
          const gate = this.gate;
          this.gate = undefined;
          if (gate) {
            gate.held();
            await gate.release;
          }
          return Reflect.apply(value, target, args) as unknown;
        };
      },
    });
  }

  /** Holds the next updateUsage: `held` resolves once it is waiting; `release` lets it go. */
  arm(): { held: Promise<void>; release: () => void } {
    let held!: () => void;
    let release!: () => void;
    const heldPromise = new Promise<void>((resolve) => (held = resolve));
    this.gate = { held, release: new Promise<void>((resolve) => (release = resolve)) };
    return { held: heldPromise, release };
  }
}

/**
 * A session counts against USER_MAX_ACTIVE_SESSIONS from its last answer as long as it can be
 * active (docs/sessions-over-time.md). A message's settlement that lands after another message of
 * the session was admitted leaves that admission's newer count in place; when that other message is
 * then flagged, its give-back puts the count back no earlier than the settled answer, not to the
 * first message's arrival, a model call's length before the session can expire.
 */
describeEachStore("the active-session limit after a flagged message admitted before another message's settlement", (kind) => {
  const MINUTE = 60_000;
  let harness: Harness;
  let now = Date.parse("2026-03-01T00:00:00Z");
  const gates: GatedUsage[] = [];

  beforeAll(async () => {
    harness = await startHarness({
      store: kind,
      clock: () => now,
      env: { USER_MAX_ACTIVE_SESSIONS: "1", MODERATION: "true" },
      wrapStore: (store) => {
        const gated = new GatedUsage(store);
        gates.push(gated);
        return gated.store;
      },
    });
  });
  afterAll(async () => harness.close());

  const create = (user: string): Promise<Answer> => harness.api.call("POST", ROUTES.create, { user_id: user, template_id: "friendly-assistant" });
  const usageOf = (user: string) => harness.api.store.updateUsage(keyHash("user", user), (record) => ({ outcome: record }));

  it("keeps the session counted until it can expire, so a create past USER_MAX_ACTIVE_SESSIONS is refused meanwhile", async () => {
    const user = `user-${randomUUID()}`;
    const id = String((await create(user)).body.session_id);
    // A message whose model call takes a minute: answered at `answeredAt`, its settlement held.
    const releaseModel = harness.fake.holdAnswers();
    const slow = harness.api.call("POST", ROUTES.message(id), { message: "a question that takes a while" });
    await harness.fake.awaitRequests(1);
    now += MINUTE;
    const answeredAt = now;
    const settlement = gates[0]!.arm();
    releaseModel();
    await settlement.held;
    // A second later, another message of the session: admitted (it reads the count as the first
    // message's arrival), then flagged mid-reply.
    now += 1_000;
    harness.fake.enqueue({ kind: "hang" });
    harness.fake.enqueueModeration({ kind: "verdict", flagged: true, categories: ["harassment"], delayMs: 1_500 });
    const flagged = harness.api.call("POST", ROUTES.message(id), { message: FLAGGED_TEXT });
    await harness.fake.awaitRequests(2);
    // The first message's settlement lands now, after that admission and before the verdict.
    settlement.release();
    expect((await slow).status).toBe(200);
    const refused = await flagged;
    expect({ status: refused.status, code: refused.body.error?.code }).toEqual({ status: 422, code: "MESSAGE_FLAGGED" });
    await harness.fake.noRequestHanging();
    // The flagged message's give-back (off the reply's path) has landed.
    await eventually(() => usageOf(user), (usage) => (usage?.contexts?.[id]?.open ?? 0) === 0);
    // 59.5 minutes after the answer the session is still active (its idle TTL, 60 minutes, runs from its last exchange)...
    now = answeredAt + 59.5 * MINUTE;
    const state = await harness.api.store.readSessionState(id);
    expect({ status: state?.status, lastActivity: state?.last_activity }).toEqual({ status: "active", lastActivity: answeredAt });
    // ... so a second session is over USER_MAX_ACTIVE_SESSIONS=1.
    const other = await create(user);
    expect({ status: other.status, retryAfter: other.headers.get("retry-after") }).toEqual({ status: 429, retryAfter: expect.any(String) });
  });
});
