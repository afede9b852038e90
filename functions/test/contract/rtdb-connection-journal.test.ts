import { end } from "../../src/connections/connection-rules";
import { RtdbConnectionStore } from "../../src/store/rtdb/rtdb-connection-store";
import { CREATED_AT } from "../support/fixtures";
import { newConnection, refOf, sendAs } from "../support/connection-fixtures";
import { describeWithRtdb, freshNamespace, RtdbInstances } from "../support/rtdb";

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
