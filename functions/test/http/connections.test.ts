import { randomUUID } from "node:crypto";
import { ConfigError } from "../../src/config";
import { MAX_DEVICES, MAX_RELEASES, tokenHash } from "../../src/connections/device-rules";
import { DEVICE_TOKEN_MAX_CHARS, LARGEST_DEVICE_BODY_BYTES } from "../../src/http/message-body";
import { silentLog } from "../../src/log/log";
import { userKey } from "../../src/session/ledger/limits";
import { createOfflineSender, type OfflineSender } from "../../src/notify/offline-sender";
import { ApiUser, connectionOf, HOSTING_ROUTES, ROUTE_FORMS } from "../support/connection-api";
import { StoreUnavailableError } from "../../src/store/errors";
import type { ConnectionAdapter } from "../../src/store/connection-erasure-store";
import { FaultyStore, type Fault } from "../support/faulty-store";
import { describeEachStore, startHarness, type Answer, type Harness } from "../support/http-harness";
import { serveCallables, type CallableServer } from "../support/callable-server";

const FORBIDDEN = { success: false, error: { code: "FORBIDDEN", message: "Not allowed for the signed-in user" } };

describeEachStore("connections between users over HTTP", (kind) => {
  let harness: Harness;
  let pushes: OfflineSender;

  beforeAll(async () => {
    pushes = createOfflineSender(silentLog);
    // A clock that moves on at each reading: two changes in one millisecond would tie on last
    // activity, and the list's order between them is then the ids', not the order of the test's steps.
    let last = 0;
    const ticking = () => (last = Math.max(Date.now(), last + 1));
    harness = await startHarness({ store: kind, pushSender: pushes, clock: ticking });
  });
  afterAll(async () => harness.close());

  describe.each(ROUTE_FORMS)("through the $form", (routes) => {
    let alice: ApiUser;
    let bob: ApiUser;
    let mallory: ApiUser;
    beforeEach(() => {
      const tag = randomUUID().slice(0, 8);
      alice = new ApiUser(`alice-${tag}`, harness.api, routes);
      bob = new ApiUser(`bob-${tag}`, harness.api, routes);
      mallory = new ApiUser(`mallory-${tag}`, harness.api, routes);
    });

    it("asks, answers a repeat from either side with the same connection, the other side's request accepting it", async () => {
      const asked = await alice.ask(bob.id);
      expect(asked.status).toBe(201);
      expect(asked.body).toMatchObject({ success: true, created: true });
      const id = String(connectionOf(asked).connection_id);
      expect(connectionOf(asked)).toEqual({
        connection_id: id,
        status: "pending",
        other_user_id: bob.id,
        requested_by_you: true,
        message_count: 0,
        created_at: expect.any(String),
        last_activity: expect.any(String),
        accepted_at: null,
        closed_at: null,
        blocked_by_you: false,
        blocked_by_them: false,
      });

      const again = await alice.ask(bob.id);
      expect(again.status).toBe(200);
      expect(again.body).toMatchObject({ created: false, connection: { connection_id: id, status: "pending" } });
      // Bob sees the request, incoming; asking Alice back accepts it.
      expect(connectionOf(await bob.get(id))).toMatchObject({ other_user_id: alice.id, requested_by_you: false, status: "pending" });
      const back = await bob.ask(alice.id);
      expect(back.status).toBe(200);
      expect(back.body).toMatchObject({ created: false, connection: { connection_id: id, status: "accepted", accepted_at: expect.any(String) } });
    });

    it("notifies the asked user of a request once, and the recipient of each message, never the sender", async () => {
      await alice.register(`token-alice-${randomUUID()}`);
      const bobsToken = `token-bob-${randomUUID()}`;
      await bob.register(bobsToken);
      const before = pushes.recorded().length;
      const id = String(connectionOf(await alice.ask(bob.id)).connection_id);
      await alice.ask(bob.id);
      await bob.accept(id);
      await alice.send(id, "Hello Bob, this is a message long enough to be cut in its preview somewhere past one hundred characters, surely.");
      const sent = pushes.recorded().slice(before).filter((push) => push.notification.connectionId === id);
      expect(sent.map((push) => [push.notification.kind, push.tokens])).toEqual([
        ["request", [bobsToken]],
        ["message", [bobsToken]],
      ]);
      expect(sent[0]?.notification.preview).toBeUndefined();
      expect(sent[1]?.notification.preview).toMatch(/^Hello Bob, this is a message long enough.*…$/);
      expect(sent[1]?.notification.preview?.length).toBeLessThanOrEqual(100);
    });

    it("refuses messages until the asked user accepts, then stores both sides' under consecutive keys, read back a page at a time", async () => {
      const id = String(connectionOf(await alice.ask(bob.id)).connection_id);
      const early = await alice.send(id, "hello?");
      expect(early.status).toBe(409);
      expect(early.body.error?.code).toBe("CONNECTION_PENDING");
      expect((await alice.accept(id)).status).toBe(403);
      expect((await bob.accept(id)).status).toBe(200);
      expect(connectionOf(await bob.accept(id))).toMatchObject({ status: "accepted" });

      const first = await alice.send(id, "Hi Bob");
      expect(first.status).toBe(201);
      expect(first.body).toEqual({
        success: true,
        connection_id: id,
        message: { id: "m000000001", position: 1, sender_id: alice.id, content: "Hi Bob", timestamp: expect.any(Number) },
        message_count: 1,
      });
      for (const [who, text] of [[bob, "Hi Alice"], [alice, "How are you?"], [bob, "Fine"], [alice, "Good"]] as const) expect((await who.send(id, text)).status).toBe(201);

      const page = await bob.read(id, "&limit=2");
      expect(page.status).toBe(200);
      expect(page.body).toMatchObject({ connection_id: id, next_before: 4 });
      expect((page.body.messages as { id: string; content: string }[]).map((message) => [message.id, message.content])).toEqual([
        ["m000000004", "Fine"],
        ["m000000005", "Good"],
      ]);
      const older = await alice.read(id, "&limit=2&before=4");
      expect((older.body.messages as { content: string }[]).map((message) => message.content)).toEqual(["Hi Alice", "How are you?"]);
      const oldest = await alice.read(id, "&limit=2&before=2");
      expect(oldest.body).toMatchObject({ next_before: null, messages: [{ content: "Hi Bob", sender_id: alice.id }] });
      // Timestamps follow the keys.
      const all = (await alice.read(id)).body.messages as { timestamp: number }[];
      expect(all.map((message) => message.timestamp)).toEqual([...all.map((message) => message.timestamp)].sort((x, y) => x - y));
      expect(connectionOf(await alice.get(id))).toMatchObject({ message_count: 5 });
    });

    it("lets only the asked user decline; declined is final, and asking again makes a new connection", async () => {
      const id = String(connectionOf(await alice.ask(bob.id)).connection_id);
      expect((await alice.decline(id)).body).toEqual(FORBIDDEN);
      const declined = await bob.decline(id);
      expect(connectionOf(declined)).toMatchObject({ status: "declined", closed_at: expect.any(String) });
      for (const answer of [await bob.decline(id), await bob.accept(id), await alice.send(id, "please")]) {
        expect(answer.status).toBe(410);
        expect(answer.body.error?.code).toBe("CONNECTION_DECLINED");
      }
      const anew = await alice.ask(bob.id);
      expect(anew.status).toBe(201);
      expect(connectionOf(anew).connection_id).not.toBe(id);
    });

    it("ends: 410 to messages and a second end, history kept, and a request after it makes a new connection", async () => {
      const id = await alice.connectWith(bob);
      await alice.send(id, "before the end");
      const accepted = await bob.decline(id);
      expect(accepted.status).toBe(409);
      expect(accepted.body.error?.code).toBe("CONNECTION_NOT_PENDING");
      const ended = await bob.end(id);
      expect(ended.status).toBe(200);
      expect(connectionOf(ended)).toMatchObject({ status: "ended", message_count: 1 });
      for (const answer of [await alice.send(id, "after the end"), await alice.end(id), await bob.end(id)]) {
        expect(answer.status).toBe(410);
        expect(answer.body.error?.code).toBe("CONNECTION_ENDED");
      }
      expect((await alice.read(id)).body.messages).toEqual([expect.objectContaining({ content: "before the end" })]);
      const anew = await bob.ask(alice.id);
      expect(anew.status).toBe(201);
      expect(connectionOf(anew)).toMatchObject({ status: "pending", message_count: 0 });
      expect(connectionOf(anew).connection_id).not.toBe(id);
    });

    it("answers a stranger as another user's session is answered (403 FORBIDDEN), whatever the connection's state, and changes nothing", async () => {
      const open = await alice.connectWith(bob);
      await alice.send(open, "private");
      const pending = String(connectionOf(await alice.ask(`carol-${randomUUID()}`)).connection_id);
      const ended = await bob.connectWith(new ApiUser(`dan-${randomUUID()}`, harness.api, routes));
      await bob.end(ended);
      const answers = [];
      for (const id of [open, pending, ended]) {
        answers.push(await mallory.get(id), await mallory.read(id), await mallory.send(id, "let me in"), await mallory.accept(id), await mallory.decline(id), await mallory.end(id), await mallory.block(id), await mallory.unblock(id));
      }
      for (const answer of answers) {
        expect(answer.status).toBe(403);
        expect(answer.body).toEqual(FORBIDDEN);
      }
      expect(connectionOf(await alice.get(open))).toMatchObject({ status: "accepted", message_count: 1, blocked_by_you: false, blocked_by_them: false });
      expect((await mallory.list()).body.connections).toEqual([]);
    });

    it("blocks: no messages either way, no requests, no notification; unblocking restores the connection with its history", async () => {
      const id = await alice.connectWith(bob);
      await alice.send(id, "one");
      const blocked = await bob.block(id);
      expect(connectionOf(blocked)).toMatchObject({ blocked_by_you: true, blocked_by_them: false, status: "accepted" });
      expect(connectionOf(await alice.get(id))).toMatchObject({ blocked_by_you: false, blocked_by_them: true });
      const before = pushes.recorded().length;
      for (const answer of [await alice.send(id, "two"), await bob.send(id, "three"), await alice.ask(bob.id)]) {
        expect(answer.status).toBe(403);
        expect(answer.body.error?.code).toBe("CONNECTION_BLOCKED");
      }
      expect(pushes.recorded().length).toBe(before);
      // A block survives the connection's end: a new request is refused too.
      await alice.end(id);
      expect((await alice.ask(bob.id)).body.error?.code).toBe("CONNECTION_BLOCKED");
      expect((await bob.ask(alice.id)).body.error?.code).toBe("CONNECTION_BLOCKED");
      expect(connectionOf(await bob.unblock(id))).toMatchObject({ blocked_by_you: false, status: "ended" });
      const anew = await alice.ask(bob.id);
      expect(anew.status).toBe(201);
      const again = String(connectionOf(anew).connection_id);
      await bob.accept(again);
      expect((await alice.send(again, "hello again")).status).toBe(201);
      expect(((await alice.read(id)).body.messages as unknown[]).length).toBe(1);
    });

    it("stores a keyed message once however often it is retried, answering each retry with it", async () => {
      const id = await alice.connectWith(bob);
      const key = { "Idempotency-Key": randomUUID() };
      const first = await alice.send(id, "exactly once", key);
      const retries = await Promise.all([alice.send(id, "exactly once", key), alice.send(id, "exactly once", key)]);
      for (const retry of retries) {
        expect(retry.status).toBe(201);
        expect(retry.headers.get("idempotent-replayed")).toBe("true");
        expect(retry.body).toEqual(first.body);
      }
      expect(first.headers.get("idempotent-replayed")).toBeNull();
      // The same key from the other participant is theirs, not a retry of Alice's.
      expect((await bob.send(id, "exactly once", key)).headers.get("idempotent-replayed")).toBeNull();
      // A retry after the connection moved on is still the first answer, its count included.
      expect((await alice.send(id, "exactly once", key)).body).toEqual(first.body);
      const reused = await alice.send(id, "another text", key);
      expect(reused.status).toBe(422);
      expect(reused.body.error?.code).toBe("IDEMPOTENCY_KEY_REUSED");
      expect(connectionOf(await alice.get(id))).toMatchObject({ message_count: 2 });
    });

    it("lists the caller's connections newest activity first, a page at a time with an opaque cursor", async () => {
      const peers = Array.from({ length: 5 }, (_, index) => new ApiUser(`peer-${index}-${randomUUID().slice(0, 6)}`, harness.api, routes));
      const ids: string[] = [];
      for (const peer of peers) ids.push(String(connectionOf(await alice.ask(peer.id)).connection_id));
      await peers[1]!.accept(ids[1]!);
      const first = await alice.list("&limit=2");
      expect(first.status).toBe(200);
      const firstIds = (first.body.connections as { connection_id: string }[]).map((connection) => connection.connection_id);
      expect(firstIds).toEqual([ids[1], ids[4]]);
      expect(typeof first.body.next_cursor).toBe("string");
      const second = await alice.list(`&limit=2&cursor=${String(first.body.next_cursor)}`);
      const third = await alice.list(`&limit=2&cursor=${String(second.body.next_cursor)}`);
      expect((second.body.connections as { connection_id: string }[]).map((connection) => connection.connection_id)).toEqual([ids[3], ids[2]]);
      expect(third.body).toMatchObject({ connections: [{ connection_id: ids[0], requested_by_you: true }], next_cursor: null });
      expect((await peers[0]!.list()).body.connections).toEqual([expect.objectContaining({ connection_id: ids[0], other_user_id: alice.id, requested_by_you: false })]);
    });

    it("refuses with 400 INVALID_CURSOR a list cursor it did not issue to the caller: another user's, made up, changed, cut, or unsigned", async () => {
      for (const peer of [bob, mallory]) expect((await alice.ask(peer.id)).status).toBe(201);
      const cursor = String((await alice.list("&limit=1")).body.next_cursor);
      expect((await alice.list(`&limit=1&cursor=${cursor}`)).body.connections).toEqual([expect.objectContaining({ other_user_id: bob.id })]);
      const [, mac = ""] = cursor.split(".");
      const madeUp = Buffer.from(JSON.stringify({ a: Date.now() + 86_400_000, c: randomUUID() })).toString("base64url");
      const unsigned = Buffer.from(JSON.stringify([Date.now() + 86_400_000, randomUUID()])).toString("base64url");
      const answers = [
        await bob.list(`&limit=1&cursor=${cursor}`),
        await alice.list(`&limit=1&cursor=${madeUp}.${mac}`),
        await alice.list(`&limit=1&cursor=${unsigned}`),
        await alice.list(`&limit=1&cursor=${cursor.slice(0, 10)}`),
        await alice.list(`&limit=1&cursor=${cursor.slice(0, -2)}`),
      ];
      expect(answers.map((answer) => `${answer.status} ${answer.body.error?.code ?? ""}`)).toEqual(Array.from({ length: 5 }, () => "400 INVALID_CURSOR"));
    });

    it("takes the acting user from the query string of a DELETE that sends a body, and refuses a query and a body naming different users", async () => {
      const token = `token-${randomUUID()}`;
      await alice.register(token);
      const id = await alice.connectWith(bob);
      expect(connectionOf(await alice.block(id))).toMatchObject({ blocked_by_you: true });
      const asAlice = (path: string) => `${path}?user_id=${encodeURIComponent(alice.id)}`;
      // Named in both places, differently: refused as a user_id other than the token's user is, and nothing changes.
      for (const [path, body] of [
        [routes.devices, { user_id: bob.id, token }],
        [routes.connection(id), { user_id: bob.id }],
        [routes.block(id), { user_id: bob.id }],
      ] as const) {
        const answer = await harness.api.call("DELETE", asAlice(path), body);
        expect({ path, status: answer.status, body: answer.body }).toEqual({ path, status: 403, body: FORBIDDEN });
      }
      expect(connectionOf(await alice.get(id))).toMatchObject({ status: "accepted", blocked_by_you: true });
      // Named in the query alone, or the same in both: that user acts.
      expect(connectionOf(await harness.api.call("DELETE", asAlice(routes.block(id)), {}))).toMatchObject({ blocked_by_you: false });
      expect((await harness.api.call("DELETE", asAlice(routes.devices), { token })).body).toEqual({ success: true, removed: true, devices: 0 });
      expect(connectionOf(await harness.api.call("DELETE", asAlice(routes.connection(id)), { user_id: alice.id }))).toMatchObject({ status: "ended" });
    });

    it("registers devices, at most 20 a user, and unregisters them", async () => {
      for (let i = 0; i < 22; i += 1) expect((await alice.register(`device-${i}`)).body).toEqual({ success: true, devices: Math.min(20, i + 1) });
      expect((await alice.register("device-21")).body).toEqual({ success: true, devices: 20 });
      expect((await alice.unregister("device-21")).body).toEqual({ success: true, removed: true, devices: 19 });
      expect((await alice.unregister("device-21")).body).toEqual({ success: true, removed: false, devices: 19 });
    });

    it("refuses bad input with a clear JSON error, never a 5xx", async () => {
      const id = await alice.connectWith(bob);
      const cases: [Promise<import("../support/http-harness").Answer>, number, string][] = [
        [alice.ask(alice.id), 400, "INVALID_REQUEST"],
        [harness.api.call("POST", routes.connections, { other_user_id: bob.id }), 400, "INVALID_REQUEST"],
        [harness.api.call("POST", routes.connections, { user_id: alice.id, other_user_id: "\u0007bell" }), 400, "INVALID_REQUEST"],
        [harness.api.call("POST", routes.connections, "{not json", { "content-type": "application/json" }), 400, "INVALID_JSON"],
        [alice.send(id, "   "), 400, "INVALID_REQUEST"],
        [alice.send(id, "x".repeat(4001)), 400, "INVALID_REQUEST"],
        [harness.api.call("POST", routes.messages(id), `{"user_id":"${alice.id}","message":"\\ud800"}`, { "content-type": "application/json" }), 400, "INVALID_REQUEST"],
        [alice.send(id, "hi", { "Idempotency-Key": "" }), 400, "INVALID_IDEMPOTENCY_KEY"],
        [alice.send("not-a-connection-id", "hi"), 404, "CONNECTION_NOT_FOUND"],
        [alice.send(randomUUID(), "hi"), 404, "CONNECTION_NOT_FOUND"],
        [alice.read(id, "&limit=0"), 400, "INVALID_REQUEST"],
        [alice.read(id, "&limit=101"), 400, "INVALID_REQUEST"],
        [alice.read(id, "&before=abc"), 400, "INVALID_REQUEST"],
        [alice.list("&cursor=bm90LWEtY3Vyc29y"), 400, "INVALID_CURSOR"],
        [alice.list("&limit=-1"), 400, "INVALID_REQUEST"],
        [alice.register(""), 400, "INVALID_REQUEST"],
        [alice.register("token with spaces"), 400, "INVALID_REQUEST"],
        [harness.api.call("POST", routes.devices, { user_id: alice.id, token: "t", previews: "no" }), 400, "INVALID_REQUEST"],
        [harness.api.call("PUT", routes.messages(id), { user_id: alice.id, message: "hi" }), 405, "METHOD_NOT_ALLOWED"],
        [harness.api.call("GET", routes.accept(id)), 405, "METHOD_NOT_ALLOWED"],
      ];
      for (const [pending, status, code] of cases) {
        const answer = await pending;
        expect([answer.status, answer.body.error?.code]).toEqual([status, code]);
      }
      expect(connectionOf(await alice.get(id))).toMatchObject({ message_count: 0 });
    });
  });
}, { sharded: true });

describeEachStore("connection limits", (kind) => {
  let harness: Harness;
  beforeAll(async () => {
    harness = await startHarness({ store: kind, env: { CONNECTION_MESSAGES_PER_MINUTE: "3", CONNECTION_REQUESTS_PER_HOUR: "2" } });
  });
  afterAll(async () => harness.close());

  it("limits each sender's messages per minute in a connection, with the wait in Retry-After, each side on its own", async () => {
    const [alice, bob] = ["alice", "bob"].map((name) => new ApiUser(`${name}-${randomUUID()}`, harness.api, ROUTE_FORMS[0]));
    const id = await alice!.connectWith(bob!);
    for (let i = 0; i < 3; i += 1) expect((await alice!.send(id, `m${i}`)).status).toBe(201);
    const limited = await alice!.send(id, "one too many");
    expect(limited.status).toBe(429);
    expect(limited.body.error?.code).toBe("RATE_LIMITED");
    expect(Number(limited.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect((await bob!.send(id, "mine still go")).status).toBe(201);
    expect(connectionOf(await bob!.get(id))).toMatchObject({ message_count: 4 });
  });

  it("limits a user's requests per hour; a request the pair's connection answers costs nothing", async () => {
    const asker = new ApiUser(`asker-${randomUUID()}`, harness.api, ROUTE_FORMS[0]);
    const first = `first-${randomUUID()}`;
    expect((await asker.ask(first)).status).toBe(201);
    for (let i = 0; i < 3; i += 1) expect((await asker.ask(first)).status).toBe(200);
    expect((await asker.ask(`second-${randomUUID()}`)).status).toBe(201);
    const limited = await asker.ask(`third-${randomUUID()}`);
    expect(limited.status).toBe(429);
    expect(limited.body.error?.code).toBe("CONNECTION_REQUEST_LIMIT");
    expect(Number(limited.headers.get("retry-after"))).toBeGreaterThan(60);
  });
});

/**
 * docs/connections.md (Block): a block or an unblock changes the pair's record first, then copies it
 * to the connections. One whose write on the pair fails (503) leaves every connection as it was, or
 * behind the pair: what a user is shown of a connection never claims a block the pair does not hold
 * or has lifted, so the People panel offers the same action again, and its repeat holds everywhere.
 */
describeEachStore("connection blocks whose write on the pair fails", (kind) => {
  let harness: Harness;
  let pushes: OfflineSender;
  let ann: ApiUser;
  let ben: ApiUser;

  beforeAll(async () => {
    pushes = createOfflineSender(silentLog);
    harness = await startHarness({ store: kind, pushSender: pushes });
  });
  afterAll(async () => harness.close());
  beforeEach(() => {
    const tag = randomUUID().slice(0, 8);
    ann = new ApiUser(`ann-${tag}`, harness.api, HOSTING_ROUTES);
    ben = new ApiUser(`ben-${tag}`, harness.api, HOSTING_ROUTES);
  });

  it("shows no block after a block whose write on the pair never reached it, and the repeated block then refuses messages and requests, notifying no one", async () => {
    expect((await ben.register(`token-ben-${randomUUID()}`)).status).toBe(200);
    const id = await ann.connectWith(ben);
    failNextPairWrite(harness.api.connectionStore, "before");
    expect((await ben.block(id)).status).toBe(503);
    // What each user's People panel shows (and so offers Ben: Block again) is what holds: no block.
    expect({ ben: blocksSeen(await ben.get(id)), ann: blocksSeen(await ann.get(id)) }).toEqual({ ben: [false, false], ann: [false, false] });
    expect((await ann.send(id, "still there?")).status).toBe(201);

    expect(connectionOf(await ben.block(id))).toMatchObject({ blocked_by_you: true });
    const before = pushes.recorded().length;
    expect((await ann.send(id, "hello?")).body.error?.code).toBe("CONNECTION_BLOCKED");
    expect((await ann.end(id)).status).toBe(200);
    const again = await ann.ask(ben.id);
    expect({ status: again.status, code: again.body.error?.code, pushed: pushes.recorded().length - before }).toEqual({ status: 403, code: "CONNECTION_BLOCKED", pushed: 0 });
  });

  it("shows the block still held after an unblock whose write on the pair never reached it, and the repeated unblock then lets the two ask each other again", async () => {
    const id = await ann.connectWith(ben);
    expect((await ben.block(id)).status).toBe(200);
    failNextPairWrite(harness.api.connectionStore, "before");
    expect((await ben.unblock(id)).status).toBe(503);
    // The panel still shows Ben's block (and offers Unblock again), as the pair still holds it.
    expect({ ben: blocksSeen(await ben.get(id)), ann: blocksSeen(await ann.get(id)) }).toEqual({ ben: [true, false], ann: [false, true] });
    expect((await ann.send(id, "hi again")).body.error?.code).toBe("CONNECTION_BLOCKED");
    expect((await ann.end(id)).status).toBe(200);
    expect((await ben.ask(ann.id)).body.error?.code).toBe("CONNECTION_BLOCKED");

    expect(connectionOf(await ben.unblock(id))).toMatchObject({ blocked_by_you: false, status: "ended" });
    const again = await ben.ask(ann.id);
    expect({ status: again.status, state: connectionOf(again).status }).toEqual({ status: 201, state: "pending" });
  });

  it("lifts, at the next request, the block of a connection an unblock did not reach after its write on the pair landed (its answer lost)", async () => {
    const id = await ann.connectWith(ben);
    expect((await ben.block(id)).status).toBe(200);
    failNextPairWrite(harness.api.connectionStore, "after");
    expect((await ben.unblock(id)).status).toBe(503);
    // The pair lifted it, the connection was not told: its messages stay refused, as its users are shown.
    expect(blocksSeen(await ben.get(id))).toEqual([true, false]);
    expect((await ann.send(id, "hi again")).body.error?.code).toBe("CONNECTION_BLOCKED");
    // Ann's request passes the pair and finds the connection: it takes the pair's blocks with it.
    const asked = await ann.ask(ben.id);
    expect({ status: asked.status, connection: connectionOf(asked).connection_id, blocked: blocksSeen(asked) }).toEqual({ status: 200, connection: id, blocked: [false, false] });
    expect(blocksSeen(await ben.get(id))).toEqual([false, false]);
    expect((await ann.send(id, "hi again")).status).toBe(201);
  });
});

/** [blocked_by_you, blocked_by_them] of the connection an answer holds. */
function blocksSeen(answer: Answer): [unknown, unknown] {
  const connection = connectionOf(answer);
  return [connection.blocked_by_you, connection.blocked_by_them];
}

/**
 * The next call of the store's `updatePair` (a write of a pair's record) fails as `fault`
 * (support/faulty-store.ts): `before`, it never reaches the database; `after`, it lands and its
 * answer is lost. Later calls go through.
 */
function failNextPairWrite(store: ConnectionAdapter, fault: Fault): void {
  const original = store.updatePair.bind(store);
  store.updatePair = async (key, rule) => {
    Reflect.deleteProperty(store, "updatePair");
    if (fault === "after") await original(key, rule);
    throw new StoreUnavailableError(`updatePair (injected ${fault})`);
  };
}

/**
 * docs/connections.md (Limits): CONNECTION_REQUESTS_PER_HOUR counts only the requests that make a
 * connection. One that made nothing costs nothing, and one the pair's open connection answers
 * (the other user's pending request accepted, the requester's repeat) is answered whatever is left
 * in the requester's bucket.
 */
describeEachStore("connection limits: one request an hour", (kind) => {
  let harness: Harness;
  let faults: FaultyStore | undefined;
  beforeAll(async () => {
    // A clock that stands still: no token comes back by refill.
    harness = await startHarness({
      store: kind,
      env: { CONNECTION_REQUESTS_PER_HOUR: "1" },
      clock: () => 1_800_000_000_000,
      wrapStore: (store) => (faults ??= new FaultyStore(store)).store,
    });
  });
  afterAll(async () => harness.close());

  it("costs nothing when it fails before making anything: the hour's one request is still there for the next", async () => {
    const tag = randomUUID().slice(0, 8);
    const ann = new ApiUser(`ann-${tag}`, harness.api, HOSTING_ROUTES);
    // The read of the asked user's usage record (their erasure mark), beside the requester's bucket, fails.
    faults!.reset();
    faults!.arm("readUsage", "before");
    const failed = await ann.ask(`ben-${tag}`);
    expect(failed.status).toBe(503);
    expect(faults!.failed).toEqual(["readUsage"]);
    const next = await ann.ask(`carl-${tag}`);
    expect([next.status, next.body.error?.code]).toEqual([201, undefined]);
  });

  it("accepts the other user's pending request when the asked user, past their limit, asks back", async () => {
    const tag = randomUUID().slice(0, 8);
    const ann = new ApiUser(`ann-${tag}`, harness.api, HOSTING_ROUTES);
    const ben = new ApiUser(`ben-${tag}`, harness.api, HOSTING_ROUTES);
    // Ben spent his one request on Carl.
    expect((await ben.ask(`carl-${tag}`)).status).toBe(201);
    const asked = await ann.ask(ben.id);
    expect(asked.status).toBe(201);
    const back = await ben.ask(ann.id);
    expect([back.status, back.body.error?.code]).toEqual([200, undefined]);
    expect(connectionOf(back)).toMatchObject({ connection_id: connectionOf(asked).connection_id, status: "accepted" });
    // A request that would make a connection is still refused, with the bucket's wait.
    const limited = await ben.ask(`dan-${tag}`);
    expect([limited.status, limited.body.error?.code]).toEqual([429, "CONNECTION_REQUEST_LIMIT"]);
    expect(Number(limited.headers.get("retry-after"))).toBeGreaterThan(60);
  });

  it("answers the requester's repeat, past their limit, with the pending connection it made", async () => {
    const tag = randomUUID().slice(0, 8);
    const ann = new ApiUser(`ann-${tag}`, harness.api, HOSTING_ROUTES);
    const asked = await ann.ask(`ben-${tag}`);
    expect(asked.status).toBe(201);
    // The repeat a client sends when the first answer was lost (or was a 503 after the connection was made).
    const again = await ann.ask(`ben-${tag}`);
    expect([again.status, again.body.error?.code]).toEqual([200, undefined]);
    expect(again.body).toMatchObject({ created: false, connection: { connection_id: connectionOf(asked).connection_id, status: "pending" } });
  });

  it("counts a request whose write on the pair landed with its answer lost: its repeat gets the connection, and the hour's request is spent", async () => {
    const tag = randomUUID().slice(0, 8);
    const ann = new ApiUser(`ann-${tag}`, harness.api, HOSTING_ROUTES);
    failNextPairWrite(harness.api.connectionStore, "after");
    expect((await ann.ask(`ben-${tag}`)).status).toBe(503);
    const again = await ann.ask(`ben-${tag}`);
    expect([again.status, connectionOf(again).status]).toEqual([200, "pending"]);
    const other = await ann.ask(`carl-${tag}`);
    expect([other.status, other.body.error?.code]).toEqual([429, "CONNECTION_REQUEST_LIMIT"]);
  });

  it("makes no connection past the limit for a pair whose connection is closed", async () => {
    const tag = randomUUID().slice(0, 8);
    const ann = new ApiUser(`ann-${tag}`, harness.api, HOSTING_ROUTES);
    const ben = new ApiUser(`ben-${tag}`, harness.api, HOSTING_ROUTES);
    const id = String(connectionOf(await ann.ask(ben.id)).connection_id);
    expect((await ben.decline(id)).status).toBe(200);
    const again = await ann.ask(ben.id);
    expect([again.status, again.body.error?.code]).toEqual([429, "CONNECTION_REQUEST_LIMIT"]);
    expect(connectionOf(await ann.get(id))).toMatchObject({ status: "declined" });
  });
});

/**
 * A user's devices record (`userDevices/{userKey}`) is read whole for each message they send or
 * receive, and rewritten whole by each registration: what it keeps of the tokens taken from them
 * (`released`) stays bounded, however many tokens one account registers and unregisters, and
 * nothing rate-limits registrations.
 */
describeEachStore("a user's devices record under registrations and unregistrations", (kind) => {
  let harness: Harness;
  /** Moved on by a test: each cycle two minutes after the one before, past a request's lifetime. */
  let offset = 0;
  beforeAll(async () => {
    // A clock that moves on at each reading too: releases one after another never tie on their time.
    let last = 0;
    harness = await startHarness({ store: kind, clock: () => (last = Math.max(Date.now() + offset, last + 1)) });
  });
  afterAll(async () => harness.close());

  const devicesOf = async (user: ApiUser) => {
    const record = await harness.api.connectionStore.readDevices(userKey(user.id));
    return { tokens: Object.keys(record?.tokens ?? {}), released: Object.keys(record?.released ?? {}).sort() };
  };

  it("keeps, of 60 tokens each registered and unregistered two minutes after the one before, the newest MAX_RELEASES removals", async () => {
    const mallory = new ApiUser(`mallory-${randomUUID().slice(0, 8)}`, harness.api, HOSTING_ROUTES);
    const tokens = Array.from({ length: 3 * MAX_DEVICES }, (_, cycle) => `token-${cycle}-${randomUUID()}`);
    for (const token of tokens) {
      expect((await mallory.register(token)).body).toEqual({ success: true, devices: 1 });
      expect((await mallory.unregister(token)).body).toEqual({ success: true, removed: true, devices: 0 });
      offset += 120_000;
    }
    // A removal past a request's lifetime is kept (an add queued while its instance was cut off may land later still); the cap bounds them.
    expect(await devicesOf(mallory)).toEqual({ tokens: [], released: tokens.slice(-MAX_RELEASES).map(tokenHash).sort() });
  });

  it("keeps at most MAX_RELEASES removals, the newest, of tokens registered and unregistered one after another", async () => {
    const mallory = new ApiUser(`mallory-${randomUUID().slice(0, 8)}`, harness.api, HOSTING_ROUTES);
    const tokens = Array.from({ length: MAX_RELEASES + 5 }, (_, cycle) => `token-${cycle}-${randomUUID()}`);
    for (const token of tokens) {
      expect((await mallory.register(token)).body).toEqual({ success: true, devices: 1 });
      expect((await mallory.unregister(token)).body).toEqual({ success: true, removed: true, devices: 0 });
    }
    expect(await devicesOf(mallory)).toEqual({ tokens: [], released: tokens.slice(5).map(tokenHash).sort() });
  });
});

/**
 * The device routes take a token of up to DEVICE_TOKEN_MAX_CHARS visible ASCII characters, and an
 * instance starts with no MAX_BODY_BYTES below the largest body such a registration can travel in
 * (LARGEST_DEVICE_BODY_BYTES, whatever MAX_MESSAGE_CHARS): a registration the routes accept is
 * never answered 413 for its size.
 */
describe("a device registration at the least MAX_BODY_BYTES an instance starts with", () => {
  let harness: Harness;
  let callables: CallableServer;
  beforeAll(async () => {
    harness = await startHarness({ store: "memory", env: { MAX_BODY_BYTES: String(LARGEST_DEVICE_BODY_BYTES), MAX_MESSAGE_CHARS: "300" } });
    callables = await serveCallables(harness.api.runtime);
  });
  afterAll(async () => {
    await callables.close();
    await harness.close();
  });

  // 128 characters as zod counts them (code points), 256 UTF-16 units.
  const userId = "\u{1F600}".repeat(128);
  /** JSON as an ASCII-only encoder writes it (Python's json.dumps by default): every non-ASCII UTF-16 unit as \uXXXX. */
  const asciiOnly = (value: unknown) => JSON.stringify(value).replace(/[\u0080-\uffff]/g, (unit) => `\\u${unit.charCodeAt(0).toString(16).padStart(4, "0")}`);

  it("is refused at start one byte below it, naming the device registration that needs the room", async () => {
    // An instance that starts all the same is closed again, so the failure leaves nothing running.
    const refusal = await startHarness({ store: "memory", env: { MAX_BODY_BYTES: String(LARGEST_DEVICE_BODY_BYTES - 1), MAX_MESSAGE_CHARS: "300" } }).then(
      async (started) => {
        await started.close();
        return "started";
      },
      (error: unknown) => error,
    );
    expect(refusal).toBeInstanceOf(ConfigError);
    expect(String(refusal)).toContain(`${LARGEST_DEVICE_BODY_BYTES} is the largest body a device registration can need`);
  });

  it("registers and unregisters a token of the longest length, each character escaped, for a user whose id is 128 emoji", async () => {
    const token = '"'.repeat(DEVICE_TOKEN_MAX_CHARS);
    const body = asciiOnly({ user_id: userId, token, previews: false });
    // The callable's body less its {"data":...} wrapping.
    expect(Buffer.byteLength(body)).toBe(LARGEST_DEVICE_BODY_BYTES - '{"data":}'.length);
    const registered = await harness.api.call("POST", HOSTING_ROUTES.devices, body, { "content-type": "application/json" });
    expect({ status: registered.status, body: registered.body }).toEqual({ status: 200, body: { success: true, devices: 1 } });
    const unregistered = await harness.api.call("DELETE", HOSTING_ROUTES.devices, asciiOnly({ user_id: userId, token }), { "content-type": "application/json" });
    expect({ status: unregistered.status, body: unregistered.body }).toEqual({ status: 200, body: { success: true, removed: true, devices: 0 } });
  });

  it("registers one through the callable, whose body is then LARGEST_DEVICE_BODY_BYTES exactly", async () => {
    const body = asciiOnly({ data: { user_id: userId, token: "\\".repeat(DEVICE_TOKEN_MAX_CHARS), previews: false } });
    expect(Buffer.byteLength(body)).toBe(LARGEST_DEVICE_BODY_BYTES);
    const answer = await fetch(`http://127.0.0.1:${callables.port}/demo-chatify/us-central1/chat-registerDevice`, { method: "POST", headers: { "content-type": "application/json" }, body });
    expect({ status: answer.status, body: await answer.json() }).toEqual({ status: 200, body: { result: { success: true, devices: 1 } } });
  });
});
