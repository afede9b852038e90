import { randomUUID } from "node:crypto";
import { keyHash } from "../../src/session/idempotency";
import { costUsd, modelFacts } from "../../src/llm/model-table";
import type { LogFields } from "../../src/log/log";
import { seedTemplates } from "../../src/local/project-files";
import { promptTokenBound } from "../../src/session/ledger/call-usage";
import { estimatePromptTokens, estimateRecurring, estimateTokens, REPLY_PRIMING_TOKENS, TOKENS_PER_MESSAGE } from "../../src/session/prompt/token-estimate";
import { SUMMARY_PROMPT_TOKENS } from "../../src/session/prompt/rolling-summary";
import { isSummary } from "../support/summary-in";
import { instancePositionOf } from "../../src/sharding/session-ids";
import type { ServiceUsage, UserUsage } from "../../src/store/records";
import type { SessionStore } from "../../src/store/session-store";
import { FaultyStore } from "../support/faulty-store";
import { fakeUsage, type FakeUsage, type RecordedRequest } from "../support/fake-openai-server";
import { describeEachStore, ROUTES, startHarness, type Answer, type Harness, type Instance } from "../support/http-harness";
import { describeWithRtdb } from "../support/rtdb";
import { streamCall } from "../support/event-stream-client";

const newUser = () => `user-${randomUUID()}`;
const NOON = Date.parse("2026-11-26T12:00:00Z");

/** The user's usage record, as the database holds it. */
async function usageOf(store: SessionStore, userId: string): Promise<UserUsage | null> {
  return store.updateUsage(keyHash("user", userId), (usage) => ({ outcome: usage }));
}

async function create(api: Instance, userId: string, templateId = "friendly-assistant"): Promise<string> {
  const answer = await api.call("POST", ROUTES.create, { user_id: userId, template_id: templateId });
  if (answer.status !== 201) throw new Error(`create failed: ${answer.text}`);
  return String(answer.body.session_id);
}

function usageIn(answer: Answer): { prompt_tokens: number; completion_tokens: number; total_tokens: number; estimated?: boolean; cost_usd?: number } {
  expect(answer.status).toBe(200);
  return answer.body.usage as { prompt_tokens: number; completion_tokens: number; total_tokens: number };
}

/** What the fake provider reported for a chat request it answered with `reply`. */
function reported(request: RecordedRequest, reply: string) {
  const usage = fakeUsage(request.body, reply);
  return { ...usage, total_tokens: usage.prompt_tokens + usage.completion_tokens };
}

describeEachStore("token usage", (kind) => {
  let harness: Harness;

  beforeAll(async () => {
    harness = await startHarness({ store: kind, clock: () => NOON, env: { USER_TOKENS_PER_DAY: "0" } });
  });
  afterAll(async () => harness.close());
  beforeEach(() => { harness.fake.reset(); });

  it("answers each message with the tokens the provider reported, priced, and stores them with the exchange", async () => {
    const user = newUser();
    const id = await create(harness.api, user);
    const answer = await harness.api.call("POST", ROUTES.message(id), { message: "How many tokens is this?" });
    const request = harness.fake.requests[0]!;
    const expected = reported(request, String(answer.body.response));
    const usage = usageIn(answer);
    expect(usage).toEqual({ ...expected, cost_usd: costUsd("gpt-4o-mini", expected.prompt_tokens, expected.completion_tokens) });
    expect(usage.estimated).toBeUndefined();
    const stored = await harness.api.store.readExchange(id, 1);
    expect(stored?.assistant.usage).toMatchObject(expected);
    expect(stored?.assistant.usage?.prompt_estimate).toBeGreaterThan(0);
  });

  it("estimates, and says so, when the provider reports no usage", async () => {
    const id = await create(harness.api, newUser());
    harness.fake.enqueue({ kind: "reply", text: "An answer without a usage block.", usage: null });
    const usage = usageIn(await harness.api.call("POST", ROUTES.message(id), { message: "Hello there" }));
    expect(usage.estimated).toBe(true);
    expect(usage.prompt_tokens).toBeGreaterThan(0);
    expect(usage.completion_tokens).toBeGreaterThan(0);
    expect(usage.total_tokens).toBe(usage.prompt_tokens + usage.completion_tokens);
  });

  it("reports a streamed reply's usage in its done event (stream_options.include_usage)", async () => {
    const id = await create(harness.api, newUser());
    const { events } = await streamCall(harness.api.baseUrl, ROUTES.message(id), { message: "Stream it" });
    const done = events.find((event) => event.event === "done");
    const request = harness.fake.requests[0]!;
    expect(request.body.stream_options).toEqual({ include_usage: true });
    const body = done?.data as { response: string; usage: unknown };
    const expected = reported(request, body.response);
    expect(body.usage).toMatchObject(expected);
  });

  it("answers endSession with the session's totals, and a replay with the stored exchange's usage", async () => {
    const id = await create(harness.api, newUser());
    const key = { "Idempotency-Key": randomUUID() };
    const first = usageIn(await harness.api.call("POST", ROUTES.message(id), { message: "one" }, key));
    const replay = await harness.api.call("POST", ROUTES.message(id), { message: "one" }, key);
    expect(replay.headers.get("idempotent-replayed")).toBe("true");
    expect(usageIn(replay)).toEqual(first);
    const second = usageIn(await harness.api.call("POST", ROUTES.message(id), { message: "two" }));
    const ended = await harness.api.call("DELETE", ROUTES.end(id));
    expect(ended.status).toBe(200);
    expect(ended.body.usage).toEqual({
      prompt_tokens: first.prompt_tokens + second.prompt_tokens,
      completion_tokens: first.completion_tokens + second.completion_tokens,
      total_tokens: first.total_tokens + second.total_tokens,
      cost_usd: Math.round(((first.cost_usd ?? 0) + (second.cost_usd ?? 0)) * 1e6) / 1e6,
    });
  });

  it("answers endSession of a session without messages with zero usage", async () => {
    const id = await create(harness.api, newUser());
    const ended = await harness.api.call("DELETE", ROUTES.end(id));
    expect(ended.body.usage).toEqual({ prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 });
  });

  it("counts each user's tokens per UTC day in the database, with their cost", async () => {
    const user = newUser();
    const id = await create(harness.api, user);
    const a = usageIn(await harness.api.call("POST", ROUTES.message(id), { message: "first" }));
    const b = usageIn(await harness.api.call("POST", ROUTES.message(id), { message: "second" }));
    const record = await usageOf(harness.api.store, user);
    expect(record?.daily).toEqual({ day: "2026-11-26", tokens: a.total_tokens + b.total_tokens, cost_usd: Math.round(((a.cost_usd ?? 0) + (b.cost_usd ?? 0)) * 1e6) / 1e6 });
  });
});

describeEachStore("daily token limit", (kind) => {
  let harness: Harness;
  let now = NOON;

  beforeAll(async () => {
    harness = await startHarness({ store: kind, clock: () => now, env: { USER_TOKENS_PER_DAY: "1500", USER_MESSAGES_PER_MINUTE: "1000" } });
  });
  afterAll(async () => harness.close());
  beforeEach(() => { harness.fake.reset(); });

  it("refuses with 429 TOKEN_LIMIT until the next UTC day, storing nothing and calling no model", async () => {
    now = NOON;
    const user = newUser();
    const id = await create(harness.api, user);
    let spent = 0;
    let refused: Answer | undefined;
    for (let i = 0; i < 50 && !refused; i += 1) {
      const answer = await harness.api.call("POST", ROUTES.message(id), { message: `message number ${i} with a few words in it` });
      if (answer.status === 429) refused = answer;
      else spent += usageIn(answer).total_tokens;
    }
    expect(refused?.body.error?.code).toBe("TOKEN_LIMIT");
    // Noon: twelve hours to the next UTC day.
    expect(refused?.headers.get("retry-after")).toBe(String(12 * 3600));
    const calls = harness.fake.requests.length;
    const count = (await harness.api.store.readSessionState(id))?.message_count;
    expect(await harness.api.call("POST", ROUTES.message(id), { message: "still refused" })).toMatchObject({ status: 429 });
    expect(harness.fake.requests).toHaveLength(calls);
    expect((await harness.api.store.readSessionState(id))?.message_count).toBe(count);
    // The day's count is what was spent: the refused messages reserved nothing.
    const record = await usageOf(harness.api.store, user);
    expect(record?.daily?.tokens).toBe(spent);
    expect(spent).toBeLessThanOrEqual(1500);

    // A new day: the user's count starts again (in a new session: the old one idled out overnight).
    now = Date.parse("2026-11-27T00:00:00Z");
    const tomorrow = await create(harness.api, user);
    expect((await harness.api.call("POST", ROUTES.message(tomorrow), { message: "a new day" })).status).toBe(200);
  });

  it("refuses another user nothing", async () => {
    now = NOON;
    const id = await create(harness.api, newUser());
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "hello" })).status).toBe(200);
  });
});

/** Two instances (separate database clients and caches) of one user, messages in parallel. */
describeWithRtdb("daily token limit across two instances", () => {
  let harness: Harness;

  beforeAll(async () => {
    harness = await startHarness({ store: "rtdb", clock: () => NOON, env: { USER_TOKENS_PER_DAY: "600", USER_MESSAGES_PER_MINUTE: "1000", USER_MAX_ACTIVE_SESSIONS: "10" } });
  });
  afterAll(async () => harness.close());

  it("never lets concurrent messages carry a user past the limit, and counts exactly what was spent", async () => {
    const second = await harness.instance();
    const user = newUser();
    const sessions = [await create(harness.api, user), await create(second, user), await create(harness.api, user), await create(second, user)];
    // Each reply takes a while, so the messages overlap and their reservations meet in the record.
    harness.fake.chaos = (_request, reply) => reply(150);
    const answers = await Promise.all(
      Array.from({ length: 16 }, (_, i) => (i % 2 ? second : harness.api).call("POST", ROUTES.message(sessions[i % 4]!), { message: `parallel ${i}` })),
    );
    const ok = answers.filter((answer) => answer.status === 200);
    const refused = answers.filter((answer) => answer.status === 429);
    expect(ok.length).toBeGreaterThan(0);
    expect(refused.length).toBeGreaterThan(0);
    for (const answer of refused) expect(answer.body.error?.code).toBe("TOKEN_LIMIT");
    const spent = ok.reduce((sum, answer) => sum + usageIn(answer).total_tokens, 0);
    const record = await usageOf(harness.api.store, user);
    expect(record?.daily?.tokens).toBe(spent);
    expect(spent).toBeLessThanOrEqual(600);
    expect(harness.fake.requests).toHaveLength(ok.length);
  });
});

describeEachStore("token budget", (kind) => {
  let harness: Harness;

  beforeAll(async () => {
    harness = await startHarness({ store: kind, env: { USER_TOKENS_PER_DAY: "0" } });
    await harness.api.store.seedTemplates({
      // A budget of about two short messages besides the prompt.
      budgeted: { name: "Budgeted", personalityPrompt: "You are brief.", context_window: 10, context_tokens: 60 },
      // A model of 16,385 tokens in all, most of them kept for the reply.
      small: { name: "Small", personalityPrompt: "You are brief.", model: "gpt-3.5-turbo", max_tokens: 15_000 },
      // The same model with the default count window (10 messages) and no `context_tokens`.
      counted: { name: "Counted", personalityPrompt: "You are helpful.", model: "gpt-3.5-turbo" },
      // The small one with a rolling summary, which every later prompt carries.
      smallSummary: { name: "Small", personalityPrompt: "You are brief.", model: "gpt-3.5-turbo", max_tokens: 15_000, context_window: 2, summary: true },
    });
  });
  afterAll(async () => harness.close());
  beforeEach(() => { harness.fake.reset(); });

  it("sends the newest history that fits the budget, and a message over it alone with the system prompt", async () => {
    const id = await create(harness.api, newUser(), "budgeted");
    const said = ["one", "two", "three", "four"].map((n) => `This is message ${n}, which has a few words.`);
    for (const message of said) expect((await harness.api.call("POST", ROUTES.message(id), { message })).status).toBe(200);
    const windowed = harness.fake.requests.at(-1)!.body.messages.map((message) => message.content);
    // Fewer than the six history messages the count window allows: the newest, in order.
    const history = windowed.slice(1, -1);
    expect(history.length).toBeGreaterThan(0);
    expect(history.length).toBeLessThan(6);
    const all = said.slice(0, 3).flatMap((message, i) => [message, `reply #${i + 1} to: ${message}`]);
    expect(history).toEqual(all.slice(-history.length));
    expect(windowed.at(-1)).toBe(said[3]);

    const long = "word ".repeat(200).trim();
    expect((await harness.api.call("POST", ROUTES.message(id), { message: long })).status).toBe(200);
    expect(harness.fake.requests.at(-1)?.body.messages).toEqual([
      { role: "system", content: "You are brief." },
      { role: "user", content: long },
    ]);
  });

  it("refuses with 400 MESSAGE_TOO_LONG a message that cannot fit the model's whole context, storing and reserving nothing", async () => {
    const user = newUser();
    const id = await create(harness.api, user, "small");
    const refused = await harness.api.call("POST", ROUTES.message(id), { message: "∑".repeat(1_000) });
    expect(refused.status).toBe(400);
    expect(refused.body.error?.code).toBe("MESSAGE_TOO_LONG");
    expect(harness.fake.requests).toHaveLength(0);
    expect((await harness.api.store.readSessionState(id))?.message_count).toBe(0);
    expect((await usageOf(harness.api.store, user))?.daily).toBeUndefined();
    // A shorter one fits.
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "short" })).status).toBe(200);
  });

  it("fits a count window to a listed model's context less max_tokens, dropping the oldest messages, so no prompt is over the model's context", async () => {
    // Amharic costs o200k 1.8 to 2 tokens a character, what the estimate counts it at (docs/tokens.md):
    // each message of 4,000 is accepted alone, and three of them are more than gpt-3.5-turbo's 16,385.
    const amharic = (tag: string) => `${tag} ` + Array.from({ length: 3_990 }, (_, k) => String.fromCodePoint(0x1200 + ((k * 7) % 300))).join("");
    const context = modelFacts("gpt-3.5-turbo")!.contextTokens;
    // As OpenAI answers a prompt past the model's context; otherwise the fake's own usage, which
    // counts a character of Amharic at a quarter of a token: a report far under the estimate.
    const tooLong = { kind: "status", status: 400, body: { error: { message: "This model's maximum context length is 16385 tokens.", type: "invalid_request_error", code: "context_length_exceeded" } } } as const;
    harness.fake.chaos = (request) => (estimatePromptTokens(request.body.messages) + (request.body.max_tokens ?? 0) > context ? tooLong : { kind: "reply", text: "OK." });
    const id = await create(harness.api, newUser(), "counted");
    const statuses: number[] = [];
    // A failed message stores nothing: the same third message again would meet the same window.
    for (const tag of ["ONE", "TWO", "THREE", "THREE"]) statuses.push((await harness.api.call("POST", ROUTES.message(id), { message: amharic(tag) })).status);
    expect(statuses).toEqual([200, 200, 200, 200]);
    const sent = harness.fake.requests.map((request) => estimatePromptTokens(request.body.messages) + (request.body.max_tokens ?? 0));
    expect(sent.filter((tokens) => tokens > context)).toEqual([]);
    // The third prompt left the first message out: it began at the first reply, and stored where, so
    // that no later prompt, with a shorter message, reaches back past it.
    expect(harness.fake.requests[2]!.body.messages.map((message) => message.content.slice(0, 3))).toEqual(["You", "OK.", "TWO", "OK.", "THR"]);
    expect((await harness.api.store.readExchange(id, 3))?.assistant.usage?.window_from).toBe(2);
  });

  it("counts the summary's bound in the model's context a message must fit: one that fits only without it is refused 400 MESSAGE_TOO_LONG, never sent over the context", async () => {
    const context = modelFacts("gpt-3.5-turbo")!.contextTokens;
    const over = (request: RecordedRequest) => estimatePromptTokens(request.body.messages) + (request.body.max_tokens ?? 0) > context;
    const tooLong = { kind: "status", status: 400, body: { error: { message: "This model's maximum context length is 16385 tokens.", type: "invalid_request_error", code: "context_length_exceeded" } } } as const;
    const summary = "The user is Ada, who likes owls and lives in Rome; she asked about the weather and about books. ".repeat(6);
    harness.fake.chaos = (request) => (over(request) ? tooLong : { kind: "reply", text: isSummary(request) ? summary : "OK." });
    const id = await create(harness.api, newUser(), "smallSummary");
    for (const message of ["My name is Ada.", "I like owls.", "I live in Rome."]) expect((await harness.api.call("POST", ROUTES.message(id), { message })).status).toBe(200);
    expect((await harness.api.store.readSummary(id))?.text.length).toBeGreaterThan(0);

    // Amharic: o200k counts it about as the estimate does (docs/tokens.md).
    const amharic = (n: number) => Array.from({ length: n }, (_, k) => String.fromCodePoint(0x1200 + ((k * 7) % 300))).join("");
    const longest = (room: number) => {
      let n = 100;
      while (REPLY_PRIMING_TOKENS + estimateRecurring("You are brief.") + estimatePromptTokens([{ role: "user", content: amharic(n + 1) }]) + 15_000 + room <= context) n += 1;
      return amharic(n);
    };
    // The longest that fits with the system prompt and max_tokens alone, not with a summary too:
    // sent, the summary took it over the context, and the provider refused it every time (502).
    const refused = await harness.api.call("POST", ROUTES.message(id), { message: longest(0) });
    expect(refused.status).toBe(400);
    expect(refused.body.error?.code).toBe("MESSAGE_TOO_LONG");
    // The longest that fits with the summary's bound too is answered, within the context.
    expect((await harness.api.call("POST", ROUTES.message(id), { message: longest(SUMMARY_PROMPT_TOKENS) })).status).toBe(200);
    expect(harness.fake.requests.filter(over)).toEqual([]);
  });
});

interface Usage { prompt_tokens: number; completion_tokens: number; total_tokens: number; estimated?: boolean; cost_usd?: number }

/**
 * What a broken or hostile provider can do to the ledger through the usage it reports: nothing a
 * true report could not. Each report the call could not have produced is replaced by the estimate.
 */
describeEachStore("a provider's absurd usage reports", (kind) => {
  let harness: Harness;
  const warnings: { message: string; fields?: LogFields }[] = [];

  beforeAll(async () => {
    const log = { info: () => undefined, error: () => undefined, warn: (message: string, fields?: LogFields) => { warnings.push({ message, ...(fields ? { fields } : {}) }); } };
    harness = await startHarness({ store: kind, log });
  });
  afterAll(async () => harness.close());
  beforeEach(() => {
    harness.fake.reset();
    warnings.length = 0;
  });

  async function session(user: string): Promise<string> {
    const answer = await harness.api.call("POST", ROUTES.create, { user_id: user, template_id: "friendly-assistant" });
    expect(answer.status).toBe(201);
    return String(answer.body.session_id);
  }

  function reportEvery(usage: FakeUsage): void {
    harness.fake.chaos = (request) => ({ kind: "reply", text: `reply to ${request.body.messages.at(-1)?.content ?? ""}`, usage });
  }

  it("keeps a session working when the provider reports 2^53-1 tokens per count: later messages and the end answer, totals stay safe integers", async () => {
    const user = `user-${randomUUID()}`;
    const id = await session(user);
    reportEvery({ prompt_tokens: Number.MAX_SAFE_INTEGER, completion_tokens: Number.MAX_SAFE_INTEGER });
    for (const message of ["one", "two", "three"]) {
      const answer = await harness.api.call("POST", ROUTES.message(id), { message });
      expect(answer.status).toBe(200);
      const usage = answer.body.usage as Usage;
      expect(usage.estimated).toBe(true);
      expect(usage.total_tokens).toBeLessThan(1_000);
    }
    const ended = await harness.api.call("DELETE", ROUTES.end(id));
    expect(ended.status).toBe(200);
    const totals = ended.body.usage as Usage;
    expect(Number.isSafeInteger(totals.total_tokens)).toBe(true);
    expect(totals.total_tokens).toBeLessThan(3_000);
    const daily = (await usageOf(harness.api.store, user))?.daily;
    expect(daily?.tokens).toBeLessThan(3_000);
    // The refusal is logged with the figures, never the text.
    const logged = warnings.filter((warning) => warning.message === "provider usage out of bounds, estimated instead");
    expect(logged).toHaveLength(3);
    expect(logged[0]?.fields).toMatchObject({ session_id: id, call: "reply", prompt_tokens: Number.MAX_SAFE_INTEGER, completion_bound: 50 });
    expect(JSON.stringify(warnings)).not.toContain("reply to");
  });

  it("does not charge a user a trillion tokens, nor lock them out, on a provider's word", async () => {
    const user = `user-${randomUUID()}`;
    const id = await session(user);
    reportEvery({ prompt_tokens: 1e12, completion_tokens: 1e12 });
    const first = await harness.api.call("POST", ROUTES.message(id), { message: "hello" });
    expect(first.status).toBe(200);
    const usage = first.body.usage as Usage;
    expect(usage.estimated).toBe(true);
    expect(usage.cost_usd).toBeLessThan(0.01);
    const daily = (await usageOf(harness.api.store, user))?.daily;
    expect(daily?.cost_usd).toBeLessThan(0.01);
    // Still within the day's limit (USER_TOKENS_PER_DAY 200,000): the next message is admitted.
    harness.fake.chaos = undefined;
    const next = await harness.api.call("POST", ROUTES.message(id), { message: "again" });
    expect(next.status).toBe(200);
    expect((next.body.usage as Usage).estimated).toBeUndefined();
  });

  it("counts a call a provider reports as zero tokens, so the user's day still counts it", async () => {
    const user = `user-${randomUUID()}`;
    const id = await session(user);
    reportEvery({ prompt_tokens: 0, completion_tokens: 0 });
    const answer = await harness.api.call("POST", ROUTES.message(id), { message: "hello there" });
    expect(answer.status).toBe(200);
    const usage = answer.body.usage as Usage;
    expect(usage.estimated).toBe(true);
    expect(usage.prompt_tokens).toBeGreaterThan(0);
    expect(usage.completion_tokens).toBeGreaterThan(0);
    expect((await usageOf(harness.api.store, user))?.daily?.tokens).toBe(usage.total_tokens);
    const logged = warnings.filter((warning) => warning.message === "provider usage out of bounds, estimated instead");
    expect(logged[0]?.fields).toMatchObject({ call: "reply", prompt_tokens: 0, completion_tokens: 0, prompt_floor: expect.any(Number) as number });
  });

  it("believes a report within the call's bounds", async () => {
    const id = await session(`user-${randomUUID()}`);
    reportEvery({ prompt_tokens: 40, completion_tokens: 50 });
    const answer = await harness.api.call("POST", ROUTES.message(id), { message: "hello" });
    expect(answer.body.usage).toMatchObject({ prompt_tokens: 40, completion_tokens: 50, total_tokens: 90 });
    expect((answer.body.usage as Usage).estimated).toBeUndefined();
    expect(warnings).toEqual([]);
  });
});

/** The service's estimate of a first message's prompt in the friendly assistant's session: what its reservations are built from. */
function firstPromptEstimate(text: string): number {
  const template = seedTemplates()["friendly-assistant"];
  if (!template) throw new Error("no friendly-assistant template");
  return estimatePromptTokens([{ role: "system", content: template.personalityPrompt }, { role: "user", content: text }]);
}

/** Sends every message at once, holds the model's answers until each is in flight or refused, then lets them go. */
async function burst(harness: Harness, sends: (() => Promise<Answer>)[]): Promise<Answer[]> {
  const release = harness.fake.holdAnswers();
  let answered = 0;
  let someoneAnswered: () => void = () => undefined;
  const calls = sends.map((send) =>
    send().then((answer) => {
      answered += 1;
      someoneAnswered();
      return answer;
    }),
  );
  while (answered + harness.fake.requests.length < sends.length) {
    await Promise.race([harness.fake.awaitRequests(harness.fake.requests.length + 1), new Promise<void>((resolve) => { someoneAnswered = resolve; })]);
  }
  release();
  return Promise.all(calls);
}

/**
 * A provider whose report the service believes (within 4x its estimate of the prompt plus 256:
 * call-usage.ts) though it is larger than the estimates the reservations were built from: each
 * message counts against the daily limits at most what it reserved, so the messages admitted at
 * the edge together never carry a day past its limit; the cost keeps what was reported.
 */
describeEachStore("a provider's believed report above the reservation, at the edge of the daily limits", (kind) => {
  const MAX_TOKENS = 50;
  /** Same length for every message, so that each call's believed report is the same. */
  const textOf = (i: number) => `message number ${String(i).padStart(2, "0")}`;
  /** The largest report call-usage.ts believes for a first message of `text`: the prompt at its bound, the completion at max_tokens. */
  const believedMaximum = (text: string) => ({ prompt_tokens: promptTokenBound("gpt-4o-mini", firstPromptEstimate(text)), completion_tokens: MAX_TOKENS });

  const started: Harness[] = [];
  afterEach(async () => { await Promise.all(started.splice(0).map((running) => running.close())); });

  it.each([
    ["at the bound call-usage.ts believes (4x the estimate plus 256)", (text: string) => believedMaximum(text)],
    ["at 1.5x the estimate (a tokenizer with a smaller vocabulary than o200k)", (text: string) => ({ prompt_tokens: Math.ceil(1.5 * firstPromptEstimate(text)), completion_tokens: MAX_TOKENS })],
  ])("keeps one user's day within USER_TOKENS_PER_DAY across sessions on both database instances and two function instances, reports %s", async (_, report) => {
    const LIMIT = 1000;
    const warnings: { message: string; fields?: LogFields }[] = [];
    const log = { info: () => undefined, error: () => undefined, warn: (message: string, fields?: LogFields) => { warnings.push({ message, ...(fields ? { fields } : {}) }); } };
    const harness = await startHarness({ store: kind, clock: () => NOON, log, env: { USER_TOKENS_PER_DAY: String(LIMIT), USER_MAX_ACTIVE_SESSIONS: "12", USER_MESSAGES_PER_MINUTE: "100" } });
    started.push(harness);
    const other = await harness.instance();
    const user = newUser();
    const sessions: { on: Instance; id: string }[] = [];
    for (let i = 0; i < 12; i += 1) {
      const on = i % 2 === 0 ? harness.api : other;
      sessions.push({ on, id: await create(on, user) });
    }
    if (kind.startsWith("rtdb-2-")) expect(new Set(sessions.map(({ id }) => instancePositionOf(id)))).toEqual(new Set([0, 1]));
    const usage = report(textOf(0));
    harness.fake.enqueue(...sessions.map(() => ({ kind: "reply" as const, text: "ok", usage })));
    const answers = await burst(harness, sessions.map(({ on, id }, i) => () => on.call("POST", ROUTES.message(id), { message: textOf(i) })));
    const passed = answers.filter((answer) => answer.status === 200);
    expect(passed.length).toBeGreaterThan(0);
    // Each answer's usage is the provider's report, believed.
    for (const answer of passed) expect((answer.body.usage as Usage).estimated).toBeUndefined();
    const daily = (await usageOf(harness.api.store, user))?.daily;
    expect({ admitted: passed.length, dayCount: daily?.tokens, withinLimit: (daily?.tokens ?? 0) <= LIMIT }).toEqual({ admitted: passed.length, dayCount: daily?.tokens, withinLimit: true });
    // The day's cost is what the provider reported, every call of it; what passed a reservation is logged.
    const reportedCost = passed.reduce((sum, answer) => sum + ((answer.body.usage as Usage).cost_usd ?? 0), 0);
    expect(daily?.cost_usd).toBeCloseTo(reportedCost, 6);
    expect(warnings.filter((warning) => warning.message === "usage above its reservation, counted at the reservation")).toHaveLength(passed.length);
  });

  it("keeps the deployment's shards within SERVICE_TOKENS_PER_DAY across two function instances", async () => {
    const CAP = 8 * 400;
    const harness = await startHarness({ store: kind, clock: () => NOON, env: { SERVICE_TOKENS_PER_DAY: String(CAP), USER_TOKENS_PER_DAY: "0" } });
    started.push(harness);
    const other = await harness.instance();
    const sessions: { on: Instance; id: string }[] = [];
    for (let i = 0; i < 24; i += 1) {
      const on = i % 2 === 0 ? harness.api : other;
      sessions.push({ on, id: await create(on, newUser()) });
    }
    const usage = believedMaximum(textOf(0));
    harness.fake.enqueue(...sessions.map(() => ({ kind: "reply" as const, text: "ok", usage })));
    const answers = await burst(harness, sessions.map(({ on, id }, i) => () => on.call("POST", ROUTES.message(id), { message: textOf(i) })));
    const passed = answers.filter((answer) => answer.status === 200);
    expect(passed.length).toBeGreaterThan(0);
    for (const answer of passed) expect((answer.body.usage as Usage).estimated).toBeUndefined();
    const shards: Readonly<Record<string, ServiceUsage>> = await harness.api.store.readServiceUsage();
    const total = Object.values(shards).reduce((sum, shard) => sum + shard.tokens, 0);
    expect({ admitted: passed.length, total, withinCap: total <= CAP }).toEqual({ admitted: passed.length, total, withinCap: true });
  });
}, { sharded: true });

/**
 * TOKEN_LIMIT refused only because another message of the user is in flight (its open reservation,
 * an upper bound, sits in the day's count until it settles): the same message fits once that one
 * settles, seconds later, so Retry-After says so, not the next UTC day; and so does a message of a
 * conversation the user ended meanwhile (docs/tokens.md). The answer's message, which the chat page
 * shows beside the wait, names no wait of its own.
 */
describeEachStore("the daily token limit while another message of the user is in flight", (kind) => {
  const started: Harness[] = [];
  afterEach(async () => { await Promise.all(started.splice(0).map((running) => running.close())); });

  /** A day of 200 tokens, a second function instance, and one user's two conversations, one created through each. */
  const twoConversations = async () => {
    const harness = await startHarness({ store: kind, clock: () => NOON, env: { USER_TOKENS_PER_DAY: "200" } });
    started.push(harness);
    const other = await harness.instance();
    const user = newUser();
    const [first, second] = [await create(harness.api, user), await create(other, user)];
    return { harness, other, user, first, second };
  };

  it("answers TOKEN_LIMIT with a Retry-After no longer than the in-flight message can hold its reservation, not until midnight", async () => {
    const { harness, other, user, first, second } = await twoConversations();

    const release = harness.fake.holdAnswers();
    const inFlight = harness.api.call("POST", ROUTES.message(first), { message: "message number 00" });
    await harness.fake.awaitRequests(1);
    const refused = await other.call("POST", ROUTES.message(second), { message: "message number 01" });
    release();
    const settled = await inFlight;
    expect(settled.status).toBe(200);
    expect((await usageOf(harness.api.store, user))?.daily?.tokens).toBe(usageIn(settled).total_tokens);

    // The same message again, the same instant: admitted (the day had room all along).
    const retried = await other.call("POST", ROUTES.message(second), { message: "message number 01" });
    const retryAfter = Number(refused.headers.get("retry-after"));
    expect({ code: refused.body.error?.code, retryStatus: retried.status, retryAfter, retryAfterWithinTwoMinutes: retryAfter <= 120 }).toEqual({
      code: "TOKEN_LIMIT",
      retryStatus: 200,
      retryAfter,
      retryAfterWithinTwoMinutes: true,
    });
    // The answer's message, shown beside the wait, names no wait of its own.
    expect(refused.body.error?.message).not.toMatch(/next UTC day/);
  });

  it.each([
    // The end drops the conversation's count, not the running message's reservation in the day's count.
    ["the user has just ended", "end"],
    // The erasure (from another tab) forgets the conversation, not the running message's reservation.
    ["the user's erasure has just deleted", "erase"],
  ] as const)("answers TOKEN_LIMIT with a short Retry-After, not until midnight, when only a message still running in a conversation %s keeps the day full", async (_how, gone) => {
    const { harness, other, user, first, second } = await twoConversations();

    const release = harness.fake.holdAnswers();
    const inFlight = harness.api.call("POST", ROUTES.message(first), { message: "message number 00" });
    await harness.fake.awaitRequests(1);
    let next = second;
    if (gone === "end") expect((await other.call("DELETE", ROUTES.end(first))).status).toBe(200);
    else {
      expect((await other.call("DELETE", `${ROUTES.erase}?user_id=${user}`)).status).toBe(200);
      next = await create(other, user);
    }
    const refused = await other.call("POST", ROUTES.message(next), { message: "message number 01" });
    release();
    await inFlight;
    const settled = await usageOf(harness.api.store, user);

    // The same message again, the same instant: admitted (the day had room once the running message settled).
    const retried = await other.call("POST", ROUTES.message(next), { message: "message number 01" });
    const retryAfter = Number(refused.headers.get("retry-after"));
    expect({
      code: refused.body.error?.code,
      retryStatus: retried.status,
      dailyBelowLimit: (settled?.daily?.tokens ?? NaN) < 200,
      keptApart: settled?.released_held ?? null,
      retryAfterWithinTwoMinutes: retryAfter <= 120,
      retryAfter,
    }).toEqual({
      code: "TOKEN_LIMIT",
      retryStatus: 200,
      dailyBelowLimit: true,
      // Its settlement found the reservation where the end or the erasure had kept it: nothing is left to wait for.
      keptApart: null,
      retryAfterWithinTwoMinutes: true,
      retryAfter,
    });
  });
}, { sharded: true });

/**
 * A request that died with its reservation open (its usage admission landed with its answer lost,
 * or its settlement was lost) leaves the session's context one reservation too many. It lapses two
 * minutes after its own admission, whatever later messages the session takes meanwhile: then
 * settlements run alone again and bring the session's bound down to its real prompt.
 */
describeEachStore("a reservation left open by a request that died, while the conversation goes on", (kind) => {
  const START = Date.parse("2026-12-06T09:00:00Z");
  const MESSAGES = 30;
  let harness: Harness;
  let now = START;
  const faults: FaultyStore[] = [];

  const started: Harness[] = [];
  afterEach(async () => {
    faults.length = 0;
    await Promise.all(started.splice(0).map((running) => running.close()));
  });

  async function start(env: Record<string, string>): Promise<void> {
    now = START;
    harness = await startHarness({
      store: kind,
      clock: () => now,
      wrapStore: faultsInto(faults),
      env: { USER_MESSAGES_PER_MINUTE: "100", SESSION_MAX_EXCHANGES: "1000", ...env },
    });
    started.push(harness);
  }

  it.each([
    ["its admission's answer lost (503)", "after" as const, 0, 503],
    ["its settlement lost", "before" as const, 1, 200],
  ])("brings the session's bound down to its call once the dead reservation is 2 minutes old, though messages keep coming: %s", async (_, fault, passing, status) => {
    await start({ USER_TOKENS_PER_DAY: "0" });
    const user = newUser();
    const id = await create(harness.api, user);
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "first words" })).status).toBe(200);
    // The next message's admission lands with its answer lost, or its settlement is lost: its reservation stays open.
    now += 30_000;
    faults[0]?.arm("updateUsage", fault, passing);
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "lost in the database" })).status).toBe(status);
    // Ten more messages, one every 30 s, each alone: five minutes after the dead request.
    let last: Answer | undefined;
    for (let i = 0; i < 10; i += 1) {
      now += 30_000;
      last = await harness.api.call("POST", ROUTES.message(id), { message: `message number ${i}` });
      expect(last.status).toBe(200);
    }
    const usage = usageIn(last!);
    const context = (await usageOf(harness.api.store, user))?.contexts?.[id];
    // Alone, the last settlement brings the bound to its call's prompt and reply, the reply framed
    // as the message the next prompt carries it in (limits.ts settleTokens).
    expect({ open: context?.open, bound: context?.tokens }).toEqual({ open: 0, bound: usage.prompt_tokens + usage.completion_tokens + TOKENS_PER_MESSAGE });
  });

  it("admits a conversation that lost one admission answer as it admits the same conversation without it", async () => {
    // Room for the control's 30 messages (its day ends near 4,900 with the last reservation in it).
    await start({ USER_TOKENS_PER_DAY: "5000" });
    const [control, leaked] = [newUser(), newUser()];
    const [controlId, leakedId] = [await create(harness.api, control), await create(harness.api, leaked)];
    for (const id of [controlId, leakedId]) expect((await harness.api.call("POST", ROUTES.message(id), { message: "first words" })).status).toBe(200);
    now += 30_000;
    // The same message to both: the control's goes through, the other's admission answer is lost.
    expect((await harness.api.call("POST", ROUTES.message(controlId), { message: "lost in the database" })).status).toBe(200);
    faults[0]?.arm("updateUsage", "after");
    expect((await harness.api.call("POST", ROUTES.message(leakedId), { message: "lost in the database" })).status).toBe(503);
    const outcomes: { i: number; control: string; leaked: string; controlDay: number; leakedDay: number; leakedBound: number }[] = [];
    for (let i = 0; i < MESSAGES; i += 1) {
      now += 30_000;
      const message = `message number ${i}`;
      const [a, b] = [await harness.api.call("POST", ROUTES.message(controlId), { message }), await harness.api.call("POST", ROUTES.message(leakedId), { message })];
      const [controlUsage, leakedUsage] = [await usageOf(harness.api.store, control), await usageOf(harness.api.store, leaked)];
      outcomes.push({
        i,
        control: a.body.error?.code ?? String(a.status),
        leaked: b.body.error?.code ?? String(b.status),
        controlDay: controlUsage?.daily?.tokens ?? 0,
        leakedDay: leakedUsage?.daily?.tokens ?? 0,
        leakedBound: leakedUsage?.contexts?.[leakedId]?.tokens ?? 0,
      });
      if (a.status !== 200) break;
    }
    // Every message the control got through, the identical conversation got through too.
    expect(outcomes).toHaveLength(MESSAGES);
    expect(outcomes.filter((outcome) => outcome.control !== outcome.leaked)).toEqual([]);
  });
}, { sharded: true });

/**
 * With OpenAI-framed reports (4 tokens around every message), a reply that used all of max_tokens
 * is carried into the next prompt as an assistant message, its framing included: the session's
 * bound counts it, so the next message's reservation holds what it spends, and nothing is left uncounted.
 */
describeEachStore("OpenAI-framed reports after a reply that used all of max_tokens", (kind) => {
  let harness: Harness | undefined;
  afterEach(async () => { await harness?.close(); harness = undefined; });

  it("counts against the user's day every token the next message spends, its reservation holding the reply with its framing", async () => {
    const warnings: { message: string; fields?: LogFields }[] = [];
    const log = { info: () => undefined, error: () => undefined, warn: (message: string, fields?: LogFields) => { warnings.push({ message, ...(fields ? { fields } : {}) }); } };
    harness = await startHarness({ store: kind, clock: () => NOON, log, env: { USER_TOKENS_PER_DAY: "0" } });
    const user = newUser();
    const id = await create(harness.api, user);
    // 200 characters: the fake reports ceil(200 / 4) = 50 completion tokens, all of max_tokens (friendly-assistant: 50).
    const full = "word ".repeat(40);
    harness.fake.enqueue({ kind: "reply", text: full, finishReason: "length" }, { kind: "reply", text: full, finishReason: "length" });
    const first = usageIn(await harness.api.call("POST", ROUTES.message(id), { message: "hi" }));
    const second = usageIn(await harness.api.call("POST", ROUTES.message(id), { message: "ok" }));
    expect([first.estimated, second.estimated]).toEqual([undefined, undefined]);
    const daily = (await usageOf(harness.api.store, user))?.daily;
    expect({ counted: daily?.tokens, uncountedWarnings: warnings.filter((warning) => warning.message.startsWith("usage above its reservation")) }).toEqual({
      counted: first.total_tokens + second.total_tokens,
      uncountedWarnings: [],
    });
  });
}, { sharded: true });

/**
 * A message whose settlement was lost keeps its reservation open until it lapses, 2 minutes after
 * its admission, and then counts as spent. TOKEN_LIMIT's short Retry-After points past that
 * instant: a client that waits exactly what it said gets the day's answer, not another short wait.
 */
describeEachStore("the daily token limit's short Retry-After, obeyed to the second", (kind) => {
  const MIDNIGHT = Date.parse("2026-11-27T00:00:00Z");
  let harness: Harness | undefined;
  let now = NOON;
  const faults: FaultyStore[] = [];
  afterEach(async () => { faults.length = 0; await harness?.close(); harness = undefined; });

  it("answers a retry made when Retry-After said, the open reservation lapsed, with the day's refusal until midnight", async () => {
    now = NOON;
    harness = await startHarness({
      store: kind,
      clock: () => now,
      wrapStore: faultsInto(faults),
      env: { USER_TOKENS_PER_DAY: "180", USER_MESSAGES_PER_MINUTE: "100" },
    });
    const user = newUser();
    const [first, second] = [await create(harness.api, user), await create(harness.api, user)];
    // The first message is answered, its settlement lost: its reservation (~100 tokens) stays open.
    faults[0]?.arm("updateUsage", "before", 1);
    expect((await harness.api.call("POST", ROUTES.message(first), { message: "hi" })).status).toBe(200);
    now += 30_000;
    const refused = await harness.api.call("POST", ROUTES.message(second), { message: "hi" });
    const wait = Number(refused.headers.get("retry-after"));
    expect({ code: refused.body.error?.code, shortWait: wait <= 120 }).toEqual({ code: "TOKEN_LIMIT", shortWait: true });
    // Retried exactly when told.
    now += wait * 1000;
    const retried = await harness.api.call("POST", ROUTES.message(second), { message: "hi" });
    expect({ status: retried.status, code: retried.body.error?.code, retryAfter: Number(retried.headers.get("retry-after")) }).toEqual({
      status: 429,
      code: "TOKEN_LIMIT",
      retryAfter: Math.ceil((MIDNIGHT - now) / 1000),
    });
  });
}, { sharded: true });

/**
 * One lost settlement (the exchange committed, the usage transaction not) leaves a session counted
 * from its message's arrival instead of its answer, so its count lapses up to a model call's length
 * before the session expires; another session's admission meanwhile drops its context bound
 * (limits.ts liveContexts), and its next message reserves from the system prompt alone while
 * sending the whole history. Within the service's estimate of the calls made, what the
 * reservation missed is counted in full.
 */
describeEachStore("a session whose count lapsed before it expired, its context dropped", (kind) => {
  const START = Date.parse("2026-11-26T09:00:00Z");
  const REPLY = "noted, thank you";
  let harness: Harness | undefined;
  let now = START;
  const faults: FaultyStore[] = [];
  afterEach(async () => { faults.length = 0; await harness?.close(); harness = undefined; });

  it.each([
    ["at the service's estimate of each prompt (the most an o200k count reaches)", (request: RecordedRequest) => ({ prompt_tokens: estimatePromptTokens(request.body.messages), completion_tokens: 4 })],
    ["framed as the fake frames them (above the estimate on this text, as the session's earlier reports were)", (request: RecordedRequest) => fakeUsage(request.body, REPLY)],
  ])("counts the history its next message sends against the user's day, reports %s", async (_, report) => {
    now = START;
    harness = await startHarness({
      store: kind,
      clock: () => now,
      wrapStore: faultsInto(faults),
      env: { USER_TOKENS_PER_DAY: "0", SESSION_IDLE_TTL_MINUTES: "5", USER_MESSAGES_PER_MINUTE: "100", MAX_MESSAGE_CHARS: "4000" },
    });
    harness.fake.chaos = (request) => ({ kind: "reply", text: REPLY, usage: report(request) });
    const user = newUser();
    const chat = await create(harness.api, user);
    const long = (label: string) => `${label}: ${"a long line of conversation about many things ".repeat(60)}`;
    expect((await harness.api.call("POST", ROUTES.message(chat), { message: long("one") })).status).toBe(200);
    // The second message: the model takes a minute, and its settlement is lost (its commit lands).
    now += 10_000;
    const release = harness.fake.holdAnswers();
    faults[0]?.arm("updateUsage", "before", 1);
    const second = harness.api.call("POST", ROUTES.message(chat), { message: long("two") });
    await harness.fake.awaitRequests(2);
    now += 60_000;
    release();
    expect((await second).status).toBe(200);
    // Past the count's TTL (from the second message's arrival), within the session's (from its answer).
    now += 5 * 60_000 - 30_000;
    // Another session of the user takes a message meanwhile: the first one's context bound goes.
    const other = await create(harness.api, user);
    expect((await harness.api.call("POST", ROUTES.message(other), { message: "hello" })).status).toBe(200);
    expect((await usageOf(harness.api.store, user))?.contexts?.[chat]).toBeUndefined();
    const before = (await usageOf(harness.api.store, user))?.daily?.tokens ?? 0;
    const spent = usageIn(await harness.api.call("POST", ROUTES.message(chat), { message: "and now?" }));
    expect(spent.estimated).toBeUndefined();
    const after = (await usageOf(harness.api.store, user))?.daily?.tokens ?? 0;
    expect({ counted: after - before, historySent: spent.prompt_tokens > 1000 }).toEqual({ counted: spent.total_tokens, historySent: true });
  });
}, { sharded: true });

/**
 * A provider whose tokenizer counts 1.5x o200k: believed (up to 4x the estimate plus 256), and
 * learnt by the session's calibration, so each report is within the service's calibrated estimate
 * of its call (call-usage.ts callBound), and above the raw estimate the reservation counts the new
 * message at. A session whose bound is intact misses no history: its message counts at most what it
 * reserved, so one admitted exactly at the limit leaves the day at it.
 */
describeEachStore("a believed report within the calibrated estimate, above the reservation, at the edge of the day", (kind) => {
  const REPLY = "noted, thank you";
  const FIRST = "hello there";
  const SECOND = `two: ${"a long line of conversation about many things ".repeat(60)}`;
  const highCounter = (request: RecordedRequest) => ({
    kind: "reply" as const,
    text: REPLY,
    usage: { prompt_tokens: Math.ceil(1.5 * estimatePromptTokens(request.body.messages)), completion_tokens: 4 },
  });
  let harness: Harness | undefined;
  afterEach(async () => { await harness?.close(); harness = undefined; });

  /** Two messages of one new session under `limit`: the day's count after the first, what the second reserves, the final count. */
  async function run(limit: number): Promise<{ afterFirst: number; reserved: number; final: number; second: Answer }> {
    harness = await startHarness({ store: kind, clock: () => NOON, env: { USER_TOKENS_PER_DAY: String(limit), USER_MESSAGES_PER_MINUTE: "100" } });
    harness.fake.chaos = (request) => highCounter(request);
    const user = newUser();
    const chat = await create(harness.api, user);
    expect((await harness.api.call("POST", ROUTES.message(chat), { message: FIRST })).status).toBe(200);
    const afterFirst = (await usageOf(harness.api.store, user))?.daily?.tokens ?? 0;
    // The second message's model call held: its reservation is in the day's count meanwhile.
    const release = harness.fake.holdAnswers();
    const pending = harness.api.call("POST", ROUTES.message(chat), { message: SECOND });
    await harness.fake.awaitRequests(2);
    const reserved = ((await usageOf(harness.api.store, user))?.daily?.tokens ?? 0) - afterFirst;
    release();
    const second = await pending;
    const final = (await usageOf(harness.api.store, user))?.daily?.tokens ?? 0;
    await harness.close();
    harness = undefined;
    return { afterFirst, reserved, final, second };
  }

  it("never counts the day past USER_TOKENS_PER_DAY for a message admitted exactly at the limit, its session's bound intact", async () => {
    // Measured without a limit: what the first message counts and what the second reserves.
    const measured = await run(0);
    expect(measured.second.status).toBe(200);
    const limit = measured.afterFirst + measured.reserved;
    const atEdge = await run(limit);
    expect(atEdge.afterFirst).toBe(measured.afterFirst);
    const spent = usageIn(atEdge.second);
    // The report was believed, and spent more than the reservation held.
    expect({ estimated: spent.estimated, aboveReservation: spent.total_tokens > atEdge.reserved }).toEqual({ estimated: undefined, aboveReservation: true });
    expect({ limit, overBy: Math.max(0, atEdge.final - limit) }).toEqual({ limit, overBy: 0 });
  });
}, { sharded: false });

/**
 * With o200k-like reports (at the service's own estimate of each prompt) and messages of a session
 * running at once, no settlement is alone: the session's bound keeps each admission's need, which
 * holds its reply as the next prompts carry it, at max_tokens with the 4 tokens that frame it as a
 * message. socratic-tutor (max_tokens 80, a window of 20 messages) sends all 9 replies in the next
 * prompt: its reservation holds what it spends, counted in full, and the day stays within the limit.
 */
describeEachStore("concurrent replies that use all of max_tokens, then one more message at the edge of the day", (kind) => {
  const TEMPLATE = "socratic-tutor";
  const MAX_TOKENS = 80;
  const LIMIT = 100_000;
  const TOGETHER = 9;
  /** A reply that uses all of the template's max_tokens, estimated at exactly that too. */
  const full = (() => {
    for (let n = 1; n < 200; n += 1) {
      const text = "word ".repeat(n).trim();
      if (estimateTokens(text) === MAX_TOKENS) return text;
    }
    throw new Error(`no reply text estimated at ${MAX_TOKENS}`);
  })();
  let harness: Harness;
  beforeAll(async () => {
    harness = await startHarness({ store: kind, clock: () => NOON, env: { USER_TOKENS_PER_DAY: String(LIMIT), USER_MESSAGES_PER_MINUTE: "100" } });
  });
  afterAll(async () => harness.close());

  /** One user's conversation: a message, TOGETHER at once, then the last one, the day's count set to `dayBefore` first when given. */
  async function run(dayBefore?: number): Promise<{ before: number; reserved: number; final: number; last: Answer }> {
    harness.fake.reset();
    harness.fake.chaos = (request) => ({ kind: "reply", text: full, finishReason: "length", usage: { prompt_tokens: estimatePromptTokens(request.body.messages), completion_tokens: MAX_TOKENS } });
    const user = newUser();
    const chat = await create(harness.api, user, TEMPLATE);
    expect((await harness.api.call("POST", ROUTES.message(chat), { message: "first" })).status).toBe(200);
    let release = harness.fake.holdAnswers();
    const together = Array.from({ length: TOGETHER }, (_, i) => harness.api.call("POST", ROUTES.message(chat), { message: `together ${i}` }));
    await harness.fake.awaitRequests(TOGETHER + 1);
    release();
    expect((await Promise.all(together)).map((answer) => answer.status)).toEqual(Array(TOGETHER).fill(200));
    if (dayBefore !== undefined) {
      // What the user spent today elsewhere: the day's count this many tokens short of the limit.
      await harness.api.store.updateUsage(keyHash("user", user), (usage) => ({ outcome: undefined, next: { ...usage!, daily: { ...usage!.daily!, tokens: dayBefore } } }));
    }
    const before = (await usageOf(harness.api.store, user))?.daily?.tokens ?? 0;
    release = harness.fake.holdAnswers();
    const pending = harness.api.call("POST", ROUTES.message(chat), { message: "and the last one" });
    await harness.fake.awaitRequests(TOGETHER + 2);
    const reserved = ((await usageOf(harness.api.store, user))?.daily?.tokens ?? 0) - before;
    release();
    const last = await pending;
    const final = (await usageOf(harness.api.store, user))?.daily?.tokens ?? 0;
    return { before, reserved, final, last };
  }

  it("counts every token the next message spends and never the day past USER_TOKENS_PER_DAY: its reservation holds the replies with their framing", async () => {
    const measured = await run();
    // Another user, the same conversation: the last message's reservation fits the day exactly.
    const atEdge = await run(LIMIT - measured.reserved);
    expect({ reserved: atEdge.reserved, status: atEdge.last.status }).toEqual({ reserved: measured.reserved, status: 200 });
    const spent = usageIn(atEdge.last);
    expect({ estimated: spent.estimated, counted: atEdge.final - atEdge.before, overBy: Math.max(0, atEdge.final - LIMIT) }).toEqual({ estimated: undefined, counted: spent.total_tokens, overBy: 0 });
  });
}, { sharded: false });

/** A wrapStore that wraps each instance's store in a FaultyStore, kept in `faults` in the order the instances start. */
function faultsInto(faults: FaultyStore[]): (store: SessionStore) => SessionStore {
  return (store) => {
    const faulty = new FaultyStore(store);
    faults.push(faulty);
    return faulty.store;
  };
}
