import { randomUUID } from "node:crypto";
import { request } from "node:http";
import { recentMessages } from "../support/recent-messages";
import { fingerprint, keyHash } from "../../src/session/idempotency";
import { appendRule } from "../../src/session/session-rules";
import { createSession, describeEachStore, ROUTES, startHarness, type Answer, type Harness, type Instance } from "../support/http-harness";
import { anyUsage } from "../support/any-usage";
import { describeWithRtdb, RtdbInstances } from "../support/rtdb";
import { sessionPath, SESSION_CHILDREN } from "../../src/store/rtdb/paths";
import { StoredView } from "../support/stored-view";
import { FaultyStore } from "../support/faulty-store";
import type { SessionStore } from "../../src/store/session-store";
import { usageOf } from "../support/token-service";
import { userKey } from "../../src/session/ledger/limits";
import { WholeStore } from "../support/whole-store";

const key = (name: string) => ({ "Idempotency-Key": `${name}-${Math.random().toString(36).slice(2)}` });

describeEachStore("Idempotency-Key", (kind) => {
  let harness: Harness;
  let a: Instance;
  let b: Instance;

  beforeAll(async () => {
    // A 24 s function with a 400 ms model timeout: a repeat waits 2.6 s for a live claim, whose lease is the 24 s.
    harness = await startHarness({ store: kind, env: { OPENAI_TIMEOUT_MS: "400" }, functionTimeoutMs: 24_000 });
    a = harness.api;
    b = await harness.instance();
  });
  afterAll(async () => harness.close());
  beforeEach(() => { harness.fake.reset(); });

  async function stored(id: string) {
    return { state: await a.store.readSessionState(id), history: (await recentMessages(a.store, id, 100)).map((message) => message.content) };
  }

  it("answers a repeated message from the first result, without a second model call or exchange", async () => {
    const id = await createSession(a);
    const headers = key("send");
    const first = await a.call("POST", ROUTES.message(id), { message: "Hi" }, headers);
    const again = await a.call("POST", ROUTES.message(id), { message: "Hi" }, headers);
    const elsewhere = await b.call("POST", ROUTES.directMessage(id), { message: "Hi" }, headers);
    expect(first.status).toBe(200);
    expect(first.headers.get("idempotent-replayed")).toBeNull();
    for (const repeat of [again, elsewhere]) {
      expect(repeat.status).toBe(200);
      expect(repeat.body).toEqual(first.body);
      expect(repeat.headers.get("idempotent-replayed")).toBe("true");
    }
    expect(harness.fake.requests).toHaveLength(1);
    expect(await stored(id)).toMatchObject({ state: { message_count: 1 }, history: ["Hi", "reply #1 to: Hi"] });
  });

  it("answers repeats that arrive while the first is still running with its result", async () => {
    const id = await createSession(a);
    const headers = key("concurrent");
    harness.fake.enqueue({ kind: "reply", text: "slow answer", delayMs: 300 });
    const answers = await Promise.all([a, b, a, b].map((instance) => instance.call("POST", ROUTES.message(id), { message: "once" }, headers)));
    expect(answers.map((answer) => `${answer.status} ${answer.body.error?.code ?? ""}`)).toEqual(Array(4).fill("200 "));
    for (const answer of answers) expect(answer.body).toEqual({ success: true, response: "slow answer", session_id: id, message_count: 1, truncated: false, usage: anyUsage() });
    expect(answers.filter((answer) => answer.headers.get("idempotent-replayed") === "true")).toHaveLength(3);
    expect(harness.fake.requests).toHaveLength(1);
    expect(await stored(id)).toMatchObject({ state: { message_count: 1 }, history: ["once", "slow answer"] });
  });

  it("refuses the same key with a different body (422) and stores nothing", async () => {
    const id = await createSession(a);
    const headers = key("mismatch");
    await a.call("POST", ROUTES.message(id), { message: "first" }, headers);
    const other = await b.call("POST", ROUTES.message(id), { message: "second" }, headers);
    expect(other.status).toBe(422);
    expect(other.body.error?.code).toBe("IDEMPOTENCY_KEY_REUSED");
    expect(harness.fake.requests).toHaveLength(1);
    expect((await stored(id)).state?.message_count).toBe(1);
  });

  it("runs a retry after a failed model call, once", async () => {
    const id = await createSession(a);
    const headers = key("retry");
    harness.fake.enqueue({ kind: "status", status: 503 });
    expect((await a.call("POST", ROUTES.message(id), { message: "again" }, headers)).status).toBe(503);
    const retried = await b.call("POST", ROUTES.message(id), { message: "again" }, headers);
    expect(retried.status).toBe(200);
    expect(retried.headers.get("idempotent-replayed")).toBeNull();
    expect((await a.call("POST", ROUTES.message(id), { message: "again" }, headers)).headers.get("idempotent-replayed")).toBe("true");
    expect(harness.fake.requests).toHaveLength(2);
    expect(await stored(id)).toMatchObject({ state: { message_count: 1 }, history: ["again", "reply #1 to: again"] });
  });

  it("takes over the claim of a request whose instance died", async () => {
    const id = await createSession(a);
    const headers = key("orphan");
    const hash = keyHash("sendMessage", headers["Idempotency-Key"]);
    // What an instance that died after claiming the key leaves behind: a claim whose lease ran out.
    await a.store.updateState(id, (state) => ({
      outcome: undefined,
      next: { ...state, requests: { [hash]: { fingerprint: fingerprint("lost"), owner: "dead-instance", lease_until: Date.now() - 1 } } },
    }));
    const answer = await b.call("POST", ROUTES.message(id), { message: "lost" }, headers);
    expect(answer.status).toBe(200);
    expect(answer.body.message_count).toBe(1);
    expect(harness.fake.requests).toHaveLength(1);
  });

  it("waits for a live claim, then answers 409 when it never completes", async () => {
    const id = await createSession(a);
    const headers = key("stuck");
    const hash = keyHash("sendMessage", headers["Idempotency-Key"]);
    await a.store.updateState(id, (state) => ({
      outcome: undefined,
      next: { ...state, requests: { [hash]: { fingerprint: fingerprint("stuck"), owner: "slow-instance", lease_until: Date.now() + 60_000 } } },
    }));
    const started = Date.now();
    const answer = await b.call("POST", ROUTES.message(id), { message: "stuck" }, headers);
    expect(answer.status).toBe(409);
    expect(answer.body.error?.code).toBe("IDEMPOTENCY_IN_PROGRESS");
    expect(Number(answer.headers.get("retry-after"))).toBeGreaterThan(0);
    // It waited what the time budget leaves (24 s - 1 s - 400 ms - 4 x 5 s = 2.6 s), no longer.
    expect(Date.now() - started).toBeLessThan(4_000);
    expect(harness.fake.requests).toHaveLength(0);
  });

  it("replays a completed message even after the session ended", async () => {
    const id = await createSession(a);
    const headers = key("ended");
    const first = await a.call("POST", ROUTES.message(id), { message: "bye" }, headers);
    await a.call("DELETE", ROUTES.end(id));
    const again = await b.call("POST", ROUTES.message(id), { message: "bye" }, headers);
    expect(again.status).toBe(200);
    expect(again.body).toEqual(first.body);
    expect((await a.call("POST", ROUTES.message(id), { message: "new" }, key("new"))).status).toBe(410);
  });

  it("keeps keys of different sessions apart", async () => {
    const headers = key("shared");
    const [x, y] = [await createSession(a), await createSession(a)];
    expect((await a.call("POST", ROUTES.message(x), { message: "same" }, headers)).headers.get("idempotent-replayed")).toBeNull();
    expect((await a.call("POST", ROUTES.message(y), { message: "same" }, headers)).headers.get("idempotent-replayed")).toBeNull();
    expect(harness.fake.requests).toHaveLength(2);
  });

  it("creates one session for repeated creates, on any instance, even at once", async () => {
    const headers = key("create");
    const body = { user_id: "user_idem", template_id: "friendly-assistant" };
    const answers = await Promise.all([a, b, a].map((instance) => instance.call("POST", ROUTES.create, body, headers)));
    expect(answers.map((answer) => answer.status)).toEqual([201, 201, 201]);
    const ids = new Set(answers.map((answer) => answer.body.session_id));
    expect(ids.size).toBe(1);
    const later = await b.call("POST", ROUTES.directCreate, body, headers);
    expect(later.body).toEqual(answers[0]!.body);
    expect(later.headers.get("idempotent-replayed")).toBe("true");
    expect((await a.call("POST", ROUTES.create, { ...body, template_id: "socratic-tutor" }, headers)).status).toBe(422);
    // The same key from another user is another key.
    const otherUser = await a.call("POST", ROUTES.create, { ...body, user_id: "user_other" }, headers);
    expect(otherUser.status).toBe(201);
    expect(otherUser.body.session_id).not.toBe(answers[0]!.body.session_id);
  });

  it.each([
    ["empty", ""],
    ["with a space", "has space"],
    ["too long", "k".repeat(256)],
    ["non-ASCII", "clé"],
  ])("refuses a key that is %s with 400", async (_name, value) => {
    const id = await createSession(a);
    const answer = await a.call("POST", ROUTES.message(id), { message: "x" }, { "Idempotency-Key": value });
    expect(answer.status).toBe(400);
    expect(answer.body.error?.code).toBe("INVALID_IDEMPOTENCY_KEY");
    expect(harness.fake.requests).toHaveLength(0);
  });
});

describeEachStore("one Idempotency-Key on concurrent createSession calls", (kind) => {
  /**
   * A race, so several rounds, each with a fresh key and user, on newly started instances (as a
   * burst of retries meets when the platform scales out): there, today, about every other round on
   * one instance and every round on two create more than one session.
   */
  const ROUNDS = 10;
  const CALLS = 10;
  let harness: Harness;
  let view: StoredView;

  beforeAll(async () => {
    harness = await startHarness({ store: kind });
    view = new StoredView(harness);
  });
  afterAll(async () => {
    await view.close();
    await harness.close();
  });

  async function round(instances: readonly Instance[], name: string, n: number) {
    const userId = `user_${name}_${n}_${Math.random().toString(36).slice(2, 8)}`;
    const headers = key(`create-${name}`);
    const body = { user_id: userId, template_id: "friendly-assistant" };
    const answers = await Promise.all(Array.from({ length: CALLS }, (_, i) => instances[i % instances.length]!.call("POST", ROUTES.create, body, headers)));
    return {
      statuses: answers.map((answer) => answer.status),
      named: [...new Set(answers.map((answer) => answer.body.session_id))],
      stored: await view.sessionsOf(userId),
      counted: await view.countedSessions(userId),
    };
  }

  it.each([
    ["on one instance", 1],
    ["split across two instances", 2],
  ])("10 calls %s: every answer names one session, and exactly that one is stored and counted", async (_name, count) => {
    for (let n = 0; n < ROUNDS; n += 1) {
      const instances = await Promise.all(Array.from({ length: count }, () => harness.instance()));
      const result = await round(instances, `${count}`, n);
      expect(result.statuses).toEqual(Array(CALLS).fill(201));
      const one = [result.named[0]];
      expect({ round: n, named: result.named, stored: result.stored, counted: result.counted }).toEqual({ round: n, named: one, stored: one, counted: one });
    }
  });
});

describeEachStore("a keyed createSession repeated before its session is stored", (kind) => {
  /**
   * Callers without an ID token, from one address (127.0.0.1) allowed two sessions an hour: each
   * test starts two hours on, its bucket full again, with a user of its own.
   */
  let now = Date.parse("2031-03-14T12:00:00Z");
  let harness: Harness;
  let b: Instance;
  let view: StoredView;
  /** Each instance's faults, in the order the instances started. */
  const faults: FaultyStore[] = [];
  const { holding, holdNext } = storeGate();

  beforeAll(async () => {
    harness = await startHarness({
      store: kind,
      clock: () => now,
      wrapStore: (store) => holding((faults[faults.length] = new FaultyStore(store)).store),
      env: { ADDRESS_SESSIONS_PER_HOUR: "2" },
    });
    b = await harness.instance();
    view = new StoredView(harness);
  });
  afterAll(async () => {
    await view.close();
    await harness.close();
  });
  beforeEach(() => { now += 2 * 3_600_000; });

  const create = (instance: Instance, userId: string, headers?: Record<string, string>) =>
    instance.call("POST", ROUTES.create, { user_id: userId, template_id: "friendly-assistant" }, headers);
  const outcome = (answer: Answer) => ({ status: answer.status, code: answer.body.error?.code });
  const newUser = () => `user_${Math.random().toString(36).slice(2, 10)}`;

  it("answers a repeat with the first's session, counted once, when the first took the address's last session", async () => {
    expect((await create(harness.api, newUser())).status).toBe(201);
    const user = newUser();
    const headers = key("create-held");
    const held = await holdNext("createSession", () => create(harness.api, user, headers));
    const repeat = await create(b, user, headers);
    held.open();
    const first = await held.first;
    expect(outcome(first)).toEqual({ status: 201, code: undefined });
    expect({ ...outcome(repeat), session: repeat.body.session_id }).toEqual({ status: 201, code: undefined, session: first.body.session_id });
    expect({ stored: await view.sessionsOf(user), counted: await view.countedSessions(user) }).toEqual({ stored: [first.body.session_id], counted: [first.body.session_id] });
  });

  it("keeps the first's session counted for its user when a repeat's own write fails", async () => {
    const user = newUser();
    const headers = key("create-failed-repeat");
    const held = await holdNext("createSession", () => create(harness.api, user, headers));
    faults[1]!.arm("createSession", "before");
    const repeat = await create(b, user, headers);
    held.open();
    const first = await held.first;
    expect({ first: outcome(first), repeat: outcome(repeat) }).toEqual({ first: { status: 201, code: undefined }, repeat: { status: 503, code: "DATABASE_UNAVAILABLE" } });
    expect(await view.countedSessions(user)).toEqual([first.body.session_id]);
  });

  it("keeps the session counted for its user when the first's own write fails after its repeat stored it", async () => {
    const user = newUser();
    const headers = key("create-failed-first");
    const held = await holdNext("createSession", () => create(harness.api, user, headers));
    faults[0]!.arm("createSession", "before");
    const repeat = await create(b, user, headers);
    held.open();
    expect({ first: outcome(await held.first), repeat: outcome(repeat) }).toEqual({ first: { status: 503, code: "DATABASE_UNAVAILABLE" }, repeat: { status: 201, code: undefined } });
    expect({ stored: await view.sessionsOf(user), counted: await view.countedSessions(user) }).toEqual({ stored: [repeat.body.session_id], counted: [repeat.body.session_id] });
  });

  it("keeps the session counted for its user when its write landed and only the answer was lost, for the retry that replays it", async () => {
    const user = newUser();
    const headers = key("create-answer-lost");
    faults[0]!.arm("createSession", "after");
    expect(outcome(await create(harness.api, user, headers))).toEqual({ status: 503, code: "DATABASE_UNAVAILABLE" });
    const retried = await create(harness.api, user, headers);
    expect(outcome(retried)).toEqual({ status: 201, code: undefined });
    expect({ stored: await view.sessionsOf(user), counted: await view.countedSessions(user) }).toEqual({ stored: [retried.body.session_id], counted: [retried.body.session_id] });
  });

  it("counts nothing for an unkeyed create whose admission landed with its answer lost; a keyed one keeps its count, for the retry that creates it", async () => {
    const user = newUser();
    // Read on the instance's own connection: after the give-back, which is sent off the reply's path.
    const counted = async () => Object.keys((await usageOf(harness.api.store, user))?.sessions ?? {});
    faults[0]!.arm("updateUsage", "after");
    expect(outcome(await create(harness.api, user))).toEqual({ status: 503, code: "DATABASE_UNAVAILABLE" });
    // Its id reaches no retry and no session is written under it: kept, its count would hold a slot for the idle TTL.
    expect({ stored: await view.sessionsOf(user), counted: await counted() }).toEqual({ stored: [], counted: [] });

    const headers = key("create-admission-lost");
    faults[0]!.arm("updateUsage", "after");
    expect(outcome(await create(harness.api, user, headers))).toEqual({ status: 503, code: "DATABASE_UNAVAILABLE" });
    expect(await counted()).toHaveLength(1);
    const retried = await create(harness.api, user, headers);
    expect(outcome(retried)).toEqual({ status: 201, code: undefined });
    expect({ stored: await view.sessionsOf(user), counted: await counted() }).toEqual({ stored: [retried.body.session_id], counted: [retried.body.session_id] });
  });

  it("counts nothing for a repeat whose admission lands after the first created the session and the client ended it", async () => {
    const user = newUser();
    const headers = key("create-then-end");
    const held = await holdNext("createSession", () => create(harness.api, user, headers));
    // The repeat finds the key and no session yet; its admission waits until after the end.
    const repeat = await holdNext("updateUsage", () => create(b, user, headers));
    held.open();
    const first = await held.first;
    expect(outcome(first)).toEqual({ status: 201, code: undefined });
    now += 1_000;
    expect((await harness.api.call("DELETE", ROUTES.end(String(first.body.session_id)))).status).toBe(200);
    repeat.open();
    const replayed = await repeat.first;
    expect({ ...outcome(replayed), session: replayed.body.session_id }).toEqual({ status: 201, code: undefined, session: first.body.session_id });
    // Counted again, the ended session would hold a slot for the idle TTL.
    expect(await view.countedSessions(user)).toEqual([]);
  });

  it("creates the session on a retry after its write failed, the address having paid for it once", async () => {
    expect((await create(harness.api, newUser())).status).toBe(201);
    const user = newUser();
    const headers = key("create-retried");
    faults[0]!.arm("createSession", "before");
    expect(outcome(await create(harness.api, user, headers))).toEqual({ status: 503, code: "DATABASE_UNAVAILABLE" });
    expect(outcome(await create(harness.api, user, headers))).toEqual({ status: 201, code: undefined });
  });

  it("refuses a repeat of a create the address refused, and stores no session", async () => {
    for (let n = 0; n < 2; n += 1) expect((await create(harness.api, newUser())).status).toBe(201);
    const user = newUser();
    const headers = key("create-refused");
    // The first has claimed the key; its admission waits.
    const held = await holdNext("updateAddressUsage", () => create(harness.api, user, headers));
    const repeat = await create(b, user, headers);
    held.open();
    expect({ first: outcome(await held.first), repeat: outcome(repeat) }).toEqual({
      first: { status: 429, code: "ADDRESS_RATE_LIMITED" },
      repeat: { status: 429, code: "ADDRESS_RATE_LIMITED" },
    });
    expect(await view.sessionsOf(user)).toEqual([]);
  });
});

describeWithRtdb("a keyed retry after an instance crashed holding the key's claim [Realtime Database]", () => {
  /** The function's timeout is 60 s; a retry must answer well inside it, whatever the model settings. */
  const ANSWER_WITHIN_MS = 15_000;
  let harness: Harness;
  /** The crashed instance, and the requests still running, brought to an end before the harness closes. */
  let crashed: { instance: Instance; requests: Promise<unknown>[] } | undefined;

  beforeAll(async () => {
    // The default model settings in the default 60 s function: a claim's lease is the 60 s, a repeat waits 4 s for it.
    harness = await startHarness({ store: "rtdb", env: { OPENAI_TIMEOUT_MS: "15000", OPENAI_MAX_RETRIES: "1", OPENAI_MAX_RETRY_WAIT_MS: "5000" } });
  });
  afterAll(async () => {
    // Let the "crashed" instance finish its request (reconnected, its model call cut and retried)
    // while its database is still open, so nothing runs on after the harness closes.
    if (crashed) {
      crashed.instance.database!.goOnline();
      harness.fake.releaseHanging();
      await Promise.all(crashed.requests);
    }
    await harness.close();
  });

  it("answers the retry on another instance within 15 s with 409 IDEMPOTENCY_IN_PROGRESS and Retry-After", async () => {
    const a = harness.api;
    const b = await harness.instance();
    const id = await createSession(a);
    const headers = key("crash");
    const body = { message: "are you there?" };

    // A claims the key and calls the model, which never answers; then A dies with its claim live.
    harness.fake.enqueue({ kind: "hang" });
    crashed = { instance: a, requests: [a.call("POST", ROUTES.message(id), body, headers).catch(() => undefined)] };
    await harness.fake.awaitRequests(1);
    a.database!.goOffline();

    const started = Date.now();
    let deadline: NodeJS.Timeout | undefined;
    const retry = b.call("POST", ROUTES.message(id), body, headers);
    crashed.requests.push(retry.catch(() => undefined));
    const answer = await Promise.race([
      retry,
      new Promise<undefined>((resolve) => { deadline = setTimeout(() => { resolve(undefined); }, ANSWER_WITHIN_MS); }),
    ]).finally(() => { clearTimeout(deadline); });
    const modelCalls = harness.fake.requests.length;
    const summary = (got: Answer | undefined) =>
      got === undefined
        ? { answered: `no answer within ${ANSWER_WITHIN_MS / 1000} s` }
        : { answered: "yes", status: got.status, code: got.body.error?.code, retryAfter: got.headers.get("retry-after") };
    expect(summary(answer)).toEqual({ answered: "yes", status: 409, code: "IDEMPOTENCY_IN_PROGRESS", retryAfter: expect.stringMatching(/^[1-9]\d*$/) });
    expect(Date.now() - started).toBeLessThan(ANSWER_WITHIN_MS);
    // The retry did not call the model a second time while the first's claim stood.
    expect(modelCalls).toBe(1);
  }, 25_000);
});

/**
 * docs/api.md, Retries: a repeat with the same key and body, on any instance, gets the first
 * result. Its session holds the settings it was created with, so a repeat needs no template: one
 * deleted since, or whose stored values went bad (an operator's edit, a string where a number
 * belongs), still replays. Set on the database directly: the embedded store takes only valid templates.
 */
describeWithRtdb("a keyed createSession repeat after its template's stored values went bad [Realtime Database]", () => {
  let harness: Harness;
  beforeAll(async () => {
    harness = await startHarness({ store: "rtdb" });
  });
  afterAll(async () => harness.close());

  it("replays the session its first request created, on a fresh instance, though the template now fails to parse; a new create answers 500 DATA_ERROR", async () => {
    const templateId = `tpl-${randomUUID().slice(0, 8)}`;
    await harness.api.store.seedTemplates({ [templateId]: { name: "Edited later", personalityPrompt: "You help.", max_tokens: 60 } });
    const body = { user_id: `user-${randomUUID()}`, template_id: templateId };
    const headers = key("bad-template");
    const first = await harness.api.call("POST", ROUTES.create, body, headers);
    expect(first.status).toBe(201);

    // The operator edits the template: max_tokens becomes a string.
    await harness.api.database!.ref(`templates/${templateId}/max_tokens`).set("sixty");
    // A new create with that template is the service's fault (500 DATA_ERROR, docs/api.md), keyed or not...
    const fresh = await harness.instance();
    const unkeyed = await fresh.call("POST", ROUTES.create, body);
    expect({ status: unkeyed.status, code: unkeyed.body.error?.code }).toEqual({ status: 500, code: "DATA_ERROR" });
    const newKey = await fresh.call("POST", ROUTES.create, body, key("bad-template"));
    expect({ status: newKey.status, code: newKey.body.error?.code }).toEqual({ status: 500, code: "DATA_ERROR" });
    // ...but the repeat of the keyed create needs no template: its session exists.
    const again = await fresh.call("POST", ROUTES.create, body, headers);
    expect({ status: again.status, session_id: again.body.session_id, replayed: again.headers.get("idempotent-replayed") })
      .toEqual({ status: 201, session_id: first.body.session_id, replayed: "true" });
  });
});

/**
 * docs/api.md, Retries: "A repeat with the same key and body, on any instance, even while the first
 * is still running, gets the first result"; a createSession refused outright "keeps no key: a retry
 * with it is a first request". A concurrent repeat on another instance that finds the first's claim
 * takes it over and, admitted where the first was refused (a slot freed meanwhile; or, for anonymous
 * callers, another network address), creates that session: the first's give-back of the key must
 * then leave it, or the next retry with the key would be a "first request" (a second session, or
 * 429 with the first session now counting) instead of a replay.
 */
describeEachStore("a keyed createSession refused while its repeat on another instance creates the session", (kind) => {
  let harness: Harness;
  let b: Instance;
  let view: StoredView;
  const { holding, holdNext } = storeGate();

  beforeAll(async () => {
    harness = await startHarness({ store: kind, wrapStore: holding, env: { USER_MAX_ACTIVE_SESSIONS: "1" } });
    b = await harness.instance();
    view = new StoredView(harness);
  });
  afterAll(async () => {
    await view.close();
    await harness.close();
  });

  it("keeps the key for the repeat's session: a later retry replays it, and the key made that one session", async () => {
    const userId = `user_${randomUUID()}`;
    const body = { user_id: userId, template_id: "friendly-assistant" };
    const headers = { "Idempotency-Key": `create-${randomUUID()}` };
    // The user holds their one active session.
    const old = await harness.api.call("POST", ROUTES.create, body);
    expect(old.status).toBe(201);

    // The first request claims the key, is refused (429: the user's limit), and is giving its key back...
    const first = await holdNext("releaseCreateKey", () => harness.api.call("POST", ROUTES.create, body, headers));
    // ...when the user ends their old session, and the client's repeat reaches another instance.
    expect((await b.call("DELETE", ROUTES.end(String(old.body.session_id)))).status).toBe(200);
    const repeat = await b.call("POST", ROUTES.create, body, headers);
    expect(repeat.status).toBe(201);
    const created = String(repeat.body.session_id);
    first.open();
    expect((await first.first).status).toBe(429);

    // A later retry with the same key and body gets that session, as any repeat does.
    const retry = await b.call("POST", ROUTES.create, body, headers);
    expect({ status: retry.status, code: retry.body.error?.code, session_id: retry.body.session_id, replayed: retry.headers.get("idempotent-replayed") })
      .toEqual({ status: 201, code: undefined, session_id: created, replayed: "true" });
    // (The embedded store's view lists active sessions only, so the ended one is set aside.)
    expect((await view.sessionsOf(userId)).filter((id) => id !== String(old.body.session_id))).toEqual([created]);
  });
});

/**
 * docs/security.md: "A keyed createSession pays once": its repeats (on any instance, from any
 * address) find its session counted for its user, and paid for by their address, and take nothing
 * more; a repeat that took the key over may create the session where the request it repeats was
 * refused (a slot freed meanwhile, another address). So a keyed create refused by one ledger gives
 * back what the other took only once its own claim of the key went: what it took may be what a
 * repeat found "already" counted and created its session on. Callers without an ID token, each
 * test two hours on (the buckets full again), with a user of its own allowed one active session,
 * from two addresses allowed two sessions an hour: 127.0.0.1, whose hour each test uses up, and
 * 127.0.0.2.
 */
describeEachStore("a keyed createSession refused by one ledger, and its repeat from another address", (kind) => {
  let now = Date.parse("2031-06-01T08:00:00Z");
  let harness: Harness;
  let b: Instance;
  let view: StoredView;
  const gates = instanceGates();

  beforeAll(async () => {
    harness = await startHarness({
      store: kind,
      clock: () => now,
      wrapStore: gates.wrap,
      env: { USER_MAX_ACTIVE_SESSIONS: "1", ADDRESS_SESSIONS_PER_HOUR: "2" },
    });
    b = await harness.instance();
    view = new StoredView(harness);
  });
  afterAll(async () => {
    gates.openAll();
    await view.close();
    await harness.close();
  });
  beforeEach(() => { now += 2 * 3_600_000; });

  const outcome = (answer: Answer) => ({ status: answer.status, code: answer.body.error?.code });
  const newUser = () => ({ user_id: `user_${randomUUID()}`, template_id: "friendly-assistant" });
  /** Two sessions of other users from `address`: its hour used up. */
  async function useUp(address: string): Promise<void> {
    for (let n = 0; n < 2; n += 1) expect((await callFrom(address, harness.api.baseUrl, "POST", ROUTES.create, newUser())).status).toBe(201);
  }

  it("keeps the session its repeat created counted for its user, when the first was refused by its address after its user's admission counted it", async () => {
    await useUp("127.0.0.1");
    const body = newUser();
    const headers = key("create-address-refused");
    // The first's user admission passes; anything it then gives back, and its key's release, wait.
    const giveBack = gates.hold(0, "updateUsage", 1);
    const release = gates.hold(0, "releaseCreateKey");
    const first = callFrom("127.0.0.1", harness.api.baseUrl, "POST", ROUTES.create, body, headers);
    await release.reached("the first request's release of its key");
    // The client's repeat, from another address (a phone that switched networks), on another instance.
    const repeat = await callFrom("127.0.0.2", b.baseUrl, "POST", ROUTES.create, body, headers);
    expect(outcome(repeat)).toEqual({ status: 201, code: undefined });
    const created = String(repeat.body.session_id);
    release.open();
    giveBack.open();
    expect(outcome(await first)).toEqual({ status: 429, code: "ADDRESS_RATE_LIMITED" });
    await giveBack.landed();

    const stored = await view.sessionsOf(body.user_id);
    const counted = await view.countedSessions(body.user_id);
    const second = await callFrom("127.0.0.2", b.baseUrl, "POST", ROUTES.create, body);
    expect({ stored, counted, second: outcome(second) }).toEqual({ stored: [created], counted: [created], second: { status: 429, code: "TOO_MANY_ACTIVE_SESSIONS" } });
  });

  it("counts the session its repeat created against the address, when the first was refused by its user's limit after its address paid for it", async () => {
    const body = newUser();
    // The user's one active session, the address's first of its two this hour.
    const old = await callFrom("127.0.0.1", harness.api.baseUrl, "POST", ROUTES.create, body);
    expect(old.status).toBe(201);
    const headers = key("create-user-refused");
    // The first's address pays (the hour's second session); anything it then gives back, and its key's release, wait.
    const giveBack = gates.hold(0, "updateAddressUsage", 1);
    const release = gates.hold(0, "releaseCreateKey");
    const first = callFrom("127.0.0.1", harness.api.baseUrl, "POST", ROUTES.create, body, headers);
    await release.reached("the first request's release of its key");
    // The user ends their old session, and the client's repeat reaches another instance.
    expect((await callFrom("127.0.0.1", b.baseUrl, "DELETE", ROUTES.end(String(old.body.session_id)), undefined)).status).toBe(200);
    const repeat = await callFrom("127.0.0.1", b.baseUrl, "POST", ROUTES.create, body, headers);
    expect(outcome(repeat)).toEqual({ status: 201, code: undefined });
    release.open();
    giveBack.open();
    expect(outcome(await first)).toEqual({ status: 429, code: "TOO_MANY_ACTIVE_SESSIONS" });
    await giveBack.landed();

    // Two sessions made from the address this hour: a third is refused.
    const third = await callFrom("127.0.0.1", b.baseUrl, "POST", ROUTES.create, newUser());
    expect(outcome(third)).toEqual({ status: 429, code: "ADDRESS_RATE_LIMITED" });
  });

  it("keeps the session the first created counted for its user, when its repeat, refused by its address, had counted it first", async () => {
    await useUp("127.0.0.1");
    const body = newUser();
    const headers = key("create-repeat-refused");
    // The first (from 127.0.0.2) has claimed the key; its user's admission waits...
    const admission = gates.hold(0, "updateUsage");
    const first = callFrom("127.0.0.2", harness.api.baseUrl, "POST", ROUTES.create, body, headers);
    await admission.reached("the first request's admission");
    // ...while its repeat, from the address whose hour is used up, counts the session and is refused;
    // anything the repeat gives back waits until the first has created the session.
    const giveBack = gates.hold(1, "updateUsage", 1);
    const repeat = await callFrom("127.0.0.1", b.baseUrl, "POST", ROUTES.create, body, headers);
    expect(outcome(repeat)).toEqual({ status: 429, code: "ADDRESS_RATE_LIMITED" });
    admission.open();
    const created = await first;
    expect(outcome(created)).toEqual({ status: 201, code: undefined });
    giveBack.open();
    await giveBack.landed();

    const stored = await view.sessionsOf(body.user_id);
    const counted = await view.countedSessions(body.user_id);
    const second = await callFrom("127.0.0.2", b.baseUrl, "POST", ROUTES.create, body);
    expect({ stored, counted, second: outcome(second) })
      .toEqual({ stored: [String(created.body.session_id)], counted: [String(created.body.session_id)], second: { status: 429, code: "TOO_MANY_ACTIVE_SESSIONS" } });
  });

  it("gives back what its admission took, and its key, when no repeat took its key over", async () => {
    await useUp("127.0.0.1");
    const body = newUser();
    const headers = key("create-alone");
    // Refused by its address: its user's count goes back, so the user may create their one session...
    expect(outcome(await callFrom("127.0.0.1", harness.api.baseUrl, "POST", ROUTES.create, body, headers))).toEqual({ status: 429, code: "ADDRESS_RATE_LIMITED" });
    const own = await callFrom("127.0.0.2", harness.api.baseUrl, "POST", ROUTES.create, body);
    expect(outcome(own)).toEqual({ status: 201, code: undefined });
    // ...and a retry with the key is a first request, refused by the user's limit: its address's token goes back too.
    expect(outcome(await callFrom("127.0.0.2", harness.api.baseUrl, "POST", ROUTES.create, body, headers))).toEqual({ status: 429, code: "TOO_MANY_ACTIVE_SESSIONS" });
    const others = [await callFrom("127.0.0.2", b.baseUrl, "POST", ROUTES.create, newUser()), await callFrom("127.0.0.2", b.baseUrl, "POST", ROUTES.create, newUser())];
    expect(others.map(outcome)).toEqual([{ status: 201, code: undefined }, { status: 429, code: "ADDRESS_RATE_LIMITED" }]);
  });
});

const MINUTE = 60_000;
/** Past every erasure's second pass (a claim's lease and a database deadline) and any take-over. */
const LATER = 10 * MINUTE;

/**
 * docs/conversations.md, Writes racing an erasure: nothing of the user's outlives the erasure but
 * their usage record. A keyed createSession refused while its user is marked claimed its key after
 * the erasure's cutoff; when the client's repeat on another instance took that claim over and was
 * refused too, neither gives the key back (the first may no longer, and the repeat holds no claim
 * of its own): the repeat marks it refused, and the second pass deletes it, a create key so marked
 * whose session does not exist, claimed (and last taken over) long enough before that pass that no
 * request of it can still run.
 */
describeEachStore("a keyed createSession and its repeat on another instance, both refused while the user is being erased", (kind) => {
  let harness: Harness;
  let b: Instance;
  let now = Date.parse("2026-04-01T09:00:00Z");
  const { holding, holdNext } = storeGate();

  beforeAll(async () => {
    // Erasure requests stop at once: the user stays marked until the sweep takes the first pass over.
    harness = await startHarness({ store: kind, clock: () => now, wrapStore: holding, userDataLimits: { eraseRequestMs: -1 } });
    b = await harness.instance();
  });
  afterAll(async () => harness.close());

  /** Both passes done: nothing but the usage record holds the user's id or key (a create key holds the key). */
  async function leftOf(userId: string): Promise<string[]> {
    await harness.api.runtime.maintain(now + 2 * MINUTE);
    expect((await harness.api.runtime.maintain(now + LATER)).erasuresFinished).toBe(1);
    now += LATER;
    const stored = WholeStore.of(harness);
    try {
      return await stored.holdingBesideUsage([userId, userKey(userId)]);
    } finally {
      await stored.close();
    }
  }

  it("leaves no create key of the user once both passes are done, the first giving its key back after its repeat was refused", async () => {
    const { userId, body, headers } = await userBeingErased(harness, () => (now += 1_000));
    // The first claims the key, is refused, and is giving its key back...
    const first = await holdNext("releaseCreateKey", () => harness.api.call("POST", ROUTES.create, body, headers));
    // ...when the client's repeat (a timeout retry) reaches another instance, takes the claim over, and is refused too.
    const repeat = await b.call("POST", ROUTES.create, body, headers);
    expect(repeat.body.error?.code).toBe("ERASURE_IN_PROGRESS");
    first.open();
    expect((await first.first).body.error?.code).toBe("ERASURE_IN_PROGRESS");
    expect(await leftOf(userId)).toEqual([]);
  });

  it("leaves no create key of the user once both passes are done, the first refused after its repeat took its claim over", async () => {
    const { userId, body, headers } = await userBeingErased(harness, () => (now += 1_000));
    // The first has claimed the key; its admission waits...
    const first = await holdNext("updateUsage", () => harness.api.call("POST", ROUTES.create, body, headers));
    // ...while the repeat takes the claim over and is refused.
    const repeat = await b.call("POST", ROUTES.create, body, headers);
    expect(repeat.body.error?.code).toBe("ERASURE_IN_PROGRESS");
    first.open();
    expect((await first.first).body.error?.code).toBe("ERASURE_IN_PROGRESS");
    expect(await leftOf(userId)).toEqual([]);
  });
});

/**
 * docs/conversations.md, Writes racing an erasure: the second pass deletes only the create keys
 * refused for the erasure, which no request can still use. A key whose session exists (created
 * after the cutoff: the user keeps it) stays, and so does one claimed within a lease and a database
 * deadline of that pass, whose create may still be running, and one whose create failed with its
 * fate unknown (docs/api.md: "One whose fate is unknown (503) keeps its key, so its retry gets that
 * session"): a retry with any of them gets its one session. The user may hold one active session,
 * so a retry taken for a first request would be refused 429.
 */
describeEachStore("a user's keyed createSession through the second pass of their erasure", (kind) => {
  let harness: Harness;
  let faulty: FaultyStore | undefined;
  let now = Date.parse("2026-05-01T09:00:00Z");
  const { holding, holdNext } = storeGate();

  beforeAll(async () => {
    harness = await startHarness({
      store: kind,
      clock: () => now,
      env: { USER_MAX_ACTIVE_SESSIONS: "1" },
      wrapStore: (store) => holding((faulty = new FaultyStore(store)).store),
      userDataLimits: { eraseRequestMs: -1 },
    });
  });
  afterAll(async () => harness.close());

  /** The erasure's first pass, by the sweep, at the clock's time: the user is served again; its second pass is due a lease and a database deadline on. */
  async function firstPassDone(): Promise<number> {
    const { budget, config } = harness.api.runtime;
    const secondPassAt = now + budget.leaseMs + config.dbTimeoutMs;
    expect((await harness.api.runtime.maintain(now + 2 * MINUTE)).erasuresFinished).toBe(0);
    return secondPassAt;
  }

  /** What a retry with the key gets: its status, the session it names, and whether it was replayed. */
  async function retried(body: object, headers: Record<string, string>) {
    const retry = await harness.api.call("POST", ROUTES.create, body, headers);
    return { status: retry.status, session_id: retry.body.session_id, replayed: retry.headers.get("idempotent-replayed") };
  }

  it("keeps the key of a session created after the cutoff: a retry after the second pass replays it", async () => {
    const { body, headers } = await userBeingErased(harness, () => (now += 1_000));
    await firstPassDone();
    now += 1_000;
    const created = await harness.api.call("POST", ROUTES.create, body, headers);
    expect(created.status).toBe(201);
    expect((await harness.api.runtime.maintain(now + LATER)).erasuresFinished).toBe(1);
    now += LATER;
    expect(await retried(body, headers)).toEqual({ status: 201, session_id: created.body.session_id, replayed: "true" });
  });

  it("keeps the key a create claimed within a lease and a database deadline before the second pass, its session not stored yet: a retry replays the one session it made", async () => {
    const { body, headers } = await userBeingErased(harness, () => (now += 1_000));
    const secondPassAt = await firstPassDone();
    now += 5_000;
    // The create has claimed its key and been admitted; its session's write is on its way...
    const first = await holdNext("createSession", () => harness.api.call("POST", ROUTES.create, body, headers));
    // ...when the second pass runs, as soon as it is due.
    expect((await harness.api.runtime.maintain(secondPassAt + 1_000)).erasuresFinished).toBe(1);
    first.open();
    const created = await first.first;
    expect(created.status).toBe(201);
    now = secondPassAt + 2_000;
    expect(await retried(body, headers)).toEqual({ status: 201, session_id: created.body.session_id, replayed: "true" });
  });

  it("keeps the key of a create admitted after the first pass whose write failed (503, its fate unknown): its retry after the second pass creates that session", async () => {
    const { userId, body, headers } = await userBeingErased(harness, () => (now += 1_000));
    await firstPassDone();
    now += 5_000;
    // Admitted (its session counted: the user's one), then the session's write fails.
    faulty!.arm("createSession", "before");
    const failed = await harness.api.call("POST", ROUTES.create, body, headers);
    expect({ status: failed.status, code: failed.body.error?.code }).toEqual({ status: 503, code: "DATABASE_UNAVAILABLE" });
    const keys = await harness.api.store.readUserCreateKeys(userKey(userId), undefined, 10);
    expect(keys).toHaveLength(1);
    expect((await harness.api.runtime.maintain(now + LATER)).erasuresFinished).toBe(1);
    now += LATER;
    expect(await harness.api.store.readUserCreateKeys(userKey(userId), undefined, 10)).toEqual(keys);
    const retry = await harness.api.call("POST", ROUTES.create, body, headers);
    expect({ status: retry.status, code: retry.body.error?.code, session_id: retry.body.session_id }).toEqual({ status: 201, code: undefined, session_id: keys[0]?.key.session_id });
  });
});

/** A user of `on` being erased (its request stopped at once: marked until the sweep), and the body and key of their create; `tick` moves the clock past the erasure's cutoff. */
async function userBeingErased(on: Harness, tick: () => void) {
  const userId = `user_${randomUUID()}`;
  await createSession(on.api, "friendly-assistant", userId);
  expect((await on.api.call("DELETE", `${ROUTES.erase}?user_id=${userId}`)).status).toBe(202);
  tick();
  return { userId, body: { user_id: userId, template_id: "friendly-assistant" }, headers: { "Idempotency-Key": `create-${randomUUID()}` } };
}

/**
 * docs/api.md, Retries: a repeat that arrives while the first request still runs "waits for its
 * result as long as the function's time budget allows ..., then gets 409 IDEMPOTENCY_IN_PROGRESS
 * with Retry-After"; the error table: 409 is for "the first request with this key is still running
 * after the wait allowed". The repeat polls the session (slot-claim.ts awaitKey); its last poll
 * comes at the end of the wait, and what it finds decides: the first's exchange stored is a replay,
 * though the clock has passed the wait.
 */
describeEachStore("a keyed repeat whose last poll, at the end of its wait, finds the first request's exchange stored", (kind) => {
  let harness: Harness;
  let now = Date.parse("2031-06-01T10:00:00Z");
  let wrapping = false;
  /** The repeat's claim was sent: its next read of the session is a poll of the key. */
  let claimed = false;
  // Only once the repeat has claimed: the call held is then a poll of the key.
  const { holding, holdNext } = storeGate((property) => {
    if (wrapping && property === "updateStateReadingKey") claimed = true;
    return wrapping && claimed;
  });

  beforeAll(async () => {
    // A 24 s function with a 400 ms model timeout: a repeat waits 2.6 s for a live claim, whose lease is the 24 s.
    harness = await startHarness({ store: kind, clock: () => now, wrapStore: holding, env: { OPENAI_TIMEOUT_MS: "400" }, functionTimeoutMs: 24_000 });
  });
  afterAll(async () => harness.close());

  it("replays that exchange (200, Idempotent-Replayed) without a model call", async () => {
    const { api } = harness;
    const id = await createSession(api);
    const idempotencyKey = `slow-${randomUUID()}`;
    const hash = keyHash("sendMessage", idempotencyKey);
    const claim = { hash, fingerprint: fingerprint("slow"), owner: "first-request", remember: true } as const;
    // The first request (on another instance) holds the key's claim, its model call running.
    await api.store.updateState(id, (state) => ({
      outcome: undefined,
      next: { ...state, requests: { [hash]: { fingerprint: claim.fingerprint, owner: claim.owner, lease_until: now + 24_000 } } },
    }));

    // The repeat waits; its next poll of the session is held.
    wrapping = true;
    const polled = await holdNext("readSessionState", () => api.call("POST", ROUTES.message(id), { message: "slow" }, { "Idempotency-Key": idempotencyKey }));
    const repeat = polled.first;

    // Meanwhile the first request stores its exchange, just as the repeat's wait runs out.
    const policy = { idleTtlMs: 30 * 60_000, maxExchanges: 100 };
    const stored = await api.store.appendExchange(
      id,
      {
        user: { role: "user", content: "slow", timestamp: now },
        assistant: { role: "assistant", content: "the first's reply", timestamp: now + 1 },
      },
      appendRule({ receivedAt: now, answeredAt: now + 1, policy, claim }),
    );
    expect(stored).toMatchObject({ found: true, outcome: { kind: "appended", seq: 1 } });
    // The repeat's wait (2.6 s) is over; the first's lease (24 s) is not.
    now += 3_000;
    polled.open();
    wrapping = false;

    const answer = await repeat;
    expect({
      status: answer.status,
      code: answer.body.error?.code,
      retryAfter: answer.headers.get("retry-after"),
      response: answer.body.response,
      replayed: answer.headers.get("idempotent-replayed"),
    }).toEqual({ status: 200, code: undefined, retryAfter: null, response: "the first's reply", replayed: "true" });
    expect(harness.fake.requests).toHaveLength(0);
  });
});

/**
 * A keyed repeat whose key names a stored exchange, while the session is deleted (the user's
 * erasure from another tab, or the retention clean-up of an old closed session) between the
 * claim that finds the key done and the read of that exchange.
 */
describeEachStore("a keyed repeat replaying an exchange of a session deleted meanwhile", (kind) => {
  let harness: Harness;
  const gate = storeGate();

  beforeAll(async () => {
    harness = await startHarness({ store: kind, wrapStore: gate.holding });
  });
  afterAll(async () => harness.close());

  /** A keyed message stored, then its repeat held at its read of the exchange. */
  async function repeatHeld(closed: boolean): Promise<{ id: string; headers: Record<string, string>; repeat: Awaited<ReturnType<typeof gate.holdNext>> }> {
    const { api } = harness;
    const id = await createSession(api);
    const headers = { "Idempotency-Key": `gone-${randomUUID()}` };
    expect((await api.call("POST", ROUTES.message(id), { message: "Hi" }, headers)).status).toBe(200);
    // Retention deletes only closed sessions.
    if (closed) expect((await api.call("DELETE", ROUTES.end(id))).status).toBe(200);
    return { id, headers, repeat: await gate.holdNext("readExchange", () => api.call("POST", ROUTES.message(id), { message: "Hi" }, headers)) };
  }

  it("answers 404 SESSION_NOT_FOUND, as any request for a session gone, not 500 DATA_ERROR", async () => {
    const { api } = harness;
    const { id, headers, repeat } = await repeatHeld(false);
    // The session goes, as an erasure or the retention clean-up removes it.
    expect(await api.store.deleteSession(id)).toBe(true);
    repeat.open();

    const answer = await repeat.first;
    expect({ status: answer.status, code: answer.body.error?.code }).toEqual({ status: 404, code: "SESSION_NOT_FOUND" });
    // Afterwards, the same repeat is answered 404 too.
    const later = await api.call("POST", ROUTES.message(id), { message: "Hi" }, headers);
    expect({ status: later.status, code: later.body.error?.code }).toEqual({ status: 404, code: "SESSION_NOT_FOUND" });
  });

  if (kind === "rtdb") {
    it("answers 404 too when its read lands between the retention's deletion of the history and of the state", async () => {
      const { api } = harness;
      const { id, repeat } = await repeatHeld(true);
      // The retention's first write (RtdbStore.deleteSession): every child of the session but its state.
      const admin = new RtdbInstances(harness.namespace ?? "");
      try {
        await admin.database().ref().update(Object.fromEntries(SESSION_CHILDREN.map((child) => [`${sessionPath(id)}/${child}`, null])));
      } finally {
        await admin.close();
      }
      repeat.open();
      const answer = await repeat.first;
      // Then its second write, the state, as the retention finishes it (or the next run, when that write failed).
      await api.store.deleteSession(id);
      expect({ status: answer.status, code: answer.body.error?.code }).toEqual({ status: 404, code: "SESSION_NOT_FOUND" });
    });
  }
});

/**
 * A gate on the store calls of the instances whose stores `holding` wraps: `holdNext(method, start)`
 * starts a request and stops the next call of `method` (on any of them) until `open`, so that the
 * first request is still in that step when its repeat comes. `armed` is asked at each access to the
 * store: a call is held only while it says so.
 */
function storeGate(armed: (property: PropertyKey) => boolean = () => true) {
  let held: { readonly method: keyof SessionStore; readonly reached: () => void; readonly opened: Promise<void> } | undefined;
  const holding = (store: SessionStore): SessionStore =>
    new Proxy(store, {
      get(target, property, receiver) {
        const value: unknown = Reflect.get(target, property, receiver);
        if (!armed(property) || typeof value !== "function" || property !== held?.method) return value;
        return async (...args: unknown[]) => {
          const stop = held;
          held = undefined;
          if (stop) {
            stop.reached();
            await stop.opened;
          }
          return Reflect.apply(value, target, args) as unknown;
        };
      },
    });
  async function holdNext(method: keyof SessionStore, start: () => Promise<Answer>): Promise<{ readonly first: Promise<Answer>; open(): void }> {
    let open!: () => void;
    let reached!: () => void;
    const opened = new Promise<void>((resolve) => { open = resolve; });
    const arrived = new Promise<void>((resolve) => { reached = resolve; });
    held = { method, reached, opened };
    const first = start();
    let deadline: NodeJS.Timeout | undefined;
    const came = await Promise.race([arrived.then(() => true), new Promise<false>((resolve) => { deadline = setTimeout(() => { resolve(false); }, 5_000); })]).finally(() => { clearTimeout(deadline); });
    if (!came) throw new Error(`the first request did not reach ${method} within 5 s`);
    return { first, open };
  }
  return { holding, holdNext };
}

/**
 * Holds store calls on chosen instances: `hold(instance, method, skip)` stops the calls of `method`
 * on the store of the instance started `instance`th (0: the harness's first), once `skip` more of
 * them have passed, until `open`; `landed` resolves once the calls it held were applied (or failed).
 */
function instanceGates() {
  interface Hold {
    readonly instance: number;
    readonly method: keyof SessionStore;
    skip: number;
    readonly arrived: () => void;
    readonly opened: Promise<void>;
    readonly calls: Promise<unknown>[];
  }
  const holds = new Set<Hold>();
  const opens: (() => void)[] = [];
  let started = 0;
  const wrap = (store: SessionStore): SessionStore => {
    const instance = started++;
    return new Proxy(store, {
      get(target, property, receiver) {
        const value: unknown = Reflect.get(target, property, receiver);
        const hold = [...holds].find((entry) => entry.instance === instance && entry.method === property);
        if (!hold || typeof value !== "function") return value;
        return (...args: unknown[]): unknown => {
          if (hold.skip > 0) {
            hold.skip -= 1;
            return Reflect.apply(value, target, args) as unknown;
          }
          hold.arrived();
          const call = hold.opened.then(() => Reflect.apply(value, target, args) as unknown);
          hold.calls.push(call.catch(() => undefined));
          return call;
        };
      },
    });
  };
  function hold(instance: number, method: keyof SessionStore, skip = 0) {
    let open!: () => void;
    let arrived!: () => void;
    const opened = new Promise<void>((resolve) => { open = resolve; });
    const came = new Promise<void>((resolve) => { arrived = resolve; });
    const entry: Hold = { instance, method, skip, arrived, opened, calls: [] };
    holds.add(entry);
    const release = () => {
      holds.delete(entry);
      open();
    };
    opens.push(release);
    return {
      /** Resolves once a call is held; fails, naming `what`, when none comes within 5 s. */
      async reached(what: string): Promise<void> {
        let deadline: NodeJS.Timeout | undefined;
        const timedOut = new Promise<false>((resolve) => { deadline = setTimeout(() => { resolve(false); }, 5_000); });
        const inTime = await Promise.race([came.then(() => true), timedOut]).finally(() => { clearTimeout(deadline); });
        if (!inTime) throw new Error(`${what} did not come within 5 s`);
      },
      open: release,
      landed: () => Promise.all(entry.calls),
    };
  }
  return { wrap, hold, openAll: () => { for (const open of opens) open(); } };
}

/** A JSON call to `baseUrl` from the local source address `from` (the local server counts the socket's peer). */
function callFrom(from: string, baseUrl: string, method: string, path: string, body: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  const url = new URL(path, baseUrl);
  const payload = body === undefined ? "" : JSON.stringify(body);
  const sent = body === undefined ? {} : { "content-type": "application/json", "content-length": Buffer.byteLength(payload) };
  return new Promise((resolve, reject) => {
    const req = request(
      { host: url.hostname, port: url.port, path: url.pathname, method, localAddress: from, headers: { ...sent, ...headers } },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => { text += chunk; });
        res.on("end", () => {
          const responseHeaders = new Headers();
          for (const [name, value] of Object.entries(res.headers)) if (typeof value === "string") responseHeaders.set(name, value);
          let parsed: Answer["body"];
          try {
            parsed = text === "" ? {} : (JSON.parse(text) as Answer["body"]);
          } catch {
            parsed = { raw: text };
          }
          resolve({ status: res.statusCode ?? 0, headers: responseHeaders, body: parsed, text });
        });
      },
    );
    req.on("error", reject);
    req.end(payload);
  });
}
