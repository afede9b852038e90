import { randomUUID } from "node:crypto";
import type { Database } from "firebase-admin/database";
import { appendMessage } from "../../src/connections/connection-rules";
import { knownFrom } from "../../src/connections/known-connections";
import { silentLog } from "../../src/log/log";
import { createOfflineSender } from "../../src/notify/offline-sender";
import { userKey } from "../../src/session/ledger/limits";
import { RtdbConnectionStore } from "../../src/store/rtdb/rtdb-connection-store";
import { ApiUser, connectionOf, FUNCTION_ROUTES, HOSTING_ROUTES } from "../support/connection-api";
import { describeEachStore, ROUTES, startHarness, twoInstances, type Answer, type Harness, type Instance } from "../support/http-harness";
import { describeWithRtdb, holdingUpdates, losingUpdates, RtdbInstances } from "../support/rtdb";
import { parseHost, TcpProxy } from "../support/tcp-proxy";
import { describeWithWireStats, resetWireStats } from "../support/wire-stats";

interface ReadMessage {
  readonly id: string;
  readonly position: number;
  readonly sender_id: string;
  readonly content: string;
}

/** Two function instances on one database (the rate limits lifted, as serviceEnv does), racing. */
describeEachStore("connections across instances", (kind) => {
  const instances = twoInstances({ store: kind });

  it("makes one connection of 20 concurrent requests for one pair from both sides on two instances", async () => {
    const { harness, second } = instances;
    const tag = randomUUID().slice(0, 8);
    const users = [`ann-${tag}`, `ben-${tag}`];
    // Each side through both instances and both URL forms.
    const askers = Array.from({ length: 20 }, (_, index) => {
      const [me, other] = index % 2 === 0 ? users : [...users].reverse();
      return new ApiUser(me!, index % 4 < 2 ? harness.api : second, index % 3 === 0 ? FUNCTION_ROUTES : HOSTING_ROUTES).ask(other!);
    });
    const answers = await Promise.all(askers);
    expect(answers.map((answer) => answer.status).filter((status) => status !== 200 && status !== 201)).toEqual([]);
    const ids = new Set(answers.map((answer) => connectionOf(answer).connection_id));
    expect(ids.size).toBe(1);
    expect(answers.filter((answer) => answer.body.created === true)).toHaveLength(1);
    const [id] = [...ids] as string[];
    // Both asked: the connection is accepted.
    const ann = new ApiUser(users[0]!, second, HOSTING_ROUTES);
    const ben = new ApiUser(users[1]!, harness.api, HOSTING_ROUTES);
    expect(connectionOf(await ann.get(id!))).toMatchObject({ status: "accepted", message_count: 0 });
    for (const user of [ann, ben]) {
      const listed = (await user.list()).body.connections as { connection_id: string }[];
      expect(listed.map((connection) => connection.connection_id)).toEqual([id]);
    }
  });

  it("stores 50 concurrent messages from both participants on two instances once each, in one order for both readers, counted exactly", async () => {
    const { harness, second } = instances;
    const tag = randomUUID().slice(0, 8);
    const ann = new ApiUser(`ann-${tag}`, harness.api, HOSTING_ROUTES);
    const ben = new ApiUser(`ben-${tag}`, second, FUNCTION_ROUTES);
    const id = await ann.connectWith(ben);
    const senders = [ann, ann.on(second), ben, ben.on(harness.api)];
    const sent = await Promise.all(Array.from({ length: 50 }, (_, index) => senders[index % 4]!.send(id, `message ${index}`, index % 5 === 0 ? { "Idempotency-Key": `key-${index}` } : {})));
    expect(sent.map((answer) => answer.status)).toEqual(Array<number>(50).fill(201));
    const positions = sent.map((answer) => (answer.body.message as ReadMessage).position).sort((x, y) => x - y);
    expect(positions).toEqual(Array.from({ length: 50 }, (_, index) => index + 1));
    expect(Math.max(...sent.map((answer) => Number(answer.body.message_count)))).toBe(50);

    const readings = await Promise.all([ann.read(id, "&limit=100"), ben.read(id, "&limit=100"), ann.on(second).read(id, "&limit=100"), ben.on(harness.api).read(id, "&limit=100")]);
    const orders = readings.map((reading) => (reading.body.messages as ReadMessage[]).map((message) => `${message.id} ${message.content}`));
    for (const order of orders) expect(order).toEqual(orders[0]);
    const stored = readings[0].body.messages as ReadMessage[];
    expect(stored.map((message) => message.id)).toEqual(Array.from({ length: 50 }, (_, index) => `m${String(index + 1).padStart(9, "0")}`));
    expect(stored.map((message) => message.content).sort()).toEqual(Array.from({ length: 50 }, (_, index) => `message ${index}`).sort());
    // Each message is stored as the answer to its request said.
    for (const answer of sent) {
      const message = answer.body.message as ReadMessage;
      expect(stored[message.position - 1]).toMatchObject({ content: message.content, sender_id: message.sender_id });
    }
    expect(connectionOf(await ben.get(id))).toMatchObject({ message_count: 50 });
  });

  // docs/connections.md, "Erasure": a message is stored and erased with the connection, or refused 404 once it is gone.
  it("answers a keyed retry 404 CONNECTION_NOT_FOUND when the other user's erasure takes the connection between the retry's finding its key and reading the message back", async () => {
    const { harness, second } = instances;
    const tag = randomUUID().slice(0, 8);
    const ann = new ApiUser(`ann-${tag}`, harness.api, HOSTING_ROUTES);
    const ben = new ApiUser(`ben-${tag}`, second, HOSTING_ROUTES);
    const id = await ann.connectWith(ben);
    const key = { "Idempotency-Key": `key-${tag}` };
    expect((await ann.send(id, "hello", key)).status).toBe(201);
    // The first answer was lost: her client sends it again with the same key.
    const held = holdFirstCall(harness.api.connectionStore, "readConnectionMessage");
    try {
      const retry = ann.send(id, "hello", key);
      await held.reached;
      expect((await second.call("DELETE", `${ROUTES.erase}?user_id=${ben.id}`)).status).toBe(200);
      held.open();
      const answer = await retry;
      expect({ status: answer.status, code: answer.body.error?.code }).toEqual({ status: 404, code: "CONNECTION_NOT_FOUND" });
    } finally {
      held.restore();
    }
    expect((await ann.send(id, "hello", key)).body.error?.code).toBe("CONNECTION_NOT_FOUND");
  });
});

/**
 * Requests and blocks racing other changes of the pair on two instances (a store call held in
 * between, as a slow link would): docs/connections.md, "Block" (no request between the two while
 * a block holds, so no notification either; a block holds everywhere or is lifted everywhere) and
 * "One connection per pair at a time" (a closed one is passed over).
 */
describeEachStore("connections across instances: changes racing on the pair", (kind) => {
  const pushes = createOfflineSender(silentLog);
  const instances = twoInstances({ store: kind, pushSender: pushes });

  /**
   * Ann asks Ben (his phone registered as `bensToken`) with her new connection's write held on her
   * instance while `meanwhile` runs; her answer, and what Ben's phone was sent after `meanwhile`.
   */
  async function askWhileHeld(ann: ApiUser, ben: ApiUser, bensToken: string, meanwhile: () => Promise<void>) {
    const held = holdFirstCall(instances.harness.api.connectionStore, "createConnection");
    try {
      const asking = ann.ask(ben.id);
      await held.reached;
      await meanwhile();
      const before = pushes.recorded().length;
      held.open();
      const asked = await asking;
      return { asked, pushed: pushes.recorded().slice(before).filter((push) => push.tokens.includes(bensToken)) };
    } finally {
      held.restore();
    }
  }

  it("refuses a request whose connection the other user's block reached before it was written, notifying no one", async () => {
    const { ann, ben, bensToken } = await annAndBensPhone(instances);
    const old = String(connectionOf(await ann.ask(ben.id)).connection_id);
    expect((await ben.decline(old)).status).toBe(200);
    // Ann asks again: the pair names her new connection, whose write is held. Meanwhile Ben blocks
    // Ann through the old one: the block reaches the pair's current connection, writing it.
    const { asked, pushed } = await askWhileHeld(ann, ben, bensToken, async () => {
      expect((await ben.block(old)).status).toBe(200);
    });
    const pushedToBen = pushed.map((push) => push.notification.kind);
    expect({ status: asked.status, code: asked.body.error?.code, pushedToBen }).toEqual({ status: 403, code: "CONNECTION_BLOCKED", pushedToBen: [] });
  });

  it("makes a new connection for a request whose connection the other user accepted and ended before it was written", async () => {
    const { ann, ben, bensToken } = await annAndBensPhone(instances);
    // Meanwhile Ben asks Ann too (accepting her request, which he writes from the pair's record), then ends it.
    let ended = "";
    const { asked, pushed } = await askWhileHeld(ann, ben, bensToken, async () => {
      ended = String(connectionOf(await ben.ask(ann.id)).connection_id);
      expect((await ben.end(ended)).status).toBe(200);
    });
    const made = connectionOf(asked);
    const pushedToBen = pushed.map((push) => [push.notification.kind, push.notification.connectionId]);
    expect({ status: asked.status, ended: made.connection_id === ended, state: made.status, pushedToBen }).toEqual({ status: 201, ended: false, state: "pending", pushedToBen: [["request", made.connection_id]] });
  });

  it("leaves a block and an unblock by one user, racing on two instances, agreeing on the connection and the pair", async () => {
    const { harness, second } = instances;
    const tag = randomUUID().slice(0, 8);
    const ann = new ApiUser(`ann-${tag}`, harness.api, HOSTING_ROUTES);
    const ben = new ApiUser(`ben-${tag}`, second, HOSTING_ROUTES);
    const id = await ann.connectWith(ben);
    // Ann's block (first instance) has found the connection; its change of the pair is held.
    const held = holdFirstCall(harness.api.connectionStore, "updatePair");
    try {
      const blocking = ann.block(id);
      await held.reached;
      // Meanwhile her unblock (second instance) runs through; then the block changes the pair last.
      expect((await ann.on(second).unblock(id)).status).toBe(200);
      held.open();
      const blocked = await blocking;
      expect({ status: blocked.status, blocked_by_you: connectionOf(blocked).blocked_by_you }).toEqual({ status: 200, blocked_by_you: true });
    } finally {
      held.restore();
    }
    // The block holds everywhere: on the connection (messages) as on the pair (requests).
    const outcome = { stored: connectionOf(await ann.get(id)).blocked_by_you, message: (await ben.send(id, "still here?")).status, request: (await ben.ask(ann.id)).status };
    expect(outcome).toEqual({ stored: true, message: 403, request: 403 });
  });
});

/** Ann on the first of two instances, Ben on the second, his phone registered. */
async function annAndBensPhone({ harness, second }: { readonly harness: Harness; readonly second: Instance }): Promise<{ ann: ApiUser; ben: ApiUser; bensToken: string }> {
  const tag = randomUUID().slice(0, 8);
  const ann = new ApiUser(`ann-${tag}`, harness.api, HOSTING_ROUTES);
  const ben = new ApiUser(`ben-${tag}`, second, HOSTING_ROUTES);
  const bensToken = `token-ben-${randomUUID()}`;
  expect((await ben.register(bensToken)).status).toBe(200);
  return { ann, ben, bensToken };
}

/**
 * Holds the first call of `store[method]` until `open()` (`reached` resolves when it arrives); later calls
 * go straight through. `restore()` drops the stand-in, leaving the class's own method.
 */
function holdFirstCall<S extends object>(store: S, method: keyof S & string): { readonly reached: Promise<void>; readonly open: () => void; readonly restore: () => void } {
  let arrive!: () => void;
  let open!: () => void;
  const reached = new Promise<void>((resolve) => (arrive = resolve));
  const opened = new Promise<void>((resolve) => (open = resolve));
  const original = Reflect.get(store, method) as (...args: unknown[]) => Promise<unknown>;
  let first = true;
  Reflect.set(store, method, async (...args: unknown[]) => {
    if (first) {
      first = false;
      arrive();
      await opened;
    }
    return Reflect.apply(original, store, args) as unknown;
  });
  return { reached, open: () => { open(); }, restore: () => Reflect.deleteProperty(store, method) };
}

/** What a list's answer shows: its status, its error's code if any, the connections' ids. */
function listing(answer: Answer) {
  return { status: answer.status, code: answer.body.error?.code, ids: (answer.body.connections as { connection_id: string }[] | undefined)?.map((connection) => connection.connection_id) };
}

/** Only the database has copies that land after the request that sent them. */
describeWithRtdb("connections across instances: a message's copy landing after the other user's erasure", () => {
  const instances = twoInstances({ store: "rtdb" });

  it("leaves the gone connection out of the remaining user's list, on every instance, and drops its entry", async () => {
    const { harness, second } = instances;
    const tag = randomUUID().slice(0, 8);
    const ann = new ApiUser(`ann-${tag}`, harness.api, HOSTING_ROUTES);
    const ben = new ApiUser(`ben-${tag}`, harness.api, HOSTING_ROUTES);
    const kept = await ben.connectWith(new ApiUser(`cat-${tag}`, harness.api, HOSTING_ROUTES));
    const id = await ann.connectWith(ben);
    const database = harness.api.database!;
    const store = harness.api.connectionStore;
    if (!(store instanceof RtdbConnectionStore)) throw new Error("the harness's database instance stores connections elsewhere");
    // Ann's message commits; its copy (the message, both users' list entries) is slow to land.
    const release = holdingUpdates(database, (path) => path === `connections/${id}` || path === "userConnections");
    expect((await ann.send(id, "bye")).status).toBe(201);
    // Meanwhile Ann erases her data through another instance: the connection goes, with both entries.
    expect((await second.call("DELETE", `${ROUTES.erase}?user_id=${ann.id}`)).status).toBe(200);
    release();
    await store.copiesSettled();
    const entry = second.database!.ref(`userConnections/${userKey(ben.id)}/${id}`);
    const listedAt: unknown = (await entry.once("value")).val();
    expect(listedAt).toEqual(expect.any(Number));

    // The first instance knows the gone connection's fields from before.
    expect(listing(await ben.list())).toEqual({ status: 200, ids: [kept] });
    expect((await entry.once("value")).exists()).toBe(false);
    // Another late copy lists it again; the second instance never knew its fields.
    await entry.set(listedAt);
    expect(listing(await ben.on(second).list())).toEqual({ status: 200, ids: [kept] });
    expect((await entry.once("value")).exists()).toBe(false);
    expect((await ben.get(id)).body.error?.code).toBe("CONNECTION_NOT_FOUND");
  });
});

/** Only the database has copies from two instances that land out of order. */
describeWithRtdb("connections across instances: a list copy landing after a newer one", () => {
  let now = Date.parse("2026-05-01T00:00:00Z");
  const instances = twoInstances({ store: "rtdb", clock: () => now });

  it("puts the entry it set back in order at the next list, and never writes an older time over it", async () => {
    const { harness, second } = instances;
    const tag = randomUUID().slice(0, 8);
    const ann = new ApiUser(`ann-${tag}`, harness.api, HOSTING_ROUTES);
    const ben = new ApiUser(`ben-${tag}`, second, HOSTING_ROUTES);
    const cat = new ApiUser(`cat-${tag}`, second, HOSTING_ROUTES);
    const withBen = await ann.connectWith(ben);
    now += 1_000;
    const withCat = await ann.on(second).connectWith(cat);
    now += 1_000;
    // Ann's message to Ben goes through the first instance, whose list copies are slow to land.
    const release = holdingUpdates(harness.api.database!, (path) => path === "userConnections");
    const sentToBen = now;
    expect((await ann.send(withBen, "hi Ben")).status).toBe(201);
    now += 1_000;
    // Meanwhile, through the second instance: Ann writes to Cat, then Ben ends their connection.
    expect((await ann.on(second).send(withCat, "hi Cat")).status).toBe(201);
    now += 1_000;
    const endedAt = now;
    expect((await ben.end(withBen)).status).toBe(200);
    const entry = second.database!.ref(`userConnections/${userKey(ann.id)}/${withBen}`);
    const setBack = new Promise<void>((resolve) => {
      const listener = entry.on("value", (snapshot) => {
        if (snapshot.val() !== sentToBen) return;
        entry.off("value", listener);
        resolve();
      });
    });
    release();
    await setBack;
    const ids = (answer: Answer) => (answer.body.connections as { connection_id: string }[]).map((connection) => connection.connection_id);
    // The list that finds the entry behind its state shows it as it is ordered, and moves it up.
    expect((await ann.on(second).list()).status).toBe(200);
    expect((await entry.once("value")).val()).toBe(endedAt);
    for (const api of [harness.api, second]) expect(ids(await ann.on(api).list())).toEqual([withBen, withCat]);
  });
});

/**
 * Only the database can lose the update that lists a new connection in both users' lists once its
 * state is written (the link dropped, or the instance died, between the two writes).
 */
describeWithRtdb("connections across instances: a request whose list update is lost", () => {
  const pushes = createOfflineSender(silentLog);
  const instances = twoInstances({ store: "rtdb", pushSender: pushes, env: { CONNECTION_REQUESTS_PER_HOUR: "2" } });

  it("lists the connection for both users at the request's repeat, which notifies the asked user once and costs no second request", async () => {
    const { harness, second } = instances;
    const { ann, ben, bensToken } = await annAndBensPhone(instances);
    const before = pushes.recorded().length;
    let lose = true;
    losingUpdates(harness.api.database!, (path) => {
      if (path !== "userConnections" || !lose) return false;
      lose = false;
      return true;
    });
    const first = await ann.ask(ben.id);
    // The request failed after the connection was written (5xx): Ann repeats it, on any instance.
    expect(first.status).toBeGreaterThanOrEqual(500);
    const again = await ann.on(second).ask(ben.id);
    expect(again.status).toBe(200);
    const id = String(connectionOf(again).connection_id);
    expect(connectionOf(again).status).toBe("pending");
    // A further repeat finds it listed and announced: it notifies no one again.
    expect((await ann.ask(ben.id)).status).toBe(200);
    await harness.api.runtime.maintain(Date.now() + 20 * 60_000);
    const ids = (answer: Answer) => (answer.body.connections as { connection_id: string }[]).map((connection) => connection.connection_id);
    // Ben was asked: he must see the request to accept or decline it; Ann sees what she asked.
    expect({ ben: ids(await ben.list()), ann: ids(await ann.list()) }).toEqual({ ben: [id], ann: [id] });
    const sent = pushes.recorded().slice(before).filter((push) => push.notification.connectionId === id);
    expect(sent.map((push) => [push.notification.kind, push.tokens])).toEqual([["request", [bensToken]]]);
    // The request that made the connection counted against Ann's 2 an hour, its repeats did not.
    expect((await ann.ask(`cat-${randomUUID().slice(0, 8)}`)).status).toBe(201);
    expect((await ann.ask(`dan-${randomUUID().slice(0, 8)}`)).status).toBe(429);
  });
});

/**
 * Only the database can lose the update that moves a connection in both users' lists after an
 * answer (accept, decline, end) committed: the link dropped between the two writes. The change is
 * made; its answer must say so, not 503 (a repeated end would then answer 410).
 */
describeWithRtdb("connections across instances: an answer whose list update is lost", () => {
  const instances = twoInstances({ store: "rtdb" });

  /** The next update of the users' lists on `api`'s database is lost. */
  function loseNextListUpdate(database: Database): void {
    let lose = true;
    losingUpdates(database, (path) => {
      if (path !== "userConnections" || !lose) return false;
      lose = false;
      return true;
    });
  }

  it("answers an accept, then an end, 200 as committed; both users read and list them as they are", async () => {
    const { harness, second } = instances;
    const tag = randomUUID().slice(0, 8);
    const ann = new ApiUser(`ann-${tag}`, harness.api, HOSTING_ROUTES);
    const ben = new ApiUser(`ben-${tag}`, second, HOSTING_ROUTES);
    const asked = await ann.ask(ben.id);
    expect(asked.status).toBe(201);
    const id = String(connectionOf(asked).connection_id);
    loseNextListUpdate(second.database!);
    const accepted = await ben.accept(id);
    expect(accepted.status).toBe(200);
    expect(connectionOf(accepted).status).toBe("accepted");
    expect((await ann.send(id, "hello")).status).toBe(201);
    loseNextListUpdate(harness.api.database!);
    const ended = await ann.end(id);
    expect(ended.status).toBe(200);
    expect(connectionOf(ended).status).toBe("ended");
    expect((await ann.end(id)).body.error?.code).toBe("CONNECTION_ENDED");
    const statuses = (answer: Answer) => (answer.body.connections as { connection_id: string; status: string }[]).map((connection) => [connection.connection_id, connection.status]);
    for (const user of [ann, ben]) {
      expect(connectionOf(await user.get(id)).status).toBe("ended");
      expect(statuses(await user.list())).toEqual([[id, "ended"]]);
      expect(((await user.read(id)).body.messages as ReadMessage[]).map((message) => message.content)).toEqual(["hello"]);
    }
  });
});

/** Resolves at the next `database.ref(path)` for `path`: the moment a read of it is sent. */
function nextRefTo(database: Database, path: string): Promise<void> {
  const ref = database.ref.bind(database);
  return new Promise<void>((resolve) => {
    (database as { ref: Database["ref"] }).ref = (asked?: string) => {
      if (asked === path) resolve();
      return ref(asked);
    };
  });
}

/**
 * docs/connections.md (Messages): "A page of messages is always a run of consecutive positions",
 * and `next_before` leads to the page before it. An instance that served a connection's messages
 * holds its state's listener, whose copy trails the database while its link is slow; the page it
 * answers for the reader's `next_before` still ends just before it.
 */
describeWithRtdb("connections across instances: paging back through an instance whose copy of the state trails", () => {
  let proxy: TcpProxy;
  let harness: Harness;
  let direct: RtdbInstances;
  let writer: RtdbConnectionStore | undefined;

  beforeAll(async () => {
    proxy = await TcpProxy.start(parseHost(process.env.FIREBASE_DATABASE_EMULATOR_HOST ?? ""));
    // The API's instance reaches the database through the proxy; another instance, direct.
    harness = await startHarness({ store: "rtdb", databaseHost: proxy.address, env: { CONNECTION_MESSAGES_PER_MINUTE: "100000" } });
    direct = new RtdbInstances(harness.namespace!);
  });
  afterAll(async () => {
    proxy.resume();
    writer?.close();
    await harness.close();
    await direct.close();
    await proxy.stop();
  });

  it("leads the reader from the newest page back to message 4, never past it", async () => {
    const tag = randomUUID().slice(0, 8);
    const ann = new ApiUser(`ann-${tag}`, harness.api, HOSTING_ROUTES);
    const ben = new ApiUser(`ben-${tag}`, harness.api, HOSTING_ROUTES);
    const id = await ann.connectWith(ben);
    for (let i = 1; i <= 3; i += 1) expect((await ann.send(id, `text ${i}`)).status).toBe(201);
    expect(((await ben.read(id)).body.messages as unknown[]).length).toBe(3);

    // Ben sends two more through another instance (direct link), whose copies are still on their
    // way, while the API instance's link is slow.
    const writerDb = direct.database();
    writer = new RtdbConnectionStore(writerDb, 10_000);
    const meta = await writer.readConnectionMeta(id);
    if (!meta) throw new Error(`connection ${id} has no meta`);
    const { ref } = knownFrom(id, meta);
    proxy.stall();
    const release = holdingUpdates(writerDb, (path) => path === `connections/${id}`);
    for (let i = 4; i <= 5; i += 1) {
      const sent = await writer.appendMessage(ref, appendMessage({ sender: meta.user_a === ben.id ? "a" : "b", senderId: ben.id, text: `text ${i}`, now: Date.now(), policy: { messagesPerMinute: 100_000 } }));
      expect(sent).toMatchObject({ found: true, outcome: { kind: "stored", position: i } });
    }
    // Ann's newest page, from an up-to-date instance: message 5, and next_before 5 (as the API gives it).
    const fresh = new RtdbConnectionStore(direct.database(), 10_000);
    expect((await fresh.readConnectionMessages(id, { limit: 1 }))?.map((m) => m.position)).toEqual([5]);
    fresh.close();

    // Ann pages back with next_before=5 through the API's (trailing) instance.
    const sending = nextRefTo(harness.api.database!, `connections/${id}/messages`);
    const page = ann.read(id, "&before=5&limit=50");
    await sending;
    proxy.resume();
    const answer = await page;
    release();
    await writer.copiesSettled();

    expect(answer.status).toBe(200);
    expect((answer.body.messages as ReadMessage[]).map((m) => m.position)).toEqual([1, 2, 3, 4]);
    expect(answer.body.next_before).toBeNull();
  }, 30_000);
});

/** rtdb-wire's counts (its README: /.wire/stats): first attempts refused for a stale hash, and listens started. */
async function listenStats(namespace: string): Promise<{ datastale: number; listens: number }> {
  const answer = await fetch(`http://${process.env.FIREBASE_DATABASE_EMULATOR_HOST ?? ""}/.wire/stats?ns=${namespace}`);
  const counted = (await answer.json()) as { datastale?: number; listens?: number };
  return { datastale: counted.datastale ?? 0, listens: counted.listens ?? 0 };
}

/**
 * docs/connections.md (Figures a): a warm message costs one round trip because the instance
 * listens to the connection's state and both users' devices (at most 512 nodes). Requests that
 * name connections which do not exist (404), or which belong to others (403), must not push those
 * listeners out: 600 of either, more than the bound.
 */
describeWithWireStats("connections across instances: an instance's listeners under requests it refuses [Realtime Database]", () => {
  const instances = twoInstances({ store: "rtdb" });

  /** Ann's connection with Ben, served warm by the first instance: its next message starts its transaction from the server's value. */
  async function warmConnection(tag: string): Promise<{ ann: ApiUser; id: string; namespace: string }> {
    const { harness } = instances;
    const namespace = harness.namespace!;
    const ann = new ApiUser(`ann-${tag}`, harness.api, HOSTING_ROUTES);
    const id = await ann.connectWith(new ApiUser(`ben-${tag}`, harness.api, HOSTING_ROUTES));
    expect((await ann.send(id, "one")).status).toBe(201);
    expect((await ann.send(id, "two")).status).toBe(201);
    await resetWireStats(namespace);
    expect((await ann.send(id, "three")).status).toBe(201);
    expect(await listenStats(namespace)).toMatchObject({ datastale: 0, listens: 0 });
    return { ann, id, namespace };
  }

  it("keeps listening to the connections it serves through messages to connection ids nobody made (404)", async () => {
    const tag = randomUUID().slice(0, 8);
    const { ann, id, namespace } = await warmConnection(tag);
    const mallory = new ApiUser(`mallory-${tag}`, instances.harness.api, HOSTING_ROUTES);
    for (let batch = 0; batch < 12; batch += 1) {
      const answers = await Promise.all(Array.from({ length: 50 }, () => mallory.send(randomUUID(), "hello?")));
      expect(answers.map((answer) => answer.status)).toEqual(Array(50).fill(404));
    }
    await resetWireStats(namespace);
    expect((await ann.send(id, "four")).status).toBe(201);
    // The connection's state and both users' devices are still listened to: no first attempt refused as stale, no listen started again.
    expect(await listenStats(namespace)).toMatchObject({ datastale: 0, listens: 0 });
  });

  it("keeps listening to the connections it serves through a stranger's messages and accepts on other users' connections (403)", async () => {
    const { harness, second } = instances;
    const tag = randomUUID().slice(0, 8);
    const { ann, id, namespace } = await warmConnection(tag);
    // 600 real connections, made through the second instance: the first has never served them.
    const others: string[] = [];
    for (let batch = 0; batch < 12; batch += 1) {
      const asked = await Promise.all(Array.from({ length: 50 }, (_, index) => new ApiUser(`x${batch}-${index}-${tag}`, second, HOSTING_ROUTES).ask(`y${batch}-${index}-${tag}`)));
      others.push(...asked.map((answer) => String(connectionOf(answer).connection_id)));
    }
    const mallory = new ApiUser(`mallory-${tag}`, harness.api, HOSTING_ROUTES);
    for (let batch = 0; batch < 12; batch += 1) {
      const answers = await Promise.all(others.slice(batch * 50, batch * 50 + 50).map((other, index) => (index % 2 === 0 ? mallory.send(other, "hello?") : mallory.accept(other))));
      expect(answers.map((answer) => answer.status)).toEqual(Array(50).fill(403));
    }
    await resetWireStats(namespace);
    expect((await ann.send(id, "four")).status).toBe(201);
    expect(await listenStats(namespace)).toMatchObject({ datastale: 0, listens: 0 });
  }, 60_000);
});
