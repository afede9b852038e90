import { recentMessages } from "../support/recent-messages";
import type { ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { FakeOpenAiServer } from "../support/fake-openai-server";
import { startLocalProcess } from "../support/local-process";
import { call, createSession, describeEachStore, ROUTES, startHarness, type Answer, type Harness, type Instance } from "../support/http-harness";
import { describeWithRtdb, RtdbInstances, valueWhere } from "../support/rtdb";
import { isRecord } from "../support/stored-view";
import { RtdbStore } from "../../src/store/rtdb/rtdb-store";
import { userKey } from "../../src/session/ledger/limits";
import type { SessionStore } from "../../src/store/session-store";
import { WholeStore } from "../support/whole-store";
import { FaultyStore } from "../support/faulty-store";
import { usageOf } from "../support/token-service";

const MINUTE = 60_000;
const LIMITS = { USER_MESSAGES_PER_MINUTE: "5", USER_MAX_ACTIVE_SESSIONS: "3", SESSION_MAX_EXCHANGES: "4" };

const newUser = () => `user-${randomUUID()}`;

function expectRefused(answer: Answer, code: string) {
  expect(answer.status).toBe(429);
  expect(answer.body.error?.code).toBe(code);
  expect(Number(answer.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
}

describeEachStore("usage limits", (kind) => {
  let harness: Harness;
  let now = Date.parse("2026-03-01T00:00:00Z");

  beforeAll(async () => {
    harness = await startHarness({ store: kind, clock: () => now, env: LIMITS });
  });
  afterAll(async () => harness.close());
  beforeEach(() => { harness.fake.reset(); });

  async function create(user: string): Promise<Answer> {
    return harness.api.call("POST", ROUTES.create, { user_id: user, template_id: "friendly-assistant" });
  }

  it("limits a user's messages per minute, across sessions, and refills over the minute", async () => {
    const user = newUser();
    const [a, b] = [String((await create(user)).body.session_id), String((await create(user)).body.session_id)];
    for (let i = 0; i < 5; i += 1) expect((await harness.api.call("POST", ROUTES.message(i % 2 ? a : b), { message: `m${i}` })).status).toBe(200);
    const refused = await harness.api.call("POST", ROUTES.message(a), { message: "one too many" });
    expectRefused(refused, "RATE_LIMITED");
    // One token comes back every 12 s (5 per minute).
    expect(Number(refused.headers.get("retry-after"))).toBe(12);
    expect(harness.fake.requests).toHaveLength(5);
    expect((await harness.api.store.readSessionState(a))?.message_count).toBe(2);

    // Another user is not affected.
    const other = String((await create(newUser())).body.session_id);
    expect((await harness.api.call("POST", ROUTES.message(other), { message: "hello" })).status).toBe(200);

    now += 12_000;
    expect((await harness.api.call("POST", ROUTES.message(a), { message: "after a while" })).status).toBe(200);
    expectRefused(await harness.api.call("POST", ROUTES.message(a), { message: "again too soon" }), "RATE_LIMITED");
    // A full minute later the whole bucket is back (a fresh session: the others are near their exchange cap).
    now += MINUTE;
    const c = String((await create(user)).body.session_id);
    for (let i = 0; i < 4; i += 1) expect((await harness.api.call("POST", ROUTES.message(c), { message: `n${i}` })).status).toBe(200);
    expect((await harness.api.call("POST", ROUTES.message(b), { message: "fifth" })).status).toBe(200);
    expectRefused(await harness.api.call("POST", ROUTES.message(a), { message: "sixth" }), "RATE_LIMITED");
  });

  it("limits a user's active sessions; ending or idling one frees a slot", async () => {
    const user = newUser();
    const ids = [];
    for (let i = 0; i < 3; i += 1) ids.push(String((await create(user)).body.session_id));
    const refused = await create(user);
    expectRefused(refused, "TOO_MANY_ACTIVE_SESSIONS");
    expect((await create(newUser())).status).toBe(201);

    await harness.api.call("DELETE", ROUTES.end(ids[0]!));
    expect((await create(user)).status).toBe(201);
    expectRefused(await create(user), "TOO_MANY_ACTIVE_SESSIONS");

    // Sessions idle past the TTL (default 60 min) are expired: they no longer count.
    now += 61 * MINUTE;
    expect((await create(user)).status).toBe(201);
  });

  it("keeps no create key for a keyed create refused for the user's active sessions; its retry once a slot is free creates the session", async () => {
    const user = newUser();
    const ids = [];
    for (let i = 0; i < 3; i += 1) ids.push(String((await create(user)).body.session_id));
    const headers = { "Idempotency-Key": `create-${randomUUID()}` };
    const body = { user_id: user, template_id: "friendly-assistant" };
    expectRefused(await harness.api.call("POST", ROUTES.create, body, headers), "TOO_MANY_ACTIVE_SESSIONS");
    // The only record naming the user's key would be that create key (the usage record aside).
    const whole = WholeStore.of(harness);
    try {
      expect(await whole.holdingBesideUsage([userKey(user)])).toEqual([]);
    } finally {
      await whole.close();
    }

    await harness.api.call("DELETE", ROUTES.end(ids[0]!));
    const retried = await harness.api.call("POST", ROUTES.create, body, headers);
    expect(retried.status).toBe(201);
    expect(retried.headers.get("idempotent-replayed")).toBeNull();
    const again = await harness.api.call("POST", ROUTES.create, body, headers);
    expect(again.headers.get("idempotent-replayed")).toBe("true");
    expect(again.body.session_id).toBe(retried.body.session_id);
  });

  it("counts an ended session as active again neither for a message sent to it nor for a replay of one of its messages", async () => {
    const user = newUser();
    const ids = [];
    for (let i = 0; i < 3; i += 1) ids.push(String((await create(user)).body.session_id));
    const [ended, replayed] = [ids[0]!, ids[1]!];
    const key = { "Idempotency-Key": randomUUID() };
    expect((await harness.api.call("POST", ROUTES.message(replayed), { message: "hello" }, key)).status).toBe(200);
    for (const id of [ended, replayed]) expect((await harness.api.call("DELETE", ROUTES.end(id))).status).toBe(200);
    // A message to an ended session is refused; a client's retry of a completed one is replayed.
    expect((await harness.api.call("POST", ROUTES.message(ended), { message: "still there?" })).status).toBe(410);
    const replay = await harness.api.call("POST", ROUTES.message(replayed), { message: "hello" }, key);
    expect(replay.status).toBe(200);
    expect(replay.headers.get("idempotent-replayed")).toBe("true");
    // One session is active of three allowed: two more may start.
    expect((await create(user)).status).toBe(201);
    expect((await create(user)).status).toBe(201);
    expectRefused(await create(user), "TOO_MANY_ACTIVE_SESSIONS");
  });

  it("limits the exchanges of a session, storing nothing past it", async () => {
    const user = newUser();
    const id = String((await create(user)).body.session_id);
    for (let i = 0; i < 4; i += 1) {
      now += MINUTE;
      expect((await harness.api.call("POST", ROUTES.message(id), { message: `m${i}` })).status).toBe(200);
    }
    now += MINUTE;
    harness.fake.reset();
    expectRefused(await harness.api.call("POST", ROUTES.message(id), { message: "fifth" }), "SESSION_EXCHANGE_LIMIT");
    expect(harness.fake.requests).toHaveLength(0);
    expect((await harness.api.store.readSessionState(id))?.message_count).toBe(4);
    expect(await recentMessages(harness.api.store, id, 100)).toHaveLength(8);
  });

  it("says in SESSION_EXCHANGE_LIMIT's Retry-After when the full session expires: a TTL (60 min) after its last exchange, not after the refusal", async () => {
    const user = newUser();
    const id = String((await create(user)).body.session_id);
    for (let i = 0; i < 4; i += 1) expect((await harness.api.call("POST", ROUTES.message(id), { message: `m${i}` })).status).toBe(200);
    const lastActivity = now;
    now = lastActivity + 50 * MINUTE;
    const refused = await harness.api.call("POST", ROUTES.message(id), { message: "one too many" });
    expectRefused(refused, "SESSION_EXCHANGE_LIMIT");
    // Ten minutes and a millisecond, in whole seconds rounded up.
    expect(Number(refused.headers.get("retry-after"))).toBe(10 * 60 + 1);
    // And then it has expired, as said: a message gets 410, and the session counts no more.
    now = lastActivity + 60 * MINUTE + 1;
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "after expiry" })).body.error?.code).toBe("SESSION_EXPIRED");
  });

  it("does not charge a replay of a completed message", async () => {
    const user = newUser();
    const id = String((await create(user)).body.session_id);
    now += MINUTE;
    const headers = { "Idempotency-Key": randomUUID() };
    for (let i = 0; i < 8; i += 1) expect((await harness.api.call("POST", ROUTES.message(id), { message: "same" }, headers)).status).toBe(200);
    expect(harness.fake.requests).toHaveLength(1);
  });
}, { sharded: true });

describeEachStore("the active-session limit at one session", (kind) => {
  let harness: Harness;
  let now = Date.parse("2026-03-01T00:00:00Z");
  /** While set, the next usage transaction waits for `opened` (one contended for a few round trips), and `claimed` is called once a claim has answered. */
  let held: { readonly opened: Promise<void>; readonly claimed: () => void } | undefined;

  const holding = (store: SessionStore): SessionStore =>
    new Proxy(store, {
      get(target, property, receiver) {
        const value: unknown = Reflect.get(target, property, receiver);
        const stop = held;
        if (typeof value !== "function" || !stop || (property !== "updateUsage" && property !== "updateStateReadingKey")) return value;
        return async (...args: unknown[]) => {
          if (property === "updateStateReadingKey") {
            const answer = (await Reflect.apply(value, target, args)) as unknown;
            stop.claimed();
            return answer;
          }
          held = undefined;
          await stop.opened;
          return Reflect.apply(value, target, args) as unknown;
        };
      },
    });

  /** Inside `holding`: a usage transaction armed here lands with its answer lost. */
  const faults: FaultyStore[] = [];

  beforeAll(async () => {
    harness = await startHarness({
      store: kind,
      clock: () => now,
      wrapStore: (store) => {
        faults.push(new FaultyStore(store));
        return holding(faults.at(-1)!.store);
      },
      env: { USER_MAX_ACTIVE_SESSIONS: "1" },
    });
  });
  afterAll(async () => harness.close());
  beforeEach(() => { harness.fake.reset(); });

  const create = (user: string): Promise<Answer> => harness.api.call("POST", ROUTES.create, { user_id: user, template_id: "friendly-assistant" });

  /** Sends a message to `id` whose claim lands and whose usage transaction is still on its way when the session ends, and lands after the end's release: the message's answer. */
  async function sendAcrossEnd(id: string, api: Instance = harness.api): Promise<Answer> {
    let open!: () => void;
    let claimed!: () => void;
    const answered = new Promise<void>((resolve) => { claimed = resolve; });
    held = { opened: new Promise<void>((resolve) => { open = resolve; }), claimed };
    now += 1_000;
    const sending = api.call("POST", ROUTES.message(id), { message: "hello" });
    let deadline: NodeJS.Timeout | undefined;
    const came = await Promise.race([answered.then(() => true), new Promise<false>((resolve) => { deadline = setTimeout(() => { resolve(false); }, 5_000); })]).finally(() => { clearTimeout(deadline); });
    if (!came) throw new Error("the message's claim did not answer within 5 s");
    now += 1_000;
    expect((await harness.api.call("DELETE", ROUTES.end(id))).status).toBe(200);
    open();
    const answer = await sending;
    now += 1_000;
    return answer;
  }

  it("admits the create that waits exactly the Retry-After it was given: the slot frees a millisecond past the TTL, as a session idle exactly the TTL still counts", async () => {
    const user = newUser();
    expect((await create(user)).status).toBe(201);
    now += 10 * MINUTE;
    const refusedAt = now;
    const refused = await create(user);
    expectRefused(refused, "TOO_MANY_ACTIVE_SESSIONS");
    const wait = Number(refused.headers.get("retry-after"));
    expect(wait).toBe(50 * 60 + 1);
    // At the TTL itself the session is still active, and counted.
    now = refusedAt + 50 * MINUTE;
    expectRefused(await create(user), "TOO_MANY_ACTIVE_SESSIONS");
    now = refusedAt + wait * 1_000;
    const again = await create(user);
    expect({ status: again.status, code: again.body.error?.code }).toEqual({ status: 201, code: undefined });
  });

  it("counts a session until the idle TTL after its last answer: a create is refused while it is active, though its message arrived longer ago", async () => {
    const user = newUser();
    const id = String((await create(user)).body.session_id);
    // The model answers 20 s after the message arrived: the session is active until the TTL (60 min) after that.
    const release = harness.fake.holdAnswers();
    const sending = harness.api.call("POST", ROUTES.message(id), { message: "a long answer please" });
    await harness.fake.awaitRequests(1);
    now += 20_000;
    release();
    expect((await sending).status).toBe(200);
    now += 60 * MINUTE - 19_000;
    const refused = await create(user);
    expectRefused(refused, "TOO_MANY_ACTIVE_SESSIONS");
    // Its slot frees a millisecond past the TTL, 19.001 s on: at 19 s it is idle exactly the TTL, still active.
    expect(Number(refused.headers.get("retry-after"))).toBe(20);
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "still here" })).status).toBe(200);
  });

  it("refuses a message whose session ended while it was being admitted, before the model, and frees the session's slot", async () => {
    const user = newUser();
    const id = String((await create(user)).body.session_id);
    const sent = await sendAcrossEnd(id);
    expect({ status: sent.status, code: sent.body.error?.code, modelCalls: harness.fake.requests.length }).toEqual({ status: 410, code: "SESSION_ENDED", modelCalls: 0 });
    const next = await create(user);
    expect({ status: next.status, code: next.body.error?.code }).toEqual({ status: 201, code: undefined });
  });

  it("keeps the day's count within USER_TOKENS_PER_DAY for a message whose session ended while it was being admitted", async () => {
    const user = newUser();
    const id = String((await create(user)).body.session_id);
    for (let i = 0; i < 6; i += 1) {
      now += 1_000;
      expect((await harness.api.call("POST", ROUTES.message(id), { message: `${i} ${"lorem ipsum dolor sit amet ".repeat(140)}` })).status).toBe(200);
    }
    const before = await usageOf(harness.api.store, user);
    // The session's next prompt may carry its context bound: a limit of half of it above what was used refuses its next message.
    const limit = (before?.daily?.tokens ?? 0) + Math.floor((before?.contexts?.[id]?.tokens ?? 0) / 2);
    const limited = await harness.instance({ USER_TOKENS_PER_DAY: String(limit) });
    now += 1_000;
    expect((await limited.call("POST", ROUTES.message(id), { message: "hello" })).body.error?.code).toBe("TOKEN_LIMIT");
    const calls = harness.fake.requests.length;
    // The end's release drops the session's context bound: admitted after it, the message would
    // reserve its first prompt's bound only, and be sent with the whole history.
    const sent = await sendAcrossEnd(id, limited);
    const after = await usageOf(harness.api.store, user);
    expect({
      status: sent.status,
      code: sent.body.error?.code,
      modelCalled: harness.fake.requests.length > calls,
      overLimitBy: Math.max(0, (after?.daily?.tokens ?? 0) - limit),
    }).toEqual({ status: 410, code: "SESSION_ENDED", modelCalled: false, overLimitBy: 0 });
  });

  // An answered end (200, or 410 to a repeat) is one no client retries: answered while its release
  // failed, the slot stayed taken until the idle TTL. What a client does: retries a 503, then creates.
  it.each([
    ["an end", false],
    ["a repeated end, the first's answer lost,", true],
  ] as const)("answers 503 to %s whose release of the user's slot fails, and its retry, 410, frees the slot for the next create", async (_name, firstLost) => {
    const user = newUser();
    const id = String((await create(user)).body.session_id);
    const store = faults[0]!;
    store.reset();
    const outcomes: string[] = [];
    const outcome = (answer: Answer) => `${answer.status} ${answer.body.error?.code ?? ""}`.trim();
    if (firstLost) {
      store.arm("updateState", "after");
      outcomes.push(outcome(await harness.api.call("DELETE", ROUTES.end(id))));
    }
    // The end's state transaction lands (or landed); the release of the user's count is never sent.
    store.arm("updateUsage", "before");
    let answer = await harness.api.call("DELETE", ROUTES.end(id));
    outcomes.push(outcome(answer));
    while (answer.status === 503 && outcomes.length < 4) {
      answer = await harness.api.call("DELETE", ROUTES.end(id));
      outcomes.push(outcome(answer));
    }
    outcomes.push(outcome(await create(user)));
    expect({ failed: store.failed, status: (await harness.api.store.readSessionState(id))?.status }).toEqual({
      failed: firstLost ? ["updateState", "updateUsage"] : ["updateUsage"],
      status: "ended",
    });
    expect(outcomes).toEqual([...(firstLost ? ["503 DATABASE_UNAVAILABLE"] : []), "503 DATABASE_UNAVAILABLE", "410 SESSION_ENDED", "201"]);
  });

  it.each([
    ["expired", "SESSION_EXPIRED"],
    ["ended", "SESSION_ENDED"],
  ] as const)("counts no %s session for a message to it whose admission landed with its answer lost, nor for the retry", async (closing, code) => {
    const user = newUser();
    const id = String((await create(user)).body.session_id);
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "hello" })).status).toBe(200);
    if (closing === "ended") expect((await harness.api.call("DELETE", ROUTES.end(id))).status).toBe(200);
    // Past the idle TTL (the sweep records the expiry), and the end's mark in the usage record.
    now += 61 * MINUTE;
    await harness.api.runtime.maintain(now);
    // The user comes back to the conversation: the admission counts the session again, its answer lost.
    faults[0]!.arm("updateUsage", "after");
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "still there?" })).status).toBe(503);
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "still there?" })).body.error?.code).toBe(code);
    // Kept, the count would refuse creates 429 TOO_MANY_ACTIVE_SESSIONS for the idle TTL.
    now += MINUTE;
    const next = await create(user);
    expect({ status: next.status, code: next.body.error?.code }).toEqual({ status: 201, code: undefined });
  });
});

/** Two local servers as separate OS processes, the way two function instances share nothing but the database. */
/**
 * A session counts against USER_MAX_ACTIVE_SESSIONS as long as it can be active
 * (docs/sessions-over-time.md). A message whose model call fails stores nothing, so the session's
 * idle TTL still runs from its last exchange: its count must too, however many of its messages
 * fail together, and the session's end after it expired must free the slot.
 */
describeEachStore("the active-session limit after a failed message near the idle TTL", (kind) => {
  const MINUTE = 60_000;
  let harness: Harness;
  let now = Date.parse("2026-03-01T00:00:00Z");

  beforeAll(async () => {
    // A model call that hangs times out after a second, and is not retried.
    harness = await startHarness({ store: kind, clock: () => now, env: { USER_MAX_ACTIVE_SESSIONS: "1", OPENAI_MAX_RETRIES: "0", OPENAI_TIMEOUT_MS: "1000" } });
  });
  afterAll(async () => harness.close());
  beforeEach(() => {
    harness.fake.reset();
  });

  const create = (user: string): Promise<Answer> => harness.api.call("POST", ROUTES.create, { user_id: user, template_id: "friendly-assistant" });

  /** A user's session with one exchange, and 59 minutes later a message whose model call fails (a 401: not retried); then past the TTL. */
  async function expiredAfterFailure(): Promise<{ user: string; id: string }> {
    const user = `user-${randomUUID()}`;
    const id = String((await create(user)).body.session_id);
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "hello" })).status).toBe(200);
    now += 59 * MINUTE;
    harness.fake.enqueue({ kind: "status", status: 401 }, { kind: "status", status: 401 }, { kind: "status", status: 401 });
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "are you there" })).status).toBe(502);
    now += 2 * MINUTE;
    return { user, id };
  }

  it.each([
    ["left alone", false],
    ["ended (410 SESSION_EXPIRED)", true],
  ])("frees the slot of a session that expired after its last message's model call failed, %s", async (_case, ending) => {
    const { user, id } = await expiredAfterFailure();
    if (ending) {
      const ended = await harness.api.call("DELETE", ROUTES.end(id));
      expect({ status: ended.status, code: ended.body.error?.code }).toEqual({ status: 410, code: "SESSION_EXPIRED" });
    }
    const next = await create(user);
    expect({ status: next.status, code: next.body.error?.code, retryAfter: next.headers.get("retry-after") }).toEqual({ status: 201, code: undefined, retryAfter: null });
  });

  it("frees the slot a millisecond past the TTL after the creation of a session two of whose messages failed together just before it", async () => {
    const user = `user-${randomUUID()}`;
    const createdAt = now;
    const id = String((await create(user)).body.session_id);
    // A minute before the TTL, a message, and a second later another, admitted before the first fails; both model calls time out.
    harness.fake.enqueue({ kind: "hang" }, { kind: "hang" });
    now = createdAt + 59 * MINUTE;
    const first = harness.api.call("POST", ROUTES.message(id), { message: "first" });
    await harness.fake.awaitRequests(1);
    now += 1_000;
    const second = harness.api.call("POST", ROUTES.message(id), { message: "second" });
    await harness.fake.awaitRequests(2);
    expect((await Promise.all([first, second])).map((answer) => answer.status)).toEqual([504, 504]);
    await harness.fake.noRequestHanging();
    // Nothing was stored: the session's last activity is still its creation.
    const state = await harness.api.store.readSessionState(id);
    expect({ count: state?.message_count, lastActivity: state?.last_activity }).toEqual({ count: 0, lastActivity: createdAt });
    now = createdAt + 60 * MINUTE + 1;
    const next = await create(user);
    expect({ status: next.status, code: next.body.error?.code, retryAfter: next.headers.get("retry-after") }).toEqual({ status: 201, code: undefined, retryAfter: null });
  });
});

/**
 * A message that fails on the database before any model call (503 DATABASE_UNAVAILABLE,
 * Retry-After: 1) was never sent to the model: whichever step failed (its claim, the history read
 * on a cold instance, the deployment cap's top-up), it gives its USER_MESSAGES_PER_MINUTE token
 * back, so the retry the 503 asks for is answered, not refused RATE_LIMITED. A message whose model
 * call failed keeps it spent (docs/sessions-over-time.md).
 */
describeEachStore("the per-minute message limit after a message that failed", (kind) => {
  const NOON = Date.parse("2026-11-26T12:00:00Z");
  let harness: Harness | undefined;
  let now = NOON;
  // One per instance, in the order the instances started; the first is `api`'s.
  const wrappers: FaultyStore[] = [];
  afterEach(async () => { await harness?.close(); harness = undefined; wrappers.length = 0; });

  const start = async (env: Record<string, string> = {}): Promise<Harness> => {
    now = NOON;
    harness = await startHarness({
      store: kind,
      clock: () => now,
      env: { USER_MESSAGES_PER_MINUTE: "1", DB_TIMEOUT_MS: "500", OPENAI_MAX_RETRIES: "0", ...env },
      wrapStore: (store: SessionStore) => {
        const wrapper = new FaultyStore(store);
        wrappers.push(wrapper);
        return wrapper.store;
      },
    });
    return harness;
  };
  const create = async (on: Instance, user: string): Promise<string> => createSession(on, "friendly-assistant", user);

  /** `failed` (its model called or not), then the same message one second later, as its Retry-After says. */
  async function failedThenRetried(on: Instance, id: string, expectedModelCalls: number, message = "hello") {
    const running = harness!;
    const failed = await on.call("POST", ROUTES.message(id), { message });
    const modelCalls = running.fake.requests.length;
    now += 1_000;
    const retried = await on.call("POST", ROUTES.message(id), { message });
    expect(modelCalls).toBe(expectedModelCalls);
    return {
      failed: { status: failed.status, code: failed.body.error?.code ?? null, retryAfter: failed.headers.get("retry-after") },
      retried: { status: retried.status, code: retried.body.error?.code ?? null, retryAfter: retried.headers.get("retry-after") },
    };
  }
  const databaseFailure = { status: 503, code: "DATABASE_UNAVAILABLE", retryAfter: "1" };
  const answered = { status: 200, code: null, retryAfter: null };

  it("gives the token back to a message whose history read on a cold instance failed: its retry a second later is answered", async () => {
    const running = await start();
    const id = await create(running.api, newUser());
    const cold = await running.instance();
    wrappers.at(-1)!.arm("readWindow", "before");
    expect(await failedThenRetried(cold, id, 0)).toEqual({ failed: databaseFailure, retried: answered });
  });

  it("gives the token back to a message whose claim failed: its retry a second later is answered", async () => {
    const running = await start();
    const id = await create(running.api, newUser());
    wrappers[0]!.arm("updateStateReadingKey", "before");
    expect(await failedThenRetried(running.api, id, 0)).toEqual({ failed: databaseFailure, retried: answered });
  });

  it("gives the token back to a message whose top-up of the deployment cap failed, before its model call: its retry a second later is answered", async () => {
    const running = await start({ SERVICE_TOKENS_PER_DAY: "10000000" });
    const id = await create(running.api, newUser());
    // The first instance holds the session's window warm as of exchange 1; the second adds a long
    // exchange, which the first's next prompt carries beyond what its admission reserved.
    expect((await running.api.call("POST", ROUTES.message(id), { message: "hi" })).status).toBe(200);
    now += MINUTE;
    const second = await running.instance();
    const long = "Here is the whole essay I wrote for class, please keep it in mind. ".repeat(30);
    expect((await second.call("POST", ROUTES.message(id), { message: long })).status).toBe(200);
    now += MINUTE;
    // The admission's reservation passes; the top-up before the model call fails.
    wrappers[0]!.arm("updateServiceUsage", "before", 1);
    const outcome = await failedThenRetried(running.api, id, 2, "and now?");
    expect({ ...outcome, failedStep: wrappers[0]!.failed }).toEqual({ failed: databaseFailure, retried: answered, failedStep: ["updateServiceUsage"] });
  });

  it("keeps the token of a message whose model call failed: its retry a second later is refused until the bucket refills", async () => {
    const running = await start();
    const id = await create(running.api, newUser());
    running.fake.enqueue({ kind: "status", status: 401 });
    expect(await failedThenRetried(running.api, id, 1)).toEqual({
      failed: { status: 502, code: "MODEL_ERROR", retryAfter: null },
      retried: { status: 429, code: "RATE_LIMITED", retryAfter: "59" },
    });
  });
}, { sharded: true });

/**
 * A session of two exchanges on two instances of one database. A claim holds one of the session's
 * exchanges while its request runs, and the exchange limit counts it: here, claims whose outcome
 * comes while a new message is refused for them (`refusedForLimit` says when an instance's claim
 * answers SESSION_EXCHANGE_LIMIT).
 */
describeWithRtdb("the session's last exchange, on two instances [Realtime Database]", () => {
  let harness: Harness;
  let a: Instance;
  let b: Instance;
  let readers: RtdbInstances;
  /** Index of the instance whose `updateState` calls (a claim's release) wait for `gate`. */
  let slowed: number | undefined;
  let gate: Promise<void> = Promise.resolve();
  let openGate: () => void = () => undefined;
  /** Called when a claim, on any instance, answers the exchange limit. */
  let refusedForLimit: () => void = () => undefined;
  let wrapped = 0;

  const watched = (store: SessionStore): SessionStore => {
    const index = wrapped;
    wrapped += 1;
    return new Proxy(store, {
      get(target, property, receiver) {
        const value: unknown = Reflect.get(target, property, receiver);
        if (typeof value !== "function") return value;
        if (property === "updateState") {
          return async (...args: unknown[]) => {
            // A slow database: the release takes its time, well within its deadline.
            if (slowed === index) await gate;
            return Reflect.apply(value, target, args) as unknown;
          };
        }
        if (property === "updateStateReadingKey") {
          return async (...args: unknown[]) => {
            const answer = (await Reflect.apply(value, target, args)) as Awaited<ReturnType<SessionStore["updateStateReadingKey"]>>;
            if (answer.found && isRecord(answer.outcome) && answer.outcome.kind === "limit") refusedForLimit();
            return answer;
          };
        }
        return value;
      },
    });
  };

  beforeAll(async () => {
    harness = await startHarness({ store: "rtdb", env: { SESSION_MAX_EXCHANGES: "2" }, wrapStore: watched });
    a = harness.api;
    b = await harness.instance();
    readers = new RtdbInstances(harness.namespace!);
  });
  afterAll(async () => {
    openGate();
    await readers.close();
    await harness.close();
  });
  beforeEach(() => {
    harness.fake.reset();
    slowed = undefined;
    refusedForLimit = () => undefined;
  });

  it("gives the last exchange to a new message that comes while a replay of a completed message on another instance gives back the claim it passed through", async () => {
    const id = await createSession(a);
    const key = { "Idempotency-Key": "first-message" };
    expect((await a.call("POST", ROUTES.message(id), { message: "first" }, key)).body).toMatchObject({ message_count: 1 });
    // The key moves out of `state` to its record once its copy landed: A's next transaction (here
    // a replay on A, answered from the state) drops it.
    const store = a.store;
    if (!(store instanceof RtdbStore)) throw new Error("the instances run on the Realtime Database");
    await store.copiesSettled();
    expect((await a.call("POST", ROUTES.message(id), { message: "first" }, key)).headers.get("idempotent-replayed")).toBe("true");
    await valueWhere(readers.database().ref(`userSessions/${id}/state`), (state) => isRecord(state) && state.requests === undefined, "the key moved out of state");

    // The client's repeat reaches B, which learns it is a replay only after its claim landed; the
    // release of that claim is slow, and lands once the new message below was refused a first time.
    gate = new Promise((resolve) => { openGate = resolve; });
    slowed = 1;
    harness.fake.reset();
    const replay = await b.call("POST", ROUTES.message(id), { message: "first" }, key);
    expect(replay.status).toBe(200);
    expect(replay.headers.get("idempotent-replayed")).toBe("true");
    expect(harness.fake.requests).toHaveLength(0);

    // The session holds one exchange of two, and the replay stores nothing.
    refusedForLimit = openGate;
    const second = await a.call("POST", ROUTES.message(id), { message: "second" });
    expect({ status: second.status, code: second.body.error?.code, count: second.body.message_count }).toEqual({ status: 200, code: undefined, count: 2 });
    expect(harness.fake.requests).toHaveLength(1);
  });

  it("gives the last exchange to one of two new keyed messages racing for it, on two instances, and refuses the other before its model call once that exchange is stored", async () => {
    const id = await createSession(a);
    expect((await a.call("POST", ROUTES.message(id), { message: "first" })).body).toMatchObject({ message_count: 1 });
    harness.fake.reset();
    // The winner's model call answers only once the other message's claim was refused for it.
    refusedForLimit = harness.fake.holdAnswers();
    const answers = await Promise.all([
      a.call("POST", ROUTES.message(id), { message: "from A" }, { "Idempotency-Key": "race-a" }),
      b.call("POST", ROUTES.message(id), { message: "from B" }, { "Idempotency-Key": "race-b" }),
    ]);
    const [won, lost] = answers[0].status === 200 ? answers : [answers[1], answers[0]];
    expect({ status: won.status, count: won.body.message_count }).toEqual({ status: 200, count: 2 });
    expect({ status: lost.status, code: lost.body.error?.code }).toEqual({ status: 429, code: "SESSION_EXCHANGE_LIMIT" });
    // One model call, the winner's. The refusal came with the stored exchange, so its Retry-After
    // is the full session's expiry, a TTL (60 min) after that exchange, not after the winner's lease (a minute more).
    expect(harness.fake.requests).toHaveLength(1);
    expect(Number(lost.headers.get("retry-after"))).toBeGreaterThanOrEqual(3_595);
    expect(Number(lost.headers.get("retry-after"))).toBeLessThanOrEqual(3_601);
    expect(await a.store.readSessionState(id)).toMatchObject({ message_count: 2 });
    expect(await recentMessages(a.store, id, 100)).toHaveLength(4);
  });
});

describeWithRtdb("usage limits across two processes", () => {
  const children: ChildProcess[] = [];
  const urls: string[] = [];
  let fake: FakeOpenAiServer;
  const projectId = `demo-limits-${randomUUID().slice(0, 8)}`;
  const database = new RtdbInstances(projectId);
  let store: RtdbStore;

  beforeAll(async () => {
    fake = await FakeOpenAiServer.start();
    store = new RtdbStore(database.database(), 10_000);
    for (let i = 0; i < 2; i += 1) urls.push(await startProcess());
  }, 60_000);

  afterAll(async () => {
    for (const child of children) child.kill("SIGTERM");
    await fake.stop();
    await database.close();
  });

  async function startProcess(): Promise<string> {
    const { url, child } = await startLocalProcess({
      ...LIMITS,
      GCLOUD_PROJECT: projectId,
      OPENAI_API_KEY: "sk-test-key",
      OPENAI_BASE_URL: fake.baseUrl,
      OPENAI_MAX_RETRIES: "0",
    });
    children.push(child);
    return url;
  }

  /** `count` requests at once, alternating between the two processes. */
  function burst(count: number, request: (url: string, i: number) => Promise<Answer>): Promise<Answer[]> {
    return Promise.all(Array.from({ length: count }, (_, i) => request(urls[i % 2]!, i)));
  }

  const statuses = (answers: Answer[]) => answers.map((answer) => answer.status).sort();

  it("holds the active-session limit under concurrent creates", async () => {
    const user = newUser();
    const answers = await burst(8, (url) => call(url, "POST", ROUTES.create, { user_id: user, template_id: "friendly-assistant" }));
    expect(statuses(answers)).toEqual([201, 201, 201, 429, 429, 429, 429, 429]);
  });

  it("holds the per-minute message limit under concurrent messages", async () => {
    const user = newUser();
    const sessions: string[] = [];
    for (let i = 0; i < 2; i += 1) sessions.push(String((await call(urls[i]!, "POST", ROUTES.create, { user_id: user, template_id: "friendly-assistant" })).body.session_id));
    fake.reset();
    const answers = await burst(12, (url, i) => call(url, "POST", ROUTES.message(sessions[i % 2]!), { message: `burst ${i}` }));
    const code = (answer: Answer) => answer.body.error?.code ?? String(answer.status);
    // The rate limit and the session caps are taken together, so a message refused by one gives back
    // what it took of the other: never more than five pass, each session holds at most four, and
    // every other message is refused by one limit or the other.
    const passed = answers.filter((answer) => answer.status === 200);
    expect(passed.length).toBeGreaterThanOrEqual(1);
    expect(passed.length).toBeLessThanOrEqual(5);
    for (const answer of answers) expect(["200", "RATE_LIMITED", "SESSION_EXCHANGE_LIMIT"]).toContain(code(answer));
    expect(fake.requests).toHaveLength(passed.length);
    const stored = (await Promise.all(sessions.map((id) => store.readSessionState(id)))).reduce((sum, state) => sum + (state?.message_count ?? 0), 0);
    expect(stored).toBe(passed.length);
    for (const id of sessions) expect((await store.readSessionState(id))?.message_count).toBeLessThanOrEqual(4);
  });

  it("holds the per-session exchange limit under concurrent messages", async () => {
    const id = String((await call(urls[0]!, "POST", ROUTES.create, { user_id: newUser(), template_id: "friendly-assistant" })).body.session_id);
    fake.reset();
    const answers = await burst(10, (url, i) => call(url, "POST", ROUTES.message(id), { message: `cap ${i}` }));
    const code = (answer: Answer) => answer.body.error?.code ?? String(answer.status);
    // Five tokens let at most five through the rate limit; the session takes at most four. The claim
    // and the admission run side by side, so under a burst the two limits may pick different
    // messages (what a refused one took is given back off the reply's path): fewer than four may
    // pass, never more, and every other message is refused by one limit or the other, unstored.
    const passed = answers.filter((answer) => answer.status === 200);
    expect(passed.length).toBeGreaterThanOrEqual(1);
    expect(passed.length).toBeLessThanOrEqual(4);
    for (const answer of answers) expect(["200", "RATE_LIMITED", "SESSION_EXCHANGE_LIMIT"]).toContain(code(answer));
    expect(fake.requests).toHaveLength(passed.length);
    expect(await store.readSessionState(id)).toMatchObject({ message_count: passed.length });
    expect(await recentMessages(store, id, 100)).toHaveLength(2 * passed.length);
  });
});
