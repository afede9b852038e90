import { enableLogging } from "firebase-admin/database";
import { ApiUser, HOSTING_ROUTES } from "../support/connection-api";
import { createSession, ROUTES, startHarness, type Harness } from "../support/http-harness";
import { describeWithRtdb } from "../support/rtdb";
import { childrenStored } from "../support/stored-view";

/**
 * Where a message's copy is sent from, an AI message's and a user-to-user message's. @firebase/database 1.1.5 acknowledges an update sent from
 * the root by visiting every node the instance listens to, and the service listens to the state
 * and usage record of up to 512 nodes: from the root, each message cost about 2.5 ms more CPU at
 * 250 held sessions than at none (the cost bench's section f). Seen through the SDK's own log
 * (`enableLogging`), which names the path of every update it is asked to send.
 */
describeWithRtdb("a message's copy, sent from the nodes it writes [Realtime Database]", () => {
  let harness: Harness;

  beforeAll(async () => {
    harness = await startHarness({ store: "rtdb" });
  });
  afterAll(async () => {
    enableLogging(false);
    await harness.close();
  });

  /** The paths the SDK was asked to send updates from while `work` ran. */
  async function updatePaths(work: () => Promise<void>): Promise<string[]> {
    const paths: string[] = [];
    enableLogging((message: string) => {
      // "<connection>: update {"path":"/a/b","value":{...}}", as repoUpdate logs it.
      const at = message.indexOf("update {");
      if (at < 0) return;
      const logged = JSON.parse(message.slice(at + "update ".length)) as { path?: unknown };
      if (typeof logged.path === "string") paths.push(logged.path);
    });
    try {
      await work();
    } finally {
      enableLogging(false);
    }
    return paths;
  }


  it("sends the exchange from the session's node and the index entry from its own, never from the root", async () => {
    const id = await createSession(harness.api);
    await harness.api.call("POST", ROUTES.message(id), { message: "warm-up" });
    await childrenStored(harness.api.database, `userSessions/${id}/messages`, 2);
    const paths = await updatePaths(async () => {
      const answer = await harness.api.call("POST", ROUTES.message(id), { message: "hello" });
      expect(answer.status).toBe(200);
      await childrenStored(harness.api.database, `userSessions/${id}/messages`, 4);
    });
    expect(paths).not.toContain("/");
    expect(paths).toContain(`/userSessions/${id}`);
    expect(paths.filter((path) => path.startsWith("/userConversations/") && path.endsWith(`/${id}`))).toHaveLength(1);
  });

  it("sends a user-to-user message's copy from the connection's node and the users' lists from theirs, never from the root", async () => {
    const alice = new ApiUser("copy-roots-alice", harness.api, HOSTING_ROUTES);
    const bob = new ApiUser("copy-roots-bob", harness.api, HOSTING_ROUTES);
    const id = await alice.connectWith(bob);
    const paths = await updatePaths(async () => {
      const sent = await alice.send(id, "hello, Bob");
      expect(sent.status).toBe(201);
      await childrenStored(harness.api.database, `connections/${id}/messages`, 1);
    });
    expect(paths).not.toContain("/");
    expect(paths).toContain(`/connections/${id}`);
    expect(paths).toContain("/userConnections");
  });
});
