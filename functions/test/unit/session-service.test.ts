import { recentMessages } from "../support/recent-messages";
import { silentLog } from "../../src/log/log";
import { randomUUID } from "node:crypto";
import { ModelError } from "../../src/llm/errors";
import { createOpenAiModel } from "../../src/llm/openai-model";
import type { ChatModel, Completion } from "../../src/llm/chat-model";
import {
  IdempotencyInProgressError,
  IdempotencyKeyReusedError,
  SessionClosedError,
  SessionNotFoundError,
  TemplateNotFoundError,
} from "../../src/session/errors";
import { GENERATION_DEFAULTS } from "../../src/session/prompt/generation-settings";
import { fingerprint, keyHash } from "../../src/session/idempotency";
import { claimRequest, type SessionPolicy } from "../../src/session/session-rules";
import { SessionService } from "../../src/session/session-service";
import { StoreUnavailableError } from "../../src/store/errors";
import { MemoryStore } from "../../src/store/memory-store";
import type { ChatMessage, Exchange, SessionMeta, SessionState, Template } from "../../src/store/records";
import type { RuledWithKey, HistoryWindow, Ruled, StateRule, UsageRule } from "../../src/store/session-store";
import { FakeOpenAiServer } from "../support/fake-openai-server";
import { POLICY, TEMPLATE } from "../support/fixtures";

/**
 * The embedded store, counting the reads the service makes. `editTemplate` stands in for an
 * operator changing a template in the database (seedTemplates never overwrites one).
 */
class CountingStore extends MemoryStore {
  readonly reads = { template: 0, meta: 0, state: 0, recent: 0, exchange: 0 };
  /** Reads of message ranges (a summary's backlog). */
  rangeReads = 0;
  private readonly edited = new Map<string, Template>();
  private readonly deleted = new Set<string>();

  editTemplate(templateId: string, template: Template): void {
    this.edited.set(templateId, structuredClone(template));
  }

  deleteTemplate(templateId: string): void {
    this.deleted.add(templateId);
  }

  resetCounts(): void {
    this.reads.template = 0;
    this.reads.meta = 0;
    this.reads.state = 0;
    this.reads.recent = 0;
    this.reads.exchange = 0;
  }

  override async readTemplate(templateId: string): Promise<Template | null> {
    this.reads.template += 1;
    if (this.deleted.has(templateId)) return null;
    const edited = this.edited.get(templateId);
    return edited ? structuredClone(edited) : super.readTemplate(templateId);
  }

  override async readSessionMeta(sessionId: string): Promise<SessionMeta | null> {
    this.reads.meta += 1;
    return super.readSessionMeta(sessionId);
  }

  override async readSessionState(sessionId: string): Promise<SessionState | null> {
    this.reads.state += 1;
    return super.readSessionState(sessionId);
  }

  override async readWindow(sessionId: string, limit: number): Promise<HistoryWindow> {
    this.reads.recent += 1;
    return super.readWindow(sessionId, limit);
  }

  override async readMessages(sessionId: string, first: number, last: number): Promise<ChatMessage[]> {
    this.rangeReads += 1;
    return super.readMessages(sessionId, first, last);
  }

  override async readExchange(sessionId: string, seq: number): Promise<Exchange | null> {
    this.reads.exchange += 1;
    return super.readExchange(sessionId, seq);
  }
}

const BARE: Template = { name: "Bare", personalityPrompt: "You are bare." };
const WINDOW_ZERO: Template = { name: "Forgetful", personalityPrompt: "You remember nothing.", context_window: 0 };
const DEFAULT_WINDOW = 6;

interface Setup {
  readonly clock?: () => number;
  readonly templateTtlMs?: number;
  readonly sessionTtlMs?: number;
  readonly maxSessions?: number;
  readonly policy?: SessionPolicy;
  readonly keyLeaseMs?: number;
  readonly keyWaitMs?: number;
  /** Runs when the service asks for the model, i.e. between reading and answering a message. */
  readonly onModel?: () => void;
}

describe("SessionService", () => {
  let fake: FakeOpenAiServer;
  let store: CountingStore;

  let model: ChatModel;
  beforeAll(async () => {
    fake = await FakeOpenAiServer.start();
    model = createOpenAiModel({ apiKey: "sk-test-key", baseUrl: fake.baseUrl, timeoutMs: 2_000 });
  });
  afterAll(async () => fake.stop());

  beforeEach(async () => {
    fake.reset();
    store = new CountingStore();
    await store.seedTemplates({ tester: TEMPLATE, bare: BARE, forgetful: WINDOW_ZERO });
  });

  /** One function instance: its own service and caches, on the shared store and the real SDK. */
  function instance(setup: Setup = {}): SessionService {
    return new SessionService({
      store,
      log: silentLog,
      model: {
        name: "counted",
        complete: (request) => {
          setup.onModel?.();
          return model.complete(request);
        },
      },
      clock: setup.clock ?? Date.now,
      newSessionId: randomUUID,
      defaultContextWindow: DEFAULT_WINDOW,
      policy: setup.policy ?? POLICY,
      usage: { messagesPerMinute: 1_000_000, maxActiveSessions: 1_000_000, idleTtlMs: (setup.policy ?? POLICY).idleTtlMs, tokensPerDay: 0 },
      keyLeaseMs: setup.keyLeaseMs ?? 10_000,
      keyWaitMs: setup.keyWaitMs ?? 10_000,
      livePartials: true,
      keyPollMs: 5,
      cache: {
        templateTtlMs: setup.templateTtlMs ?? 60_000,
        sessionTtlMs: setup.sessionTtlMs ?? 600_000,
        maxSessions: setup.maxSessions ?? 100,
      },
    });
  }

  /** The contents of the messages of the last model request, system prompt first. */
  const lastPrompt = () => fake.requests.at(-1)?.body.messages.map((message) => `${message.role}: ${message.content}`);

  describe("create", () => {
    it("freezes the template's prompt and settings into the session, with defaults for the rest", async () => {
      const { sessionId, meta } = await instance({ clock: () => 1_234 }).create({ userId: "user_1", templateId: "bare" });
      expect(meta).toEqual({
        user_id: "user_1",
        template_id: "bare",
        template_name: "Bare",
        system_prompt: "You are bare.",
        settings: { ...GENERATION_DEFAULTS, context_window: DEFAULT_WINDOW },
        created_at: 1_234,
      });
      expect(await store.readSessionMeta(sessionId)).toEqual(meta);
      // The state names its creation too (records.ts ofCreation).
      expect(await store.readSessionState(sessionId)).toEqual({ status: "active", message_count: 0, last_activity: 1_234, idle_since: 1_234, created_at: 1_234 });
    });

    it("takes the template's overrides over the defaults", async () => {
      const { meta } = await instance().create({ userId: "u", templateId: "tester" });
      expect(meta.system_prompt).toBe(TEMPLATE.personalityPrompt);
      expect(meta.settings).toEqual({ ...GENERATION_DEFAULTS, temperature: 0.3, context_window: 4 });
    });

    it("issues a fresh UUID v4 per session", async () => {
      const service = instance();
      const a = await service.create({ userId: "u", templateId: "bare" });
      const b = await service.create({ userId: "u", templateId: "bare" });
      expect(a.sessionId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      expect(a.sessionId).not.toBe(b.sessionId);
    });

    it("keeps an existing session on the template it was created with after the template changes", async () => {
      const { sessionId } = await instance({ templateTtlMs: 0 }).create({ userId: "u", templateId: "tester" });
      store.editTemplate("tester", { name: "Changed", personalityPrompt: "You are changed.", model: "gpt-changed", temperature: 1.5, context_window: 1 });

      // A cold instance must take prompt and settings from the session, not the template.
      await instance().send({ sessionId, message: "hello" });
      expect(fake.requests[0]?.body).toMatchObject({
        model: GENERATION_DEFAULTS.model,
        temperature: 0.3,
        max_tokens: GENERATION_DEFAULTS.max_tokens,
        messages: [
          { role: "system", content: TEMPLATE.personalityPrompt },
          { role: "user", content: "hello" },
        ],
      });

      const later = await instance().create({ userId: "u", templateId: "tester" });
      expect(later.meta.system_prompt).toBe("You are changed.");
      expect(later.meta.settings).toMatchObject({ model: "gpt-changed", temperature: 1.5, context_window: 1 });
    });

    it("refuses an unknown template with TemplateNotFoundError, calling no model", async () => {
      const failure = instance().create({ userId: "u", templateId: "no-such-template" });
      await expect(failure).rejects.toBeInstanceOf(TemplateNotFoundError);
      await expect(failure).rejects.toMatchObject({ templateId: "no-such-template" });
      expect(fake.requests).toHaveLength(0);
    });

    it("does not cache a missing template: it is found once it exists", async () => {
      const service = instance();
      await expect(service.create({ userId: "u", templateId: "late" })).rejects.toBeInstanceOf(TemplateNotFoundError);
      await store.seedTemplates({ late: BARE });
      await expect(service.create({ userId: "u", templateId: "late" })).resolves.toMatchObject({ meta: { template_id: "late" } });
    });
  });

  describe("template cache", () => {
    it("reuses a template within its TTL and reads it again after", async () => {
      let now = 1_000_000;
      const service = instance({ clock: () => now, templateTtlMs: 1_000 });
      await service.create({ userId: "u", templateId: "tester" });
      now += 999;
      await service.create({ userId: "u", templateId: "tester" });
      expect(store.reads.template).toBe(1);

      now += 1;
      await service.create({ userId: "u", templateId: "tester" });
      expect(store.reads.template).toBe(2);
    });

    it("serves a changed template only once the cached one expires", async () => {
      let now = 1_000_000;
      const service = instance({ clock: () => now, templateTtlMs: 1_000 });
      await service.create({ userId: "u", templateId: "tester" });
      store.editTemplate("tester", { ...TEMPLATE, personalityPrompt: "Edited." });
      expect((await service.create({ userId: "u", templateId: "tester" })).meta.system_prompt).toBe(TEMPLATE.personalityPrompt);
      now += 1_000;
      expect((await service.create({ userId: "u", templateId: "tester" })).meta.system_prompt).toBe("Edited.");
    });

    it("reads the template on every create with a TTL of 0", async () => {
      const service = instance({ templateTtlMs: 0 });
      await service.create({ userId: "u", templateId: "tester" });
      await service.create({ userId: "u", templateId: "tester" });
      expect(store.reads.template).toBe(2);
    });

    it("keeps caching templates when the session cache is turned off", async () => {
      const service = instance({ templateTtlMs: 60_000, maxSessions: 0 });
      await service.create({ userId: "u", templateId: "tester" });
      await service.create({ userId: "u", templateId: "tester" });
      expect(store.reads.template).toBe(1);
    });
  });

  describe("send", () => {
    it("answers, stores the exchange with the clock's times and counts it", async () => {
      let now = 5_000;
      const service = instance({ clock: () => now, onModel: () => { now = 6_000; } });
      const { sessionId } = await service.create({ userId: "u", templateId: "tester" });
      const reply = await service.send({ sessionId, message: "hello" });
      expect(reply).toEqual({ sessionId, text: "reply #1 to: hello", truncated: false, exchangeCount: 1, replayed: false, usage: expect.objectContaining({ total_tokens: expect.any(Number) }) });
      // The user message is stamped when it arrived, the reply when it came back.
      expect(await recentMessages(store, sessionId, 10)).toEqual([
        { role: "user", content: "hello", timestamp: 5_000 },
        { role: "assistant", content: "reply #1 to: hello", timestamp: 6_000, usage: expect.objectContaining({ prompt_estimate: expect.any(Number) }) },
      ]);
      expect(await store.readSessionState(sessionId)).toEqual({ status: "active", message_count: 1, last_activity: 6_000, idle_since: 6_000, usage: reply.usage, created_at: 5_000 });
    });

    it("on the warm instance that created the session, reads neither history, meta nor state: the claim returns the state", async () => {
      const service = instance();
      const { sessionId } = await service.create({ userId: "u", templateId: "tester" });
      store.resetCounts();

      for (const message of ["one", "two", "three", "four"]) await service.send({ sessionId, message });
      expect(store.reads).toEqual({ template: 0, meta: 0, state: 0, recent: 0, exchange: 0 });
      // The cached tail is the real history, limited to the template's window of 4.
      expect(lastPrompt()).toEqual([
        `system: ${TEMPLATE.personalityPrompt}`,
        "user: two",
        "assistant: reply #2 to: two",
        "user: three",
        "assistant: reply #3 to: three",
        "user: four",
      ]);
    });

    it("with a summary, folds in what the next message's window drops from what it holds, without a read", async () => {
      await store.seedTemplates({ summarised: { name: "Summarised", personalityPrompt: "Gist.", context_window: 2, summary: true } });
      const isSummary = (messages: readonly { content: string }[]) => messages[1]?.content.includes("New messages:") === true;
      // Summaries answer first, so that each is kept.
      fake.chaos = (request, reply) => (isSummary(request.body.messages) ? { kind: "reply", text: "the gist" } : reply(100));
      const service = instance();
      const { sessionId } = await service.create({ userId: "u", templateId: "summarised" });
      for (const message of ["one", "two", "three", "four"]) await service.send({ sessionId, message });
      await instance().send({ sessionId, message: "five, cold" });
      const summaryCalls = fake.requests.filter((request) => isSummary(request.body.messages));
      // From the second message on, each pushes the exchange before it out of the next window: each call had it at hand.
      expect(summaryCalls.map((request) => request.body.messages[1]?.content.match(/New messages:\nUser: "(\w+)/)?.[1])).toEqual(["one", "two", "three", "four"]);
      expect(store.rangeReads).toBe(0);
      expect(await store.readSummary(sessionId)).toMatchObject({ text: "the gist", through: 8 });
    });

    it("on a cold instance, reads meta and history once, then keeps them warm", async () => {
      const { sessionId } = await instance().create({ userId: "u", templateId: "tester" });
      await instance().send({ sessionId, message: "elsewhere" });
      const cold = instance();
      store.resetCounts();

      await cold.send({ sessionId, message: "first here" });
      expect(store.reads).toEqual({ template: 0, meta: 1, state: 0, recent: 1, exchange: 0 });
      expect(lastPrompt()).toEqual([`system: ${TEMPLATE.personalityPrompt}`, "user: elsewhere", "assistant: reply #1 to: elsewhere", "user: first here"]);

      await cold.send({ sessionId, message: "second here" });
      expect(store.reads).toEqual({ template: 0, meta: 1, state: 0, recent: 1, exchange: 0 });
    });

    it("re-reads history on a warm instance when another instance added to it", async () => {
      const a = instance();
      const b = instance();
      const { sessionId } = await a.create({ userId: "u", templateId: "tester" });
      await a.send({ sessionId, message: "from a" });
      await b.send({ sessionId, message: "from b" });
      store.resetCounts();

      await a.send({ sessionId, message: "a again" });
      expect(store.reads.recent).toBe(1);
      expect(lastPrompt()).toEqual([
        `system: ${TEMPLATE.personalityPrompt}`,
        "user: from a",
        "assistant: reply #1 to: from a",
        "user: from b",
        "assistant: reply #2 to: from b",
        "user: a again",
      ]);
    });

    it("refuses, without a model call, a session another instance ended", async () => {
      const a = instance();
      const { sessionId } = await a.create({ userId: "u", templateId: "tester" });
      await a.send({ sessionId, message: "warm up" });
      const ended = await instance().end(sessionId);
      expect(ended.state).toMatchObject({ status: "ended", message_count: 1 });
      fake.reset();

      const late = a.send({ sessionId, message: "too late" });
      await expect(late).rejects.toBeInstanceOf(SessionClosedError);
      await expect(late).rejects.toMatchObject({ status: "ended" });
      expect(fake.requests).toHaveLength(0);
      expect(await store.readSessionState(sessionId)).toMatchObject({ status: "ended", message_count: 1 });
    });

    it("refuses an unknown session with SessionNotFoundError, calling no model", async () => {
      await expect(instance().send({ sessionId: randomUUID(), message: "hi" })).rejects.toBeInstanceOf(SessionNotFoundError);
      expect(fake.requests).toHaveLength(0);
    });

    it("stores nothing when the model fails, and the next message carries no trace of it", async () => {
      const service = instance();
      const { sessionId } = await service.create({ userId: "u", templateId: "tester" });
      await service.send({ sessionId, message: "before" });
      fake.enqueue({ kind: "status", status: 500 });

      const failed = service.send({ sessionId, message: "lost" });
      await expect(failed).rejects.toBeInstanceOf(ModelError);
      await expect(failed).rejects.toMatchObject({ failure: "bad_response" });
      expect(await store.readSessionState(sessionId)).toMatchObject({ status: "active", message_count: 1 });
      expect((await recentMessages(store, sessionId, 100)).map((message) => message.content)).toEqual(["before", "reply #1 to: before"]);

      await expect(service.send({ sessionId, message: "after" })).resolves.toMatchObject({ exchangeCount: 2 });
      expect(lastPrompt()).toEqual([`system: ${TEMPLATE.personalityPrompt}`, "user: before", "assistant: reply #1 to: before", "user: after"]);
    });

    it("stores and counts every one of concurrent sends on one instance", async () => {
      const service = instance();
      const { sessionId } = await service.create({ userId: "u", templateId: "tester" });
      const total = 8;

      const replies = await Promise.all(Array.from({ length: total }, (_, i) => service.send({ sessionId, message: `q${i}` })));
      expect(replies.map((reply) => reply.exchangeCount).sort((x, y) => x - y)).toEqual(Array.from({ length: total }, (_, i) => i + 1));
      expect(await store.readSessionState(sessionId)).toMatchObject({ message_count: total });

      const stored = await recentMessages(store, sessionId, 100);
      expect(stored).toHaveLength(2 * total);
      for (let i = 0; i < stored.length; i += 2) {
        expect(stored[i]?.role).toBe("user");
        expect(stored[i + 1]).toMatchObject({ role: "assistant", content: expect.stringMatching(new RegExp(`to: ${stored[i]?.content ?? ""}$`)) });
      }
      expect(new Set(stored.filter((message) => message.role === "user").map((message) => message.content)).size).toBe(total);

      // The next send sees all of them, whatever this instance cached meanwhile.
      await service.send({ sessionId, message: "after" });
      expect(lastPrompt()?.slice(1, -1)).toEqual(stored.slice(-4).map((message) => `${message.role}: ${message.content}`));
    });

    it("sends no history with a window of 0", async () => {
      const service = instance();
      const { sessionId } = await service.create({ userId: "u", templateId: "forgetful" });
      await service.send({ sessionId, message: "one" });
      await service.send({ sessionId, message: "two" });
      expect(lastPrompt()).toEqual(["system: You remember nothing.", "user: two"]);
    });

    it("keeps no history warm for a window-0 session", async () => {
      const service = instance();
      const { sessionId } = await service.create({ userId: "u", templateId: "forgetful" });
      for (const message of ["one", "two", "three"]) await service.send({ sessionId, message });
      expect(service["known"]["cache"].get(sessionId)?.tail?.messages).toEqual([]);
    });
  });

  describe("idle expiry", () => {
    const policy: SessionPolicy = { idleTtlMs: 1_000, maxExchanges: 1_000_000 };

    it("takes a message sent exactly at the TTL", async () => {
      let now = 50_000;
      const service = instance({ clock: () => now, policy });
      const { sessionId } = await service.create({ userId: "u", templateId: "tester" });
      now += 1_000;
      await expect(service.send({ sessionId, message: "just in time" })).resolves.toMatchObject({ exchangeCount: 1 });
    });

    it("refuses a message past the TTL without a model call, and records the expiry, as of its TTL, at the message's time", async () => {
      let now = 50_000;
      const service = instance({ clock: () => now, policy });
      const { sessionId } = await service.create({ userId: "u", templateId: "tester" });
      now += 1_001;
      const late = service.send({ sessionId, message: "too late" });
      await expect(late).rejects.toBeInstanceOf(SessionClosedError);
      await expect(late).rejects.toMatchObject({ status: "expired" });
      expect(fake.requests).toHaveLength(0);
      expect(await store.readSessionState(sessionId)).toEqual({ status: "expired", message_count: 0, last_activity: 50_000, ended_at: 51_000, closed_at: 51_001, created_at: 50_000 });
      await expect(service.end(sessionId)).rejects.toMatchObject({ name: "SessionClosedError", status: "expired" });
    });

    it("refuses a keyed message past the TTL as well", async () => {
      let now = 50_000;
      const service = instance({ clock: () => now, policy });
      const { sessionId } = await service.create({ userId: "u", templateId: "tester" });
      now += 5_000;
      await expect(service.send({ sessionId, message: "late", idempotencyKey: "k" })).rejects.toMatchObject({ name: "SessionClosedError", status: "expired" });
      expect(fake.requests).toHaveLength(0);
      expect(await store.readSessionState(sessionId)).toMatchObject({ status: "expired", ended_at: 51_000 });
    });
  });

  describe("idempotent create", () => {
    it("creates one session per key and user, and replays it", async () => {
      const service = instance();
      const first = await service.create({ userId: "u", templateId: "tester", idempotencyKey: "k1" });
      const again = await instance().create({ userId: "u", templateId: "tester", idempotencyKey: "k1" });
      expect(first.replayed).toBe(false);
      expect(again).toEqual({ sessionId: first.sessionId, meta: first.meta, replayed: true });

      const otherUser = await service.create({ userId: "v", templateId: "tester", idempotencyKey: "k1" });
      const otherKey = await service.create({ userId: "u", templateId: "tester", idempotencyKey: "k2" });
      expect(new Set([first.sessionId, otherUser.sessionId, otherKey.sessionId]).size).toBe(3);
      expect([otherUser.replayed, otherKey.replayed]).toEqual([false, false]);
    });

    it("replays a keyed repeat once its template was deleted, and still refuses a create without a session behind its key", async () => {
      const first = await instance().create({ userId: "u", templateId: "tester", idempotencyKey: "k1" });
      store.deleteTemplate("tester");
      // A fresh instance: no template cached.
      expect(await instance().create({ userId: "u", templateId: "tester", idempotencyKey: "k1" })).toEqual({ sessionId: first.sessionId, meta: first.meta, replayed: true });
      await expect(instance().create({ userId: "u", templateId: "tester", idempotencyKey: "k2" })).rejects.toBeInstanceOf(TemplateNotFoundError);
      await expect(instance().create({ userId: "u", templateId: "tester" })).rejects.toBeInstanceOf(TemplateNotFoundError);
    });

    it("refuses a key reused for another template", async () => {
      const service = instance();
      await service.create({ userId: "u", templateId: "tester", idempotencyKey: "k1" });
      await expect(service.create({ userId: "u", templateId: "bare", idempotencyKey: "k1" })).rejects.toBeInstanceOf(IdempotencyKeyReusedError);
    });

    it("creates a single session when repeats race", async () => {
      const created = await Promise.all(Array.from({ length: 5 }, () => instance().create({ userId: "u", templateId: "tester", idempotencyKey: "race" })));
      expect(new Set(created.map((session) => session.sessionId)).size).toBe(1);
      expect(created.filter((session) => !session.replayed)).toHaveLength(1);
    });
  });

  describe("idempotent send", () => {
    it("replays a stored reply without calling the model, from any instance, even once the session ended", async () => {
      const service = instance();
      const { sessionId } = await service.create({ userId: "u", templateId: "tester" });
      const first = await service.send({ sessionId, message: "hello", idempotencyKey: "k" });
      await service.send({ sessionId, message: "later" });
      store.resetCounts();

      const again = await instance().send({ sessionId, message: "hello", idempotencyKey: "k" });
      expect(first.replayed).toBe(false);
      expect(again).toEqual({ ...first, replayed: true });
      expect(store.reads.exchange).toBe(1);
      expect(fake.requests).toHaveLength(2);

      await service.end(sessionId);
      await expect(service.send({ sessionId, message: "hello", idempotencyKey: "k" })).resolves.toEqual({ ...first, replayed: true });
      await expect(service.send({ sessionId, message: "hello", idempotencyKey: "other" })).rejects.toMatchObject({ name: "SessionClosedError", status: "ended" });
      expect(await store.readSessionState(sessionId)).toMatchObject({ message_count: 2 });
    });

    it("refuses a key reused with another message, calling no model", async () => {
      const service = instance();
      const { sessionId } = await service.create({ userId: "u", templateId: "tester" });
      await service.send({ sessionId, message: "hello", idempotencyKey: "k" });
      await expect(service.send({ sessionId, message: "something else", idempotencyKey: "k" })).rejects.toBeInstanceOf(IdempotencyKeyReusedError);
      expect(fake.requests).toHaveLength(1);
    });

    it("calls the model once when repeats arrive while the first is still running", async () => {
      const { sessionId } = await instance().create({ userId: "u", templateId: "tester" });
      fake.enqueue({ kind: "reply", text: "slow answer", delayMs: 100 });
      const replies = await Promise.all([instance(), instance(), instance()].map((service) => service.send({ sessionId, message: "hi", idempotencyKey: "k" })));
      expect(fake.requests).toHaveLength(1);
      expect(replies.map((reply) => reply.text)).toEqual(["slow answer", "slow answer", "slow answer"]);
      expect(replies.filter((reply) => !reply.replayed)).toHaveLength(1);
      expect(await store.readSessionState(sessionId)).toMatchObject({ message_count: 1 });
    });

    it("gives the key up when the model fails, so a retry calls the model again", async () => {
      const service = instance();
      const { sessionId } = await service.create({ userId: "u", templateId: "tester" });
      fake.enqueue({ kind: "status", status: 500 });
      await expect(service.send({ sessionId, message: "hi", idempotencyKey: "k" })).rejects.toBeInstanceOf(ModelError);
      expect((await store.readSessionState(sessionId))?.requests).toBeUndefined();

      await expect(service.send({ sessionId, message: "hi", idempotencyKey: "k" })).resolves.toMatchObject({ exchangeCount: 1, replayed: false });
      expect(fake.requests).toHaveLength(2);
      // Done, the key left the state for its record; a third try replays it.
      expect((await store.readSessionState(sessionId))?.requests).toBeUndefined();
      await expect(service.send({ sessionId, message: "hi", idempotencyKey: "k" })).resolves.toMatchObject({ exchangeCount: 1, replayed: true });
      expect(fake.requests).toHaveLength(2);
    });

    it("answers IdempotencyInProgressError when another request holds the key past the wait", async () => {
      const service = instance({ keyWaitMs: 50 });
      const { sessionId } = await service.create({ userId: "u", templateId: "tester" });
      const claim = { hash: keyHash("sendMessage", "k"), fingerprint: fingerprint("hi"), owner: "someone else", remember: true };
      await store.updateState(sessionId, claimRequest(claim, Date.now(), 60_000, POLICY));

      const waiting = service.send({ sessionId, message: "hi", idempotencyKey: "k" });
      await expect(waiting).rejects.toBeInstanceOf(IdempotencyInProgressError);
      await expect(waiting).rejects.toMatchObject({ retryAfterSeconds: 60 });
      expect(fake.requests).toHaveLength(0);
    });
  });

  describe("end", () => {
    it("ends an active session and returns its meta and final state", async () => {
      let now = 10_000;
      const service = instance({ clock: () => now });
      const { sessionId, meta } = await service.create({ userId: "u", templateId: "tester" });
      now = 20_000;
      await expect(service.end(sessionId)).resolves.toEqual({
        sessionId,
        meta,
        state: { status: "ended", message_count: 0, last_activity: 20_000, ended_at: 20_000, created_at: 10_000 },
      });
    });

    it("refuses to end a session twice, and a send after it", async () => {
      const service = instance();
      const { sessionId } = await service.create({ userId: "u", templateId: "tester" });
      await service.end(sessionId);
      await expect(service.end(sessionId)).rejects.toMatchObject({ name: "SessionClosedError", status: "ended" });
      await expect(service.send({ sessionId, message: "hi" })).rejects.toMatchObject({ name: "SessionClosedError", status: "ended" });
      expect(fake.requests).toHaveLength(0);
    });

    it("ends a session another instance created, reading its meta", async () => {
      const { sessionId, meta } = await instance().create({ userId: "u", templateId: "tester" });
      await expect(instance().end(sessionId)).resolves.toMatchObject({ meta, state: { status: "ended" } });
    });

    it("refuses an unknown session with SessionNotFoundError", async () => {
      await expect(instance().end(randomUUID())).rejects.toBeInstanceOf(SessionNotFoundError);
    });
  });
});

/**
 * Idempotent sends in races, replayed step by step on the embedded store: a held release stands
 * for one still on the wire, a throwing admission for a database fault.
 */
describe("SessionService idempotent send, step by step", () => {
  class SteppedStore extends MemoryStore {
    /** While set, releases (updateState outside a claim) wait for it. */
    releases: Promise<void> | undefined;
    failUsage = false;
    private claiming = false;

    override async updateStateReadingKey<O>(sessionId: string, rule: StateRule<O>, keyHash: string | undefined): Promise<RuledWithKey<O>> {
      this.claiming = true;
      try {
        return await super.updateStateReadingKey(sessionId, rule, keyHash);
      } finally {
        this.claiming = false;
      }
    }

    override async updateState<O>(sessionId: string, rule: StateRule<O>): Promise<Ruled<O>> {
      if (this.releases && !this.claiming) await this.releases;
      return super.updateState(sessionId, rule);
    }

    override async updateUsage<O>(userKey: string, rule: UsageRule<O>): Promise<O> {
      if (this.failUsage) throw new StoreUnavailableError("update usage");
      return super.updateUsage(userKey, rule);
    }
  }

  function service(store: MemoryStore, model: ChatModel, clock: () => number) {
    return new SessionService({
      store,
      log: silentLog,
      model,
      clock,
      newSessionId: randomUUID,
      defaultContextWindow: 6,
      policy: POLICY,
      usage: { messagesPerMinute: 1e6, maxActiveSessions: 1e6, idleTtlMs: POLICY.idleTtlMs, tokensPerDay: 0 },
      keyLeaseMs: 1_000,
      keyWaitMs: 0,
      livePartials: true,
      keyPollMs: 5,
      cache: { templateTtlMs: 60_000, sessionTtlMs: 600_000, maxSessions: 100 },
    });
  }

  const answer = (text: string): Completion => ({ text, truncated: false, model: "m" });

  it("one Idempotency-Key, one exchange: a request that outlived its lease cannot commit on a repeat's passing claim", async () => {
    const store = new SteppedStore();
    await store.seedTemplates({ tester: TEMPLATE });
    let now = 1_000_000;
    const slow: ((completion: Completion) => void)[] = [];
    let first = true;
    const model: ChatModel = {
      name: "stepped",
      complete: () => {
        if (!first) return Promise.resolve(answer("answer-fast"));
        first = false;
        return new Promise((resolve) => slow.push(resolve));
      },
    };
    const sessions = service(store, model, () => now);
    const { sessionId } = await sessions.create({ userId: "u", templateId: "tester" });
    const send = () => sessions.send({ sessionId, message: "hi", idempotencyKey: "key-1" });

    const stalled = send();
    while (slow.length === 0) await new Promise((wake) => setImmediate(wake));
    now += 2_000; // the first request outlives its lease
    await expect(send()).resolves.toMatchObject({ replayed: false, exchangeCount: 1 }); // a repeat takes over and commits
    let releaseLanded!: () => void;
    store.releases = new Promise((land) => { releaseLanded = land; });
    // Another repeat claims the key, finds its record, replays; its release is still on the wire.
    await expect(send()).resolves.toMatchObject({ replayed: true, exchangeCount: 1, text: "answer-fast" });

    slow[0]?.(answer("answer-slow")); // the first request's reply comes back now
    await expect(stalled).rejects.toBeInstanceOf(IdempotencyInProgressError);
    releaseLanded();
    await expect(store.readSessionState(sessionId)).resolves.toMatchObject({ message_count: 1 });
    expect((await recentMessages(store, sessionId, 10)).map((message) => message.content)).toEqual(["hi", "answer-fast"]);
    await expect(send()).resolves.toMatchObject({ replayed: true, text: "answer-fast" });
  });

  it("a claim whose parallel usage admission failed is given back: a keyed retry runs at once", async () => {
    const store = new SteppedStore();
    await store.seedTemplates({ tester: TEMPLATE });
    const sessions = service(store, { name: "instant", complete: () => Promise.resolve(answer("ok")) }, Date.now);
    const { sessionId } = await sessions.create({ userId: "u", templateId: "tester" });
    store.failUsage = true;
    await expect(sessions.send({ sessionId, message: "hi", idempotencyKey: "k" })).rejects.toBeInstanceOf(StoreUnavailableError);
    expect((await store.readSessionState(sessionId))?.requests).toBeUndefined();
    store.failUsage = false;
    await expect(sessions.send({ sessionId, message: "hi", idempotencyKey: "k" })).resolves.toMatchObject({ replayed: false, exchangeCount: 1 });
  });
});
