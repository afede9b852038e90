import { randomUUID } from "node:crypto";
import { tokenHash } from "../../src/connections/device-rules";
import { userKey } from "../../src/session/ledger/limits";
import { keyHash } from "../../src/session/idempotency";
import { ApiUser, connectionOf, HOSTING_ROUTES } from "../support/connection-api";
import { streamCall } from "../support/event-stream-client";
import { FaultyStore } from "../support/faulty-store";
import { ROUTES, startHarness, type Harness } from "../support/http-harness";
import { rtdbSkipReason } from "../support/rtdb";
import { describeUnless } from "../support/visible-skip";
import { WholeStore } from "../support/whole-store";

const MINUTE = 60_000;
const LATER = 10 * MINUTE;
const secret = (what: string) => `${what}${randomUUID().replaceAll("-", "")}`;

/** Paths (in the JSON of each instance's tree) where a needle occurs, for the failure message. */
function whereIn(tree: unknown, needle: string, path = ""): string[] {
  if (typeof tree === "string") return tree.includes(needle) ? [path] : [];
  if (typeof tree !== "object" || tree === null) return [];
  const found: string[] = [];
  for (const [key, value] of Object.entries(tree as Record<string, unknown>)) {
    const here = `${path}/${key}`;
    if (key.includes(needle)) found.push(`${here} (key)`);
    found.push(...whereIn(value, needle, here));
  }
  return found;
}

describeUnless(rtdbSkipReason(), "inventory after an erasure, on two database instances", () => {
  let harness: Harness;
  let now = Date.parse("2026-04-01T09:00:00Z");
  const faults: FaultyStore[] = [];
  let whole: WholeStore;

  beforeAll(async () => {
    harness = await startHarness({
      store: "rtdb-2-namespaces",
      clock: () => now,
      env: {
        USER_MAX_ACTIVE_SESSIONS: "20",
        USER_MESSAGES_PER_MINUTE: "1000",
        CONNECTION_REQUESTS_PER_HOUR: "100",
        CONNECTION_MESSAGES_PER_MINUTE: "1000",
        MODERATION: "true",
        SESSION_IDLE_TTL_MINUTES: "30",
      },
      wrapStore: (store) => {
        const wrapper = new FaultyStore(store);
        faults.push(wrapper);
        return wrapper.store;
      },
    });
    whole = WholeStore.of(harness);
  });
  afterAll(async () => {
    await whole.close();
    await harness.close();
  });

  /** Every hit of every needle outside the usage records, with where it is. */
  async function hits(needles: Record<string, string>): Promise<string[]> {
    const trees = JSON.parse(await whole.text()) as unknown[];
    const found: string[] = [];
    for (const [position, tree] of trees.entries()) {
      const withoutUsage = typeof tree === "object" && tree !== null ? Object.fromEntries(Object.entries(tree).filter(([path]) => path !== "userUsage")) : tree;
      for (const [name, needle] of Object.entries(needles)) for (const at of whereIn(withoutUsage, needle)) found.push(`instance ${position}: ${name} at ${at}`);
    }
    return found;
  }

  it("leaves nothing naming the user anywhere on either instance but their usage record, after a user did everything", async () => {
    const api = harness.api;
    const user = new ApiUser(secret("user"), api, HOSTING_ROUTES);
    const others = ["counter", "decliner", "ender", "blocked", "blocker", "asked", "holder"].map((name) => new ApiUser(secret(name), api, HOSTING_ROUTES));
    const [counter, decliner, ender, blockedByUser, blocker, asked, holder] = others as [ApiUser, ApiUser, ApiUser, ApiUser, ApiUser, ApiUser, ApiUser];
    const texts: Record<string, string> = {};
    const word = (name: string) => (texts[name] = secret(name));
    const sessions: string[] = [];
    const createKeys: string[] = [];

    // Sessions: keyed and unkeyed creates, messages (plain, keyed, streamed, flagged), an ended, an expired, a summary.
    for (let i = 0; i < 4; i += 1) {
      const key = secret("ckey");
      createKeys.push(key);
      const made = await api.call("POST", ROUTES.create, { user_id: user.id, template_id: "friendly-assistant" }, i % 2 === 0 ? { "Idempotency-Key": key } : {});
      expect(made.status).toBe(201);
      sessions.push(String(made.body.session_id));
    }
    const [s0, s1, s2, s3] = sessions as [string, string, string, string];
    expect(new Set(sessions.map((id) => harness.shards!.instanceOf(id)))).toEqual(new Set([0, 1]));
    now += 1_000;
    expect((await api.call("POST", ROUTES.message(s0), { user_id: user.id, message: `plain ${word("plain")}` })).status).toBe(200);
    expect((await api.call("POST", ROUTES.message(s1), { user_id: user.id, message: `keyed ${word("keyed")}` }, { "Idempotency-Key": secret("mkey") })).status).toBe(200);
    harness.fake.enqueue({ kind: "stream", chunks: [word("streamed"), " more", " words"], chunkDelayMs: 20 });
    const streamed = await streamCall(api.baseUrl, ROUTES.message(s1), { user_id: user.id, message: `stream ${word("streamAsk")}` });
    expect(streamed.status).toBe(200);
    harness.fake.enqueueModeration({ kind: "verdict", flagged: true, categories: ["harassment"] });
    const flagged = await api.call("POST", ROUTES.message(s0), { user_id: user.id, message: `flagged ${word("flagged")}` });
    expect(flagged.status).toBeGreaterThanOrEqual(400);
    expect(await api.store.writeSummary(s0, { text: `summary ${word("summary")}`, through: 2, updated_at: now })).toBe(true);
    expect((await api.call("DELETE", ROUTES.end(s2))).status).toBe(200);
    // s3 idles past the TTL: expired (a message refused 410), and the sweep's expiry.
    now += 31 * MINUTE;
    expect((await api.call("POST", ROUTES.message(s3), { user_id: user.id, message: "too late" })).status).toBe(410);
    await api.runtime.maintain(now);

    // A keyed create that failed 503 (its session's write never reached the database), and an unkeyed one.
    const failedKey = secret("failedkey");
    createKeys.push(failedKey);
    faults[0]!.arm("createSession", "before");
    expect((await api.call("POST", ROUTES.create, { user_id: user.id, template_id: "friendly-assistant" }, { "Idempotency-Key": failedKey })).status).toBe(503);
    faults[0]!.arm("createSession", "before");
    expect((await api.call("POST", ROUTES.create, { user_id: user.id, template_id: "friendly-assistant" })).status).toBe(503);

    // Connections: requested (pending), accepted and messaged, declined, ended, blocked both ways.
    const connections: string[] = [];
    const shared = await user.connectWith(counter);
    connections.push(shared);
    expect((await user.send(shared, `mine ${word("mine")}`)).status).toBe(201);
    expect((await counter.send(shared, `theirs ${word("theirs")}`)).status).toBe(201);
    expect((await user.send(shared, `keyed conn ${word("connKeyed")}`, { "Idempotency-Key": secret("connkey") })).status).toBe(201);
    const pending = String(connectionOf(await user.ask(asked.id)).connection_id);
    connections.push(pending);
    const declined = String(connectionOf(await user.ask(decliner.id)).connection_id);
    connections.push(declined);
    expect((await decliner.decline(declined)).status).toBe(200);
    const ended = await user.connectWith(ender);
    connections.push(ended);
    expect((await ender.send(ended, `before the end ${word("ended")}`)).status).toBe(201);
    expect((await user.end(ended)).status).toBe(200);
    const iBlock = await user.connectWith(blockedByUser);
    connections.push(iBlock);
    expect((await user.block(iBlock)).status).toBe(200);
    const theyBlock = await blocker.connectWith(user);
    connections.push(theyBlock);
    expect((await blocker.block(theyBlock)).status).toBe(200);
    expect((await user.block(theyBlock)).status).toBe(200);

    // Devices: two tokens; one handed over to another user and back.
    const tokens = [secret("tokenA"), secret("tokenB")];
    for (const token of tokens) expect((await user.register(token, true)).status).toBe(200);
    expect((await holder.register(tokens[0]!)).status).toBe(200);
    now += 1_000;
    expect((await user.register(tokens[0]!)).status).toBe(200);

    // An export.
    expect((await api.call("GET", `${ROUTES.exportData}?user_id=${user.id}`)).status).toBe(200);

    const needles: Record<string, string> = {
      userId: user.id,
      userKey: userKey(user.id),
      ...texts,
      ...Object.fromEntries(sessions.map((id, i) => [`session${i}`, id])),
      ...Object.fromEntries(connections.map((id, i) => [`connection${i}`, id])),
      ...Object.fromEntries(tokens.flatMap((token, i) => [[`token${i}`, token], [`tokenHash${i}`, tokenHash(token)]])),
      ...Object.fromEntries(createKeys.map((key, i) => [`createKeyHash${i}`, keyHash(`createSession\u0000${user.id}`, key)])),
    };
    // Sanity: the needles are there before.
    expect((await hits({ userId: user.id, plain: texts.plain!, tokenHash0: tokenHash(tokens[0]!) })).length).toBeGreaterThan(2);

    const erased = await api.call("DELETE", `${ROUTES.erase}?user_id=${user.id}`);
    expect(erased.status).toBe(200);
    // The sweep as the instance runs it: maintenance, the erasures, the device sweep.
    expect((await api.runtime.maintain(now + LATER)).erasuresFinished).toBe(1);
    await harness.shards?.settled();

    // The holder's own devices keep the removal of the token from them (`released`, their data: they held that token too).
    const holderReleased = `/userDevices/${userKey(holder.id)}/released/`;
    expect((await hits(needles)).filter((hit) => !hit.includes(holderReleased))).toEqual([]);
    // The usage record holds none of the erased sessions.
    const usage = await api.store.readUsage(userKey(user.id));
    expect(sessions.filter((id) => JSON.stringify(usage).includes(id))).toEqual([]);
  });

  it("leaves no device of the user when a registration of theirs is in flight as the erasure runs (its claim before the request, its add after the first pass)", async () => {
    const api = harness.api;
    const user = new ApiUser(secret("racer"), api, HOSTING_ROUTES);
    const token = secret("racetoken");
    const key = userKey(user.id);
    const store = api.connectionStore as unknown as { updateDevices: (userKey: string, rule: unknown) => Promise<unknown> };
    const original = store.updateDevices.bind(store);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let held!: () => void;
    const reached = new Promise<void>((resolve) => (held = resolve));
    store.updateDevices = async (userKeyOf, rule) => {
      if (userKeyOf === key) {
        held();
        await gate;
      }
      return original(userKeyOf, rule);
    };
    const registering = user.register(token);
    await reached;
    // The claim on the token is in (deviceTokens names the user); the add to their devices is on its way.
    const second = await harness.instance();
    const erased = await second.call("DELETE", `${ROUTES.erase}?user_id=${user.id}`);
    expect(erased.status).toBe(200);
    // The add lands after the first pass, well before the second.
    release();
    const registered = await registering;
    store.updateDevices = original;
    await harness.shards?.settled();
    // The registration answers, and its add, landing after the first pass, is taken back at once (its read of the owner record finds it gone).
    expect({ registered: registered.status, before: await hits({ token }) }).toEqual({ registered: 200, before: [] });
    now += 1_000;
    expect((await second.runtime.maintain(now + LATER)).erasuresFinished).toBeGreaterThanOrEqual(1);
    await harness.shards?.settled();
    expect({ registered: registered.status, hits: await hits({ userId: user.id, userKey: key, token, tokenHash: tokenHash(token) }) }).toEqual({ registered: registered.status, hits: [] });
  });

  it("leaves nothing of a keyed, streamed message in flight on either instance as the erasure runs", async () => {
    const api = harness.api;
    const userId = secret("msgracer");
    const ids = [];
    for (let i = 0; i < 2; i += 1) ids.push(String((await api.call("POST", ROUTES.create, { user_id: userId, template_id: "friendly-assistant" })).body.session_id));
    const late = ids.map(() => secret("late"));
    harness.fake.reset();
    for (const text of late) harness.fake.enqueue({ kind: "stream", chunks: [text, " and", " more", " words", " coming"], chunkDelayMs: 80 });
    const racing = ids.map((id, i) => streamCall(api.baseUrl, ROUTES.message(id), { user_id: userId, message: `ask ${late[i]!}` }, { headers: { "Idempotency-Key": secret("k") } }));
    await harness.fake.awaitRequests(2);
    const second = await harness.instance();
    expect((await second.call("DELETE", `${ROUTES.erase}?user_id=${userId}`)).status).toBe(200);
    await Promise.all(racing);
    await harness.shards?.settled();
    now += 1_000;
    expect((await second.runtime.maintain(now + LATER)).erasuresFinished).toBeGreaterThanOrEqual(1);
    await harness.shards?.settled();
    expect(await hits({ userId, userKey: userKey(userId), ...Object.fromEntries([...ids, ...late].map((needle, i) => [`n${i}`, needle])) })).toEqual([]);
  });
});
