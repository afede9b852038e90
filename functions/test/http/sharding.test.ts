import { randomUUID } from "node:crypto";
import { deleteApp } from "firebase/app";
import { userKey } from "../../src/session/ledger/limits";
import { instancePositionOf } from "../../src/sharding/session-ids";
import { streamCall } from "../support/event-stream-client";
import { ROUTES, startHarness, type Answer, type Harness, type Instance } from "../support/http-harness";
import { rtdbSkipReason } from "../support/rtdb";
import { shardedSkipReason } from "../support/sharded-rtdb";
import { describeUnless } from "../support/visible-skip";
import { SessionWatcher, webClientAt } from "../support/session-watcher";

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const newUser = () => `user-${randomUUID()}`;

/*
 * Sessions over two database instances (docs/sharding.md), as namespaces of one server and as two
 * server processes: a deployment that adds an instance keeps serving what the first holds, and one
 * user's limits hold across conversations on both, through two function instances.
 */
for (const layout of ["namespaces", "processes"] as const) {
  describeUnless(rtdbSkipReason() ?? shardedSkipReason(layout), `sharding over two database instances (${layout})`, () => {
    let harness: Harness;
    let now = Date.parse("2026-05-01T12:00:00Z");

    beforeAll(async () => {
      harness = await startHarness({
        store: `rtdb-2-${layout}`,
        clock: () => now,
        env: { USER_MAX_ACTIVE_SESSIONS: "3", USER_MESSAGES_PER_MINUTE: "4", USER_TOKENS_PER_DAY: "1000" },
      });
    });
    afterAll(async () => harness.close());
    beforeEach(() => {
      harness.fake.reset();
      // A new minute for every test: the per-minute bucket starts full.
      now += 5 * 60_000;
    });

    const create = (on: Instance, user: string) => on.call("POST", ROUTES.create, { user_id: user, template_id: "friendly-assistant" });
    const idOf = (answer: Answer) => String(answer.body.session_id);
    /** Whether the session's node is on the instance at `position`, read there directly. */
    const storedOn = async (position: number, id: string) => (await harness.shards?.databases([harness.shards.urls[position] ?? ""])[0]?.ref(`userSessions/${id}/user_id`).once("value"))?.exists();

    it("answers database_url naming the session's instance, where a web SDK client sees the reply grow, then land", async () => {
      const user = newUser();
      const answers = [await create(harness.api, user), await create(harness.api, user)];
      // Round robin from a random start: one on each instance.
      expect(new Set(answers.map((answer) => instancePositionOf(idOf(answer))))).toEqual(new Set([0, 1]));
      const chunks = ["Once", " upon", " a", " time", " on", " an", " instance."];
      for (const answer of answers) {
        const id = idOf(answer);
        expect(answer.body.database_url).toBe(harness.shards?.urls[instancePositionOf(id)]);
        const { app, database } = webClientAt(String(answer.body.database_url));
        const watcher = new SessionWatcher(database, id);
        try {
          await watcher.until(() => true);
          harness.fake.enqueue({ kind: "stream", chunks, chunkDelayMs: 60 });
          expect((await harness.api.call("POST", ROUTES.message(id), { message: "a story" })).status).toBe(200);
          await watcher.until((seen) => seen.messages.length === 2 && seen.partials.length === 0);
          expect(watcher.partialTexts().length).toBeGreaterThanOrEqual(1);
          expect(watcher.seen.at(-1)?.messages).toEqual(["a story", chunks.join("")]);
        } finally {
          watcher.close();
          await deleteApp(app);
        }
      }
    });

    it("keeps serving the first instance's v4 sessions after a second is added, and places new ones on both", async () => {
      const shards = harness.shards!;
      // The deployment before: DATABASE_INSTANCES lists the first instance only.
      const before = await harness.instance({ DATABASE_INSTANCES: shards.urls[0] ?? "", USER_MAX_ACTIVE_SESSIONS: "10" });
      const user = newUser();
      const old = [await create(before, user), await create(before, user)];
      expect(old.map((answer) => [answer.status, UUID_V4.test(idOf(answer)), answer.body.database_url])).toEqual([
        [201, true, shards.urls[0]],
        [201, true, shards.urls[0]],
      ]);
      const [kept, ended] = old.map(idOf) as [string, string];
      expect((await before.call("POST", ROUTES.message(kept), { message: "before the second instance" })).status).toBe(200);
      expect((await before.call("DELETE", ROUTES.end(ended))).status).toBe(200);

      // The deployment after: both instances. The old sessions stay where they are, and work.
      const after = await harness.instance({ USER_MAX_ACTIVE_SESSIONS: "10" });
      const sent = await after.call("POST", ROUTES.message(kept), { message: "after it" });
      expect(sent.body).toMatchObject({ success: true, message_count: 2 });
      const read = await after.call("GET", `${ROUTES.get(kept)}?user_id=${user}`);
      expect((read.body.messages as { content: string }[]).map((message) => message.content)).toEqual(["before the second instance", "reply #1 to: before the second instance", "after it", "reply #2 to: after it"]);
      expect((await after.call("POST", ROUTES.message(ended), { message: "still ended" })).status).toBe(410);
      expect([await storedOn(0, kept), await storedOn(1, kept)]).toEqual([true, false]);

      const fresh = [await create(after, user), await create(after, user)].map(idOf);
      expect(new Set(fresh.map(instancePositionOf))).toEqual(new Set([0, 1]));
      for (const id of fresh) expect(await storedOn(instancePositionOf(id), id)).toBe(true);
      expect((await after.call("POST", ROUTES.message(fresh[1]!), { message: "on a new one" })).status).toBe(200);

      // Listed, exported and erased together, wherever each is.
      const listed = await after.call("GET", `${ROUTES.list}?user_id=${user}`);
      expect((listed.body.sessions as { session_id: string }[]).map((session) => session.session_id).sort()).toEqual([kept, ended, ...fresh].sort());
      const exported = await after.call("GET", `${ROUTES.exportData}?user_id=${user}`);
      // Instance by instance in the list's order, each in id order (a v4 id, on the first, may sort after the second's).
      const inExportOrder = (a: string, b: string) => instancePositionOf(a) - instancePositionOf(b) || (a < b ? -1 : 1);
      expect((exported.body.sessions as { session_id: string }[]).map((session) => session.session_id)).toEqual([kept, ended, ...fresh].sort(inExportOrder));
      expect((await after.call("DELETE", `${ROUTES.erase}?user_id=${user}`)).status).toBe(200);
      for (const id of [kept, ended, ...fresh]) expect([await storedOn(0, id), await storedOn(1, id)]).toEqual([false, false]);
      expect(((await after.call("GET", `${ROUTES.list}?user_id=${user}`)).body.sessions as unknown[]).length).toBe(0);
    });

    /** A session an updated function instance placed on the appended (second) instance: its turns alternate, so two creates reach it. */
    async function onSecondInstance(): Promise<{ readonly id: string; readonly user: string }> {
      for (let i = 0; i < 2; i += 1) {
        const user = newUser();
        const id = idOf(await create(harness.api, user));
        if (instancePositionOf(id) === 1) return { id, user };
      }
      throw new Error("two creates in a row placed no session on the second instance");
    }
    const refusal = (answer: { readonly status: number; readonly headers: Headers; readonly json?: Answer["body"] }, body = answer.json) => ({
      status: answer.status,
      code: body?.error?.code,
      retryAfter: answer.headers.get("retry-after"),
    });
    const unavailable = { status: 503, code: "DATABASE_UNAVAILABLE", retryAfter: "1" };

    // During the rollout that appends an instance, a function instance still on the old list
    // cannot reach the new instance's sessions: a change to one is refused as unavailable, which
    // the client retries (an updated instance serves it), never 404, which tells the page the
    // session is gone. Only a read answers 404 there.
    it("refuses a message, streamed or not, to a new instance's session as unavailable (retried) on a function instance still on the old list", async () => {
      const old = await harness.instance({ DATABASE_INSTANCES: harness.shards?.urls[0] ?? "" });
      const { id, user } = await onSecondInstance();
      const sent = await old.call("POST", ROUTES.message(id), { message: "from the rollout" });
      expect(refusal({ ...sent, json: sent.body })).toEqual(unavailable);
      expect(refusal(await streamCall(old.baseUrl, ROUTES.message(id), { message: "streamed from the rollout" }))).toEqual(unavailable);
      expect((await old.call("GET", `${ROUTES.get(id)}?user_id=${user}`)).status).toBe(404);
      // The retry, on an updated function instance: the first message of the session, nothing counted for the refused ones.
      expect((await harness.api.call("POST", ROUTES.message(id), { message: "retried" })).body).toMatchObject({ success: true, message_count: 1 });
    });

    it("refuses an end of a new instance's session as unavailable (retried) on a function instance still on the old list, so its retry ends it and frees the user's slot", async () => {
      const old = await harness.instance({ DATABASE_INSTANCES: harness.shards?.urls[0] ?? "" });
      const { id, user } = await onSecondInstance();
      const counted = async () => Object.keys((await harness.api.store.readUsage(userKey(user)))?.sessions ?? {});
      const refused = await old.call("DELETE", ROUTES.end(id));
      expect(refusal({ ...refused, json: refused.body })).toEqual(unavailable);
      expect(await counted()).toEqual([id]);
      expect((await harness.api.call("DELETE", ROUTES.end(id))).status).toBe(200);
      expect(await counted()).toEqual([]);
    });

    /** How many of `ids` each instance holds. */
    const spread = (ids: readonly string[]) => [0, 1].map((position) => ids.filter((id) => instancePositionOf(id) === position).length);

    it("spreads the sessions of keyed creates evenly when each create comes twice", async () => {
      const ids: string[] = [];
      for (let i = 0; i < 8; i += 1) {
        const user = newUser();
        const key = { "Idempotency-Key": `create-${randomUUID()}` };
        const [first, repeat] = [await harness.api.call("POST", ROUTES.create, { user_id: user, template_id: "friendly-assistant" }, key), await harness.api.call("POST", ROUTES.create, { user_id: user, template_id: "friendly-assistant" }, key)];
        expect([first.status, repeat.status, idOf(repeat)]).toEqual([201, 201, idOf(first)]);
        ids.push(idOf(first));
      }
      // 8 sessions from one function instance: 4 on each, whatever the repeats drew.
      expect(spread(ids)).toEqual([4, 4]);
    });

    it("spreads the sessions created evenly when refused creates come between them", async () => {
      const full = newUser();
      for (let i = 0; i < 3; i += 1) expect((await create(harness.api, full)).status).toBe(201);
      const ids: string[] = [];
      for (let i = 0; i < 8; i += 1) {
        const made = await create(harness.api, newUser());
        expect(made.status).toBe(201);
        ids.push(idOf(made));
        // A template that does not exist, a user at their limit: no session, no turn taken.
        const refused = i % 2 === 0 ? await harness.api.call("POST", ROUTES.create, { user_id: newUser(), template_id: "no-such-template" }) : await create(harness.api, full);
        expect(refused.status).toBe(i % 2 === 0 ? 404 : 429);
      }
      expect(spread(ids)).toEqual([4, 4]);
    });

    it("holds one user's active sessions exactly across both instances and two function instances", async () => {
      const [a, b] = [harness.api, await harness.instance()];
      const user = newUser();
      // Two from one function instance: round robin puts them on both database instances.
      const ids = [await create(a, user), await create(a, user), await create(b, user)].map((answer) => {
        expect(answer.status).toBe(201);
        return idOf(answer);
      });
      expect(new Set(ids.map(instancePositionOf))).toEqual(new Set([0, 1]));
      for (const on of [a, b, a, b]) expect((await create(on, user)).body.error?.code).toBe("TOO_MANY_ACTIVE_SESSIONS");
      // Ending one on the second instance frees exactly one slot, seen by both function instances.
      const second = ids.find((id) => instancePositionOf(id) === 1)!;
      expect((await b.call("DELETE", ROUTES.end(second))).status).toBe(200);
      expect((await a.call("POST", ROUTES.create, { user_id: user, template_id: "friendly-assistant" })).status).toBe(201);
      expect((await b.call("POST", ROUTES.create, { user_id: user, template_id: "friendly-assistant" })).body.error?.code).toBe("TOO_MANY_ACTIVE_SESSIONS");
    });

    it("holds one user's messages per minute exactly across both instances and two function instances", async () => {
      const [a, b] = [harness.api, await harness.instance()];
      const user = newUser();
      const [first, second] = [await create(a, user), await create(a, user)].map(idOf) as [string, string];
      expect([instancePositionOf(first), instancePositionOf(second)].sort()).toEqual([0, 1]);
      // Four a minute: two through each function instance, on sessions on each database instance.
      const plan: [Instance, string][] = [[a, first], [b, second], [b, first], [a, second]];
      for (const [on, id] of plan) expect((await on.call("POST", ROUTES.message(id), { message: "count me" })).status).toBe(200);
      for (const [on, id] of plan) expect((await on.call("POST", ROUTES.message(id), { message: "one too many" })).body.error?.code).toBe("RATE_LIMITED");
      expect(harness.fake.requests).toHaveLength(4);
    });

    it("holds one user's tokens per day across both instances and two function instances, counting every call once", async () => {
      const [a, b] = [harness.api, await harness.instance()];
      const user = newUser();
      const [first, second] = [await create(a, user), await create(a, user)].map(idOf) as [string, string];
      const plan = [[a, first], [b, second], [b, first], [a, second]] as const;
      let spent = 0;
      let refusedAt: number | undefined;
      for (let i = 0; i < 60 && refusedAt === undefined; i += 1) {
        // One message every 15 s: the per-minute bucket (4) never runs dry.
        now += 15_000;
        const [on, id] = plan[i % plan.length]!;
        const answer = await on.call("POST", ROUTES.message(id), { message: `message number ${i} with a few words in it` });
        if (answer.body.error?.code === "TOKEN_LIMIT") refusedAt = i;
        else spent += (answer.body.usage as { total_tokens: number }).total_tokens;
      }
      expect(refusedAt).toBeGreaterThan(4);
      // Over the day's 1,000: no function instance admits another message, on either instance.
      for (const [on, id] of plan) expect((await on.call("POST", ROUTES.message(id), { message: "over the day" })).body.error?.code).toBe("TOKEN_LIMIT");
      expect((await harness.api.store.readUsage(userKey(user)))?.daily?.tokens).toBe(spent);
    });

    it("holds one user's active sessions exactly under concurrent creates through two function instances", async () => {
      const [a, b] = [harness.api, await harness.instance()];
      const user = newUser();
      const answers = await Promise.all(Array.from({ length: 12 }, (_, i) => create(i % 2 === 0 ? a : b, user)));
      const created = answers.filter((answer) => answer.status === 201).map(idOf);
      expect({
        created: created.length,
        onBoth: new Set(created.map(instancePositionOf)).size,
        refused: answers.filter((answer) => answer.body.error?.code === "TOO_MANY_ACTIVE_SESSIONS").length,
        counted: Object.keys((await harness.api.store.readUsage(userKey(user)))?.sessions ?? {}).sort(),
      }).toEqual({ created: 3, onBoth: 2, refused: 9, counted: [...created].sort() });
    });

    it("holds one user's messages per minute exactly under concurrent messages to sessions on both instances, through two function instances", async () => {
      const [a, b] = [harness.api, await harness.instance()];
      const user = newUser();
      const ids = [await create(a, user), await create(a, user), await create(b, user)].map(idOf);
      expect(new Set(ids.map(instancePositionOf)).size).toBe(2);
      const answers = await Promise.all(Array.from({ length: 12 }, (_, i) => (i % 2 === 0 ? a : b).call("POST", ROUTES.message(ids[i % 3]!), { message: `message ${i}` })));
      expect({
        answered: answers.filter((answer) => answer.status === 200).length,
        refused: answers.filter((answer) => answer.body.error?.code === "RATE_LIMITED").length,
        modelCalls: harness.fake.requests.length,
      }).toEqual({ answered: 4, refused: 8, modelCalls: 4 });
    });

    it("holds one user's tokens per day under concurrent messages to sessions on both instances, counting every call once", async () => {
      const [a, b] = [harness.api, await harness.instance()];
      const user = newUser();
      const ids = [await create(a, user), await create(a, user), await create(b, user)].map(idOf);
      let spent = 0;
      let full = false;
      for (let round = 0; round < 30 && !full; round += 1) {
        // Four at once, a minute apart: the per-minute bucket (4) never runs dry.
        now += 61_000;
        const answers = await Promise.all(Array.from({ length: 4 }, (_, i) => (i % 2 === 0 ? a : b).call("POST", ROUTES.message(ids[i % 3]!), { message: `round ${round} message ${i} with words` })));
        for (const answer of answers) if (answer.status === 200) spent += (answer.body.usage as { total_tokens: number }).total_tokens;
        full = answers.every((answer) => answer.body.error?.code === "TOKEN_LIMIT");
      }
      const counted = (await harness.api.store.readUsage(userKey(user)))?.daily?.tokens;
      expect({ full, counted, withinDay: spent <= 1000 }).toEqual({ full: true, counted: spent, withinDay: true });
    });
  });
}
