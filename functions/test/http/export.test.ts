import { randomUUID } from "node:crypto";
import { allParts } from "../support/export-parts";
import { FaultyStore } from "../support/faulty-store";
import { instancePositionOf } from "../../src/sharding/session-ids";
import { RtdbStore } from "../../src/store/rtdb/rtdb-store";
import { createSession, describeEachStore, ROUTES, startHarness, type Answer, type Harness } from "../support/http-harness";
import { describeWithRtdb } from "../support/rtdb";

interface ExportedSession {
  readonly session_id: string;
  readonly status: string;
  readonly message_count: number;
  readonly summary: { text: string; through: number } | null;
  readonly messages: readonly { position: number; role: string; content: string }[];
  readonly [field: string]: unknown;
}

const sessionsOf = (answer: Answer) => answer.body.sessions as ExportedSession[];


describeEachStore("exporting a user's data", (kind) => {
  let harness: Harness;
  /** One session per part: every export is several parts. */
  let small: Harness;
  /** Reads one session at a time, through a store a test can make fail. */
  let faulty: Harness;
  let faults: FaultyStore | undefined;

  beforeAll(async () => {
    const env = { USER_MAX_ACTIVE_SESSIONS: "20" };
    harness = await startHarness({ store: kind, env });
    small = await startHarness({ store: kind, env, userDataLimits: { exportPartBytes: 1 } });
    faulty = await startHarness({
      store: kind,
      env,
      userDataLimits: { exportReadPage: 1 },
      wrapStore: (store) => {
        faults = new FaultyStore(store);
        return faults.store;
      },
    });
  });
  afterAll(async () => {
    await harness.close();
    await small.close();
    await faulty.close();
  });

  /** A user with three sessions: two with messages (one ended, one with a summary), one empty. */
  async function userWithData(on: Harness): Promise<{ userId: string; ids: string[] }> {
    const userId = `user-${randomUUID().slice(0, 8)}`;
    const ids = [await createSession(on.api, "friendly-assistant", userId), await createSession(on.api, "socratic-tutor", userId), await createSession(on.api, "sarcastic-critic", userId)];
    for (const text of ["first question", "second question"]) expect((await on.api.call("POST", ROUTES.message(ids[0]!), { message: text })).status).toBe(200);
    expect((await on.api.call("POST", ROUTES.message(ids[1]!), { message: "a tutor question" })).status).toBe(200);
    await on.api.store.writeSummary(ids[0]!, { text: "They asked two questions", through: 2, updated_at: Date.now() });
    expect((await on.api.call("DELETE", ROUTES.end(ids[1]!))).status).toBe(200);
    return { userId, ids: ids.sort() };
  }

  it("writes everything stored about the user as one JSON document, on both URL forms, and nobody else's", async () => {
    const { userId, ids } = await userWithData(harness);
    const other = await userWithData(harness);
    for (const path of [ROUTES.exportData, ROUTES.directExport]) {
      const answer = await harness.api.call("GET", `${path}?user_id=${userId}`);
      expect(answer.status).toBe(200);
      expect(answer.headers.get("content-type")).toBe("application/json; charset=utf-8");
      expect(answer.headers.get("content-disposition")).toBe('attachment; filename="chatify-export.json"');
      expect(answer.body).toMatchObject({ success: true, format: "chatify-export", version: 1, user_id: userId, part: 1, session_count: 3, complete: true, next_cursor: null });
      expect(answer.body.usage).toEqual({ daily: { day: expect.any(String) as string, tokens: expect.any(Number) as number, cost_usd: expect.any(Number) as number } });
      const sessions = sessionsOf(answer);
      expect(sessions.map((session) => session.session_id)).toEqual(ids);
      const byId = new Map(sessions.map((session) => [session.session_id, session]));
      const talked = [...byId.values()].find((session) => session.message_count === 2);
      expect(talked?.messages.map((message) => [message.position, message.role, message.content])).toEqual([
        [1, "user", "first question"],
        [2, "assistant", "reply #1 to: first question"],
        [3, "user", "second question"],
        [4, "assistant", "reply #2 to: second question"],
      ]);
      expect(talked?.summary).toMatchObject({ text: "They asked two questions", through: 2 });
      expect(talked?.usage).toMatchObject({ total_tokens: expect.any(Number) as number });
      expect([...byId.values()].find((session) => session.template_id === "socratic-tutor")).toMatchObject({ status: "ended", message_count: 1, ended_at: expect.any(String) as string });
      // The deployment's system prompt is not the user's data; another user's sessions are not theirs.
      expect(answer.text).not.toContain("system_prompt");
      expect(answer.text).not.toContain(other.userId);
      for (const id of other.ids) expect(answer.text).not.toContain(id);
      harness.fake.reset();
    }
  });

  it("continues in parts with signed cursors when one answer may carry less, each session whole and once", async () => {
    const { userId, ids } = await userWithData(small);
    const parts = await allParts(small, ROUTES.exportData, userId);
    expect(parts.map((part) => [part.body.part, part.body.session_count, part.body.complete])).toEqual([
      [1, 1, false],
      [2, 1, false],
      [3, 1, true],
    ]);
    expect(parts.flatMap(sessionsOf).map((session) => session.session_id)).toEqual(ids);
    expect(parts[0]?.body.usage).toBeDefined();
    expect(parts[1]?.body.usage).toBeUndefined();

    const cursor = parts[0]?.body.next_cursor as string;
    const [body = "", mac = ""] = cursor.split(".");
    const forged = `${Buffer.from(JSON.stringify({ s: ids[2], p: 2 })).toString("base64url")}.${mac}`;
    const someoneElse = `user-${randomUUID().slice(0, 8)}`;
    for (const [user, bad] of [[userId, forged], [userId, `${body}.${mac.slice(1)}A`], [someoneElse, cursor]] as const) {
      const answer = await small.api.call("GET", `${ROUTES.exportData}?user_id=${user}&cursor=${bad}`);
      expect({ status: answer.status, code: answer.body.error?.code }).toEqual({ status: 400, code: "INVALID_CURSOR" });
    }
  });

  it("ends a part that fails mid-way as valid JSON with the error and a cursor that resumes after the last whole session", async () => {
    const { userId, ids } = await userWithData(faulty);
    // The first page of sessions is read, the second read fails.
    faults!.arm("readUserSessions", "before", 1);
    const failed = await faulty.api.call("GET", `${ROUTES.exportData}?user_id=${userId}`);
    expect(failed.status).toBe(200);
    expect(failed.body).toMatchObject({ complete: false, session_count: 1, error: { code: "DATABASE_UNAVAILABLE" } });
    expect(sessionsOf(failed).map((session) => session.session_id)).toEqual([ids[0]]);
    const resumed = await faulty.api.call("GET", `${ROUTES.exportData}?user_id=${userId}&cursor=${String(failed.body.next_cursor)}`);
    expect(resumed.body).toMatchObject({ part: 2, complete: true, next_cursor: null });
    expect(sessionsOf(resumed).map((session) => session.session_id)).toEqual(ids.slice(1));
    // Failing before anything is written is an ordinary error answer.
    faults!.arm("readUsage", "before");
    const refused = await faulty.api.call("GET", `${ROUTES.exportData}?user_id=${userId}`);
    expect({ status: refused.status, code: refused.body.error?.code }).toEqual({ status: 503, code: "DATABASE_UNAVAILABLE" });
  });

  if (kind.startsWith("rtdb-2-")) {
    // During the deploy that appends a database instance (docs/sharding.md), a function instance
    // still on the old list reads none of the new instance's sessions: a part it answered as
    // complete would leave them out. The erasure refuses the same state as unavailable; so does this.
    it("refuses, as unavailable, an export or a cursor on a function instance still on the list before an instance was appended", async () => {
      const userId = `user-${randomUUID().slice(0, 8)}`;
      const ids: string[] = [];
      for (let i = 0; i < 4; i += 1) ids.push(await createSession(small.api, "friendly-assistant", userId));
      // Round robin: two on each instance; an export reads the first instance's, then the second's, one a part.
      expect(ids.map(instancePositionOf).sort()).toEqual([0, 0, 1, 1]);
      const parts = await allParts(small, ROUTES.exportData, userId);
      expect(parts.flatMap(sessionsOf).map((session) => session.session_id)).toEqual(ids.sort());

      const old = await small.instance({ DATABASE_INSTANCES: small.shards?.urls[0] ?? "" });
      const refusal = (answer: Answer) => ({ status: answer.status, code: answer.body.error?.code, retryAfter: answer.headers.get("retry-after") });
      const unavailable = { status: 503, code: "DATABASE_UNAVAILABLE", retryAfter: "1" };
      expect(refusal(await old.call("GET", `${ROUTES.exportData}?user_id=${userId}`))).toEqual(unavailable);
      // Cursors of the updated function instance: after the first instance's sessions, and in the second's.
      for (const part of parts.slice(1, 3)) {
        expect(refusal(await old.call("GET", `${ROUTES.exportData}?user_id=${userId}&cursor=${String(part.body.next_cursor)}`))).toEqual(unavailable);
      }
    });
  }

  it("exports an empty account as a complete document with no sessions", async () => {
    const answer = await harness.api.call("GET", `${ROUTES.exportData}?user_id=nobody-${randomUUID()}`);
    expect(answer.body).toMatchObject({ success: true, usage: { daily: null }, sessions: [], session_count: 0, complete: true, next_cursor: null });
    expect((await harness.api.call("GET", ROUTES.exportData)).body.error?.details).toEqual([{ field: "user_id", message: "is required" }]);
  });
}, { sharded: true });

describeEachStore("exporting a session idle past the TTL that no sweep has expired yet", (kind) => {
  const MINUTE = 60_000;
  let harness: Harness;
  let now = Date.parse("2026-03-01T10:00:00Z");

  beforeAll(async () => {
    harness = await startHarness({ store: kind, clock: () => now, env: { SESSION_IDLE_TTL_MINUTES: "30" } });
  });
  afterAll(async () => harness.close());

  it("calls it expired with the end its expiry records (its last activity and the TTL), as a request would find it", async () => {
    const userId = `user-${randomUUID().slice(0, 8)}`;
    const id = await createSession(harness.api, "friendly-assistant", userId);
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "hello" })).status).toBe(200);
    const lastActivity = now;
    now += 31 * MINUTE;

    const exported = await harness.api.call("GET", `${ROUTES.exportData}?user_id=${userId}`);
    expect(exported.status).toBe(200);
    const session = sessionsOf(exported).find((candidate) => candidate.session_id === id);
    expect({ status: session?.status, ended_at: session?.ended_at }).toEqual({ status: "expired", ended_at: new Date(lastActivity + 30 * MINUTE).toISOString() });
  });
});

/**
 * A stored history with a message missing (removed by hand, or lost by an older version): bad
 * stored data, which every read of a page it falls in answers DATA_ERROR (docs/conversations.md).
 * The export reads each session whole, so a session with one is such a read: its part ends
 * before it with the error, never with the messages after the gap moved into its place.
 */
describeWithRtdb("exporting a session with a stored message missing", () => {
  let harness: Harness;
  beforeAll(async () => {
    harness = await startHarness({ store: "rtdb" });
  });
  afterAll(async () => harness.close());

  /** Two sessions of three exchanges each, all copied out of the journal; position 3 removed by hand from the later one by id. */
  async function withHole(): Promise<{ userId: string; whole: string; broken: string }> {
    const userId = `user-${randomUUID().slice(0, 8)}`;
    const ids = [await createSession(harness.api, "friendly-assistant", userId), await createSession(harness.api, "friendly-assistant", userId)].sort();
    for (const id of ids) {
      for (const message of ["one", "two", "three"]) expect((await harness.api.call("POST", ROUTES.message(id), { message })).status).toBe(200);
    }
    const { store } = harness.api;
    if (!(store instanceof RtdbStore)) throw new Error("the harness's store is not the database's");
    // Every copy landed and left the journal (the next transaction drops it): the history is in `messages` alone.
    await store.copiesSettled();
    const database = harness.api.database!;
    for (const id of ids) {
      await store.updateState(id, () => ({ outcome: undefined }));
      expect((await database.ref(`userSessions/${id}/state/pending`).once("value")).exists()).toBe(false);
    }
    const [whole, broken] = ids as [string, string];
    await database.ref(`userSessions/${broken}/messages/m000000003`).remove();
    return { userId, whole, broken };
  }

  it("ends the part before that session with DATA_ERROR, every time, never numbering the messages after the gap into its place", async () => {
    const { userId, whole, broken } = await withHole();
    const answer = await harness.api.call("GET", `${ROUTES.exportData}?user_id=${userId}`);
    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({ complete: false, session_count: 1, error: { code: "DATA_ERROR" } });
    const [given] = sessionsOf(answer);
    expect(given?.session_id).toBe(whole);
    expect(given?.messages.map((message) => message.position)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(answer.text).not.toContain(broken);
    // Resumed, it meets the same: bad data stays bad until an operator repairs it.
    const resumed = await harness.api.call("GET", `${ROUTES.exportData}?user_id=${userId}&cursor=${String(answer.body.next_cursor)}`);
    expect(resumed.body).toMatchObject({ part: 2, complete: false, session_count: 0, error: { code: "DATA_ERROR" }, next_cursor: expect.any(String) as string });
  });
});
