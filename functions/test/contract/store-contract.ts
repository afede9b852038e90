import type { SessionStore } from "../../src/store/session-store";
import { exchange, newSession, TEMPLATE, whileActive } from "../support/fixtures";

/**
 * Several handles on one database. For the embedded store they are the store itself; for
 * the Realtime Database each is a separate firebase-admin app, as separate function
 * instances would be, with caches of their own.
 */
export interface StoreHarness {
  instance(): SessionStore;
  close(): Promise<void>;
}

/** One contract, run against every store adapter. */
export function storeContract(makeHarness: () => Promise<StoreHarness>): void {
  let harness: StoreHarness;
  let store: SessionStore;

  beforeAll(async () => {
    harness = await makeHarness();
    store = harness.instance();
  });
  afterAll(async () => harness.close());

  describe("templates", () => {
    it("seeds absent templates and leaves stored ones untouched", async () => {
      const id = `tpl-${Date.now()}`;
      expect(await store.seedTemplates({ [id]: TEMPLATE })).toEqual([id]);
      expect(await store.seedTemplates({ [id]: { ...TEMPLATE, name: "Changed" } })).toEqual([]);
      expect(await store.readTemplate(id)).toEqual(TEMPLATE);
    });

    it("reads an unknown template as null", async () => {
      expect(await store.readTemplate("no-such-template")).toBeNull();
    });
  });

  describe("sessions", () => {
    it("stores and reads back what creation wrote", async () => {
      const session = newSession();
      await store.createSession(session);
      expect(await store.readSessionMeta(session.id)).toEqual(session.meta);
      expect(await store.readSessionState(session.id)).toEqual(session.state);
      expect(await store.readRecentMessages(session.id, 10)).toEqual([]);
    });

    it("answers unknown ids with null, an empty history and not_found", async () => {
      const id = newSession().id;
      expect(await store.readSessionMeta(id)).toBeNull();
      expect(await store.readSessionState(id)).toBeNull();
      expect(await store.readRecentMessages(id, 10)).toEqual([]);
      expect(await store.appendExchange(id, exchange("x"), 1, whileActive)).toEqual({ kind: "not_found" });
      expect(await store.transitionState(id, whileActive, (state) => state)).toEqual({ kind: "not_found" });
      // Acting on an unknown id must not create it.
      expect(await store.readSessionState(id)).toBeNull();
    });

    it("appends exchanges in order and counts them", async () => {
      const session = newSession();
      await store.createSession(session);
      const t0 = session.state.last_activity;
      const first = await store.appendExchange(session.id, exchange("1", 10), t0 + 11, whileActive);
      const second = await store.appendExchange(session.id, exchange("2", 20), t0 + 21, whileActive);
      expect(first).toMatchObject({ kind: "appended", seq: 1, state: { message_count: 1, last_activity: t0 + 11 } });
      expect(second).toMatchObject({ kind: "appended", seq: 2, state: { message_count: 2, last_activity: t0 + 21 } });
      expect(await store.readSessionState(session.id)).toEqual({ status: "active", message_count: 2, last_activity: t0 + 21 });
      // A writer whose clock lags never moves last_activity back.
      await store.appendExchange(session.id, exchange("3", 30), t0 + 5, whileActive);
      expect((await store.readSessionState(session.id))?.last_activity).toBe(t0 + 21);
      expect(await store.readRecentMessages(session.id, 10)).toEqual([
        exchange("1", 10).user,
        exchange("1", 10).assistant,
        exchange("2", 20).user,
        exchange("2", 20).assistant,
        exchange("3", 30).user,
        exchange("3", 30).assistant,
      ]);
    });

    it("reads only the last messages of a long history, oldest first", async () => {
      const session = newSession();
      await store.createSession(session);
      for (let i = 1; i <= 120; i += 1) await store.appendExchange(session.id, exchange(String(i), i), i, whileActive);
      const recent = await store.readRecentMessages(session.id, 5);
      expect(recent.map((message) => message.content)).toEqual(["answer 118", "question 119", "answer 119", "question 120", "answer 120"]);
      expect(await store.readRecentMessages(session.id, 0)).toEqual([]);
      expect((await store.readSessionState(session.id))?.message_count).toBe(120);
    });

    it("refuses changes the guard refuses and stores nothing", async () => {
      const session = newSession();
      await store.createSession(session);
      const refused = await store.appendExchange(session.id, exchange("x"), 5, () => "no");
      expect(refused).toEqual({ kind: "refused", refusal: "no", state: session.state });
      expect(await store.readRecentMessages(session.id, 10)).toEqual([]);
      expect(await store.readSessionState(session.id)).toEqual(session.state);
    });

    it("ends a session once, then refuses messages and a second end", async () => {
      const session = newSession();
      await store.createSession(session);
      await store.appendExchange(session.id, exchange("1"), 2, whileActive);
      const ended = await store.transitionState(session.id, whileActive, (state) => ({ ...state, status: "ended", ended_at: 9 }));
      expect(ended).toEqual({ kind: "changed", state: { status: "ended", message_count: 1, last_activity: session.state.last_activity, ended_at: 9 } });
      expect(await store.transitionState(session.id, whileActive, (state) => state)).toMatchObject({ kind: "refused", refusal: "ended" });
      expect(await store.appendExchange(session.id, exchange("2"), 10, whileActive)).toMatchObject({ kind: "refused", refusal: "ended" });
      expect(await store.readRecentMessages(session.id, 10)).toHaveLength(2);
      // Ended sessions keep their history.
      expect(await store.readSessionMeta(session.id)).toEqual(session.meta);
    });
  });

  describe("several instances", () => {
    it("lets a cold instance act on a session another instance wrote", async () => {
      const session = newSession();
      await store.createSession(session);
      await store.appendExchange(session.id, exchange("1"), 2, whileActive);
      const cold = harness.instance();
      expect(await cold.readSessionMeta(session.id)).toEqual(session.meta);
      expect(await cold.appendExchange(session.id, exchange("2"), 3, whileActive)).toMatchObject({ kind: "appended", seq: 2 });
      expect(await harness.instance().transitionState(session.id, whileActive, (state) => ({ ...state, status: "ended", ended_at: 4 }))).toMatchObject({
        kind: "changed",
      });
      // The first instance has seen the session active; it must still be refused now.
      expect(await store.appendExchange(session.id, exchange("3"), 5, whileActive)).toMatchObject({ kind: "refused", refusal: "ended" });
      expect(await cold.appendExchange(session.id, exchange("3"), 5, whileActive)).toMatchObject({ kind: "refused", refusal: "ended" });
      expect((await harness.instance().readRecentMessages(session.id, 10)).map((message) => message.content)).toEqual([
        "question 1",
        "answer 1",
        "question 2",
        "answer 2",
      ]);
    });

    it("loses no exchange when instances append concurrently", async () => {
      const session = newSession();
      await store.createSession(session);
      const instances = [store, harness.instance(), harness.instance()];
      const perInstance = 8;
      const results = await Promise.all(
        instances.flatMap((instance, i) =>
          Array.from({ length: perInstance }, (_, j) => instance.appendExchange(session.id, exchange(`${i}-${j}`), 100 + j, whileActive)),
        ),
      );
      const total = instances.length * perInstance;
      const seqs = results.map((result) => (result.kind === "appended" ? result.seq : -1)).sort((a, b) => a - b);
      expect(seqs).toEqual(Array.from({ length: total }, (_, i) => i + 1));

      const reader = harness.instance();
      expect((await reader.readSessionState(session.id))?.message_count).toBe(total);
      const history = await reader.readRecentMessages(session.id, 2 * total + 10);
      expect(history).toHaveLength(2 * total);
      for (let i = 0; i < history.length; i += 2) {
        // Each exchange is stored whole: a question directly followed by its own answer.
        expect(history[i]?.role).toBe("user");
        expect(history[i + 1]?.content).toBe(history[i]?.content.replace("question", "answer"));
      }
      expect(new Set(history.map((message) => message.content)).size).toBe(2 * total);
    });

    it("ends a session exactly once when instances race to end it", async () => {
      const session = newSession();
      await store.createSession(session);
      const results = await Promise.all(
        [store, harness.instance(), harness.instance()].map((instance, i) =>
          instance.transitionState(session.id, whileActive, (state) => ({ ...state, status: "ended", ended_at: 100 + i })),
        ),
      );
      expect(results.filter((result) => result.kind === "changed")).toHaveLength(1);
      expect(results.filter((result) => result.kind === "refused")).toHaveLength(2);
    });

    it("keeps count and history equal when an end races with messages", async () => {
      const session = newSession();
      await store.createSession(session);
      const other = harness.instance();
      const appends = Array.from({ length: 10 }, (_, i) => (i % 2 ? store : other).appendExchange(session.id, exchange(String(i)), i, whileActive));
      const end = harness.instance().transitionState(session.id, whileActive, (state) => ({ ...state, status: "ended", ended_at: 50 }));
      const results = await Promise.all([...appends, end]);
      const appended = results.filter((result) => result.kind === "appended").length;
      const state = await harness.instance().readSessionState(session.id);
      expect(state).toMatchObject({ status: "ended", message_count: appended });
      expect(await harness.instance().readRecentMessages(session.id, 100)).toHaveLength(2 * appended);
    });
  });
}
