import { randomUUID } from "node:crypto";
import { userKey } from "../../src/session/ledger/limits";
import { ApiUser, connectionOf, HOSTING_ROUTES } from "../support/connection-api";
import { conversationOwnerKey, conversationPath } from "../../src/store/rtdb/paths";
import type { SessionStore } from "../../src/store/session-store";
import { FaultyStore } from "../support/faulty-store";
import { createSession, describeEachStore, ROUTES, startHarness, twoInstances, type Answer, type Harness, type Instance, type StoreKind } from "../support/http-harness";
import { copyOf, describeWithRtdb, holdingUpdates, losingUpdates, rtdbSkipReason, valueWhere } from "../support/rtdb";
import { recentMessages } from "../support/recent-messages";
import { isSummary, summaryIn } from "../support/summary-in";
import type { Template } from "../../src/store/records";
import type { RtdbStore } from "../../src/store/rtdb/rtdb-store";
import { describeUnless } from "../support/visible-skip";
import { StoreUnavailableError } from "../../src/store/errors";
import { WholeStore } from "../support/whole-store";

const MINUTE = 60_000;
/** Past every erasure's second pass (a claim's lease and a database deadline) and any take-over. */
const LATER = 10 * MINUTE;

/** Words only this test writes, to look for anywhere in the store afterwards. */
const secret = (what: string) => `${what}${randomUUID().replaceAll("-", "")}`;

describeEachStore("erasing a user's data", (kind) => {
  let harness: Harness;
  /** A server whose erasure requests stop at once: the first pass is left to the sweep. */
  let stopping: Harness;
  let now = Date.parse("2026-04-01T09:00:00Z");
  let whole: WholeStore;

  beforeAll(async () => {
    const env = { USER_MAX_ACTIVE_SESSIONS: "20", USER_MESSAGES_PER_MINUTE: "1000", CONNECTION_REQUESTS_PER_HOUR: "100", CONNECTION_MESSAGES_PER_MINUTE: "1000" };
    harness = await startHarness({ store: kind, clock: () => now, env });
    stopping = await startHarness({ store: kind, clock: () => now, env, userDataLimits: { eraseRequestMs: -1 } });
    whole = WholeStore.of(harness);
  });
  afterAll(async () => {
    await whole.close();
    await harness.close();
    await stopping.close();
  });
  beforeEach(() => {
    harness.fake.reset();
    stopping.fake.reset();
  });

  /** A user with sessions holding `words` in their messages, a keyed message and a keyed create, and a summary. */
  async function userHolding(on: Harness, words: readonly string[]): Promise<{ userId: string; ids: string[] }> {
    const userId = secret("user");
    const ids: string[] = [];
    const keyed = await on.api.call("POST", ROUTES.create, { user_id: userId, template_id: "friendly-assistant" }, { "Idempotency-Key": secret("create") });
    expect(keyed.status).toBe(201);
    ids.push(String(keyed.body.session_id));
    ids.push(await createSession(on.api, "socratic-tutor", userId));
    for (const [i, word] of words.entries()) {
      now += 1_000;
      const sent = await on.api.call("POST", ROUTES.message(ids[i % 2]!), { message: `Tell me about ${word}` }, i === 0 ? { "Idempotency-Key": secret("message") } : {});
      expect(sent.status).toBe(200);
    }
    expect(await on.api.store.writeSummary(ids[0]!, { text: `They asked about ${words[0] ?? ""}`, through: 2, updated_at: now })).toBe(true);
    expect((await on.api.call("DELETE", ROUTES.end(ids[1]!))).status).toBe(200);
    return { userId, ids };
  }

  it("erases everything holding the user's id or words, keeps their counters and others' data, and leaves nothing after the second pass", async () => {
    const words = [secret("alpha"), secret("beta"), secret("gamma")];
    const { userId, ids } = await userHolding(harness, words);
    const other = await userHolding(harness, [secret("other")]);
    const before = await harness.api.store.readUsage(userKey(userId));
    expect(before?.daily?.tokens).toBeGreaterThan(0);
    expect(await whole.holding([userId, ...words])).toEqual([userId, ...words]);

    const erased = await harness.api.call("DELETE", `${ROUTES.erase}?user_id=${userId}`);
    expect(erased.status).toBe(200);
    expect(erased.body).toMatchObject({ success: true, status: "erased", user_id: userId, sessions_erased: 2, final_pass_at: expect.any(String) as string });
    // The counters stay (an erasure never resets a limit); the sessions they counted are forgotten.
    const after = await harness.api.store.readUsage(userKey(userId));
    expect(after).toMatchObject({ tokens: before?.tokens, refilled_at: before?.refilled_at, daily: before?.daily });
    expect(after?.erasing).toBeUndefined();
    expect(Object.keys({ ...after?.sessions, ...after?.contexts }).filter((id) => ids.includes(id))).toEqual([]);

    expect((await harness.api.call("GET", `${ROUTES.list}?user_id=${userId}`)).body.sessions).toEqual([]);
    for (const id of ids) expect((await harness.api.call("GET", ROUTES.get(id))).status).toBe(404);
    expect((await harness.api.call("POST", ROUTES.message(ids[0]!), { message: "still there?" })).status).toBe(404);

    const report = await harness.api.runtime.maintain(now + LATER);
    expect(report.erasuresFinished).toBe(1);
    expect(await whole.holding([userId, ...words, ...ids])).toEqual([]);
    // Nothing of anyone else's went.
    expect((await harness.api.call("GET", ROUTES.get(other.ids[0]!))).body.session).toMatchObject({ message_count: 1 });
    expect(await whole.holding([other.userId])).toEqual([other.userId]);

    // Again, on the function URL: nothing left to erase, the same answer; and the user can start over.
    const again = await harness.api.call("DELETE", `${ROUTES.directErase}?user_id=${userId}`);
    expect(again.body).toMatchObject({ status: "erased", sessions_erased: 0 });
    expect((await harness.api.runtime.maintain(now + 2 * LATER)).erasuresFinished).toBe(1);
    expect(await whole.holding([userId])).toEqual([]);
    expect((await harness.api.call("POST", ROUTES.create, { user_id: userId, template_id: "friendly-assistant" })).status).toBe(201);
  });

  it("is recorded before anything is deleted: refuses the user's new sessions and messages until the sweep finishes what a request left", async () => {
    const words = [secret("delta"), secret("epsilon")];
    const { userId, ids } = await userHolding(stopping, words);
    stopping.fake.reset();
    const started = await stopping.api.call("DELETE", `${ROUTES.erase}?user_id=${userId}`);
    expect(started.status).toBe(202);
    expect(started.body).toMatchObject({ status: "in_progress", sessions_erased: 0 });

    const message = await stopping.api.call("POST", ROUTES.message(ids[0]!), { message: "one more" });
    expect(message.status).toBe(409);
    expect(message.body.error?.code).toBe("ERASURE_IN_PROGRESS");
    expect(message.headers.get("retry-after")).toBe("5");
    expect((await stopping.api.call("POST", ROUTES.create, { user_id: userId, template_id: "friendly-assistant" })).body.error?.code).toBe("ERASURE_IN_PROGRESS");
    expect((await stopping.api.call("GET", `${ROUTES.exportData}?user_id=${userId}`)).body.error?.code).toBe("ERASURE_IN_PROGRESS");
    expect(stopping.fake.requests).toHaveLength(0);

    // The request answered, its pass over and handed back: the sweep's next run takes it over, and the user may start again at once.
    expect((await stopping.api.runtime.maintain(now + 1_000)).erasuresFinished).toBe(0);
    for (const id of ids) expect((await stopping.api.call("GET", ROUTES.get(id))).status).toBe(404);
    expect((await stopping.api.call("POST", ROUTES.create, { user_id: userId, template_id: "friendly-assistant" })).status).toBe(201);
    expect((await stopping.api.runtime.maintain(now + LATER)).erasuresFinished).toBe(1);
    const stored = WholeStore.of(stopping);
    try {
      expect(await stored.holding([...words, ...ids])).toEqual([]);
    } finally {
      await stored.close();
    }
  });

  it("leaves no create key of the user once both passes are done, though a keyed create was refused while they were marked", async () => {
    const userId = secret("user");
    await createSession(stopping.api, "friendly-assistant", userId);
    expect((await stopping.api.call("DELETE", `${ROUTES.erase}?user_id=${userId}`)).status).toBe(202);
    now += 1_000;
    // Its key is claimed after the erasure's cutoff, before the admission refuses it.
    const refused = await stopping.api.call("POST", ROUTES.create, { user_id: userId, template_id: "friendly-assistant" }, { "Idempotency-Key": secret("create") });
    expect(refused.body.error?.code).toBe("ERASURE_IN_PROGRESS");

    // The sweep takes the first pass over, then runs the second.
    await stopping.api.runtime.maintain(now + 2 * MINUTE);
    expect((await stopping.api.runtime.maintain(now + LATER)).erasuresFinished).toBe(1);
    const stored = WholeStore.of(stopping);
    try {
      expect(await stored.holdingBesideUsage([userId, userKey(userId)])).toEqual([]);
    } finally {
      await stored.close();
    }
  });

  it("refuses a message racing the erasure, and its late writes do not bring anything back", async () => {
    const { userId, ids } = await userHolding(harness, [secret("zeta")]);
    const late = secret("late");
    const [id] = ids;
    // Streamed where the store has live partials (the model then streams), else answered late whole.
    harness.fake.enqueue(
      kind !== "memory" ? { kind: "stream", chunks: [late, " and", " more", " words", " still", " coming"], chunkDelayMs: 150 } : { kind: "reply", text: `${late} and more`, delayMs: 600 },
    );
    const racing = harness.api.call("POST", ROUTES.message(id!), { message: `Racing ${late}` });
    await harness.fake.awaitRequests(1);
    const erased = await harness.api.call("DELETE", `${ROUTES.erase}?user_id=${userId}`);
    expect(erased.status).toBe(200);
    const answer = await racing;
    // Refused: its session was gone by its commit, so nothing of it was stored.
    expect({ status: answer.status, code: answer.body.error?.code }).toEqual({ status: 404, code: "SESSION_NOT_FOUND" });
    // What a request that outlived the erasure would write with nothing awaiting it (its live
    // partial, the copy of a commit that landed just before), written late as a dead instance's would.
    const [home, sessions] = [whole.raw, whole.rawOf(id!)];
    if (home && sessions) {
      const owner = userId;
      // The session's nodes on its instance, its index entry on the first (docs/sharding.md): one database unless sharded.
      await sessions.ref().update({
        [`userSessions/${id!}/partials/dead-request`]: { text: `${late} from a dead instance`, seq_after: 1, updated_at: now },
        [`userSessions/${id!}/messages/m000000009`]: { role: "user", content: late, timestamp: now },
      });
      await home.ref().update({ [`userConversations/${owner}/${id!}/title`]: late });
      expect(await whole.holding([late, userId])).toEqual([late, userId]);
    }
    expect((await harness.api.runtime.maintain(now + LATER)).erasuresFinished).toBe(1);
    expect(await whole.holding([late, userId, ...ids])).toEqual([]);
  });

  /**
   * Connections between users (issue 17) hold a user's id and words too: the connections they are
   * part of (both sides' messages), the pairs' records, both users' lists, their devices and the
   * records of which user holds a token. Erasing the user erases all of it; the other users keep
   * everything else, and a block one of them set on the erased user.
   */
  describe("connections and devices", () => {
    const person = (on: Harness, name: string) => new ApiUser(secret(name), on.api, HOSTING_ROUTES);

    /** A user connected with a counterpart (words both ways), asking a third, blocked by a fourth, with a device; the counterpart with a friend of their own. */
    async function socialUser(on: Harness) {
      const [user, counterpart, friend, asked, blocker] = ["user", "counterpart", "friend", "asked", "blocker"].map((name) => person(on, name)) as [ApiUser, ApiUser, ApiUser, ApiUser, ApiUser];
      const words = { mine: secret("mine"), theirs: secret("theirs"), kept: secret("kept"), token: secret("token") };
      const shared = await user.connectWith(counterpart);
      now += 1_000;
      expect((await user.send(shared, `I said ${words.mine}`)).status).toBe(201);
      expect((await counterpart.send(shared, `They said ${words.theirs}`)).status).toBe(201);
      const pending = String(connectionOf(await user.ask(asked.id)).connection_id);
      const blocked = await blocker.connectWith(user);
      expect((await blocker.block(blocked)).status).toBe(200);
      expect((await user.register(words.token)).status).toBe(200);
      const counterpartToken = secret("counterpart-token");
      expect((await counterpart.register(counterpartToken)).status).toBe(200);
      const kept = await counterpart.connectWith(friend);
      expect((await friend.send(kept, `Between friends ${words.kept}`)).status).toBe(201);
      return { user, counterpart, friend, asked, blocker, words, ids: { shared, pending, blocked, kept }, counterpartToken };
    }

    it("erases every connection of the user with both sides' messages, the pairs, their devices; keeps the others' data and their block", async () => {
      const { user, counterpart, friend, asked, blocker, words, ids, counterpartToken } = await socialUser(harness);
      expect(await whole.holding([user.id, words.mine, words.theirs, words.token])).toEqual([user.id, words.mine, words.theirs, words.token]);

      const erased = await harness.api.call("DELETE", `${ROUTES.erase}?user_id=${user.id}`);
      expect(erased.status).toBe(200);
      // The erasure's own record names the user until its second pass.
      expect(await whole.holding([words.mine, words.theirs, words.token])).toEqual([]);
      expect((await harness.api.runtime.maintain(now + LATER)).erasuresFinished).toBe(1);
      expect(await whole.holding([user.id, words.mine, words.theirs, words.token, ids.shared, ids.pending, ids.blocked])).toEqual([]);
      // Nothing is left under the user's key either, but their usage record (their limits).
      expect(await whole.holdingBesideUsage([userKey(user.id)])).toEqual([]);

      // The others: the connections with the user are gone from their lists, and nothing else.
      for (const other of [counterpart, asked, blocker]) {
        expect((await other.list()).body.connections).toEqual(other === counterpart ? [expect.objectContaining({ connection_id: ids.kept })] : []);
      }
      expect((await counterpart.get(ids.shared)).body.error?.code).toBe("CONNECTION_NOT_FOUND");
      expect((await friend.read(ids.kept)).body.messages).toEqual([expect.objectContaining({ content: `Between friends ${words.kept}` })]);
      expect(await harness.api.connectionStore.readDevices(userKey(counterpart.id))).toMatchObject({ tokens: expect.any(Object) as object });
      expect(await whole.holding([counterpart.id, friend.id, words.kept, counterpartToken])).toEqual([counterpart.id, friend.id, words.kept, counterpartToken]);

      // Erasing is no way around a block: the blocker's stays, without the user's id.
      expect((await user.ask(blocker.id)).body.error?.code).toBe("CONNECTION_BLOCKED");
      // With anyone else, the user starts over.
      const again = await user.ask(counterpart.id);
      expect(again.status).toBe(201);
      expect(connectionOf(again).connection_id).not.toBe(ids.shared);
    });

    it("refuses requests from and to the user while the erasure runs; a message racing it, and its late copy, are erased too", async () => {
      const { user, counterpart, friend, words, ids } = await socialUser(stopping);
      const started = await stopping.api.call("DELETE", `${ROUTES.erase}?user_id=${user.id}`);
      expect(started.status).toBe(202);
      for (const refused of [await user.ask(friend.id), await friend.ask(user.id)]) {
        expect({ status: refused.status, code: refused.body.error?.code }).toEqual({ status: 409, code: "ERASURE_IN_PROGRESS" });
      }
      // A message in a connection not erased yet is stored, then erased with it.
      const racing = secret("racing");
      expect((await counterpart.send(ids.shared, `Still there? ${racing}`)).status).toBe(201);
      // The sweep takes the first pass over.
      expect((await stopping.api.runtime.maintain(now + 2 * MINUTE)).erasuresFinished).toBe(0);
      const scan = WholeStore.of(stopping);
      try {
        expect(await scan.holding([words.mine, words.token, racing])).toEqual([]);
        expect((await counterpart.send(ids.shared, "and now?")).body.error?.code).toBe("CONNECTION_NOT_FOUND");
        // What a request that outlived the first pass would write with nothing awaiting it: its copy
        // of a message committed just before the deletion, and the connection's place in both lists.
        if (scan.raw) {
          await scan.raw.ref().update({
            [`connections/${ids.shared}/messages/m000000003`]: { sender_id: user.id, content: racing, timestamp: now },
            [`userConnections/${userKey(user.id)}/${ids.shared}`]: now,
            [`userConnections/${userKey(counterpart.id)}/${ids.shared}`]: now,
          });
          expect(await scan.holding([user.id, racing])).toEqual([user.id, racing]);
        }
        expect((await stopping.api.runtime.maintain(now + LATER)).erasuresFinished).toBe(1);
        expect(await scan.holding([user.id, words.mine, words.theirs, words.token, racing, ids.shared])).toEqual([]);
        expect(await scan.holdingBesideUsage([userKey(user.id)])).toEqual([]);
        // The counterpart's list names only what is theirs: it pages without a missing connection.
        const listed = await counterpart.list();
        expect(listed.status).toBe(200);
        expect(listed.body.connections).toEqual([expect.objectContaining({ connection_id: ids.kept })]);
      } finally {
        await scan.close();
      }
    });

    it("takes away a block kept on a user erased before, once its blocker erases their own data: the two may ask each other again", async () => {
      const [user, blocker] = [person(harness, "user"), person(harness, "blocker")];
      const blocked = await blocker.connectWith(user);
      expect((await blocker.block(blocked)).status).toBe(200);
      const erase = async (userId: string) => {
        expect((await harness.api.call("DELETE", `${ROUTES.erase}?user_id=${encodeURIComponent(userId)}`)).status).toBe(200);
        expect((await harness.api.runtime.maintain(now + LATER)).erasuresFinished).toBeGreaterThanOrEqual(1);
        now += LATER + MINUTE;
      };

      await erase(user.id);
      // The blocker keeps their data, and their block: the erased user, back, is refused.
      expect((await user.ask(blocker.id)).body.error?.code).toBe("CONNECTION_BLOCKED");

      await erase(blocker.id);
      // Their block was their data: nothing names them now, by id or by key, but their usage record.
      expect(await whole.holding([blocker.id])).toEqual([]);
      expect(await whole.holdingBesideUsage([userKey(blocker.id)])).toEqual([]);
      const asked = await blocker.ask(user.id);
      expect({ status: asked.status, code: asked.body.error?.code }).toEqual({ status: 201, code: undefined });
    });
  });
}, { sharded: true });

/**
 * One store's calls held on demand: `hold(method, when)` stops its next call of `method` whose
 * first argument passes `when` until `open()`; `reached(what)` resolves once that call came, and
 * fails saying `what` did not within 5 s.
 */
class HeldCalls {
  private pending: { readonly method: string; readonly when: (arg: unknown) => boolean; readonly reach: () => void; readonly opened: Promise<void> } | undefined;
  /** Methods whose next call fails without being sent (its instance gone before it). */
  private readonly lost = new Set<string>();

  wrap(store: SessionStore): SessionStore {
    return new Proxy(store, {
      get: (target, property, receiver) => {
        const value: unknown = Reflect.get(target, property, receiver);
        if (typeof value === "function" && typeof property === "string" && this.lost.delete(property)) {
          return () => Promise.reject(new StoreUnavailableError(`${property} (lost)`));
        }
        if (typeof value !== "function" || property !== this.pending?.method) return value;
        return async (...args: unknown[]) => {
          const pending = this.pending;
          if (pending?.method === property && pending.when(args[0])) {
            this.pending = undefined;
            pending.reach();
            await pending.opened;
          }
          return Reflect.apply(value, target, args) as unknown;
        };
      },
    });
  }

  /** The next call of `method` fails, unsent. */
  lose(method: keyof SessionStore): void {
    this.lost.add(method);
  }

  hold(method: keyof SessionStore, when: (arg: unknown) => boolean = () => true): { reached(what: string): Promise<void>; open(): void } {
    let open!: () => void;
    let reach!: () => void;
    const opened = new Promise<void>((resolve) => { open = resolve; });
    const arrived = new Promise<void>((resolve) => { reach = resolve; });
    this.pending = { method, when, reach, opened };
    return {
      open,
      async reached(what: string) {
        let timer: NodeJS.Timeout | undefined;
        const came = await Promise.race([arrived.then(() => true), new Promise<false>((resolve) => { timer = setTimeout(() => { resolve(false); }, 5_000); })]).finally(() => { clearTimeout(timer); });
        if (!came) throw new Error(`${what} did not come within 5 s`);
      },
    };
  }
}

/**
 * docs/api.md, Retries: a repeat that took a create's key over keeps it, "and later retries get the
 * session it created"; docs/conversations.md, Writes racing an erasure: the cutoff goes by a key's
 * last claim or take-over. A keyed create whose write failed (503) before the erasure keeps its key
 * for its retry; that retry, on another instance, takes the key over while the first pass runs
 * (the user marked), and is admitted once the pass has cleared the mark: its session, created after
 * the cutoff, is the user's, and so is its key, through both passes.
 */
describeEachStore("erasure: a keyed create's retry that takes its key over while the first pass runs", (kind) => {
  let harness: Harness;
  let second: Instance;
  let now = Date.parse("2026-04-01T09:00:00Z");
  /** Per instance, in start order: its faults and its held calls. */
  const faults: FaultyStore[] = [];
  const held: HeldCalls[] = [];

  beforeAll(async () => {
    faults.length = 0;
    held.length = 0;
    const wrapStore = (store: SessionStore) => {
      const faulty = new FaultyStore(store);
      const calls = new HeldCalls();
      faults.push(faulty);
      held.push(calls);
      return calls.wrap(faulty.store);
    };
    harness = await startHarness({ store: kind, clock: () => now, wrapStore });
    second = await harness.instance();
  });
  afterAll(async () => harness.close());

  it.each([
    ["before it reads the user's create keys", "readUserSessions", "the first pass's scan of the user's sessions"],
    ["between its read of the key and its delete", "deleteUnchangedCreateKey", "the first pass's delete of the key"],
  ] as const)("leaves the key to the session that retry created, taken over %s: later retries replay that session, before and after the second pass", async (_when, step, what) => {
    const userId = secret("user");
    const key = secret("create");
    const body = { user_id: userId, template_id: "friendly-assistant" };
    faults[0]!.arm("createSession", "before");
    const failed = await harness.api.call("POST", ROUTES.create, body, { "Idempotency-Key": key });
    expect({ status: failed.status, code: failed.body.error?.code }).toEqual({ status: 503, code: "DATABASE_UNAVAILABLE" });
    now += 1_000;

    // The first pass is under way (the user marked), held at `step`...
    const pass = held[0]!.hold(step, step === "readUserSessions" ? (arg) => arg === userId : () => true);
    const erasing = harness.api.call("DELETE", `${ROUTES.erase}?user_id=${userId}`);
    await pass.reached(what);
    // ...when the client's retry, on another instance, takes the key over; its admission waits.
    now += 1_000;
    const admission = held[1]!.hold("readSessionState");
    const retrying = second.call("POST", ROUTES.create, body, { "Idempotency-Key": key });
    await admission.reached("the retry's read of the key's session");
    pass.open();
    expect((await erasing).status).toBe(200);
    admission.open();
    const created = await retrying;
    expect(created.status).toBe(201);
    const sessionId = String(created.body.session_id);

    // Its answer lost, the client sends the create again: that session, replayed, not a second one.
    now += 1_000;
    const replayed = async (on: Instance) => {
      const again = await on.call("POST", ROUTES.create, body, { "Idempotency-Key": key });
      return { status: again.status, session_id: again.body.session_id, replayed: again.headers.get("idempotent-replayed") };
    };
    expect(await replayed(second)).toEqual({ status: 201, session_id: sessionId, replayed: "true" });
    const listed = (await second.call("GET", `${ROUTES.list}?user_id=${userId}`)).body.sessions as { session_id: string }[];
    expect(listed.map((session) => session.session_id)).toEqual([sessionId]);
    // The second pass leaves the session (created after the cutoff) and its key.
    expect((await harness.api.runtime.maintain(now + LATER)).erasuresFinished).toBe(1);
    now += LATER;
    expect(await replayed(harness.api)).toEqual({ status: 201, session_id: sessionId, replayed: "true" });
  });

  it("keeps the session that retry creates again under the id the first pass erased, when the failed create's write had landed: listed, read and replayed, before and after the second pass", async () => {
    const userId = secret("user");
    const key = secret("create");
    const body = { user_id: userId, template_id: "friendly-assistant" };
    // The create's write lands, its answer is lost: 503, its fate unknown.
    faults[0]!.arm("createSession", "after");
    const failed = await harness.api.call("POST", ROUTES.create, body, { "Idempotency-Key": key });
    expect({ status: failed.status, code: failed.body.error?.code }).toEqual({ status: 503, code: "DATABASE_UNAVAILABLE" });
    now += 1_000;

    // Admitted once the mark is cleared, the retry creates the session again, under the same id (the key fixes it).
    const created = await eraseWhileRetryTakesOver({ first: harness.api, second, held, tick: () => { now += 1_000; } }, userId, body, key);
    expect(created.status).toBe(201);
    const sessionId = String(created.body.session_id);
    const replayed = async (on: Instance) => {
      const again = await on.call("POST", ROUTES.create, body, { "Idempotency-Key": key });
      return { status: again.status, session_id: again.body.session_id, replayed: again.headers.get("idempotent-replayed") };
    };
    const listed = async (on: Instance) => ((await on.call("GET", `${ROUTES.list}?user_id=${userId}`)).body.sessions as { session_id: string }[]).map((session) => session.session_id);
    now += 1_000;
    expect(await replayed(second)).toEqual({ status: 201, session_id: sessionId, replayed: "true" });
    const listedBefore = await listed(second);

    // The second pass deletes the recorded ids again, but not that session (created after the cutoff), nor its key.
    expect((await harness.api.runtime.maintain(now + LATER)).erasuresFinished).toBe(1);
    now += LATER;
    const read = await harness.api.call("GET", ROUTES.get(sessionId));
    expect({ listedBefore, read: read.status, listed: await listed(harness.api), again: await replayed(harness.api) }).toEqual({
      listedBefore: [sessionId],
      read: 200,
      listed: [sessionId],
      again: { status: 201, session_id: sessionId, replayed: "true" },
    });
  });
}, { sharded: true });

/**
 * Erases `userId`'s data through `on.first` while a retry of the keyed create (`body`, `key`) on
 * `on.second` takes its key over: the first pass, having deleted the user's session (its id in the
 * erasure record), is held at its delete of the key; the retry's admission waits at its read of the
 * key's session until the erasure answered (200, one session erased). The retry's answer.
 */
async function eraseWhileRetryTakesOver(
  on: { readonly first: Instance; readonly second: Instance; readonly held: readonly HeldCalls[]; readonly tick: () => void },
  userId: string,
  body: Record<string, string>,
  key: string,
): Promise<Answer> {
  const pass = on.held[0]!.hold("deleteUnchangedCreateKey");
  const erasing = on.first.call("DELETE", `${ROUTES.erase}?user_id=${userId}`);
  await pass.reached("the first pass's delete of the key");
  on.tick();
  const admission = on.held[1]!.hold("readSessionState");
  const retrying = on.second.call("POST", ROUTES.create, body, { "Idempotency-Key": key });
  await admission.reached("the retry's read of the key's session");
  pass.open();
  const erased = await erasing;
  expect({ status: erased.status, sessions: erased.body.sessions_erased }).toEqual({ status: 200, sessions: 1 });
  admission.open();
  return retrying;
}

/** A keyed create of a new user's session on `template`, through `api`: what eraseWhileRetryTakesOver needs to create it again. */
async function keyedSession(api: Instance, template = "friendly-assistant"): Promise<KeyedSession> {
  const userId = secret("user");
  const key = secret("create");
  const body = { user_id: userId, template_id: template };
  const first = await api.call("POST", ROUTES.create, body, { "Idempotency-Key": key });
  expect(first.status).toBe(201);
  return { sessionId: String(first.body.session_id), userId, key, body };
}

/**
 * A user's session served on `harness.api` (one message, `words`), then erased through it while a
 * keyed create's retry on `second` takes its key over, and created again by that retry under its
 * id (the key fixes it), as in "keeps the session that retry creates again under the id the first
 * pass erased" above, the create's first write having landed. `held`: each instance's held calls,
 * in start order; `tick` moves their clock on; `served` runs once the message is answered.
 */
async function servedThenCreatedAgain(
  harness: Harness,
  second: Instance,
  held: readonly HeldCalls[],
  tick: () => void,
  served: () => Promise<void> = async () => undefined,
): Promise<{ sessionId: string; words: string; created: Answer; key: string; body: Record<string, string> }> {
  const a = harness.api;
  const { sessionId, userId, key, body } = await keyedSession(a);
  const words = secret("erased-words-");
  tick();
  // The first instance serves the session: it keeps its fields and its history (as of 1 exchange) warm.
  expect((await a.call("POST", ROUTES.message(sessionId), { message: words })).status).toBe(200);
  await served();
  tick();
  const created = await eraseWhileRetryTakesOver({ first: a, second, held, tick }, userId, body, key);
  // The same id, a new session.
  expect({ status: created.status, id: created.body.session_id }).toEqual({ status: 201, id: sessionId });
  expect(await second.store.readSessionState(sessionId)).toMatchObject({ message_count: 0, status: "active" });
  tick();
  return { sessionId, words, created, key, body };
}

/** A keyed create's session, with what its retry sends again. */
type KeyedSession = { readonly sessionId: string; readonly userId: string; readonly key: string; readonly body: Record<string, string> };

/** Erases the user on `pair`'s first instance while the key's retry on its second creates the session again (eraseWhileRetryTakesOver): the same id. */
async function createdAgainOn(pair: ReturnType<typeof heldPair>, session: KeyedSession): Promise<void> {
  const created = await eraseWhileRetryTakesOver({ first: pair.harness.api, second: pair.second, held: pair.held, tick: pair.tick }, session.userId, session.body, session.key);
  expect({ status: created.status, id: created.body.session_id }).toEqual({ status: 201, id: session.sessionId });
  pair.tick();
}

/**
 * Two instances of a harness on `kind` whose store calls can be held (one HeldCalls per instance,
 * in order), on a clock that `tick` moves a second on: started before the describe's tests.
 */
function heldPair(kind: StoreKind): { harness: Harness; second: Instance; readonly held: HeldCalls[]; readonly tick: () => void; readonly now: () => number } {
  let now = Date.parse("2026-04-01T09:00:00Z");
  const pair = { harness: undefined as unknown as Harness, second: undefined as unknown as Instance, held: [] as HeldCalls[], tick: () => { now += 1_000; }, now: () => now };
  beforeAll(async () => {
    pair.held.length = 0;
    const wrapStore = (store: SessionStore) => {
      const calls = new HeldCalls();
      pair.held.push(calls);
      return calls.wrap(store);
    };
    pair.harness = await startHarness({ store: kind, clock: () => now, wrapStore, env: { USER_MESSAGES_PER_MINUTE: "1000" } });
    pair.second = await pair.harness.instance();
  });
  afterAll(async () => pair.harness.close());
  return pair;
}

/**
 * docs/correctness.md: an instance's warm cache "costs a read, never a wrong answer". An instance
 * that served a session keeps its fields and its history warm; the session erased, then created
 * again under its id on another instance, what it kept is the erased session's, though the new
 * one reaches the same exchange count: it answers from the database's, as a cold instance would.
 */
describeEachStore("erasure: a session another instance holds warm, created again under its id by a keyed create's retry", (kind) => {
  const pair = heldPair(kind);

  it("sends the model the new session's history from the instance that held the erased one warm, never the erased words", async () => {
    const { sessionId, words } = await servedThenCreatedAgain(pair.harness, pair.second, pair.held, pair.tick);
    // The new session's exchange 1, on the second instance: 1 exchange stored, as the first instance's history was.
    expect((await pair.second.call("POST", ROUTES.message(sessionId), { message: "new first" })).body).toMatchObject({ success: true, message_count: 1 });
    pair.tick();
    pair.harness.fake.reset();
    const answer = await pair.harness.api.call("POST", ROUTES.message(sessionId), { message: "new second" });
    expect(answer.body).toMatchObject({ success: true, message_count: 2 });
    const sent = pair.harness.fake.requests[0]?.body.messages.slice(1).map((message) => message.content) ?? [];
    expect(sent).toEqual(["new first", expect.stringMatching(/to: new first$/), "new second"]);
    expect(sent.filter((content) => content.includes(words))).toEqual([]);
  });

  it("answers a replay of the create and an end, on the instance that held the erased session warm, with the new session's fields", async () => {
    const { sessionId, created, key, body } = await servedThenCreatedAgain(pair.harness, pair.second, pair.held, pair.tick);
    // Created after the erased one: its own creation time, as the retry answered it.
    expect(created.body.created_at).toBe(new Date(pair.now() - 1_000).toISOString());
    const replayed = await pair.harness.api.call("POST", ROUTES.create, body, { "Idempotency-Key": key });
    const ended = await pair.harness.api.call("DELETE", ROUTES.end(sessionId));
    expect({
      replayed: [replayed.status, replayed.headers.get("idempotent-replayed"), replayed.body.session_id, replayed.body.created_at],
      ended: [ended.status, ended.body.created_at],
    }).toEqual({ replayed: [201, "true", sessionId, created.body.created_at], ended: [200, created.body.created_at] });
  });
}, { sharded: true });

const SUMMARISED_ID = "summarised-erasure";
const SUMMARISED: Template = { name: "Summarised", personalityPrompt: "You remember the gist.", context_window: 2, summary: true };

/**
 * docs/conversations.md, Writes racing an erasure: "Nothing of the user's outlives the erasure but
 * their usage record". A message whose model call still runs while its session is erased and
 * created again under its id by a keyed create's retry was claimed on the erased session: neither
 * its exchange nor the rolling summary made beside it may land on the new one.
 */
describeEachStore("erasure: a message still running while its session is erased and created again under its id by a keyed create's retry", (kind) => {
  const pair = heldPair(kind);
  beforeAll(async () => pair.harness.api.store.seedTemplates({ [SUMMARISED_ID]: SUMMARISED }));

  /** Erases the user's data and creates the session again (the same id) while a message runs. */
  async function createdAgain(session: KeyedSession): Promise<void> {
    pair.tick();
    await createdAgainOn(pair, session);
  }

  it("stores nothing of it in the new session: its reply, come after, is answered 404 SESSION_NOT_FOUND", async () => {
    const { harness } = pair;
    const session = await keyedSession(pair.harness.api);
    const words = secret("erased-words-");
    pair.tick();
    harness.fake.reset();
    const release = harness.fake.holdAnswers();
    const sending = harness.api.call("POST", ROUTES.message(session.sessionId), { message: words });
    await harness.fake.awaitRequests(1);
    await createdAgain(session);
    release();
    const sent = await sending;
    const cold = await harness.instance();
    const history = (await recentMessages(cold.store, session.sessionId, 100)).map((message) => message.content);
    const state = await cold.store.readSessionState(session.sessionId);
    expect({ status: sent.status, code: sent.body.error?.code, history, count: state?.message_count }).toEqual({ status: 404, code: "SESSION_NOT_FOUND", history: [], count: 0 });
  });

  /**
   * A session on the summary template told `words`; its next message (keyed or not) pushes that
   * exchange out of the window, a summary call beside its reply, both held while the session is
   * erased and created again. `release` lets the calls answer.
   */
  async function summarisedWhileCreatedAgain(headers: Record<string, string>) {
    const { harness } = pair;
    const session = await keyedSession(pair.harness.api, SUMMARISED_ID);
    const words = secret("erased-words-");
    harness.fake.reset();
    harness.fake.chaos = (request, reply) => (isSummary(request) ? { kind: "reply", text: `SUMMARY: they said ${words}` } : reply(300));
    pair.tick();
    expect((await harness.api.call("POST", ROUTES.message(session.sessionId), { message: `My name is ${words}` })).status).toBe(200);
    pair.tick();
    harness.fake.requests.length = 0;
    const release = harness.fake.holdAnswers();
    const sending = harness.api.call("POST", ROUTES.message(session.sessionId), { message: "And my cat?" }, headers);
    await harness.fake.awaitRequests(2);
    expect(harness.fake.requests.filter(isSummary)).toHaveLength(1);
    await createdAgain(session);
    return { session, words, sending, release };
  }

  it("keeps the rolling summary made beside it off the new session: not stored, nor sent to the model with the new session's messages", async () => {
    const { harness } = pair;
    const { session, sending, release } = await summarisedWhileCreatedAgain({ "Idempotency-Key": secret("message") });
    release();
    const sent = await sending;
    const cold = await harness.instance();
    const summary = await cold.store.readSummary(session.sessionId);
    // The new session's first message, on a cold instance: its prompt carries nothing of the erased session.
    harness.fake.requests.length = 0;
    expect((await cold.call("POST", ROUTES.message(session.sessionId), { message: "hello again" })).status).toBe(200);
    const reply = harness.fake.requests.find((request) => !isSummary(request));
    expect({ status: sent.status, summary, sent: summaryIn(reply?.body.messages ?? []) }).toEqual({ status: 404, summary: null, sent: "" });
  });

  it("keeps that summary out of the user's export of the new session when the commit's removal of it was lost", async () => {
    const { session, words, sending, release } = await summarisedWhileCreatedAgain({});
    // The commit finds its session gone; its removal of the summary it sent beside it is lost (its instance died).
    pair.held[0]!.lose("dropSummary");
    release();
    expect((await sending).status).toBe(404);
    const exported = await pair.second.call("GET", `${ROUTES.exportData}?user_id=${session.userId}`);
    const sessions = exported.body.sessions as { session_id: string; summary: unknown }[];
    expect({ status: exported.status, ids: sessions.map((entry) => entry.session_id), summary: sessions[0]?.summary, leaks: exported.text.includes(words) }).toEqual({
      status: 200,
      ids: [session.sessionId],
      summary: null,
      leaks: false,
    });
  });
}, { sharded: true });

/**
 * rtdb/journal.ts: "an instance dying between the steps loses nothing: whoever next transacts on
 * the session copies what is left". An instance drops from a session's journal the entries it
 * knows it copied, named by their exchange number; those of an erased session are not the entries
 * of the one a keyed create's retry creates again under its id, numbered alike.
 */
describeWithRtdb("erasure: the journal of a session created again under an erased id", () => {
  const pair = heldPair("rtdb");

  it("loses no exchange of the new session: one whose copy never landed is copied by the next message on the instance that copied the erased session's exchange of that number", async () => {
    const copied = (api: Instance) => (api.store as unknown as RtdbStore).copiesSettled();
    // The erased session's exchange 1 is copied, acknowledged: the first instance knows e1 copied.
    const { sessionId } = await servedThenCreatedAgain(pair.harness, pair.second, pair.held, pair.tick, () => copied(pair.harness.api));
    // The second instance journals the new session's exchange 1, and its copy never lands (the instance died).
    losingUpdates(pair.second.database!, copyOf(sessionId));
    expect((await pair.second.call("POST", ROUTES.message(sessionId), { message: "new first" })).body).toMatchObject({ success: true, message_count: 1 });
    pair.tick();
    // The first instance takes the next message: whoever transacts next copies what is left.
    expect((await pair.harness.api.call("POST", ROUTES.message(sessionId), { message: "new second" })).body).toMatchObject({ success: true, message_count: 2 });
    await copied(pair.harness.api);

    const cold = await pair.harness.instance();
    const history = (await recentMessages(cold.store, sessionId, 100)).map((message) => message.content);
    expect(history).toEqual(["new first", expect.stringMatching(/to: new first$/), "new second", expect.stringMatching(/to: new second$/)]);
    const read = await cold.call("GET", ROUTES.get(sessionId));
    expect(read.body).toMatchObject({ session: { message_count: 2 } });
    expect(read.body.messages).toHaveLength(4);
  });
});

/**
 * docs/conversations.md, Writes racing an erasure: a message's copy sent before the first pass
 * (its exchange into `messages`, its key's record into `keys`, exchange 1's head into the index
 * entry) may land after it, on the session a keyed create's retry created again under the id:
 * nothing of the erased session's is read as the new one's, and the second pass removes it.
 */
describeWithRtdb("erasure: a late copy of the erased session under the id a keyed create's retry creates the session again under", () => {
  const pair = heldPair("rtdb");

  /**
   * A keyed create of a new user's session, and its first message (`words`, sent with `headers`)
   * whose copy is held until `release`: the session's index entry and history are as created.
   */
  async function copyHeld(headers: Record<string, string> = {}) {
    const a = pair.harness.api;
    const { userId, key, body, sessionId } = await keyedSession(a);
    pair.tick();
    const words = secret("erased-");
    let holding = true;
    const release = holdingUpdates(a.database!, (path) => holding && copyOf(sessionId)(path));
    expect((await a.call("POST", ROUTES.message(sessionId), { message: words }, headers)).status).toBe(200);
    holding = false;
    pair.tick();
    return { userId, key, body, sessionId, words, release };
  }

  const createdAgain = (session: KeyedSession) => createdAgainOn(pair, session);

  const landed = (path: string, what: string) => valueWhere(pair.second.database!.ref(path), (value) => value !== null, what);

  /**
   * A keyed first message (key `messageKey`) whose copy is held, the session erased and created
   * again under its id, then the copy released: the late copy's key record lands on the new session.
   */
  async function lateKeyRecord(messageKey: string) {
    const session = await copyHeld({ "Idempotency-Key": messageKey });
    await createdAgain(session);
    session.release();
    await landed(`userSessions/${session.sessionId}/keys`, "the late copy's key record");
    return session;
  }
  const listedOf = (answer: Answer) => (answer.body.sessions as { session_id: string; message_count: number }[]).map((s) => [s.session_id, s.message_count]);

  it("neither lists nor exports the erased session's words as the new session's, and the second pass removes them and keeps the new session listed", async () => {
    const { second } = pair;
    const session = await copyHeld();
    const { userId, sessionId, words } = session;
    await createdAgain(session);
    const listedBefore = await second.call("GET", `${ROUTES.list}?user_id=${userId}`);
    const exportedBefore = await second.call("GET", `${ROUTES.exportData}?user_id=${userId}`);
    expect({ listed: listedOf(listedBefore), exportLeaks: exportedBefore.text.includes(words) }).toEqual({ listed: [[sessionId, 0]], exportLeaks: false });

    // The copy lands now, on the new session.
    session.release();
    const entryPath = conversationPath(conversationOwnerKey(userId), sessionId);
    await landed(`userSessions/${sessionId}/messages`, "the late copy's messages");
    await valueWhere(second.database!.ref(`${entryPath}/title`), (value) => value !== null, "the late copy's entry head");
    const listed = await second.call("GET", `${ROUTES.list}?user_id=${userId}`);
    const exported = await second.call("GET", `${ROUTES.exportData}?user_id=${userId}`);
    const read = await second.call("GET", ROUTES.get(sessionId));
    expect({ listed: listedOf(listed), listLeaks: listed.text.includes(words), exportLeaks: exported.text.includes(words), read: [read.status, read.text.includes(words)] }).toEqual({
      listed: [[sessionId, 0]],
      listLeaks: false,
      exportLeaks: false,
      read: [200, false],
    });

    // The second pass keeps the session created after the cutoff, rid of the copy, and its entry as its creation wrote it.
    expect((await pair.harness.api.runtime.maintain(pair.now() + LATER)).erasuresFinished).toBe(1);
    const after = await second.call("GET", `${ROUTES.list}?user_id=${userId}`);
    const exportedAfter = await second.call("GET", `${ROUTES.exportData}?user_id=${userId}`);
    const stored = await Promise.all([`userSessions/${sessionId}/messages`, entryPath].map(async (path) => (await second.database!.ref(path).once("value")).val() as unknown));
    const state = await second.store.readSessionState(sessionId);
    expect({ listed: listedOf(after), listLeaks: after.text.includes(words), exportLeaks: exportedAfter.text.includes(words), stored }).toEqual({
      listed: [[sessionId, 0]],
      listLeaks: false,
      exportLeaks: false,
      stored: [null, { template_id: "friendly-assistant", template_name: expect.any(String) as string, created_at: state?.created_at, last_activity: state?.last_activity, message_count: 0, status: "active" }],
    });
  });

  it("sends a cold instance's model call for the new session's first message none of the erased words", async () => {
    const session = await copyHeld();
    await createdAgain(session);
    session.release();
    await landed(`userSessions/${session.sessionId}/messages`, "the late copy's messages");
    const cold = await pair.harness.instance();
    pair.harness.fake.reset();
    const sent = await cold.call("POST", ROUTES.message(session.sessionId), { message: "new first" });
    const prompt = pair.harness.fake.requests[0]?.body.messages.slice(1).map((message) => message.content);
    expect({ status: sent.status, count: sent.body.message_count, prompt }).toEqual({ status: 200, count: 1, prompt: ["new first"] });
  });

  it("creates the session again under the key's id when the late copy landed before the retry's create", async () => {
    const { harness, second, held } = pair;
    const { userId, key, body, sessionId, words, release } = await copyHeld();
    // As eraseWhileRetryTakesOver, the copy landing once the first pass is done, before the retry's create.
    const pass = held[0]!.hold("deleteUnchangedCreateKey");
    const erasing = harness.api.call("DELETE", `${ROUTES.erase}?user_id=${userId}`);
    await pass.reached("the first pass's delete of the key");
    pair.tick();
    const admission = held[1]!.hold("readSessionState");
    const retrying = second.call("POST", ROUTES.create, body, { "Idempotency-Key": key });
    await admission.reached("the retry's read of the key's session");
    pass.open();
    const erased = await erasing;
    expect({ status: erased.status, sessions: erased.body.sessions_erased }).toEqual({ status: 200, sessions: 1 });
    release();
    await landed(`userSessions/${sessionId}/messages`, "the late copy's messages");
    await landed(`${conversationPath(conversationOwnerKey(userId), sessionId)}/title`, "the late copy's entry head");
    admission.open();
    const created = await retrying;
    // The client retries again: the same session, replayed.
    pair.tick();
    const again = await second.call("POST", ROUTES.create, body, { "Idempotency-Key": key });
    const read = await second.call("GET", ROUTES.get(sessionId));
    const listed = await second.call("GET", `${ROUTES.list}?user_id=${userId}`);
    expect({
      retry: [created.status, created.body.session_id ?? created.body.error?.code],
      again: [again.status, again.body.session_id ?? again.body.error?.code],
      read: [read.status, read.body.messages],
      listed: [listedOf(listed), listed.text.includes(words)],
    }).toEqual({ retry: [201, sessionId], again: [201, sessionId], read: [200, []], listed: [[[sessionId, 0]], false] });
  });

  it("runs a keyed message on the new session, replaying nothing of the erased one's under the same key", async () => {
    const messageKey = secret("message");
    const session = await lateKeyRecord(messageKey);
    // The client sends its message again, with its key, on the session it knows by that id.
    const sent = await pair.second.call("POST", ROUTES.message(session.sessionId), { message: session.words }, { "Idempotency-Key": messageKey });
    expect({
      status: sent.status,
      replayed: sent.headers.get("idempotent-replayed"),
      count: sent.body.message_count,
      stored: (await pair.second.store.readSessionState(session.sessionId))?.message_count,
    }).toEqual({ status: 200, replayed: null, count: 1, stored: 1 });
  });

  it("runs a keyed message sent again with the erased message's key once the new session stored that exchange of its own, before the second pass", async () => {
    const messageKey = secret("message");
    const session = await lateKeyRecord(messageKey);
    pair.tick();
    expect((await pair.second.call("POST", ROUTES.message(session.sessionId), { message: "new first" })).body).toMatchObject({ success: true, message_count: 1 });
    pair.tick();
    const sent = await pair.second.call("POST", ROUTES.message(session.sessionId), { message: session.words }, { "Idempotency-Key": messageKey });
    expect({ status: sent.status, replayed: sent.headers.get("idempotent-replayed"), count: sent.body.message_count }).toEqual({ status: 200, replayed: null, count: 2 });
  });

  it("runs a keyed message sent again with the erased message's key once the new session stored that exchange of its own, and the second pass removes the late key record", async () => {
    const { second } = pair;
    const messageKey = secret("message");
    // The late copy's key record names exchange 1, which the new session reaches with a message of its own.
    const { sessionId, words } = await lateKeyRecord(messageKey);
    pair.tick();
    expect((await second.call("POST", ROUTES.message(sessionId), { message: "new first" })).body).toMatchObject({ success: true, message_count: 1 });

    // The second pass (the describe's earlier tests' erasures finish with it).
    pair.tick();
    expect((await pair.harness.api.runtime.maintain(pair.now() + LATER)).erasuresFinished).toBeGreaterThanOrEqual(1);
    const keys = (await second.database!.ref(`userSessions/${sessionId}/keys`).once("value")).val() as unknown;
    // The client sends the erased message again with its key, on the session it knows by that id.
    pair.tick();
    pair.harness.fake.reset();
    const sent = await second.call("POST", ROUTES.message(sessionId), { message: words }, { "Idempotency-Key": messageKey });
    expect({
      keysAfterSecondPass: keys,
      status: sent.status,
      replayed: sent.headers.get("idempotent-replayed"),
      count: sent.body.message_count,
      modelCalled: pair.harness.fake.requests.length > 0,
    }).toEqual({ keysAfterSecondPass: null, status: 200, replayed: null, count: 2, modelCalled: true });
  });
});

/** Only the database has copies that land after the request that sent them. */
describeWithRtdb("erasure: a message's copy landing after the first pass", () => {
  const instances = twoInstances({ store: "rtdb" });

  /**
   * A user's session whose last message's copy to the user's index is slow to land: meanwhile the
   * user's data is erased through another instance; then the copy lands, writing the entry back.
   */
  async function copyLandingAfterErasure(messages: readonly string[]) {
    const { harness, second } = instances;
    const user = `user-${randomUUID()}`;
    const id = await createSession(harness.api, "friendly-assistant", user);
    const last = messages.length - 1;
    let release = () => {};
    for (const [index, message] of messages.entries()) {
      if (index === last) release = holdingUpdates(harness.api.database!, (path) => path === conversationPath(conversationOwnerKey(user), id));
      expect((await harness.api.call("POST", ROUTES.message(id), { message })).status).toBe(200);
    }
    expect((await second.call("DELETE", `${ROUTES.erase}?user_id=${user}`)).status).toBe(200);
    const entry = second.database!.ref(conversationPath(conversationOwnerKey(user), id));
    const landed = new Promise<void>((resolve) => {
      const listener = entry.on("value", (snapshot) => {
        if (!snapshot.exists()) return;
        entry.off("value", listener);
        resolve();
      });
    });
    release();
    await landed;
    return { harness, second, user, id, entry };
  }

  it("leaves the user's list answering, without the erased conversation, on every instance", async () => {
    // The second message's copy carries the entry's count and activity, no session's fields.
    const { harness, second, user, entry } = await copyLandingAfterErasure(["first", "second"]);
    // The entry it wrote back names no session: left out of the list, which still answers.
    for (const api of [harness.api, second]) {
      const listed = await api.call("GET", `${ROUTES.list}?user_id=${user}`);
      expect(listed.status).toBe(200);
      expect(listed.body.sessions).toEqual([]);
    }
    // With the user's new conversations, the stray entry newest of all: a page of one skips it and shows the next.
    const [older, newer] = [await createSession(harness.api, "friendly-assistant", user), await createSession(harness.api, "friendly-assistant", user)];
    await entry.update({ last_activity: Date.now() + 60_000 });
    const pages = [];
    let cursor = "";
    for (let page = 0; page < 3; page += 1) {
      const listed = await second.call("GET", `${ROUTES.list}?user_id=${user}&limit=1${cursor}`);
      expect(listed.status).toBe(200);
      pages.push((listed.body.sessions as { session_id: string }[]).map((session) => session.session_id));
      if (typeof listed.body.next_cursor !== "string") break;
      cursor = `&cursor=${listed.body.next_cursor}`;
    }
    // One a page (the entry skipped, the query going on past it), each conversation once.
    expect(pages.map((page) => page.length)).toEqual([1, 1]);
    expect(pages.flat().sort()).toEqual([newer, older].sort());
  });

  it("leaves out an entry the first message's copy wrote back whole (its head: title, template), on every instance", async () => {
    const { harness, second, user, id } = await copyLandingAfterErasure(["Tell me about my secret"]);
    expect((await second.call("GET", ROUTES.get(id))).status).toBe(404);
    for (const api of [harness.api, second]) {
      const listed = await api.call("GET", `${ROUTES.list}?user_id=${user}`);
      expect(listed.status).toBe(200);
      expect(listed.body.sessions).toEqual([]);
    }
  });
});

/**
 * An instance that served a connection keeps its fixed fields warm (up to SESSION_CACHE_TTL_MS);
 * its user erased through another instance, second pass included, it answers as the database says,
 * as a cold instance does: the connection is gone (404), nothing of the erased user is written
 * back, and a block the other user kept stands for good.
 */
describeEachStore("erasure: a connection another instance holds warm", (kind) => {
  const now = Date.parse("2026-04-01T09:00:00Z");
  const env = { USER_MAX_ACTIVE_SESSIONS: "20", USER_MESSAGES_PER_MINUTE: "1000", CONNECTION_REQUESTS_PER_HOUR: "100", CONNECTION_MESSAGES_PER_MINUTE: "1000", MODERATION: "true" };
  const instances = twoInstances({ store: kind, clock: () => now, env });
  const person = (name: string) => new ApiUser(secret(name), instances.harness.api, HOSTING_ROUTES);

  /** Erases the user through the second instance, both passes: nothing will remove what comes back after. */
  async function erase(userId: string): Promise<void> {
    const { second } = instances;
    expect((await second.call("DELETE", `${ROUTES.erase}?user_id=${userId}`)).status).toBe(200);
    expect((await second.runtime.maintain(now + LATER)).erasuresFinished).toBeGreaterThanOrEqual(1);
  }

  it("answers each route of the gone connection 404 CONNECTION_NOT_FOUND on the warm instance, as on the cold one, writing nothing back", async () => {
    const { harness, second } = instances;
    const user = person("user");
    // One counterpart a route: a warm instance forgets the connection's fields once it found it gone.
    const routes: Record<string, (counterpart: ApiUser, id: string) => Promise<Answer>> = {
      "read its messages": (counterpart, id) => counterpart.read(id),
      "read it": (counterpart, id) => counterpart.get(id),
      "send a message": (counterpart, id) => counterpart.send(id, "still there?"),
      "send a message moderation refuses": (counterpart, id) => {
        harness.fake.enqueueModeration({ kind: "verdict", flagged: true, categories: ["harassment"] });
        return counterpart.send(id, "flagged words");
      },
      accept: (counterpart, id) => counterpart.accept(id),
      decline: (counterpart, id) => counterpart.decline(id),
      end: (counterpart, id) => counterpart.end(id),
      block: (counterpart, id) => counterpart.block(id),
      unblock: (counterpart, id) => counterpart.unblock(id),
    };
    const connected = [];
    for (const route of Object.keys(routes)) {
      const counterpart = person("counterpart");
      const id = await user.connectWith(counterpart);
      expect((await user.send(id, "hello")).status).toBe(201);
      connected.push({ route, counterpart, id });
    }
    await erase(user.id);
    const cold = await connected[0]!.counterpart.on(second).read(connected[0]!.id);
    expect({ status: cold.status, code: cold.body.error?.code }).toEqual({ status: 404, code: "CONNECTION_NOT_FOUND" });

    const answers = [];
    for (const { route, counterpart, id } of connected) {
      const answer = await routes[route]!(counterpart, id);
      answers.push({ route, status: answer.status, code: answer.body.error?.code });
    }
    expect(answers).toEqual(Object.keys(routes).map((route) => ({ route, status: 404, code: "CONNECTION_NOT_FOUND" })));
    const whole = WholeStore.of(harness);
    try {
      expect(await whole.holding([user.id])).toEqual([]);
    } finally {
      await whole.close();
    }
  });

  it("an unblock through the gone connection on the warm instance writes nothing of the erased user back into the database", async () => {
    const { harness } = instances;
    const user = person("user");
    const counterpart = person("counterpart");
    const shared = await user.connectWith(counterpart);
    await erase(user.id);
    const whole = WholeStore.of(harness);
    try {
      expect(await whole.holding([user.id])).toEqual([]);
      // The counterpart lifts a block nobody set, through the connection the warm instance still knows.
      const unblocked = await counterpart.unblock(shared);
      expect({ status: unblocked.status, code: unblocked.body.error?.code }).toEqual({ status: 404, code: "CONNECTION_NOT_FOUND" });
      expect(await whole.holding([user.id])).toEqual([]);
    } finally {
      await whole.close();
    }
  });

  it("keeps the block another user set on the erased user for good, even when lifted through the gone connection on the warm instance", async () => {
    const { second } = instances;
    const user = person("user");
    const blocker = person("blocker");
    const blocked = await blocker.connectWith(user);
    expect((await blocker.block(blocked)).status).toBe(200);
    await erase(user.id);
    const cold = await blocker.on(second).unblock(blocked);
    expect(cold.status).toBe(404);
    const warm = await blocker.unblock(blocked);
    expect(warm.status).toBe(404);
    for (const asked of [await user.on(second).ask(blocker.id), await blocker.ask(user.id)]) {
      expect({ status: asked.status, code: asked.body.error?.code }).toEqual({ status: 403, code: "CONNECTION_BLOCKED" });
    }
  });
});

/**
 * A block whose read of the connection comes before the other user's erasure deletes it, and whose
 * write on the pair comes after the erasure removed the pair's record (docs/connections.md,
 * "Erasure"): it holds nowhere, so it is answered as one a moment later, 404, and promises nothing;
 * nothing of the erased user is written back, and the erased user, going on using the service,
 * asks again as anyone new.
 */
describeEachStore("erasure: a block whose write on the pair comes after it", (kind) => {
  let harness: Harness;
  let now = Date.parse("2026-04-01T09:00:00Z");

  beforeAll(async () => {
    harness = await startHarness({ store: kind, clock: () => now, env: { CONNECTION_REQUESTS_PER_HOUR: "100" } });
  });
  afterAll(async () => harness.close());

  it("answers the block 404 CONNECTION_NOT_FOUND, writes nothing of the erased user back, and lets them ask again", async () => {
    const user = new ApiUser(secret("user"), harness.api, HOSTING_ROUTES);
    const blocker = new ApiUser(secret("blocker"), harness.api, HOSTING_ROUTES);
    const id = await blocker.connectWith(user);

    // The block's write on the pair (its second step) waits until the erasure is over.
    const store = harness.api.connectionStore;
    const original = store.updatePair.bind(store);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let reached!: () => void;
    const atPair = new Promise<void>((resolve) => (reached = resolve));
    store.updatePair = async (key, rule) => {
      reached();
      await gate;
      return original(key, rule);
    };
    let blocked: Answer;
    try {
      const blocking = blocker.block(id);
      await atPair;
      store.updatePair = original;
      expect((await harness.api.call("DELETE", `${ROUTES.erase}?user_id=${encodeURIComponent(user.id)}`)).status).toBe(200);
      expect((await harness.api.runtime.maintain(now + LATER)).erasuresFinished).toBe(1);
      now += LATER + MINUTE;
      release();
      blocked = await blocking;
    } finally {
      store.updatePair = original;
      release();
    }
    expect({ status: blocked.status, code: blocked.body.error?.code }).toEqual({ status: 404, code: "CONNECTION_NOT_FOUND" });
    const whole = WholeStore.of(harness);
    try {
      expect(await whole.holding([user.id])).toEqual([]);
    } finally {
      await whole.close();
    }
    const asked = await user.ask(blocker.id);
    expect({ status: asked.status, code: asked.body.error?.code }).toEqual({ status: 201, code: undefined });
  });
});

/**
 * The sweep's erasures (docs/conversations.md): every second pass that is due, and every first
 * pass a request left, in one run, batch after batch (20 records a query), as the other steps of
 * the clean-up go on until they find no more work.
 */
describeEachStore("the sweep's erasures", (kind) => {
  let harness: Harness;
  /** A server whose erasure requests stop at once (their time ran out): the first pass is left to the sweep. */
  let stopping: Harness;
  let now = Date.parse("2026-05-01T09:00:00Z");

  beforeAll(async () => {
    harness = await startHarness({ store: kind, clock: () => now });
    stopping = await startHarness({ store: kind, clock: () => now, userDataLimits: { eraseRequestMs: -1 } });
  });
  afterAll(async () => {
    await harness.close();
    await stopping.close();
  });

  it("runs every second pass that is due in one run, past the first query's 20", async () => {
    const users = Array.from({ length: 21 }, () => `erased-${randomUUID()}`);
    for (const user of users) {
      await createSession(harness.api, "friendly-assistant", user);
      now += 1_000;
      const erased = await harness.api.call("DELETE", `${ROUTES.erase}?user_id=${user}`);
      expect(erased.status).toBe(200);
    }
    const at = now + LATER;
    expect((await harness.api.store.findDueErasures(at, undefined, 100)).keys).toHaveLength(21);

    const report = await harness.api.runtime.maintain(at);

    // Every erasure was due before the run began: its record (the user's id, the ids it deleted) goes with its second pass.
    expect({ finished: report.erasuresFinished, stillDue: (await harness.api.store.findDueErasures(at, undefined, 100)).keys.length }).toEqual({ finished: 21, stillDue: 0 });
  });

  it("takes over every first pass that requests left when their time ran out, in one run: each of those users is served again at once", async () => {
    const users = Array.from({ length: 21 }, () => `left-${randomUUID()}`);
    for (const user of users) {
      await createSession(stopping.api, "friendly-assistant", user);
      now += 1_000;
      const started = await stopping.api.call("DELETE", `${ROUTES.erase}?user_id=${user}`);
      expect(started.status).toBe(202);
    }
    // The requests have answered, each handing its stopped pass back: the next run takes them all over.
    now += 2 * MINUTE;
    await stopping.api.runtime.maintain(now);

    // Their first passes done, the marks are cleared: no user is refused 409 ERASURE_IN_PROGRESS until the next run.
    const refused: string[] = [];
    for (const user of users) {
      const created = await stopping.api.call("POST", ROUTES.create, { user_id: user, template_id: "friendly-assistant" });
      if (created.status !== 201) refused.push(`${created.status} ${String(created.body.error?.code)}`);
    }
    expect(refused).toEqual([]);
  });
});

/**
 * A DELETE /me whose time ran out (202) has stopped its first pass and runs no more: the sweep's
 * next run takes the pass over, though it comes within the function's timeout of the request's
 * start (the takeover a request begins with), so that the user is not refused 409
 * ERASURE_IN_PROGRESS until the run after.
 */
describeEachStore("erasure: the sweep's run right after a request whose time ran out", (kind) => {
  let stopping: Harness;
  let now = Date.parse("2026-05-01T09:00:00Z");

  beforeAll(async () => {
    // The deployed ratio: a request has half the function's timeout (60 s), so its 202 comes 30 s after it began.
    stopping = await startHarness({ store: kind, clock: () => now, functionTimeoutMs: 60_000, userDataLimits: { eraseRequestMs: -1 } });
  });
  afterAll(async () => stopping.close());

  it("takes over the first pass the request stopped: the user's sessions are gone and they are served again", async () => {
    const userId = `left-${randomUUID()}`;
    const made = await stopping.api.call("POST", ROUTES.create, { user_id: userId, template_id: "friendly-assistant" });
    expect(made.status).toBe(201);
    const started = await stopping.api.call("DELETE", `${ROUTES.erase}?user_id=${userId}`);
    expect(started.status).toBe(202);
    // The scheduled run comes 31 s later, within the function's timeout of the request's start.
    now += 31_000;
    const report = await stopping.api.runtime.maintain(now);
    const created = await stopping.api.call("POST", ROUTES.create, { user_id: userId, template_id: "friendly-assistant" });
    const session = await stopping.api.call("GET", ROUTES.get(String(made.body.session_id)));
    expect({ created: created.status, code: created.body.error?.code, erasedSession: session.status, erasures: report.erasuresFinished }).toEqual({
      created: 201,
      code: undefined,
      erasedSession: 404,
      erasures: 0,
    });
  });
});

/**
 * A user with more sessions than one run of the clean-up can erase (docs/sessions-over-time.md: a
 * run stays within its function's timeout, and starts no batch once its time is up): each pass
 * stops page by page when the run's time is up, and the next run goes on where it stopped, though
 * the takeover would last longer (the function's timeout: an hour here, TIMEOUT_SECONDS' most).
 */
describeEachStore("the sweep's erasure of a user with more sessions than a run can delete", (kind) => {
  /** The scheduled clean-up's timeout (function-options.ts MAINTENANCE_TIMEOUT_SECONDS) and its run's time (time-budget.ts maintenanceRunMs), the defaults. */
  const TIMEOUT_MS = 300_000;
  const RUN_MS = 240_000;
  /** How long one page of deletion takes here: a slow database, or one page standing for many. */
  const PAGE_MS = 30_000;
  /** 12 pages of 25 (the erasure's batch) in each pass; also the user's limit of active sessions. */
  const SESSIONS = 300;
  const HOUR = 60 * MINUTE;
  let harness: Harness;
  let now = Date.parse("2026-07-01T09:00:00Z");
  let ticking = false;
  /** When each page's deletion started, while a run ticks. */
  const pages: number[] = [];
  const slowPages = (store: SessionStore): SessionStore =>
    new Proxy(store, {
      get(target, property, receiver) {
        const value: unknown = Reflect.get(target, property, receiver);
        // A page of either pass: the first's deletion, the second's (deleteUserSessionsUpTo).
        if ((property !== "deleteUserSessions" && property !== "deleteUserSessionsUpTo") || typeof value !== "function") return value;
        return async (...args: unknown[]) => {
          if (ticking) {
            pages.push(now);
            now += PAGE_MS;
          }
          return Reflect.apply(value, target, args) as unknown;
        };
      },
    });

  beforeAll(async () => {
    const env = { USER_MAX_ACTIVE_SESSIONS: String(SESSIONS), USER_MESSAGES_PER_MINUTE: "1000" };
    harness = await startHarness({ store: kind, clock: () => now, env, wrapStore: slowPages, functionTimeoutMs: HOUR, userDataLimits: { eraseRequestMs: -1 } });
  });
  afterAll(async () => harness.close());

  it("stops starting pages when the run's time is up, ends within the function's timeout, and the next runs go on where it stopped", async () => {
    const userId = `user_${randomUUID()}`;
    for (let i = 0; i < SESSIONS; i += 10) {
      const created = await Promise.all(Array.from({ length: 10 }, () => harness.api.call("POST", ROUTES.create, { user_id: userId, template_id: "friendly-assistant" })));
      expect(created.map((answer) => answer.status)).toEqual(Array(10).fill(201));
    }
    // The request's own time runs out at once: its first pass is left to the sweep, once the request's takeover lapses.
    expect((await harness.api.call("DELETE", `${ROUTES.erase}?user_id=${userId}`)).status).toBe(202);
    now += HOUR + MINUTE;
    const phase = async () => harness.api.store.updateErasure(userKey(userId), (record) => ({ outcome: record?.phase ?? "gone" }));
    // Scheduled runs (every 15 minutes): the first pass's two in a row; the second pass's from the
    // first run after it is due, a claim's lease (the function's timeout: an hour here) after the first.
    const first = now;
    const runs: { pages: number[]; withinTimeout: boolean; after: string }[] = [];
    for (const minutes of [0, 15, 90, 105]) {
      now = first + minutes * MINUTE;
      const started = now;
      pages.length = 0;
      ticking = true;
      try {
        await harness.api.runtime.maintain(now, RUN_MS);
      } finally {
        ticking = false;
      }
      runs.push({ pages: pages.map((at) => (at - started) / 1000), withinTimeout: now - started <= TIMEOUT_MS, after: await phase() });
    }

    // The erasures' step has the run's 240 s less the device sweep's reserve (12 s): no page starts
    // at 228 s or later. Each pass's 12 pages are deleted once: the first pass's 8, then its last 4
    // and the user served again; the second pass's recorded pages the same, then the record gone.
    const pass = [0, 30, 60, 90, 120, 150, 180, 210];
    expect(runs).toEqual([
      { pages: pass, withinTimeout: true, after: "erasing" },
      { pages: pass.slice(0, 4), withinTimeout: true, after: "settling" },
      { pages: pass, withinTimeout: true, after: "settling" },
      { pages: pass.slice(0, 4), withinTimeout: true, after: "gone" },
    ]);
    // Nothing left, and no erased session still counts against the user's limit.
    const listed = await harness.api.call("GET", `${ROUTES.list}?user_id=${userId}`);
    const created = await harness.api.call("POST", ROUTES.create, { user_id: userId, template_id: "friendly-assistant" });
    expect({ listed: listed.body.sessions, created: created.status }).toEqual({ listed: [], created: 201 });
  });
});

/**
 * A first pass deletes a page of sessions, then forgets them in the usage record: when the
 * deletion lands and its answer is lost, a retry of DELETE /me (or the sweep taking the pass over)
 * finds none of them left to scan. The erasure record names them, so the retry forgets them.
 */
describeEachStore("erasure: a first pass whose deletion's answer was lost", (kind) => {
  let harness: Harness;
  let faults: FaultyStore | undefined;
  const now = Date.parse("2026-06-01T09:00:00Z");

  beforeAll(async () => {
    harness = await startHarness({
      store: kind,
      clock: () => now,
      env: { USER_MAX_ACTIVE_SESSIONS: "2" },
      wrapStore: (store) => (faults ??= new FaultyStore(store)).store,
    });
  });
  afterAll(async () => {
    await harness.close();
  });

  it("no longer counts the erased sessions against the user's active sessions once a retried DELETE /me answers erased", async () => {
    const userId = `user-${randomUUID()}`;
    const ids = [await createSession(harness.api, "friendly-assistant", userId), await createSession(harness.api, "socratic-tutor", userId)];
    // The deletion lands, its answer is lost.
    faults?.arm("deleteUserSessions", "after");
    const first = await harness.api.call("DELETE", `${ROUTES.erase}?user_id=${userId}`);
    for (const id of ids) expect((await harness.api.call("GET", ROUTES.get(id))).status).toBe(404);

    const retried = await harness.api.call("DELETE", `${ROUTES.erase}?user_id=${userId}`);
    const usage = await harness.api.store.readUsage(userKey(userId));
    const stillNamed = Object.keys({ ...usage?.sessions, ...usage?.contexts, ...usage?.ended }).filter((id) => ids.includes(id));
    const created = await harness.api.call("POST", ROUTES.create, { user_id: userId, template_id: "friendly-assistant" });
    expect({ first: first.status, retried: retried.body.status, stillNamed, created: created.status, retryAfter: created.headers.get("retry-after") }).toEqual({
      first: 503,
      retried: "erased",
      stillNamed: [],
      created: 201,
      retryAfter: null,
    });
  });
});

/**
 * An erasure over two database instances (docs/sharding.md) whose deletion of sessions fails on the
 * second instance only, before its update is sent or after it landed (its answer lost): DELETE /me
 * answers 503 with the user still marked, and its retry, then the second pass, leave nothing of the
 * user on either instance but their usage record, which names none of the erased sessions.
 */
describeUnless(rtdbSkipReason(), "erasure over two database instances: a deletion failing on one of them, then retried", () => {
  let harness: Harness;
  let now = Date.parse("2026-04-01T09:00:00Z");
  let whole: WholeStore;
  /** Fails the next deleteUserSessions of the second instance's adapter (the first pass's): before it is sent, or once it landed (`mode`). */
  const failSecond = { armed: 0, mode: "before" as "before" | "after" };

  beforeAll(async () => {
    harness = await startHarness({
      store: "rtdb-2-namespaces",
      clock: () => now,
      env: { USER_MAX_ACTIVE_SESSIONS: "20", USER_MESSAGES_PER_MINUTE: "1000", CONNECTION_REQUESTS_PER_HOUR: "100", CONNECTION_MESSAGES_PER_MINUTE: "1000" },
      wrapStore: (store: SessionStore) => {
        const instances = (store as unknown as { instances: SessionStore[] }).instances;
        const second = instances[1]!;
        instances[1] = new Proxy(second, {
          get(target, property, receiver) {
            const value: unknown = Reflect.get(target, property, receiver);
            if (property !== "deleteUserSessions" || typeof value !== "function") return value;
            return async (...args: unknown[]) => {
              if (failSecond.armed > 0) {
                failSecond.armed -= 1;
                if (failSecond.mode === "after") await Reflect.apply(value, target, args);
                throw new StoreUnavailableError("deleteUserSessions on instance 1 (injected)");
              }
              return Reflect.apply(value, target, args) as unknown;
            };
          },
        });
        return store;
      },
    });
    whole = WholeStore.of(harness);
  });
  afterAll(async () => {
    await whole.close();
    await harness.close();
  });

  for (const mode of ["before", "after"] as const) {
    it(`leaves nothing of the user on either instance after a retry (fault ${mode})`, async () => {
      const api = harness.api;
      const user = new ApiUser(secret("user"), api, HOSTING_ROUTES);
      const friend = new ApiUser(secret("friend"), api, HOSTING_ROUTES);
      const words: string[] = [];
      const ids: string[] = [];
      for (let i = 0; i < 4; i += 1) {
        const made = await api.call("POST", ROUTES.create, { user_id: user.id, template_id: "friendly-assistant" });
        expect(made.status).toBe(201);
        ids.push(String(made.body.session_id));
      }
      expect(new Set(ids.map((id) => harness.shards!.instanceOf(id)))).toEqual(new Set([0, 1]));
      for (const id of ids) {
        const word = secret("word");
        words.push(word);
        now += 1_000;
        expect((await api.call("POST", ROUTES.message(id), { user_id: user.id, message: `about ${word}` })).status).toBe(200);
      }
      const shared = await user.connectWith(friend);
      const connWord = secret("conn");
      expect((await user.send(shared, connWord)).status).toBe(201);
      expect((await user.register(secret("token"), true)).status).toBe(200);
      await harness.shards?.settled();

      failSecond.mode = mode;
      failSecond.armed = 1;
      const first = await api.call("DELETE", `${ROUTES.erase}?user_id=${user.id}`);
      const refusedMeanwhile = await api.call("POST", ROUTES.create, { user_id: user.id, template_id: "friendly-assistant" });
      now += 1_000;
      const retried = await api.call("DELETE", `${ROUTES.erase}?user_id=${user.id}`);
      const usage = await api.store.readUsage(userKey(user.id));
      const named = Object.keys({ ...usage?.sessions, ...usage?.contexts, ...usage?.ended }).filter((id) => ids.includes(id));
      expect((await api.runtime.maintain(now + LATER)).erasuresFinished).toBe(1);
      await harness.shards?.settled();
      const left = await whole.holdingBesideUsage([user.id, userKey(user.id), ...ids, ...words, connWord, shared]);
      const created = await api.call("POST", ROUTES.create, { user_id: user.id, template_id: "friendly-assistant" });
      expect({ first: first.status, refusedMeanwhile: refusedMeanwhile.status, retried: retried.body.status, named, left, created: created.status }).toEqual({
        first: 503,
        refusedMeanwhile: 409,
        retried: "erased",
        named: [],
        left: [],
        created: 201,
      });
    });
  }
});

