import { randomUUID } from "node:crypto";
import type { Database } from "firebase-admin/database";
import { ConversationService } from "../../src/session/conversations/conversation-service";
import type { Exchange } from "../../src/store/records";
import { conversationOwnerKey, conversationPath, sessionPath } from "../../src/store/rtdb/paths";
import { RtdbStore } from "../../src/store/rtdb/rtdb-store";
import { appendAt, CREATED_AT, endAt, exchange, newSession, POLICY } from "../support/fixtures";
import { copyOf, describeWithRtdb, freshNamespace, losingUpdates, RtdbInstances } from "../support/rtdb";
import { TrailingLink } from "../support/trailing-link";

/** What the Realtime Database adapter does for a user's conversations beyond the shared contract. */
describeWithRtdb("RtdbStore: the conversation index as stored", () => {
  const instances = new RtdbInstances(freshNamespace("rtdb-conversations"));
  let db: Database;
  let store: RtdbStore;
  const service = (on: RtdbStore) => new ConversationService({ store: on, clock: () => CREATED_AT + 100, policy: POLICY, partialStaleMs: 60_000 });

  beforeAll(() => {
    db = instances.database();
    store = new RtdbStore(instances.database(), 10_000);
  });
  afterAll(async () => {
    store.close();
    await instances.close();
  });

  it("never reopens a closed conversation when a copy of an earlier commit lands after the close", async () => {
    const session = newSession({ user_id: "late-copy-user" });
    await store.createSession(session);
    await store.appendExchange(session.id, exchange("1", CREATED_AT + 1), appendAt(CREATED_AT + 1));
    await store.updateState(session.id, endAt(CREATED_AT + 2));
    // A copy sent by another instance before the close, delayed on its way: it writes what it knew.
    await db.ref().update({ [`userConversations/late-copy-user/${session.id}/status`]: "active", [`userConversations/late-copy-user/${session.id}/message_count`]: 1 });
    const [listed] = (await service(store).list("late-copy-user", 5)).conversations;
    expect(listed).toMatchObject({ sessionId: session.id, status: "ended" });
  });

  it("keeps a closed conversation's count and closing activity in the list when a copy of an earlier commit lands after the close", async () => {
    const user = "late-copy-closed";
    const session = newSession({ user_id: user });
    await store.createSession(session);
    await store.appendExchange(session.id, exchange("1", CREATED_AT + 1), appendAt(CREATED_AT + 1));
    await store.appendExchange(session.id, exchange("2", CREATED_AT + 2), appendAt(CREATED_AT + 2));
    await store.updateState(session.id, endAt(CREATED_AT + 3));
    await store.copiesSettled();
    // Exchange 1's index copy (the fields indexUpdate sends for that commit), sent by another
    // instance before the close and delayed: no commit follows a closed session to set it right.
    await db.ref(`userConversations/${user}/${session.id}`).update({ last_activity: CREATED_AT + 1, message_count: 1, status: "active" });
    await store.copiesSettled();
    const [listed] = (await service(store).list(user, 5)).conversations;
    const read = await service(store).read(session.id, undefined, { limit: 10 });
    expect(read.summary).toMatchObject({ status: "ended", messageCount: 2, lastActivity: CREATED_AT + 3 });
    expect(listed).toMatchObject({ sessionId: session.id, status: "ended", messageCount: 2, lastActivity: CREATED_AT + 3 });
  });

  it("shows a commit whose copy has not landed: reading a conversation merges the journal", async () => {
    const session = newSession({ user_id: "journal-reader" });
    await store.createSession(session);
    // An instance whose copies are all lost (a connection that dropped after its commits).
    const writer = new RtdbStore(losingUpdates(instances.database(), copyOf(session.id)), 3_000);
    await writer.appendExchange(session.id, exchange("1", CREATED_AT + 1), appendAt(CREATED_AT + 1));
    await writer.copiesSettled();
    expect((await db.ref(`userSessions/${session.id}/messages`).once("value")).exists()).toBe(false);
    const view = await service(store).read(session.id, undefined, { limit: 10 });
    expect(view.messages.map(({ position, message }) => [position, message.content])).toEqual([
      [1, "question 1"],
      [2, "answer 1"],
    ]);
    expect(view.summary).toMatchObject({ messageCount: 1 });
    writer.close();
  });

  it("sends the index entry again when its update alone was lost: the journal keeps the exchange until both updates landed", async () => {
    const session = newSession({ user_id: "index-lost-user" });
    await store.createSession(session);
    // An instance whose first update of an index entry is lost (its copies of the session land):
    // exchange 1's head, the conversation's title, is carried by the journal alone.
    let lost = false;
    const flaky = losingUpdates(instances.database(), (path) => {
      if (lost || !path?.startsWith("userConversations/")) return false;
      lost = true;
      return true;
    });
    const writer = new RtdbStore(flaky, 3_000);
    const head = { title: "the first question", template_id: "tester", template_name: "Tester", created_at: CREATED_AT };
    await writer.appendExchange(session.id, { ...exchange("1", CREATED_AT + 1), head }, appendAt(CREATED_AT + 1));
    await writer.copiesSettled();
    expect(lost).toBe(true);
    expect((await store.listConversations("index-lost-user", 5))[0]?.entry.title).toBeUndefined();
    // The same instance's next message: its commit must not drop exchange 1 from the journal as copied.
    await writer.appendExchange(session.id, exchange("2", CREATED_AT + 2), appendAt(CREATED_AT + 2));
    await writer.copiesSettled();
    const [listed] = await store.listConversations("index-lost-user", 5);
    expect(listed?.entry).toMatchObject({ title: "the first question", message_count: 2 });
    writer.close();
  });

  it("lists a user whose id is no database key under a hash of it, and finds sessions made before the index", async () => {
    const odd = "first.last@example.com/#1";
    const session = newSession({ user_id: odd });
    await store.createSession(session);
    await store.appendExchange(session.id, { ...exchange("1", CREATED_AT + 1), head: { title: "odd one", template_id: "tester", template_name: "Tester", created_at: CREATED_AT } }, appendAt(CREATED_AT + 1));
    await store.copiesSettled();
    expect((await store.listConversations(odd, 5)).map((listed) => [listed.sessionId, listed.entry.title])).toEqual([[session.id, "odd one"]]);
    const owners = Object.keys(((await db.ref("userConversations").once("value")).val() ?? {}) as Record<string, unknown>);
    expect(owners.filter((owner) => owner.startsWith("~"))).toHaveLength(1);
    expect(owners.join()).not.toContain("example");

    // A session stored before the index existed: no entry, no block in its state.
    const old = newSession({ user_id: "old-timer" });
    await store.createSession(old);
    await db.ref().update({ [`userSessions/${old.id}/state/conversation`]: null, [`userConversations/old-timer/${old.id}`]: null });
    expect(await store.listConversations("old-timer", 5)).toEqual([]);
    // Export and erasure find it all the same, by its user_id.
    expect((await store.readUserSessions("old-timer", undefined, 5)).map((found) => found.id)).toEqual([old.id]);
  });

  it("reads a session whole with each message at its key's position: one removed by hand leaves a gap, those after it keep theirs", async () => {
    const user = "history-with-a-hole";
    const session = newSession({ user_id: user });
    await store.createSession(session);
    for (const seq of [1, 2, 3]) await store.appendExchange(session.id, exchange(String(seq), CREATED_AT + seq), appendAt(CREATED_AT + seq));
    // Every copy landed and left the journal (the next transaction drops it): the history is in `messages` alone.
    await store.copiesSettled();
    await store.updateState(session.id, () => ({ outcome: undefined }));
    expect((await db.ref(`userSessions/${session.id}/state/pending`).once("value")).exists()).toBe(false);
    await db.ref(`userSessions/${session.id}/messages/m000000003`).remove();
    const [read] = await store.readUserSessions(user, undefined, 5);
    expect(read?.messages.map(({ position, message }) => [position, message.content])).toEqual([
      [1, "question 1"],
      [2, "answer 1"],
      [4, "answer 2"],
      [5, "question 3"],
      [6, "answer 3"],
    ]);
  });
});

/**
 * Two keyed creates of one session (a client's retry after a timeout, its key fixing the id), no
 * erasure: the first read the session absent, then its link stalled with its index entry update
 * and its node on their way; the retry created the session, which took its first exchange (the
 * title in its entry) and was ended (the closing fields). The first create's entry update lands
 * last, field by field: it takes back none of what the session's copies wrote.
 */
describeWithRtdb("RtdbStore: the index entry of a session two creates raced for", () => {
  let link: TrailingLink;
  beforeAll(async () => {
    link = await TrailingLink.start("racing-creates");
  });
  afterAll(async () => link.close());

  /** An exchange that heads its conversation, as a first exchange's commit sends it. */
  const titled = (tag: string, at: number, createdAt: number): Exchange => ({ ...exchange(tag, at), head: { title: `title ${tag}`, template_id: "tester", template_name: "Tester", created_at: createdAt } });

  /** Stalls `link` once `database` is asked for a ref at `path` for the `nth` time (what it sent before that answered); resolves then. */
  function stallAt(database: Database, path: string, nth = 1): Promise<void> {
    const ref = database.ref.bind(database);
    let asked = 0;
    return new Promise((stalled) => {
      (database as { ref: Database["ref"] }).ref = (at?: string) => {
        if (at === path && ++asked === nth) {
          link.proxy.stall();
          stalled();
        }
        return ref(at);
      };
    });
  }

  type Session = { readonly fast: RtdbStore; readonly userId: string; readonly id: string; readonly entryPath: string };

  /**
   * While the slow instance's request is stalled: the fast one's create answers `fastCreates`, then
   * the session's own exchange 1 (its head of the creation `headCreatedAt`) and its end are copied,
   * and the entry holds their title and close; then the link resumes.
   */
  async function ownCopiesKept(on: Session, how: { readonly fastCreates: "created" | "exists"; readonly headCreatedAt: number }): Promise<void> {
    const { fast, userId, id, entryPath } = on;
    expect(await fast.createSession(newSession({ user_id: userId, created_at: CREATED_AT + 10 }, id))).toBe(how.fastCreates);
    await fast.appendExchange(id, titled("1", CREATED_AT + 20, how.headCreatedAt), appendAt(CREATED_AT + 21));
    await fast.copiesSettled();
    await fast.updateState(id, endAt(CREATED_AT + 30));
    await fast.copiesSettled();
    const before = (await link.direct.database().ref(entryPath).get()).val() as Record<string, unknown>;
    expect({ title: before.title, closed: before.closed }).toEqual({ title: "title 1", closed: "ended" });
    link.proxy.resume();
  }

  /** The entry and the list keep the title and the close the session's own copies wrote. */
  async function expectOwnEntry(on: Session): Promise<void> {
    const { fast, userId, id, entryPath } = on;
    const after = (await link.direct.database().ref(entryPath).get()).val() as Record<string, unknown>;
    const listed = (await fast.listConversations(userId, 10)).map(({ sessionId, entry }) => [sessionId, entry.title, entry.closed]);
    expect({ title: after.title, closed: after.closed, listed }).toEqual({ title: "title 1", closed: "ended", listed: [[id, "title 1", "ended"]] });
  }

  it("keeps the title and the close the session's own copies wrote when the other create's entry update lands after them", async () => {
    const userId = `user-${randomUUID()}`;
    const id = randomUUID();
    const entryPath = conversationPath(conversationOwnerKey(userId), id);
    const slowDb = link.slow.database();
    const stalled = stallAt(slowDb, entryPath);
    const slow = new RtdbStore(slowDb, 30_000);
    const fast = new RtdbStore(link.direct.database(), 30_000);
    link.track(slow, fast);

    const first = slow.createSession(newSession({ user_id: userId, created_at: CREATED_AT }, id));
    await stalled;
    await ownCopiesKept({ fast, userId, id, entryPath }, { fastCreates: "created", headCreatedAt: CREATED_AT + 10 });
    expect(await first).toBe("exists");
    await expectOwnEntry({ fast, userId, id, entryPath });
  }, 60_000);

  it("keeps the title and the close the session's own copies wrote when a create that replaced a late copy's leftovers takes back that copy's head after them", async () => {
    const userId = `user-${randomUUID()}`;
    const id = randomUUID();
    const entryPath = conversationPath(conversationOwnerKey(userId), id);
    // What a late copy of an erased session left under the id: its messages and the entry's head.
    await link.direct.database().ref().update({
      [`${sessionPath(id)}/messages/m000000001`]: { role: "user", content: "erased question", timestamp: CREATED_AT - 100 },
      [`${sessionPath(id)}/messages/m000000002`]: { role: "assistant", content: "erased answer", timestamp: CREATED_AT - 99 },
      [entryPath]: { title: "erased title", created_at: CREATED_AT - 1_000, last_activity: CREATED_AT - 99, message_count: 1, status: "active" },
    });
    const slowDb = link.slow.database();
    // The entry's update beside the create, then the take-back once the create replaced the leftovers: stalled there.
    const stalled = stallAt(slowDb, entryPath, 2);
    const slow = new RtdbStore(slowDb, 30_000);
    const fast = new RtdbStore(link.direct.database(), 30_000);
    link.track(slow, fast);

    const first = slow.createSession(newSession({ user_id: userId, created_at: CREATED_AT }, id));
    await stalled;
    // The key's retry on another instance finds the session; the client sends its first message, then ends it.
    await ownCopiesKept({ fast, userId, id, entryPath }, { fastCreates: "exists", headCreatedAt: CREATED_AT });
    expect(await first).toBe("created");
    await expectOwnEntry({ fast, userId, id, entryPath });
  }, 60_000);
});
