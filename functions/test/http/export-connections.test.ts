import { randomUUID } from "node:crypto";
import { ApiUser, connectionOf, HOSTING_ROUTES } from "../support/connection-api";
import { allParts } from "../support/export-parts";
import { createSession, describeEachStore, ROUTES, startHarness, type Harness } from "../support/http-harness";

interface ExportedConnection {
  readonly connection_id: string;
  readonly other_user_id: string;
  readonly status: string;
  readonly message_count: number;
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

  it("continues across parts with its cursor: every session, then every connection, each once", async () => {
    const { user, session, talking, pending } = await userWithConnections(small);
    const parts = await allParts(small, ROUTES.exportData, user.id);
    expect(parts.map((part) => [part.body.session_count, part.body.connection_count, part.body.complete])).toEqual([
      [1, 0, false],
      [0, 1, false],
      [0, 1, true],
    ]);
    expect(parts.flatMap((part) => (part.body.sessions as { session_id: string }[]).map((one) => one.session_id))).toEqual([session]);
    expect(parts.flatMap((part) => (part.body.connections as ExportedConnection[]).map((one) => one.connection_id))).toEqual([talking, pending].sort());
    // Only the first part carries the user's counters and devices.
    expect(parts.map((part) => "devices" in part.body)).toEqual([true, false, false]);
  });

  it("exports a user without connections or devices with empty ones", async () => {
    const userId = `loner-${randomUUID().slice(0, 8)}`;
    const [answer] = await allParts(harness, ROUTES.exportData, userId);
    expect(answer!.body).toMatchObject({ sessions: [], connections: [], connection_count: 0, devices: { registered_at: [], previews: null }, complete: true });
  });
});
