import { recentMessages } from "./recent-messages";
import type { Database, DataSnapshot, Reference } from "firebase-admin/database";
import { keyHash } from "../../src/session/idempotency";
import { fromJsonLeaf } from "../../src/store/rtdb/json-leaf";
import type { Harness } from "./http-harness";
import { RtdbInstances } from "./rtdb";

/** How long a write the service sent before its answer may take to show on another connection. */
const SETTLE_MS = 5_000;

/**
 * Resolves with the value at `ref` once `settled` holds for it, or with the last value seen when
 * `ms` pass first (for the assertion that follows to show). Listens: no polling, no sleeping.
 */
export function awaitValue(ref: Reference, settled: (value: unknown) => boolean, ms = SETTLE_MS): Promise<unknown> {
  return new Promise((resolve) => {
    let last: unknown = null;
    const done = () => {
      clearTimeout(timer);
      ref.off("value", listener);
      resolve(last);
    };
    const listener = (snapshot: DataSnapshot) => {
      last = snapshot.val();
      if (settled(last)) done();
    };
    const timer = setTimeout(done, ms);
    ref.on("value", listener);
  });
}

/** Resolves once the node at `path` holds `count` children: a copy is sent after the answer, not awaited. */
export function childrenStored(database: Database | undefined, path: string, count: number): Promise<void> {
  const node = database?.ref(path);
  if (!node) throw new Error("database mode has a database");
  return new Promise((resolve) => {
    const listener = node.on("value", (snapshot) => {
      if (snapshot.numChildren() < count) return;
      node.off("value", listener);
      resolve();
    });
  });
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** `messages` keys, as the database layout names them: `m` + 9 digits, the position in the conversation. */
export const messageKey = (position: number) => `m${String(position).padStart(9, "0")}`;

/**
 * What the database stores, read past the instances: in database mode through a firebase-admin
 * app of its own (one per read, so no cache of an earlier read answers), in the embedded store
 * through the store itself (it is the database).
 */
export class StoredView {
  private readonly readers: RtdbInstances | undefined;

  constructor(private readonly harness: Harness) {
    this.readers = harness.namespace === undefined ? undefined : new RtdbInstances(harness.namespace);
  }

  /** A fresh firebase-admin connection to the shared database (database mode). */
  fresh(): Database {
    if (!this.readers) throw new Error("database mode only");
    return this.readers.database();
  }

  /** The session's `messages`, by key, once it holds `count` of them (or what it holds after SETTLE_MS). */
  async messages(sessionId: string, count: number): Promise<Record<string, unknown>> {
    if (!this.readers) {
      const history = await recentMessages(this.harness.api.store, sessionId, 100_000);
      return Object.fromEntries(history.map((message, i) => [messageKey(i + 1), message]));
    }
    const value = await awaitValue(this.fresh().ref(`userSessions/${sessionId}/messages`), (v) => isRecord(v) && Object.keys(v).length >= count);
    return isRecord(value) ? value : {};
  }

  /** Ids of the sessions stored for `userId`. */
  async sessionsOf(userId: string): Promise<string[]> {
    if (!this.readers) {
      const store = this.harness.api.store;
      const { keys: all } = await store.findIdleSessions(Number.MAX_SAFE_INTEGER, undefined, 100_000);
      const metas = await Promise.all(all.map(async (id) => ({ id, meta: await store.readSessionMeta(id) })));
      return metas.filter(({ meta }) => meta?.user_id === userId).map(({ id }) => id).sort();
    }
    const snapshot = await this.fresh().ref("userSessions").orderByChild("user_id").equalTo(userId).once("value");
    const ids: string[] = [];
    snapshot.forEach((child: DataSnapshot) => {
      if (child.key !== null) ids.push(child.key);
    });
    return ids.sort();
  }

  /** The sessions the user's usage record counts as active. */
  async countedSessions(userId: string): Promise<string[]> {
    const key = keyHash("user", userId);
    if (!this.readers) {
      const usage = await this.harness.api.store.updateUsage(key, (current) => ({ outcome: current }));
      return Object.keys(usage?.sessions ?? {}).sort();
    }
    // The record is one JSON string leaf (src/store/rtdb/json-leaf.ts), or a tree as stored before.
    const usage = fromJsonLeaf((await this.fresh().ref(`userUsage/${key}`).once("value")).val());
    const sessions = isRecord(usage) ? usage.sessions : undefined;
    return isRecord(sessions) ? Object.keys(sessions).sort() : [];
  }

  async close(): Promise<void> {
    await this.readers?.close();
  }
}
