import { describeUnless } from "../support/visible-skip";
import { rtdbSkipReason } from "../support/rtdb";
import { ShardedRtdb, shardedSkipReason, type ShardedLayout } from "../support/sharded-rtdb";
import { conversationContract } from "./conversation-contract";
import { storeContract } from "./store-contract";

/**
 * The store contracts on a store over two database instances (docs/sharding.md), each session on
 * the instance its id names and every per-user record on the first: as namespaces of the one
 * server the run shares, and as two server processes.
 */
for (const layout of ["namespaces", "processes"] as const satisfies readonly ShardedLayout[]) {
  describeUnless(rtdbSkipReason() ?? shardedSkipReason(layout), `ShardedStore over two instances (${layout})`, () => {
    describe("the store contract", () => {
      storeContract(async () => {
        const shards = await ShardedRtdb.start(2, layout);
        const reader = shards.databases();
        return {
          instance: () => shards.store(),
          empty: () => shards.sibling().store(),
          partials: async (sessionId) => {
            await shards.settled();
            const value: unknown = (await reader[shards.instanceOf(sessionId)]?.ref(`userSessions/${sessionId}/partials`).once("value"))?.val();
            return (value ?? {}) as Record<string, unknown>;
          },
          close: () => shards.close(),
          sharded: { newSessionId: shards.newSessionId(), instanceOf: (id) => shards.instanceOf(id) },
        };
      });
    });

    describe("the conversations contract", () => {
      conversationContract(async () => {
        const shards = await ShardedRtdb.start(2, layout);
        return {
          instance: () => shards.store(),
          empty: () => shards.sibling().store(),
          settled: () => shards.settled(),
          close: () => shards.close(),
          sharded: { newSessionId: shards.newSessionId(), instanceOf: (id) => shards.instanceOf(id) },
        };
      });
    });
  });
}
