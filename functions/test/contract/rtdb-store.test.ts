import type { Database, DataSnapshot, Query } from "firebase-admin/database";
import { addressKey, admitAddress } from "../../src/session/ledger/address-limit";
import { RtdbStore } from "../../src/store/rtdb/rtdb-store";
import { contractStores, describeWithRtdb, freshNamespace, RtdbInstances } from "../support/rtdb";
import { storeContract } from "./store-contract";

describeWithRtdb("RtdbStore (firebase-admin on the database emulator)", () => {
  storeContract(async () => {
    const stores = contractStores("contract", (database) => new RtdbStore(database, 10_000));
    // A reader of its own, as a client of the database would be.
    const reader = stores.instances.database();
    return {
      ...stores,
      partials: async (sessionId) => {
        // The copy that removes a completed exchange's partial is sent after the append returns.
        await stores.settled();
        const value: unknown = (await reader.ref(`userSessions/${sessionId}/partials`).once("value")).val();
        return (value ?? {}) as Record<string, unknown>;
      },
    };
  });
});

/**
 * The sweep's deletions (`deleteIdleAddresses`, `deleteCreateKeys`) find their nodes by a query,
 * then remove them: a write landing between the two, from another instance, makes a node no
 * longer one to remove, and it must stay. The sweep's instance here gets its query's answer and
 * is held there until the other instance's write landed.
 */
describeWithRtdb("RtdbStore: the sweep's deletions beside writes landing after its query", () => {
  const HOUR = 3_600_000;
  const T0 = 1_800_000_000_000;

  let instances: RtdbInstances;
  let stores: RtdbStore[];
  beforeEach(() => {
    instances = new RtdbInstances(freshNamespace("sweeprace"));
    stores = [];
  });
  afterEach(async () => {
    for (const store of stores) store.close();
    await instances.close();
  });
  const open = (database: Database) => {
    const store = new RtdbStore(database, 10_000);
    stores.push(store);
    return store;
  };

  it("keeps an address bucket a create took from after the sweep's query found it idle, so the hour's limit still holds", async () => {
    const PER_HOUR = 2;
    const sweeperDb = instances.database();
    const held = holdingAnswers(sweeperDb, "addressUsage");
    const sweeper = open(sweeperDb);
    const api = open(instances.database());
    const bucket = addressKey("203.0.113.7");
    try {
      // The address's last create was two hours ago: its bucket is idle, past the sweep's cutoff.
      await expect(api.updateAddressUsage(bucket, admitAddress(T0, PER_HOUR))).resolves.toEqual({ admitted: true });
      const now = T0 + 2 * HOUR;
      const sweep = sweeper.deleteIdleAddresses(now - HOUR, 50);
      await held.answered();
      // Meanwhile another instance admits a create from the address: one of its two tokens taken.
      await expect(api.updateAddressUsage(bucket, admitAddress(now, PER_HOUR))).resolves.toEqual({ admitted: true });
      held.release();
      const removed = await sweep;
      // Within the same hour, two more creates: one token is left, so the second is refused.
      const second = await api.updateAddressUsage(bucket, admitAddress(now + 1_000, PER_HOUR));
      const third = await api.updateAddressUsage(bucket, admitAddress(now + 2_000, PER_HOUR));
      expect({ second: second.admitted, third: third.admitted }).toEqual({ second: true, third: false });
      expect(removed).toBe(0);
    } finally {
      held.release();
    }
  });

  it("keeps a create key claimed anew after the sweep's query found it old, so a repeat of that create finds its session", async () => {
    const key = "h-reused";
    const sweeperDb = instances.database();
    const held = holdingAnswers(sweeperDb, "idempotencyKeys/createSession");
    const sweeper = open(sweeperDb);
    const api = open(instances.database());
    try {
      await api.claimCreateKey(key, { fingerprint: "f-old", session_id: "s-old", created_at: T0 });
      const now = T0 + 25 * HOUR;
      const cutoff = now - 24 * HOUR;
      const sweep = sweeper.deleteCreateKeys(cutoff, 50);
      await held.answered();
      // Meanwhile another run forgets the key, and a new create claims it again.
      await expect(api.deleteCreateKeys(cutoff, 50)).resolves.toBe(1);
      const fresh = { fingerprint: "f-new", session_id: "s-new", created_at: now };
      await expect(api.claimCreateKey(key, fresh)).resolves.toEqual(fresh);
      held.release();
      const removed = await sweep;
      // A repeat of the new create (its own id and time) takes over its claim, not a claim of its own.
      await expect(api.claimCreateKey(key, { fingerprint: "f-new", session_id: "s-repeat", created_at: now + 1 })).resolves.toEqual({ ...fresh, adopted: true, adopted_at: now + 1 });
      // The other run removed the old key: this one removed nothing.
      expect(removed).toBe(0);
    } finally {
      held.release();
    }
  });
});

/**
 * `database` as a slow link would be for the answers of the queries on the node at `path` (a
 * query found by `orderByChild` and the bounds chained to it): the first answer arrives, and is
 * handed on once `release` is called. `answered()` resolves once it arrived (rejects after 5 s).
 */
function holdingAnswers(database: Database, path: string): { answered: () => Promise<void>; release: () => void } {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let answer!: () => void;
  const arrived = new Promise<void>((resolve) => (answer = resolve));
  const hold = (query: Query): Query => {
    const patched = query as unknown as Record<string, unknown>;
    for (const bound of ["startAt", "startAfter", "endAt", "limitToFirst"] as const) {
      const chained = query[bound].bind(query) as (...args: unknown[]) => Query;
      patched[bound] = (...args: unknown[]) => hold(chained(...args));
    }
    const once = query.once.bind(query) as (event: "value") => Promise<DataSnapshot>;
    patched.once = async (event: "value") => {
      const snapshot = await once(event);
      answer();
      await gate;
      return snapshot;
    };
    return query;
  };
  const ref = database.ref.bind(database);
  (database as { ref: Database["ref"] }).ref = (at?: string) => {
    const node = ref(at);
    if (at === path) {
      const orderByChild = node.orderByChild.bind(node);
      node.orderByChild = (child: string) => hold(orderByChild(child));
    }
    return node;
  };
  const answered = async (): Promise<void> => {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(new Error(`no query on ${path} was answered within 5 s`));
      }, 5_000);
    });
    try {
      await Promise.race([arrived, timeout]);
    } finally {
      clearTimeout(timer);
    }
  };
  return { answered, release };
}
