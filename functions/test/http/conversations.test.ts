import type { Database } from "firebase-admin/database";
import { randomUUID } from "node:crypto";
import { eventually } from "../support/event-stream-client";
import { RtdbStore } from "../../src/store/rtdb/rtdb-store";
import { FaultyStore } from "../support/faulty-store";
import { call, createSession, describeEachStore, ROUTES, startHarness, twoInstances, type Answer, type Harness, type Instance } from "../support/http-harness";
import { describeWithRtdb } from "../support/rtdb";

const MINUTE = 60_000;

interface Listed {
  readonly session_id: string;
  readonly status: string;
  readonly message_count: number;
  readonly title: string | null;
  readonly last_activity: string;
  readonly template_id: string;
}

const listed = (answer: Answer) => answer.body.sessions as Listed[];
const nextCursor = (answer: Answer) => answer.body.next_cursor as string | null;

/** A cursor with one character of its payload changed: still well-formed, no longer signed. */
function tampered(cursor: string): string {
  const [body = "", mac = ""] = cursor.split(".");
  const flipped = body.slice(0, -1) + (body.endsWith("A") ? "B" : "A");
  return `${flipped}.${mac}`;
}

/**
 * Listing and reading one's conversations over HTTP, on both URL forms: the Hosting paths (one
 * conversation's is `endSession`'s, which answers GET as `getSession`) and the function URLs.
 */
describeEachStore("a user's conversations: list and read", (kind) => {
  let harness: Harness;
  let now = Date.parse("2026-03-01T10:00:00Z");

  beforeAll(async () => {
    harness = await startHarness({ store: kind, clock: () => now, env: { SESSION_IDLE_TTL_MINUTES: "30", USER_MAX_ACTIVE_SESSIONS: "50", USER_MESSAGES_PER_MINUTE: "1000" } });
  });
  afterAll(async () => harness.close());
  beforeEach(() => { harness.fake.reset(); });

  const list = (userId: string, query = "", path: string = ROUTES.list) => harness.api.call("GET", `${path}?user_id=${encodeURIComponent(userId)}${query}`);
  const send = async (id: string, message: string) => {
    const answer = await harness.api.call("POST", ROUTES.message(id), { message });
    expect(answer.status).toBe(200);
  };

  /** `count` sessions of a new user, each a minute after the last, the first `withMessages` of them with a message. */
  async function userWith(count: number, withMessages = 0): Promise<{ userId: string; ids: string[] }> {
    const userId = `user-${randomUUID().slice(0, 8)}`;
    const ids: string[] = [];
    for (let i = 0; i < count; i += 1) {
      now += MINUTE;
      const id = await createSession(harness.api, "friendly-assistant", userId);
      if (i < withMessages) await send(id, `Question number ${i}: tell me about the moons of Jupiter and how they were found`);
      ids.push(id);
    }
    return { userId, ids };
  }

  it("lists the user's conversations newest activity first, with their fields and titles, on both URL forms", async () => {
    const { userId, ids } = await userWith(3, 1);
    const other = await userWith(1);
    now += MINUTE;
    await send(ids[1]!, "Hi there");
    for (const path of [ROUTES.list, ROUTES.directList]) {
      const answer = await list(userId, "", path);
      expect(answer.status).toBe(200);
      expect(answer.body).toMatchObject({ success: true, user_id: userId, next_cursor: null });
      const sessions = listed(answer);
      expect(sessions.map((session) => session.session_id)).toEqual([ids[1], ids[2], ids[0]]);
      expect(sessions[0]).toEqual({
        session_id: ids[1],
        template_id: "friendly-assistant",
        template_name: "Friendly Assistant",
        status: "active",
        created_at: expect.any(String) as string,
        last_activity: new Date(now).toISOString(),
        message_count: 1,
        title: "Hi there",
      });
      // Cut at a word boundary, on one line.
      expect(sessions[2]?.title).toBe("Question number 0: tell me about the moons of Jupiter and…");
      expect(sessions[1]).toMatchObject({ message_count: 0, title: null });
      expect(sessions.map((session) => session.session_id)).not.toContain(other.ids[0]);
    }
  });

  it("pages through many conversations with opaque cursors: every one once, none twice, the last page says so", async () => {
    const { userId, ids } = await userWith(7);
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const answer: Answer = await list(userId, `&limit=3${cursor ? `&cursor=${cursor}` : ""}`, pages % 2 === 0 ? ROUTES.list : ROUTES.directList);
      expect(answer.status).toBe(200);
      seen.push(...listed(answer).map((session) => session.session_id));
      cursor = nextCursor(answer);
      pages += 1;
    } while (cursor !== null && pages < 10);
    expect(pages).toBe(3);
    expect(seen).toEqual([...ids].reverse());
    // Exactly one page: no next cursor; an exact multiple of the page: the last one is empty of nothing.
    expect(nextCursor(await list(userId, "&limit=7"))).toBeNull();
    expect(listed(await list(userId, "&limit=100"))).toHaveLength(7);
    const none = await list(`nobody-${randomUUID()}`);
    expect(none.body).toMatchObject({ success: true, sessions: [], next_cursor: null });
  });

  it("refuses bad sizes, repeated parameters, missing users and cursors it did not issue with clear 400s", async () => {
    const { userId } = await userWith(3);
    for (const query of ["&limit=0", "&limit=101", "&limit=abc", "&limit=1.5", "&limit=-1", "&limit=1&limit=2"]) {
      const answer = await list(userId, query);
      expect({ query, status: answer.status, code: answer.body.error?.code }).toEqual({ query, status: 400, code: "INVALID_REQUEST" });
      expect(answer.body.error?.details).toEqual([expect.objectContaining({ field: "limit" })]);
    }
    const missing = await harness.api.call("GET", ROUTES.list);
    expect(missing.status).toBe(400);
    expect(missing.body.error?.details).toEqual([{ field: "user_id", message: "is required" }]);

    const cursor = nextCursor(await list(userId, "&limit=1"));
    expect(cursor).toEqual(expect.any(String));
    const someoneElse = await userWith(1);
    for (const bad of [tampered(cursor!), `${cursor!.split(".")[0]!}.AAAAAAAAAAAAAAAAAAAAAA`, "e30.e30", `${cursor!}x`.replace(/\.(.*)$/, ".$1x")]) {
      const answer = await list(userId, `&cursor=${bad}`);
      expect({ bad, status: answer.status, code: answer.body.error?.code }).toEqual({ bad, status: 400, code: "INVALID_CURSOR" });
    }
    // A cursor is the user's own: another user's request with it is refused, never answered from it.
    const replayed = await list(someoneElse.userId, `&cursor=${cursor!}`);
    expect(replayed.body.error?.code).toBe("INVALID_CURSOR");
    // Made up, or cut before its dot: not one this service issued, as docs/api.md says.
    for (const made of ["not-a-cursor", cursor!.slice(0, cursor!.indexOf("."))]) {
      expect((await list(userId, `&cursor=${made}`)).body.error?.code).toBe("INVALID_CURSOR");
    }
  });

  it("answers a cursor cut to nothing (what `cursor=${next ?? \"\"}` sends) 400 INVALID_CURSOR on the list, the read and the export, as the connection list does", async () => {
    const { userId, ids } = await userWith(1);
    const outcome = (answer: Answer) => ({ status: answer.status, code: answer.body.error?.code });
    const answers = {
      connections: outcome(await harness.api.call("GET", `/api/v1/connections?user_id=${userId}&cursor=`)),
      list: outcome(await list(userId, "&cursor=")),
      read: outcome(await harness.api.call("GET", `${ROUTES.get(ids[0]!)}?before=`)),
      export: outcome(await harness.api.call("GET", `${ROUTES.exportData}?user_id=${userId}&cursor=`)),
    };
    const invalid = { status: 400, code: "INVALID_CURSOR" };
    expect(answers).toEqual({ connections: invalid, list: invalid, read: invalid, export: invalid });
  });

  it("keeps paging through sessions that end or expire between pages: each listed once, with the status it has now", async () => {
    const { userId, ids } = await userWith(6);
    const first = await list(userId, "&limit=2");
    expect(listed(first).map((session) => session.session_id)).toEqual([ids[5], ids[4]]);
    // Between pages: one on a later page ends, and time passes so that the idle ones expire.
    now += MINUTE;
    expect((await harness.api.call("DELETE", ROUTES.end(ids[0]!))).status).toBe(200);
    now += 31 * MINUTE;
    const rest: Listed[] = [];
    let cursor = nextCursor(first);
    while (cursor !== null) {
      const page = await list(userId, `&limit=2&cursor=${cursor}`);
      expect(page.status).toBe(200);
      rest.push(...listed(page));
      cursor = nextCursor(page);
    }
    // Ending is activity: the ended session moved to the front, past the cursor; the others keep their places.
    expect(rest.map((session) => session.session_id)).toEqual([ids[3], ids[2], ids[1]]);
    expect(rest.every((session) => session.status === "expired")).toBe(true);
    const fresh = listed(await list(userId));
    expect(fresh[0]).toMatchObject({ session_id: ids[0], status: "ended" });
    expect(new Set(fresh.map((session) => session.session_id)).size).toBe(6);
  });

  it("lists a session idle past the TTL with a message still being answered as active, as getSession and sendMessage find it", async () => {
    const userId = `user-${randomUUID().slice(0, 8)}`;
    const id = await createSession(harness.api, "friendly-assistant", userId);
    // A message 29.5 minutes into the 30-minute idle TTL; its reply takes 42 s (within its 60 s lease).
    now += 29.5 * MINUTE;
    const release = harness.fake.holdAnswers();
    const first = harness.api.call("POST", ROUTES.message(id), { message: "hello" });
    await harness.fake.awaitRequests(1);
    now += 0.7 * MINUTE;
    const status = listed(await list(userId)).find((session) => session.session_id === id)?.status;
    const read = ((await harness.api.call("GET", ROUTES.get(id))).body.session as { status: string }).status;
    // A request made now finds the session active: a second message is admitted.
    const second = harness.api.call("POST", ROUTES.message(id), { message: "still there?" });
    await harness.fake.awaitRequests(2);
    release();
    const answers = [(await first).status, (await second).status];
    expect({ status, read, answers }).toEqual({ status: "active", read: "active", answers: [200, 200] });
  });

  it("reads one conversation with its messages newest page first, on the Hosting path and both function URLs", async () => {
    const { ids } = await userWith(1);
    const id = ids[0]!;
    for (let i = 1; i <= 5; i += 1) await send(id, `message ${i}`);
    for (const path of [ROUTES.get(id), ROUTES.directGet(id), ROUTES.directEnd(id)]) {
      const answer = await harness.api.call("GET", `${path}?limit=4`);
      expect(answer.status).toBe(200);
      expect(answer.body.session).toMatchObject({ session_id: id, status: "active", message_count: 5, title: "message 1", template_name: "Friendly Assistant" });
      expect(answer.body.messages).toEqual([
        { position: 7, role: "user", content: "message 4", timestamp: expect.any(String) as string },
        { position: 8, role: "assistant", content: "reply #4 to: message 4", timestamp: expect.any(String) as string, usage: expect.any(Object) as object },
        { position: 9, role: "user", content: "message 5", timestamp: expect.any(String) as string },
        { position: 10, role: "assistant", content: "reply #5 to: message 5", timestamp: expect.any(String) as string, usage: expect.any(Object) as object },
      ]);
      expect(answer.body.partials).toEqual([]);
      harness.fake.reset();
      for (let i = 1; i <= 5; i += 1) harness.fake.enqueue({ kind: "reply", text: `reply #${i} to: message ${i}` });
    }
    const positions: number[] = [];
    let before: string | null = null;
    do {
      const page: Answer = await harness.api.call("GET", `${ROUTES.get(id)}?limit=3${before ? `&before=${before}` : ""}`);
      expect(page.status).toBe(200);
      positions.unshift(...(page.body.messages as { position: number }[]).map((message) => message.position));
      before = page.body.next_before as string | null;
    } while (before !== null);
    expect(positions).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    // A messages cursor is bound to its session, and to its kind.
    const cursor = (await harness.api.call("GET", `${ROUTES.get(id)}?limit=2`)).body.next_before as string;
    const { ids: others } = await userWith(1);
    await send(others[0]!, "elsewhere");
    expect((await harness.api.call("GET", `${ROUTES.get(others[0]!)}?before=${cursor}`)).body.error?.code).toBe("INVALID_CURSOR");
    expect((await harness.api.call("GET", `${ROUTES.get(id)}?before=${tampered(cursor)}`)).body.error?.code).toBe("INVALID_CURSOR");
    expect((await list("anyone", `&cursor=${cursor}`)).body.error?.code).toBe("INVALID_CURSOR");
  });

  it("answers a session it does not know, or an id it could not have issued, as the other routes do", async () => {
    for (const path of [ROUTES.get(randomUUID()), ROUTES.directGet(randomUUID()), ROUTES.get("not-a-session")]) {
      const answer = await harness.api.call("GET", path);
      expect({ path, status: answer.status, code: answer.body.error?.code }).toEqual({ path, status: 404, code: "SESSION_NOT_FOUND" });
    }
    // The function that ends a session still refuses other methods, naming both it answers.
    const { ids } = await userWith(1);
    const put = await harness.api.call("PUT", ROUTES.get(ids[0]!));
    expect(put.status).toBe(405);
    expect(put.headers.get("allow")).toBe("DELETE, GET, HEAD, OPTIONS");
    const preflight = await call(harness.api.baseUrl, "OPTIONS", ROUTES.get(ids[0]!), undefined, { Origin: "https://app.example", "Access-Control-Request-Method": "GET" });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get("access-control-allow-methods")).toContain("GET");
  });
}, { sharded: true });

/**
 * Deleting the cursor secret (docs/conversations.md, Cursors) on a database two instances share,
 * each of which has used the secret before: neither may keep it.
 */
describeWithRtdb("a user's conversations: cursors once the cursor secret is deleted", () => {
  const both = twoInstances({ store: "rtdb" });
  const SECRET = "serviceSecrets/cursor";
  const page = (api: Instance, userId: string, cursor?: string) => api.call("GET", `${ROUTES.list}?user_id=${userId}&limit=1${cursor === undefined ? "" : `&cursor=${cursor}`}`);
  const outcome = (answer: Answer) => ({ status: answer.status, code: answer.body.error?.code, sessions: (answer.body.sessions as Listed[] | undefined)?.map((session) => session.session_id) });

  /** A user with three sessions, the one a second page of one shows, and a second-page cursor issued by each instance. */
  async function cursorsOfBoth(): Promise<{ userId: string; second: string; cursors: string[] }> {
    const userId = `user-${randomUUID().slice(0, 8)}`;
    for (let i = 0; i < 3; i += 1) await createSession(both.harness.api, "friendly-assistant", userId);
    const all = await both.harness.api.call("GET", `${ROUTES.list}?user_id=${userId}&limit=3`);
    const second = listed(all)[1]!.session_id;
    return { userId, second, cursors: await firstPages(userId) };
  }

  /** The next cursor of a first page asked of each instance at the same moment. */
  async function firstPages(userId: string): Promise<string[]> {
    const cursors = (await Promise.all([both.harness.api, both.second].map((api) => page(api, userId)))).map((answer) => nextCursor(answer));
    expect(cursors).toEqual([expect.any(String), expect.any(String)]);
    return cursors as string[];
  }

  /** Deletes the secret through the second instance's connection; resolves once both instances' connections have it gone. */
  async function deleteSecret(): Promise<void> {
    await both.second.database!.ref(SECRET).remove();
    for (const api of [both.harness.api, both.second]) await eventually(async () => (await api.database!.ref(SECRET).once("value")).val() as unknown, (value) => value === null);
  }

  it("refuses, on every instance, the cursors issued before the secret was deleted", async () => {
    const { userId, second, cursors } = await cursorsOfBoth();
    // Before the deletion, a cursor is good on either instance.
    expect(outcome(await page(both.harness.api, userId, cursors[1]))).toEqual({ status: 200, code: undefined, sessions: [second] });
    await deleteSecret();
    for (const api of [both.harness.api, both.second]) {
      for (const cursor of cursors) expect(outcome(await page(api, userId, cursor))).toEqual({ status: 400, code: "INVALID_CURSOR", sessions: undefined });
    }
  });

  it("accepts, on every instance, the cursors issued after the deletion, by one that used the old secret and one started since, making the new one at once", async () => {
    const { userId, second } = await cursorsOfBoth();
    await deleteSecret();
    const fresh = await both.harness.instance();
    // The instance that used the old secret and the new one find no secret at the same moment and both make one: one lands, for both.
    const cursors = (await Promise.all([both.harness.api, fresh].map((api) => page(api, userId)))).map((answer) => nextCursor(answer));
    expect(cursors).toEqual([expect.any(String), expect.any(String)]);
    for (const api of [both.harness.api, both.second, fresh]) {
      for (const cursor of cursors) expect(outcome(await page(api, userId, cursor!))).toEqual({ status: 200, code: undefined, sessions: [second] });
    }
  });
});

/**
 * `database` as a link that dropped for one transaction: the first transaction on a node `lost`
 * names is refused (never reaches the server), as losingUpdates does for updates. With sharding,
 * the session's node is on its shard and its index entry on the home instance: the shard can be
 * unreachable while the home instance takes the entry.
 */
function losingFirstTransaction(database: Database, lost: (path: string | undefined) => boolean): void {
  let done = false;
  const ref = database.ref.bind(database);
  (database as { ref: Database["ref"] }).ref = (path?: string) => {
    const node = ref(path);
    if (!done && lost(path)) {
      node.transaction = () => {
        done = true;
        return Promise.reject(new Error("connection lost"));
      };
    }
    return node;
  };
}

describeWithRtdb("a user's conversations: a create whose session write is lost after its index entry landed", () => {
  let harness: Harness;
  beforeAll(async () => {
    harness = await startHarness({ store: "rtdb", env: { USER_MAX_ACTIVE_SESSIONS: "1" } });
  });
  afterAll(async () => harness.close());

  it("never lists a conversation that does not exist, after the sweep either", async () => {
    const user = `u-${randomUUID().slice(0, 8)}`;
    losingFirstTransaction(harness.api.database!, (path) => /^userSessions\/[^/]+$/.test(path ?? ""));
    const created = await harness.api.call("POST", ROUTES.create, { user_id: user, template_id: "friendly-assistant" });
    // The create failed: the client was told nothing was made.
    expect(created.status).toBeGreaterThanOrEqual(500);
    await harness.api.runtime.maintain(Date.now() + 24 * 60 * 60_000);
    const answer = await harness.api.call("GET", `${ROUTES.list}?user_id=${user}`);
    expect(answer.status).toBe(200);
    const reads = await Promise.all(listed(answer).map(async (session) => ({ ...session, read: (await harness.api.call("GET", `${ROUTES.get(session.session_id)}?user_id=${user}`)).status })));
    expect(reads).toEqual([]);
    // Nothing is left of it in the index either, nor in the user's one active session.
    expect((await harness.api.database!.ref(`userConversations/${user}`).once("value")).exists()).toBe(false);
    expect((await harness.api.call("POST", ROUTES.create, { user_id: user, template_id: "friendly-assistant" })).status).toBe(201);
  });
});

/**
 * A stored history with a message missing (removed by hand, or lost by an older version): bad
 * stored data, answered as such (500 DATA_ERROR) by every read it falls in, never as a database
 * to retry (503 with Retry-After: 1, which a client would retry for ever).
 */
describeWithRtdb("a user's conversations: a stored history with a message missing", () => {
  let harness: Harness;
  beforeAll(async () => {
    harness = await startHarness({ store: "rtdb" });
  });
  afterAll(async () => harness.close());

  const answers = async (path: string) => {
    const seen = [];
    for (let i = 0; i < 2; i += 1) {
      const read = await harness.api.call("GET", path);
      seen.push({ status: read.status, code: read.body.error?.code, retryAfter: read.headers.get("retry-after") });
    }
    return seen;
  };
  const dataError = { status: 500, code: "DATA_ERROR", retryAfter: null };

  it("answers 500 DATA_ERROR, every time, to a read of a page the missing message falls in, and reads the other pages", async () => {
    const id = await createSession(harness.api);
    for (const message of ["first", "second", "third"]) expect((await harness.api.call("POST", ROUTES.message(id), { message })).status).toBe(200);
    const cursor = (await harness.api.call("GET", `${ROUTES.get(id)}?limit=2`)).body.next_before as string;
    // Every copy landed and left the journal (the next transaction drops it): the history is in `messages` alone.
    const { store } = harness.api;
    if (!(store instanceof RtdbStore)) throw new Error("the harness's store is not the database's");
    await store.copiesSettled();
    await store.updateState(id, () => ({ outcome: undefined }));
    expect((await harness.api.database!.ref(`userSessions/${id}/state/pending`).once("value")).exists()).toBe(false);

    // Exchange 2's question (position 3) is removed by hand: the page before the newest holds it.
    await harness.api.database!.ref(`userSessions/${id}/messages/m000000003`).remove();
    const newest = await harness.api.call("GET", `${ROUTES.get(id)}?limit=2`);
    expect({ status: newest.status, positions: (newest.body.messages as { position: number }[]).map((message) => message.position) }).toEqual({ status: 200, positions: [5, 6] });
    expect(await answers(`${ROUTES.get(id)}?limit=2&before=${cursor}`)).toEqual([dataError, dataError]);

    // The first message too: every read of the conversation reads it, for its title.
    await harness.api.database!.ref(`userSessions/${id}/messages/m000000001`).remove();
    expect(await answers(ROUTES.get(id))).toEqual([dataError, dataError]);
  });

  /** A session of three exchanges, all copied out of the journal, then position `missing` removed by hand. */
  async function withHole(missing: number): Promise<string> {
    const id = await createSession(harness.api);
    for (const message of ["one", "two", "three"]) expect((await harness.api.call("POST", ROUTES.message(id), { message })).status).toBe(200);
    const { store } = harness.api;
    if (!(store instanceof RtdbStore)) throw new Error("the harness's store is not the database's");
    await store.copiesSettled();
    await store.updateState(id, () => ({ outcome: undefined }));
    expect((await harness.api.database!.ref(`userSessions/${id}/state/pending`).once("value")).exists()).toBe(false);
    await harness.api.database!.ref(`userSessions/${id}/messages/m00000000${missing}`).remove();
    return id;
  }

  it("answers 500 DATA_ERROR to the newest page when the missing message falls in it, in its middle or at its end, never the messages after it alone or renumbered", async () => {
    // limit 50: the newest page spans positions 1 to 6.
    for (const missing of [3, 6]) {
      const id = await withHole(missing);
      const newest = await harness.api.call("GET", `${ROUTES.get(id)}?limit=50`);
      expect({
        missing,
        status: newest.status,
        code: newest.body.error?.code,
        positions: ((newest.body.messages as { position: number }[] | undefined) ?? []).map((message) => message.position),
      }).toEqual({ missing, status: 500, code: "DATA_ERROR", positions: [] });
      expect(await answers(`${ROUTES.get(id)}?limit=50`)).toEqual([dataError, dataError]);
    }
  });
});

describeEachStore("a user's conversations: the list when an idle session's state cannot be read", (kind) => {
  let harness: Harness;
  let faults: FaultyStore | undefined;
  let now = Date.parse("2026-03-01T10:00:00Z");

  beforeAll(async () => {
    harness = await startHarness({
      store: kind,
      clock: () => now,
      wrapStore: (store) => (faults ??= new FaultyStore(store)).store,
      env: { SESSION_IDLE_TTL_MINUTES: "30", USER_MAX_ACTIVE_SESSIONS: "50", USER_MESSAGES_PER_MINUTE: "1000" },
    });
  });
  afterAll(async () => harness.close());

  it("lists every conversation, one whose state read fails with the status its entry gives, as for a session gone", async () => {
    const userId = `user-${randomUUID().slice(0, 8)}`;
    const idle = await createSession(harness.api, "friendly-assistant", userId);
    now += 10 * MINUTE;
    const recent = await createSession(harness.api, "friendly-assistant", userId);
    // The first session is now idle past the 30-minute TTL (not swept yet), and its instance out of reach; the second is recent.
    now += 25 * MINUTE;
    faults!.reset();
    faults!.arm("readSessionState", "before");
    const answer = await harness.api.call("GET", `${ROUTES.list}?user_id=${encodeURIComponent(userId)}`);
    const statuses = Object.fromEntries(((answer.body.sessions ?? []) as Listed[]).map((session) => [session.session_id, session.status]));
    expect({ status: answer.status, code: answer.body.error?.code, statuses }).toEqual({ status: 200, code: undefined, statuses: { [idle]: "expired", [recent]: "active" } });
  });
});
