import { isDeepStrictEqual } from "node:util";
import type { ChatMessage } from "../../src/store/records";
import { createSession, ROUTES, startHarness, type Harness } from "../support/http-harness";
import { describeWithRtdb } from "../support/rtdb";
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
