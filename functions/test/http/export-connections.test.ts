import { randomUUID } from "node:crypto";
import { ApiUser, connectionOf, HOSTING_ROUTES } from "../support/connection-api";
import { allParts } from "../support/export-parts";
import { createSession, describeEachStore, ROUTES, startHarness, type Harness } from "../support/http-harness";
import { ConnectionExport, type ExportedConnection as ReadConnection } from "../../src/connections/connection-export";
import { writeExport, type ExportPosition } from "../../src/http/export-writer";
import { StoreUnavailableError } from "../../src/store/errors";
import type { StoredMessage } from "../../src/store/connection-store";

interface ExportedConnection {
  readonly connection_id: string;
  readonly other_user_id: string;
  readonly status: string;
  readonly message_count: number;
  readonly continued?: boolean;
  readonly messages: readonly { position: number; sender_id: string; content: string }[];
}


/**
 * A user's export carries their connections with other users (as they see each, with the messages
 * of both sides) and their devices (when registered, never the token), beside their sessions.
 */
describeEachStore("exporting a user's connections and devices", (kind) => {
  let harness: Harness;
  /** One item per part: sessions, then connections, each part continuing with its cursor. */
  let small: Harness;

  beforeAll(async () => {
    harness = await startHarness({ store: kind });
    small = await startHarness({ store: kind, userDataLimits: { exportPartBytes: 1 } });
  });
  afterAll(async () => {
    await harness.close();
    await small.close();
  });

  /** A user with a session, an accepted connection (a message each way), a pending request and a device; their counterpart with a connection of their own. */
  async function userWithConnections(on: Harness) {
    const tag = randomUUID().slice(0, 8);
    const [user, counterpart, asked, stranger] = ["user", "counterpart", "asked", "stranger"].map((name) => new ApiUser(`${name}-${tag}`, on.api, HOSTING_ROUTES)) as [ApiUser, ApiUser, ApiUser, ApiUser];
    const session = await createSession(on.api, "friendly-assistant", user.id);
    const talking = await user.connectWith(counterpart);
    expect((await user.send(talking, "Hi, it is me")).status).toBe(201);
    expect((await counterpart.send(talking, "Hello you")).status).toBe(201);
    const pending = String(connectionOf(await user.ask(asked.id)).connection_id);
    const theirs = await counterpart.connectWith(stranger);
    expect((await stranger.send(theirs, "not the user's business")).status).toBe(201);
    const token = `token-${randomUUID()}`;
    expect((await user.register(token, false)).status).toBe(200);
    return { user, counterpart, asked, session, talking, pending, theirs, token };
  }

  it("gives each connection as the user sees it, with both sides' messages, and their devices without tokens", async () => {
    const { user, counterpart, asked, session, talking, pending, theirs, token } = await userWithConnections(harness);
    const [answer] = await allParts(harness, ROUTES.exportData, user.id);
    const body = answer!.body;
    expect(body).toMatchObject({ complete: true, session_count: 1, connection_count: 2, next_cursor: null, devices: { registered_at: [expect.any(String)], previews: false } });
    expect((body.sessions as { session_id: string }[]).map((one) => one.session_id)).toEqual([session]);
    const connections = body.connections as ExportedConnection[];
    expect(connections.map((one) => one.connection_id)).toEqual([talking, pending].sort());
    expect(connections.find((one) => one.connection_id === talking)).toMatchObject({
      other_user_id: counterpart.id,
      status: "accepted",
      requested_by_you: true,
      message_count: 2,
      messages: [
        { position: 1, sender_id: user.id, content: "Hi, it is me" },
        { position: 2, sender_id: counterpart.id, content: "Hello you" },
      ],
    });
    expect(connections.find((one) => one.connection_id === pending)).toMatchObject({ other_user_id: asked.id, status: "pending", messages: [] });
    expect(answer!.text).not.toContain(token);
    expect(answer!.text).not.toContain(theirs);
    expect(answer!.text).not.toContain("not the user's business");
  });

  it("continues across parts with its cursor: every session, then every connection and message, each once", async () => {
    const { user, session, talking, pending } = await userWithConnections(small);
    const parts = await allParts(small, ROUTES.exportData, user.id);
    // At most one message per part here: the connection with two is split, continuing in the next part.
    expect(parts.map((part) => [part.body.session_count, part.body.connection_count, part.body.complete])).toEqual([
      [1, 0, false],
      [0, 1, false],
      [0, 1, false],
      [0, 1, true],
    ]);
    expect(parts.flatMap((part) => (part.body.sessions as { session_id: string }[]).map((one) => one.session_id))).toEqual([session]);
    const entries = parts.flatMap((part) => part.body.connections as ExportedConnection[]);
    expect([...new Set(entries.map((one) => one.connection_id))]).toEqual([talking, pending].sort());
    const pieces = entries.filter((one) => one.connection_id === talking);
    expect(pieces.map((piece) => [piece.continued ?? false, piece.messages.map((message) => message.position)])).toEqual([
      [false, [1]],
      [true, [2]],
    ]);
    // Only the first part carries the user's counters and devices.
    expect(parts.map((part) => "devices" in part.body)).toEqual([true, false, false, false]);
  });

  it("exports a user without connections or devices with empty ones", async () => {
    const userId = `loner-${randomUUID().slice(0, 8)}`;
    const [answer] = await allParts(harness, ROUTES.exportData, userId);
    expect(answer!.body).toMatchObject({ sessions: [], connections: [], connection_count: 0, devices: { registered_at: [], previews: null }, complete: true });
  });
});

/**
 * The other user decides how many messages a connection holds (their rate is per sender): a part
 * stays within its bytes plus one message, the connection continuing in the next parts.
 */
describeEachStore("exporting a connection the other user filled", (kind) => {
  const PART_BYTES = 16 * 1024;
  const MESSAGES = 30;
  let harness: Harness;
  beforeAll(async () => {
    harness = await startHarness({ store: kind, env: { CONNECTION_MESSAGES_PER_MINUTE: "100000" }, userDataLimits: { exportPartBytes: PART_BYTES } });
  });
  afterAll(async () => harness.close());

  it("splits it across parts of bounded size, every message once and in order", async () => {
    const tag = randomUUID().slice(0, 8);
    const [user, sender, friend] = ["user", "sender", "friend"].map((name) => new ApiUser(`${name}-${tag}`, harness.api, HOSTING_ROUTES)) as [ApiUser, ApiUser, ApiUser];
    const filled = await sender.connectWith(user);
    for (let i = 1; i <= MESSAGES; i += 1) expect((await sender.send(filled, `${i}:`.padEnd(4000, "x"))).status).toBe(201);
    const other = await user.connectWith(friend);
    expect((await friend.send(other, "just one")).status).toBe(201);

    const parts = await allParts(harness, ROUTES.exportData, user.id);
    for (const part of parts) expect(Buffer.byteLength(part.text)).toBeLessThan(PART_BYTES + 8 * 1024);
    expect(parts.length).toBeGreaterThan(3);
    expect(parts.at(-1)?.body.complete).toBe(true);
    const entries = parts.flatMap((part) => part.body.connections as ExportedConnection[]);
    const pieces = entries.filter((entry) => entry.connection_id === filled);
    expect(pieces.map((piece) => piece.continued === true)).toEqual(pieces.map((_, i) => i > 0));
    const messages = pieces.flatMap((piece) => piece.messages);
    expect(messages.map((message) => message.position)).toEqual(Array.from({ length: MESSAGES }, (_, i) => i + 1));
    expect(messages.map((message) => message.content.split(":")[0])).toEqual(Array.from({ length: MESSAGES }, (_, i) => String(i + 1)));
    expect(pieces.every((piece) => piece.message_count === MESSAGES)).toBe(true);
    expect(entries.filter((entry) => entry.connection_id === other)).toMatchObject([{ messages: [{ position: 1, content: "just one" }] }]);
  }, 60_000);
});

/** A part that fails within a connection's messages still ends as valid JSON, resuming after the last message written. */
describe("an export failing within a connection", () => {
  const view = {
    id: "conn-1",
    meta: { user_a: "ann", user_b: "ben", requested_by: "a" as const, created_at: 1, pair: "pair-1" },
    state: { status: "accepted" as const, message_count: 5, last_activity: 1 },
    you: "a" as const,
  };

  async function* failingAfter(from: number, count: number): AsyncGenerator<StoredMessage> {
    for (let position = from + 1; position <= from + count; position += 1) yield { position, message: { sender_id: "ben", content: `m${position}`, timestamp: position } };
    throw new StoreUnavailableError("read connection messages (injected)");
  }

  async function exportOnce(from: ExportPosition, connection: ReadConnection): Promise<{ body: Record<string, unknown>; cursor: ExportPosition | undefined }> {
    let text = "";
    let cursor: ExportPosition | undefined;
    async function* one(): AsyncGenerator<ReadConnection> {
      yield connection;
    }
    async function* none(): AsyncGenerator<never> {}
    await writeExport(
      { write: async (chunk) => void (text += chunk) },
      {
        userId: "ann",
        part: 2,
        usage: null,
        devices: null,
        sessions: none(),
        connections: one(),
        from,
        asNow: (state) => state,
        cursorAfter: async (at) => {
          cursor = at;
          return "next";
        },
        limits: { exportPartBytes: 1 << 20, exportPartMs: 60_000, exportReadPage: 10, eraseRequestMs: 1000 },
        clock: () => 0,
      },
    );
    return { body: JSON.parse(text) as Record<string, unknown>, cursor };
  }

  it("closes the connection and the part, and its cursor points after the last message given", async () => {
    const { body, cursor } = await exportOnce({ c: "" }, { view, after: 0, continued: false, messages: failingAfter(0, 2) });
    expect(body).toMatchObject({ complete: false, connection_count: 1, error: { code: "DATABASE_UNAVAILABLE" }, next_cursor: "next" });
    expect((body.connections as ExportedConnection[])[0]?.messages.map((message) => message.position)).toEqual([1, 2]);
    expect(cursor).toEqual({ c: "", x: "conn-1", m: 2 });
  });

  it("resumes where its own part began when it fails before a message", async () => {
    const { body, cursor } = await exportOnce({ c: "", x: "conn-1", m: 2 }, { view, after: 2, continued: true, messages: failingAfter(2, 0) });
    expect(body).toMatchObject({ complete: false, connections: [{ connection_id: "conn-1", continued: true, messages: [] }] });
    expect(cursor).toEqual({ c: "", x: "conn-1", m: 2 });
  });

  it("resumes inside a connection whose first message it could not read, so the next part continues its entry", async () => {
    const { body, cursor } = await exportOnce({ c: "" }, { view, after: 0, continued: false, messages: failingAfter(0, 0) });
    expect(body).toMatchObject({ complete: false, connections: [{ connection_id: "conn-1", messages: [] }] });
    expect(cursor).toEqual({ c: "", x: "conn-1", m: 0 });
    // The next part, from that cursor, gives the connection as a continued entry, all its messages.
    const store: ConstructorParameters<typeof ConnectionExport>[0] = {
      scanListedConnections: async (_user, after) => (after === undefined || after < view.id ? [{ id: view.id, meta: view.meta }] : []),
      readConnectionState: async () => view.state,
      readConnectionMessages: async (_id, page) =>
        Array.from({ length: view.state.message_count }, (_, i) => i + 1)
          .filter((position) => page.before === undefined || position < page.before)
          .slice(-page.limit)
          .map((position) => ({ position, message: { sender_id: "ben", content: `m${position}`, timestamp: position } })),
      readDevices: async () => null,
    };
    const resumed = new ConnectionExport(store).connections("ann", { after: undefined, within: { id: view.id, position: 0 } }, 10);
    const next = await exportOnce(cursor!, (await resumed.next()).value as ReadConnection);
    expect(next.body).toMatchObject({ complete: true, connections: [{ connection_id: "conn-1", continued: true }] });
    expect(((next.body.connections as ExportedConnection[])[0]?.messages ?? []).map((message) => message.position)).toEqual([1, 2, 3, 4, 5]);
  });
});
