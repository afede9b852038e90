import { randomUUID } from "node:crypto";
import { ApiUser, connectionOf, FUNCTION_ROUTES, HOSTING_ROUTES } from "../support/connection-api";
import { describeEachStore, startHarness, type Harness, type Instance } from "../support/http-harness";

interface ReadMessage {
  readonly id: string;
  readonly position: number;
  readonly sender_id: string;
  readonly content: string;
}

/** Two function instances on one database (the rate limits lifted, as serviceEnv does), racing. */
describeEachStore("connections across instances", (kind) => {
  let harness: Harness;
  let second: Instance;

  beforeAll(async () => {
    harness = await startHarness({ store: kind });
    second = await harness.instance();
  });
  afterAll(async () => harness.close());

  it("makes one connection of 20 concurrent requests for one pair from both sides on two instances", async () => {
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
});
