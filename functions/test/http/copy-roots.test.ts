import type { Database } from "firebase-admin/database";
import { enableLogging } from "firebase-admin/database";
import { instancePositionOf } from "../../src/sharding/session-ids";
import { ApiUser, HOSTING_ROUTES } from "../support/connection-api";
import { ROUTES, startHarness, type Harness, type StoreKind } from "../support/http-harness";
import { rtdbSkipReason } from "../support/rtdb";
import { shardedSkipReason } from "../support/sharded-rtdb";
import { childrenStored } from "../support/stored-view";
import { describeUnless } from "../support/visible-skip";

/** "<connection>: update {"path":"/a/b","value":{...}}", as @firebase/database's repoUpdate logs an update it is asked to send. */
const UPDATE_LINE = /^\S*:? ?update (\{.*\})\s*$/s;

/** The paths the SDK was asked to send updates from while `work` ran, read from its own log. */
async function updatePaths(work: () => Promise<void>): Promise<string[]> {
  const paths: string[] = [];
  enableLogging((message: string) => {
    const json = UPDATE_LINE.exec(message)?.[1];
    if (json === undefined) return;
    // The logger runs inside the SDK: nothing may throw from it.
    try {
      const logged = JSON.parse(json) as { path?: unknown };
      if (typeof logged.path === "string") paths.push(logged.path);
    } catch {
      paths.push(`unreadable: ${json.slice(0, 40)}`);
    }
  });
  try {
    await work();
  } finally {
    enableLogging(false);
  }
  return paths.sort();
}

/**
 * Where a message's copy is sent from, an AI message's and a user-to-user message's, on one
 * database instance and over two. @firebase/database 1.1.5 acknowledges an update sent from a node
 * by visiting every node the instance listens to below it, and the service listens to the state
 * and usage record of up to 512 nodes: from the root, each message cost about 2.5 ms more CPU at
 * 250 held sessions than at none (the cost bench's section f). So every update of a message is
 * sent from the node it writes, where nothing else is listened to.
 */
for (const store of ["rtdb", "rtdb-2-namespaces"] as const satisfies readonly StoreKind[]) {
  describeUnless(rtdbSkipReason() ?? (store === "rtdb" ? undefined : shardedSkipReason("namespaces")), `a message's copy, sent from the nodes it writes (${store})`, () => {
    let harness: Harness;

    beforeAll(async () => {
      harness = await startHarness({ store });
    });
    afterAll(async () => {
      enableLogging(false);
      await harness.close();
    });

    /** The database instance that holds the session. */
    function databaseOf(sessionId: string): Database | undefined {
      const { shards } = harness;
      return shards ? shards.databases([shards.urls[instancePositionOf(sessionId)] ?? ""])[0] : harness.api.database;
    }

    it("sends the exchange from the session's node and the index entry from its own, on every instance", async () => {
      const user = `copy-roots-${store}`;
      // Two sessions: over two instances, one on each (round robin).
      for (let i = 0; i < 2; i += 1) {
        const created = await harness.api.call("POST", ROUTES.create, { user_id: user, template_id: "friendly-assistant" });
        expect(created.status).toBe(201);
        const id = String(created.body.session_id);
        await harness.api.call("POST", ROUTES.message(id), { message: "warm-up" });
        await childrenStored(databaseOf(id), `userSessions/${id}/messages`, 2);
        const paths = await updatePaths(async () => {
          const answer = await harness.api.call("POST", ROUTES.message(id), { message: "hello" });
          expect(answer.status).toBe(200);
          await childrenStored(databaseOf(id), `userSessions/${id}/messages`, 4);
        });
        expect(paths).toEqual([expect.stringMatching(new RegExp(`^/userConversations/[^/]+/${id}$`)), `/userSessions/${id}`]);
      }
    });

    it("sends a user-to-user message's copy from the connection's node and the users' lists from theirs", async () => {
      const alice = new ApiUser(`copy-roots-alice-${store}`, harness.api, HOSTING_ROUTES);
      const bob = new ApiUser(`copy-roots-bob-${store}`, harness.api, HOSTING_ROUTES);
      const id = await alice.connectWith(bob);
      const paths = await updatePaths(async () => {
        const sent = await alice.send(id, "hello, Bob");
        expect(sent.status).toBe(201);
        // Connections live on the home instance (docs/sharding.md).
        await childrenStored(harness.api.database, `connections/${id}/messages`, 1);
      });
      expect(paths).toEqual([`/connections/${id}`, "/userConnections"]);
    });
  });
}
