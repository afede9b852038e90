import { randomUUID } from "node:crypto";
import { isDeepStrictEqual } from "node:util";
import { userKey } from "../../src/session/ledger/limits";
import type { ChatMessage } from "../../src/store/records";
import { RtdbStore } from "../../src/store/rtdb/rtdb-store";
import { createSession, ROUTES, startHarness, type Harness } from "../support/http-harness";
import { describeWithRtdb, losingUpdates } from "../support/rtdb";
import { awaitValue, isRecord, messageKey, StoredView } from "../support/stored-view";

/**
 * The journal (`state/pending`) seen from the API: an exchange an instance committed to it but
 * never copied to `messages`, because it crashed, is copied by whoever closes the session next.
 */

describeWithRtdb("an exchange journaled just before its instance crashed [Realtime Database]", () => {
  const MINUTE = 60_000;
  let now = Date.parse("2026-03-01T09:00:00Z");
  let harness: Harness;
  let view: StoredView;

  beforeAll(async () => {
    harness = await startHarness({ store: "rtdb", clock: () => now, env: { SESSION_IDLE_TTL_MINUTES: "30" } });
    view = new StoredView(harness);
  });
  afterAll(async () => {
    await view.close();
    await harness.close();
  });

  /**
   * What an instance that crashed right after committing an exchange leaves: the exchange in the
   * journal `state/pending/e000000001` with `message_count` counting it, nothing in `messages`.
   * Written by a connection of its own, as the crashed instance's was.
   */
  async function crashedAfterCommit(sessionId: string): Promise<Record<string, ChatMessage>> {
    const user: ChatMessage = { role: "user", content: "sent just before the crash", timestamp: now + 1_000 };
    const assistant: ChatMessage = { role: "assistant", content: "answered just before the crash", timestamp: now + 2_000 };
    now += 2_000;
    await view.fresh().ref(`userSessions/${sessionId}/state`).update({
      message_count: 1,
      last_activity: assistant.timestamp,
      idle_since: assistant.timestamp,
      "pending/e000000001": { user, assistant },
    });
    return { [messageKey(1)]: user, [messageKey(2)]: assistant };
  }

  /** The session's `messages` and journal, once the copy is done (or as they are after SETTLE_MS). */
  async function copied(sessionId: string, expected: Record<string, ChatMessage>) {
    const settled = (value: unknown) => isRecord(value) && isDeepStrictEqual(value.messages, expected) && !(isRecord(value.state) && "pending" in value.state);
    const session = await awaitValue(view.fresh().ref(`userSessions/${sessionId}`), settled);
    const node = isRecord(session) ? session : {};
    return { messages: node.messages ?? null, pending: (isRecord(node.state) ? node.state.pending : undefined) ?? null };
  }

  it("(a) ending the session over HTTP copies the journaled exchange to messages and clears state/pending", async () => {
    const id = await createSession(harness.api);
    const expected = await crashedAfterCommit(id);
    const ended = await harness.api.call("DELETE", ROUTES.end(id));
    expect(ended.status).toBe(200);
    expect(ended.body).toMatchObject({ status: "ended", message_count: 1 });
    expect(await copied(id, expected)).toEqual({ messages: expected, pending: null });
  });

  it("(b) expiring the session in the sweep copies the journaled exchange to messages and clears state/pending", async () => {
    const id = await createSession(harness.api);
    const expected = await crashedAfterCommit(id);
    now += 31 * MINUTE;
    const report = await harness.api.runtime.maintain(now);
    expect(report.expired).toBeGreaterThanOrEqual(1);
    expect(await harness.api.store.readSessionState(id)).toMatchObject({ status: "expired", message_count: 1 });
    expect(await copied(id, expected)).toEqual({ messages: expected, pending: null });
  });

  it("(c) expiring the session when a message finds it idle copies the journaled exchange to messages and clears state/pending", async () => {
    const id = await createSession(harness.api);
    const expected = await crashedAfterCommit(id);
    now += 31 * MINUTE;
    const late = await harness.api.call("POST", ROUTES.message(id), { message: "still there?" });
    expect(late.status).toBe(410);
    expect(late.body.error?.code).toBe("SESSION_EXPIRED");
    expect(await copied(id, expected)).toEqual({ messages: expected, pending: null });
  });
});

/**
 * A closing copy (an end's, an expiry's) whose update of the index entry never lands: the link
 * dropped once, after the change committed. The copy of the history beside it lands.
 */
describeWithRtdb("a closing copy whose index entry's update is lost [Realtime Database]", () => {
  const MINUTE = 60_000;
  let now = Date.parse("2026-03-02T09:00:00Z");
  let harness: Harness;

  beforeAll(async () => {
    harness = await startHarness({ store: "rtdb", clock: () => now, env: { SESSION_IDLE_TTL_MINUTES: "30" } });
  });
  afterAll(async () => harness.close());

  /** A session of a user of its own with one exchange, its copies landed; the next update of an index entry is lost. */
  async function sessionLosingItsNextIndexUpdate(): Promise<{ user: string; id: string }> {
    const user = `u-${randomUUID().slice(0, 8)}`;
    const id = await createSession(harness.api, "friendly-assistant", user);
    expect((await harness.api.call("POST", ROUTES.message(id), { user_id: user, message: "Hi" })).status).toBe(200);
    const { store } = harness.api;
    if (!(store instanceof RtdbStore)) throw new Error("the harness's store is not the database's");
    await store.copiesSettled();
    let lose = true;
    losingUpdates(harness.api.database!, (path) => {
      if (!lose || !path?.startsWith("userConversations/")) return false;
      lose = false;
      return true;
    });
    return { user, id };
  }

  async function listed(user: string, id: string): Promise<string | undefined> {
    const answer = await harness.api.call("GET", `${ROUTES.list}?user_id=${user}`);
    return (answer.body.sessions as { session_id: string; status: string }[]).find((session) => session.session_id === id)?.status;
  }

  /** The sweep's mark on the session's state, as stored (the state's schema leaves it out). */
  const unflushedSince = async (id: string): Promise<unknown> => (await harness.api.database!.ref(`userSessions/${id}/state/unflushed_since`).once("value")).val();

  const entryClosed = async (user: string, id: string): Promise<unknown> => (await harness.api.database!.ref(`userConversations/${user}/${id}/closed`).once("value")).val();

  it("answers the end 200 and frees its slot; a repeated end (410) lists the conversation as ended", async () => {
    const { user, id } = await sessionLosingItsNextIndexUpdate();
    const ended = await harness.api.call("DELETE", `${ROUTES.end(id)}?user_id=${user}`);
    expect(ended.status).toBe(200);
    expect((await harness.api.store.readUsage(userKey(user)))?.sessions ?? {}).not.toHaveProperty(id);
    expect(await listed(user, id)).toBe("active");
    const again = await harness.api.call("DELETE", `${ROUTES.end(id)}?user_id=${user}`);
    expect(again.status).toBe(410);
    const read = await harness.api.call("GET", `${ROUTES.get(id)}?user_id=${user}`);
    expect({ read: (read.body.session as { status: string }).status, listed: await listed(user, id) }).toEqual({ read: "ended", listed: "ended" });
    // Mended: nothing is left for the sweep.
    expect(await unflushedSince(id)).toBeNull();
  });

  it("lists the conversation as ended after the sweep, when the end is not repeated", async () => {
    const { user, id } = await sessionLosingItsNextIndexUpdate();
    expect((await harness.api.call("DELETE", `${ROUTES.end(id)}?user_id=${user}`)).status).toBe(200);
    expect(await listed(user, id)).toBe("active");
    // Its journal was empty: the end marked it for the sweep, by when it ended.
    expect(await unflushedSince(id)).toBe(now);
    now += MINUTE;
    const report = await harness.api.runtime.maintain(now);
    expect(report.flushed).toBeGreaterThanOrEqual(1);
    expect(await listed(user, id)).toBe("ended");
    expect(await unflushedSince(id)).toBeNull();
  });

  it("records an expiry in the index entry within the sweep's run whose expiry copy lost it", async () => {
    const { user, id } = await sessionLosingItsNextIndexUpdate();
    now += 31 * MINUTE;
    const report = await harness.api.runtime.maintain(now);
    expect(report.expired).toBeGreaterThanOrEqual(1);
    expect(await harness.api.store.readSessionState(id)).toMatchObject({ status: "expired" });
    expect(await entryClosed(user, id)).toBe("expired");
    expect(await unflushedSince(id)).toBeNull();
  });
});
