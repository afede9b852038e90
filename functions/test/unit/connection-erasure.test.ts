import { ConnectionErasure } from "../../src/connections/connection-erasure";
import { requestOnPair } from "../../src/connections/connection-rules";
import { claimToken } from "../../src/connections/device-rules";
import { pairOf } from "../../src/connections/known-connections";
import { userKey } from "../../src/session/ledger/limits";
import { MemoryConnectionStore } from "../../src/store/memory-connection-store";
import { ADD_LANDS_WITHIN_MS } from "../support/connection-fixtures";

const T = Date.parse("2026-04-01T09:00:00Z");

/** A store counting the pages of pairs and token records an erasure reads. */
class PageCountingStore extends MemoryConnectionStore {
  pages = 0;

  override async findUserPairs(...args: Parameters<MemoryConnectionStore["findUserPairs"]>): Promise<string[]> {
    this.pages += 1;
    return super.findUserPairs(...args);
  }

  override async findTokenOwners(...args: Parameters<MemoryConnectionStore["findTokenOwners"]>): ReturnType<MemoryConnectionStore["findTokenOwners"]> {
    this.pages += 1;
    return super.findTokenOwners(...args);
  }
}

describe("the erasure of a user's connections and devices", () => {
  it("stops between the pages of the user's pairs and token records once its time is up, and the next runs go on until none is left", async () => {
    const store = new PageCountingStore();
    const user = "many-pairs";
    for (let i = 0; i < 5; i += 1) {
      await store.updatePair(`pair-${i}`, requestOnPair(pairOf(user, `peer-${i}`), "a", { id: `c${i}`, createdAt: T }, new Set()));
      await store.updateTokenOwner(`h-${i}`, claimToken(userKey(user), T));
    }
    const erasure = new ConnectionErasure({ store, batchSize: 2, clock: () => T + 10, addLandsWithinMs: ADD_LANDS_WITHIN_MS });

    // Each run has the time for two pages: 3 of pairs (2, 2, 1) and 3 of token records, each run starting over on what is left.
    const runs: { stopped: boolean; pages: number }[] = [];
    for (let run = 0; run < 6 && runs.at(-1)?.stopped !== false; run += 1) {
      const before = store.pages;
      const { stopped } = await erasure.erase(user, T + 5, { record: async () => undefined, stopped: () => store.pages - before >= 2 });
      runs.push({ stopped, pages: store.pages - before });
    }
    expect(runs).toEqual([
      { stopped: true, pages: 2 },
      { stopped: true, pages: 2 },
      { stopped: true, pages: 2 },
      { stopped: false, pages: 2 },
    ]);
    expect(await store.findUserPairs(user, userKey(user), undefined, 10)).toEqual([]);
    expect(await store.findTokenOwners(userKey(user), undefined, 10)).toEqual([]);
  });
});
