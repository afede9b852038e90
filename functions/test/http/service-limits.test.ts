import { randomUUID } from "node:crypto";
import { keyHash } from "../../src/session/idempotency";
import { SERVICE_SHARD_KEYS } from "../../src/session/ledger/service-cap";
import type { ServiceUsage } from "../../src/store/records";
import type { SessionStore } from "../../src/store/session-store";
import { createSession, describeEachStore, ROUTES, startHarness, twoInstances, type Answer, type Harness, type Instance } from "../support/http-harness";
import { describeWithWireStats, resetWireStats } from "../support/wire-stats";

const NOON = Date.parse("2026-12-06T12:00:00Z");
const MIDNIGHT = Date.parse("2026-12-07T00:00:00Z");

interface Usage { total_tokens: number }

async function serviceTotal(store: SessionStore): Promise<number> {
  const shards: Readonly<Record<string, ServiceUsage>> = await store.readServiceUsage();
  return Object.values(shards).reduce((sum, shard) => sum + shard.tokens, 0);
}

async function create(api: Instance, userId = `user-${randomUUID()}`): Promise<string> {
  const answer = await api.call("POST", ROUTES.create, { user_id: userId, template_id: "friendly-assistant" });
  expect(answer.status).toBe(201);
  return String(answer.body.session_id);
}

/**
 * SERVICE_TOKENS_PER_DAY: one bound on the whole deployment's model tokens a day, held exactly
 * across instances (a message is admitted only while every admitted message's calls fit), with
 * its own 429 and a Retry-After at the next UTC day, or, refused while other messages hold reservations, once those settle.
 */
describeEachStore("the deployment-wide daily token cap", (kind) => {
  // Per shard an eighth: room for a handful of short first messages in all.
  const CAP = 8 * 400;
  let harness: Harness;
  let other: Instance;

  beforeAll(async () => {
    harness = await startHarness({ store: kind, clock: () => NOON, env: { SERVICE_TOKENS_PER_DAY: String(CAP), USER_TOKENS_PER_DAY: "0" } });
    other = await harness.instance();
  });
  afterAll(async () => harness.close());
  beforeEach(() => { harness.fake.reset(); });

  it("never lets concurrent messages on two instances carry the deployment past the cap, and counts exactly what was spent", async () => {
    // Each instance sends only in sessions it created, so each reservation is the warm (tight) one.
    const sessions = await Promise.all([...Array<Instance>(12).fill(harness.api), ...Array<Instance>(12).fill(other)].map(async (api) => ({ api, id: await create(api) })));
    // The model holds its answers until every message is either refused or in flight: all the
    // admitted ones hold their reservations at once, however fast the machine settles them.
    const release = harness.fake.holdAnswers();
    let answered = 0;
    let someoneAnswered: () => void = () => undefined;
    const calls = sessions.map(({ api, id }) =>
      api.call("POST", ROUTES.message(id), { message: `hello from ${id}` }).then((answer) => {
        answered += 1;
        someoneAnswered();
        return answer;
      }),
    );
    while (answered + harness.fake.requests.length < sessions.length) {
      await Promise.race([harness.fake.awaitRequests(harness.fake.requests.length + 1), new Promise<void>((resolve) => { someoneAnswered = resolve; })]);
    }
    release();
    const answers: Answer[] = await Promise.all(calls);
    const passed = answers.filter((answer) => answer.status === 200);
    const refused = answers.filter((answer) => answer.status !== 200);
    expect(passed.length).toBeGreaterThan(0);
    expect(refused.length).toBeGreaterThan(0);
    for (const answer of refused) {
      expect(answer.status).toBe(429);
      expect(answer.body.error?.code).toBe("SERVICE_TOKEN_LIMIT");
      // Refused while the admitted messages held their reservations, which the shards would hold
      // it without: retry once those have settled, or lapsed (two minutes) at the latest.
      expect(Number(answer.headers.get("retry-after"))).toBeLessThanOrEqual(120);
    }
    // Only admitted messages reached the model; every settlement has landed once the answers are in.
    expect(harness.fake.requests).toHaveLength(passed.length);
    const spent = passed.reduce((sum, answer) => sum + (answer.body.usage as Usage).total_tokens, 0);
    expect(await serviceTotal(harness.api.store)).toBe(spent);
    expect(spent).toBeLessThanOrEqual(CAP);
    // A refused message stored nothing and took nothing from its user.
    for (const [index, answer] of answers.entries()) {
      if (answer.status === 200) continue;
      const { id } = sessions[index]!;
      expect((await harness.api.store.readSessionState(id))?.message_count).toBe(0);
    }
  });

  it("counts in shards that each hold an equal share, and uses the emptiest before refusing", async () => {
    const shards = await harness.api.store.readServiceUsage();
    expect(Object.keys(shards).every((key) => SERVICE_SHARD_KEYS.includes(key))).toBe(true);
    for (const shard of Object.values(shards)) {
      expect(shard.day).toBe("2026-12-06");
      expect(shard.tokens).toBeLessThanOrEqual(CAP / SERVICE_SHARD_KEYS.length);
    }
  });

  it("gives a refused message's user back their message token and reservation", async () => {
    // Messages one after another until the cap refuses one (what the spent tokens leave of it).
    let refusal: { user: string; id: string; answer: Answer } | undefined;
    for (let i = 0; i < 100 && !refusal; i += 1) {
      const user = `user-${randomUUID()}`;
      const id = await create(harness.api, user);
      const answer = await harness.api.call("POST", ROUTES.message(id), { message: "one more" });
      if (answer.status !== 200) refusal = { user, id, answer };
    }
    expect(refusal?.answer.body.error?.code).toBe("SERVICE_TOKEN_LIMIT");
    const { user, id } = refusal!;
    expect(await serviceTotal(harness.api.store)).toBeLessThanOrEqual(CAP);
    const usage = await harness.api.store.updateUsage(keyHash("user", user), (record) => ({ outcome: record }));
    expect(usage?.daily?.tokens ?? 0).toBe(0);
    expect(usage?.contexts?.[id]?.open ?? 0).toBe(0);
  });
});

/** `store` counting its transactions on the deployment's shards (each reservation's and settlement's). */
function countingServiceUsage(store: SessionStore, counted: { transactions: number }): SessionStore {
  return new Proxy(store, {
    get(target, property, receiver) {
      const value: unknown = Reflect.get(target, property, receiver);
      if (typeof value !== "function") return value;
      const method = value as (...args: unknown[]) => unknown;
      if (property !== "updateServiceUsage") return method.bind(target);
      return (...args: unknown[]) => {
        counted.transactions += 1;
        return method.apply(target, args);
      };
    },
  });
}

describeEachStore("the deployment-wide cap, reserved from a window another instance has moved on", (kind) => {
  const CAP = 8 * 20_000;
  const SHARE = CAP / SERVICE_SHARD_KEYS.length;
  const counted = { transactions: 0 };
  const instances = twoInstances({ store: kind, clock: () => NOON, wrapStore: (store) => countingServiceUsage(store, counted), env: { SERVICE_TOKENS_PER_DAY: String(CAP), USER_TOKENS_PER_DAY: "0" } });

  it("reserves once a message while its instance's window is current: no top-up, no round trip more", async () => {
    const id = await create(instances.harness.api);
    expect((await instances.harness.api.call("POST", ROUTES.message(id), { message: "hi" })).status).toBe(200);
    counted.transactions = 0;
    for (const message of ["and again", "once more"]) expect((await instances.harness.api.call("POST", ROUTES.message(id), { message })).status).toBe(200);
    // Each message: its reservation and its settlement.
    expect(counted.transactions).toBe(4);
  });

  it("reserves the rest before the model call when the prompt carries exchanges another instance added, so the shards' sum never passes the cap", async () => {
    const { harness, second } = instances;
    const id = await create(harness.api);
    // Instance A holds the session's window warm as of exchange 1.
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "hi" })).status).toBe(200);
    // Instance B adds a long exchange (its own reservation cold: the window at its longest).
    const long = "Here is the whole essay I wrote for class, please keep it in mind. ".repeat(30);
    expect((await second.call("POST", ROUTES.message(id), { message: long })).status).toBe(200);
    // The day is nearly spent: seven shards full, 300 tokens left on the eighth.
    for (const [index, shard] of SERVICE_SHARD_KEYS.entries()) {
      const tokens = index === 0 ? SHARE - 300 : SHARE;
      await harness.api.store.updateServiceUsage(shard, () => ({ outcome: undefined, next: { day: "2026-12-06", tokens } }));
    }
    // A short message through A: its admission counts A's warm window (two short messages), its prompt carries the long one.
    const requests = harness.fake.requests.length;
    const answer = await harness.api.call("POST", ROUTES.message(id), { message: "and now?" });
    expect({ status: answer.status, code: answer.body.error?.code }).toEqual({ status: 429, code: "SERVICE_TOKEN_LIMIT" });
    expect(harness.fake.requests.length).toBe(requests);
    expect(await serviceTotal(harness.api.store)).toBe(CAP - 300);
  });
});

/**
 * SERVICE_TOKEN_LIMIT refused only because another message is in flight (its open reservation, an
 * upper bound, sits in the shards until it settles): the same message fits once that one settles,
 * seconds later, so Retry-After says so, not the next UTC day.
 */
describeEachStore("the deployment-wide cap while another message is in flight", (kind) => {
  const started: Harness[] = [];
  afterEach(async () => { await Promise.all(started.splice(0).map((running) => running.close())); });

  it("answers SERVICE_TOKEN_LIMIT with a Retry-After no longer than the in-flight message can hold its reservation, not until midnight", async () => {
    const harness = await startHarness({ store: kind, clock: () => NOON, env: { SERVICE_TOKENS_PER_DAY: "200", USER_TOKENS_PER_DAY: "0" } });
    started.push(harness);
    const other = await harness.instance();
    const [first, second] = [await create(harness.api), await create(other)];

    const release = harness.fake.holdAnswers();
    const inFlight = harness.api.call("POST", ROUTES.message(first), { message: "message number 00" });
    await harness.fake.awaitRequests(1);
    const refused = await other.call("POST", ROUTES.message(second), { message: "message number 01" });
    release();
    expect((await inFlight).status).toBe(200);

    // The same message again, the same instant: admitted (the day had room all along).
    const retried = await other.call("POST", ROUTES.message(second), { message: "message number 01" });
    const retryAfter = Number(refused.headers.get("retry-after"));
    expect({ code: refused.body.error?.code, retryStatus: retried.status, retryAfter, retryAfterWithinTwoMinutes: retryAfter <= 120 }).toEqual({
      code: "SERVICE_TOKEN_LIMIT",
      retryStatus: 200,
      retryAfter,
      retryAfterWithinTwoMinutes: true,
    });
    // Spent in full, the cap answers the next UTC day.
    let full: Answer | undefined;
    for (let i = 0; i < 20 && !full; i += 1) {
      const answer = await harness.api.call("POST", ROUTES.message(await create(harness.api)), { message: "one more" });
      if (answer.status !== 200) full = answer;
    }
    expect(full?.body.error?.code).toBe("SERVICE_TOKEN_LIMIT");
    expect(Number(full?.headers.get("retry-after"))).toBe((MIDNIGHT - NOON) / 1000);
  });
}, { sharded: true });

describeEachStore("the deployment-wide cap, off (the default)", (kind) => {
  let harness: Harness;
  beforeAll(async () => {
    harness = await startHarness({ store: kind, clock: () => NOON });
  });
  afterAll(async () => harness.close());

  it("counts nothing and writes no shard", async () => {
    const id = await create(harness.api);
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "hello" })).status).toBe(200);
    expect(await harness.api.store.readServiceUsage()).toEqual({});
  });
});

/**
 * ADDRESS_SESSIONS_PER_HOUR, for callers without an ID token (and anonymous ones, tested with the
 * Auth emulator in auth.test.ts): a bucket per network address, held across instances.
 */
describeEachStore("sessions per network address", (kind) => {
  let now = NOON;
  let harness: Harness;
  let other: Instance;

  beforeAll(async () => {
    harness = await startHarness({ store: kind, clock: () => now, env: { ADDRESS_SESSIONS_PER_HOUR: "3" } });
    other = await harness.instance();
  });
  afterAll(async () => harness.close());

  it("refuses the address's fourth session within the hour on any instance, with Retry-After, then refills", async () => {
    const answers = await Promise.all([harness.api, other, harness.api, other].map((api) => api.call("POST", ROUTES.create, { user_id: `user-${randomUUID()}`, template_id: "friendly-assistant" })));
    expect(answers.map((answer) => answer.status).sort()).toEqual([201, 201, 201, 429]);
    const refused = answers.find((answer) => answer.status === 429)!;
    expect(refused.body.error?.code).toBe("ADDRESS_RATE_LIMITED");
    // A third of an hour for one more session.
    expect(Number(refused.headers.get("retry-after"))).toBe(1200);
    // A replay of a keyed create takes nothing more.
    now += 1_200_000;
    const key = { "Idempotency-Key": randomUUID() };
    const body = { user_id: `user-${randomUUID()}`, template_id: "friendly-assistant" };
    expect((await harness.api.call("POST", ROUTES.create, body, key)).status).toBe(201);
    const replay = await other.call("POST", ROUTES.create, body, key);
    expect(replay.status).toBe(201);
    expect(replay.headers.get("idempotent-replayed")).toBe("true");
    expect((await harness.api.call("POST", ROUTES.create, { user_id: `user-${randomUUID()}`, template_id: "friendly-assistant" })).status).toBe(429);
  });

  it("forgets an address's bucket an hour after its last use, in the sweep", async () => {
    now += 3_600_000;
    const report = await harness.api.runtime.maintain(now);
    expect(report.addressesForgotten).toBe(1);
    expect((await harness.api.call("POST", ROUTES.create, { user_id: `user-${randomUUID()}`, template_id: "friendly-assistant" })).status).toBe(201);
  });
});

/**
 * One session an hour: an empty bucket refills to a whole token at the hour as 3,600,000 x
 * (1 / 3,600,000), which comes to 0.9999999999999999 in doubles. The wait told must reach past it.
 */
describeEachStore("sessions per network address, one an hour", (kind) => {
  let now = NOON;
  let harness: Harness;

  beforeAll(async () => {
    harness = await startHarness({ store: kind, clock: () => now, env: { ADDRESS_SESSIONS_PER_HOUR: "1" } });
  });
  afterAll(async () => harness.close());

  it("admits the create that waits exactly the Retry-After it was given", async () => {
    const create = () => harness.api.call("POST", ROUTES.create, { user_id: `user-${randomUUID()}`, template_id: "friendly-assistant" });
    expect((await create()).status).toBe(201);
    now += 1_000;
    const refused = await create();
    expect({ status: refused.status, code: refused.body.error?.code, retryAfter: refused.headers.get("retry-after") }).toEqual({ status: 429, code: "ADDRESS_RATE_LIMITED", retryAfter: "3600" });
    now += 3_600 * 1_000;
    const again = await create();
    expect({ status: again.status, code: again.body.error?.code }).toEqual({ status: 201, code: undefined });
  });
});

/** Transaction attempts rtdb-wire refused for a stale guess (its README: /.wire/stats), each a round trip more. */
async function staleAttempts(namespace: string): Promise<number> {
  const answer = await fetch(`http://${process.env.FIREBASE_DATABASE_EMULATOR_HOST ?? ""}/.wire/stats?ns=${namespace}`);
  const counted = (await answer.json()) as { datastale?: number };
  return counted.datastale ?? 0;
}

/**
 * With the cap on, a warm message takes 2 sequential round trips: its reservation travels beside
 * its claim, which holds only while the instance listens to the shard it draws (a transaction on a
 * node not listened to starts from a blind guess, which the server refuses: a round trip more). The
 * store drops a listener left unused for 5 minutes, so every reservation keeps all the shards
 * listened to, not only the instance's first.
 */
describeWithWireStats("a warm message with the deployment cap on, on a quiet instance [Realtime Database]", () => {
  const MINUTE = 60_000;
  let harness: Harness;
  let offset = 0;
  let draw = 0;
  const realNow = Date.now.bind(Date);

  beforeAll(async () => {
    // Time as the instance sees it (its clock and its listener holds' clock), moved on by the test.
    jest.spyOn(Date, "now").mockImplementation(() => realNow() + offset);
    // Which shard a reservation draws (ServiceLedger picks one at random).
    jest.spyOn(Math, "random").mockImplementation(() => draw);
    harness = await startHarness({ store: "rtdb", env: { SERVICE_TOKENS_PER_DAY: "100000000" } });
  });
  afterAll(async () => {
    await harness.close();
    jest.restoreAllMocks();
  });

  it("reserves on its shard in the round trip of its claim, though that shard was last used more than 5 minutes ago", async () => {
    const namespace = harness.namespace!;
    const id = await createSession(harness.api);
    // Minute 0: the first message; it reserves on s4.
    draw = 0.5;
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "one" })).status).toBe(200);
    // Minute 4: the session goes on, on s0: its state and its user's usage stay held.
    offset = 4 * MINUTE;
    draw = 0;
    await resetWireStats(namespace);
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "two" })).status).toBe(200);
    expect(await staleAttempts(namespace)).toBe(0);
    // Minute 8: a message that draws s0 (used at minute 4) takes every transaction's first attempt...
    offset = 8 * MINUTE;
    await resetWireStats(namespace);
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "two and a half" })).status).toBe(200);
    expect(await staleAttempts(namespace)).toBe(0);
    // ...and so does one that draws s4, a shard it last reserved on at minute 0.
    draw = 0.5;
    await resetWireStats(namespace);
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "three" })).status).toBe(200);
    expect(await staleAttempts(namespace)).toBe(0);
  });
});
