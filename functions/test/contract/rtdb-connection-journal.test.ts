import { end } from "../../src/connections/connection-rules";
import { RtdbConnectionStore } from "../../src/store/rtdb/rtdb-connection-store";
import { CREATED_AT } from "../support/fixtures";
import { newConnection, refOf, sendAs } from "../support/connection-fixtures";
import { describeWithRtdb, freshNamespace, holdingUpdates, RtdbInstances } from "../support/rtdb";
import { TrailingLink } from "../support/trailing-link";

const T = CREATED_AT;

/** What only the Realtime Database adapter of connections does: the stored shape and the journal. */
describeWithRtdb("RtdbConnectionStore: stored shape and journal", () => {
  const instances = new RtdbInstances(freshNamespace("connection-journal"));
  afterAll(() => instances.close());

  it("stores messages under m + 9 digits, the connection's list entries as its last activity, and a small state once copied", async () => {
    const db = instances.database();
    const store = new RtdbConnectionStore(db, 10_000);
    const connection = newConnection();
    await store.createConnection(connection);
    for (let i = 1; i <= 3; i += 1) await store.appendMessage(refOf(connection), sendAs(connection, "a", `text ${i}`, T + i));
    await store.copiesSettled();
    const messages = (await db.ref(`connections/${connection.id}/messages`).once("value")).val() as Record<string, unknown>;
    expect(messages).toEqual({
      m000000001: { sender_id: connection.meta.user_a, content: "text 1", timestamp: T + 1 },
      m000000002: { sender_id: connection.meta.user_a, content: "text 2", timestamp: T + 2 },
      m000000003: { sender_id: connection.meta.user_a, content: "text 3", timestamp: T + 3 },
    });
    expect((await db.ref(`userConnections/${connection.userKeys.b}/${connection.id}`).once("value")).val()).toBe(T + 3);
    expect((await db.ref(`connections/${connection.id}/meta`).once("value")).val()).toEqual(connection.meta);
    // The next transaction drops what was copied: the state holds no history.
    await store.appendMessage(refOf(connection), sendAs(connection, "b", "text 4", T + 4));
    const state = (await db.ref(`connections/${connection.id}/state`).once("value")).val() as { pending?: Record<string, unknown>; message_count: number };
    expect(state.message_count).toBe(4);
    expect(Object.keys(state.pending ?? {})).toEqual(["m000000004"]);
    store.close();
  });

  it("finishes the copy of a message whose writer died after committing it, and readers never miss it", async () => {
    const db = instances.database();
    const writer = new RtdbConnectionStore(db, 10_000);
    const connection = newConnection();
    await writer.createConnection(connection);
    await writer.appendMessage(refOf(connection), sendAs(connection, "a", "copied", T + 1));
    await writer.copiesSettled();
    // A writer that committed message 2 and died before copying it.
    await db.ref(`connections/${connection.id}/state`).update({ message_count: 2, last_activity: T + 2, "pending/m000000002": { sender_id: connection.meta.user_b, content: "journaled", timestamp: T + 2 } });

    const cold = new RtdbConnectionStore(instances.database(), 10_000);
    expect((await cold.readConnectionMessages(connection.id, { limit: 10 }))?.map((stored) => stored.message.content)).toEqual(["copied", "journaled"]);
    expect(await cold.readConnectionMessage(connection.id, 2)).toMatchObject({ content: "journaled" });
    expect(await cold.appendMessage(refOf(connection), sendAs(connection, "a", "third", T + 3))).toMatchObject({ outcome: { kind: "stored", position: 3 } });
    await cold.copiesSettled();
    const messages = (await db.ref(`connections/${connection.id}/messages`).once("value")).val() as Record<string, { content: string }>;
    expect(Object.entries(messages).map(([key, message]) => [key, message.content])).toEqual([
      ["m000000001", "copied"],
      ["m000000002", "journaled"],
      ["m000000003", "third"],
    ]);
    writer.close();
    cold.close();
  });

  it("leaves no journal in a connection that ends: its copy is finished and dropped before the end returns", async () => {
    const db = instances.database();
    const store = new RtdbConnectionStore(db, 10_000);
    const connection = newConnection();
    await store.createConnection(connection);
    await store.appendMessage(refOf(connection), sendAs(connection, "a", "last words", T + 1));
    expect(await store.updateConnection(refOf(connection), end("b", T + 2))).toMatchObject({ outcome: { kind: "changed" }, state: { status: "ended" } });
    const state = (await db.ref(`connections/${connection.id}/state`).once("value")).val() as { pending?: unknown; status: string };
    expect(state).toMatchObject({ status: "ended" });
    expect(state.pending).toBeUndefined();
    expect((await db.ref(`connections/${connection.id}/messages/m000000001/content`).once("value")).val()).toBe("last words");
    store.close();
  });

  it("reads the messages of a connection whose state is gone as gone, though a late copy wrote some back, on a reader that listens to it and one that does not", async () => {
    const db = instances.database();
    const store = new RtdbConnectionStore(db, 10_000);
    const connection = newConnection();
    await store.createConnection(connection);
    await store.appendMessage(refOf(connection), sendAs(connection, "a", "before the erasure", T + 1));
    await store.copiesSettled();
    const listeningDb = instances.database();
    const listening = new RtdbConnectionStore(listeningDb, 10_000);
    listening.prepareConnection(connection.id);
    expect((await listening.readConnectionMessages(connection.id, { limit: 10 }))?.map((stored) => stored.message.content)).toEqual(["before the erasure"]);
    // An erasure deletes the node (through the listening instance, which then knows it at once); a copy sent before it lands after it.
    await listeningDb.ref(`connections/${connection.id}`).remove();
    await db.ref(`connections/${connection.id}/messages`).update({ m000000002: { sender_id: connection.meta.user_b, content: "late copy", timestamp: T + 2 } });

    const cold = new RtdbConnectionStore(instances.database(), 10_000);
    for (const reader of [cold, listening]) {
      expect(await reader.readConnectionMessages(connection.id, { limit: 10 })).toBeNull();
      expect(await reader.readConnectionMessages(connection.id, { limit: 10, before: 1 })).toBeNull();
      expect(await reader.readConnectionMessage(connection.id, 2)).toBeNull();
    }
    store.close();
    listening.close();
    cold.close();
  });
});

/**
 * docs/connections.md (Messages): "A page of messages is always a run of consecutive positions",
 * and the store port's "a reader paging back never skips one". An instance holding a connection's
 * state listener reads the journal from its copy, which trails the database as far as its link is
 * slow, and `messages` from the server: a message committed after that copy and not copied yet is
 * in neither read.
 */
describeWithRtdb("RtdbConnectionStore: a page read by an instance whose copy of the state trails the database", () => {
  let link: TrailingLink;
  beforeAll(async () => {
    link = await TrailingLink.start("connection-trailing-page");
  });
  afterAll(async () => link.close());

  /**
   * Messages 1 to 3 read by `trailing`, which then listens to the state; its link stalls while
   * another instance stores messages 4 and 5, whose copies to `messages` are held. Returns the
   * stores and what lets the copies go.
   */
  async function trailingByTwo() {
    const writerDb = link.direct.database();
    const writer = new RtdbConnectionStore(writerDb, 10_000);
    const fresh = new RtdbConnectionStore(link.direct.database(), 10_000);
    const trailing = new RtdbConnectionStore(link.slow.database(), 10_000);
    link.track(writer, fresh, trailing);
    const connection = newConnection();
    await writer.createConnection(connection);
    for (let i = 1; i <= 3; i += 1) await writer.appendMessage(refOf(connection), sendAs(connection, "a", `text ${i}`, T + i));
    await writer.copiesSettled();
    // The trailing instance served the connection: it holds its state's listener.
    trailing.prepareConnection(connection.id);
    expect((await trailing.readConnectionMessages(connection.id, { limit: 10 }))?.map((m) => m.position)).toEqual([1, 2, 3]);
    link.proxy.stall();
    const release = holdingUpdates(writerDb, (path) => path === `connections/${connection.id}`);
    for (let i = 4; i <= 5; i += 1) await writer.appendMessage(refOf(connection), sendAs(connection, "b", `text ${i}`, T + i));
    const copied = async () => {
      release();
      await writer.copiesSettled();
    };
    return { connection, fresh, trailing, copied };
  }

  it("ends the page before position 5 at message 4, which the reader's newest page came after", async () => {
    const { connection, fresh, trailing, copied } = await trailingByTwo();
    // The reader's newest page (one message) comes from an instance that is up to date: message 5, next_before 5.
    expect((await fresh.readConnectionMessages(connection.id, { limit: 1 }))?.map((m) => m.position)).toEqual([5]);
    const reading = trailing.readConnectionMessages(connection.id, { before: 5, limit: 10 });
    link.proxy.resume();
    const page = await reading;
    await copied();
    expect(page?.map((m) => m.position)).toEqual([1, 2, 3, 4]);
  }, 30_000);

  it("answers a before past the end with the newest messages the database holds, not those of the trailing copy", async () => {
    const { connection, trailing, copied } = await trailingByTwo();
    const reading = trailing.readConnectionMessages(connection.id, { before: 999_999_999, limit: 10 });
    link.proxy.resume();
    const page = await reading;
    await copied();
    expect(page?.map((m) => m.position)).toEqual([1, 2, 3, 4, 5]);
    // Up to date now, the same page, past the end of every position (no wait for positions that are not there).
    expect((await trailing.readConnectionMessages(connection.id, { before: 999_999_999, limit: 2 }))?.map((m) => m.position)).toEqual([4, 5]);
  }, 30_000);
});
