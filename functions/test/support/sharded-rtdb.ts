import { randomUUID } from "node:crypto";
import { deleteApp, initializeApp, type App } from "firebase-admin/app";
import type { Database } from "firebase-admin/database";
import { silentLog } from "../../src/log/log";
import { instanceDatabases, instanceStores } from "../../src/store/rtdb/instance-databases";
import type { RtdbStore } from "../../src/store/rtdb/rtdb-store";
import { ShardedStore } from "../../src/store/sharded-store";
import { instancePositionOf, sessionPlacement } from "../../src/sharding/session-ids";
import { freshNamespace } from "./rtdb";
import { standInSkipReason, startStandIn, type StandIn } from "./stand-in";

/** Where a suite's database instances are: namespaces of the one server the run shares, or each on a server process of its own. */
export type ShardedLayout = "namespaces" | "processes";

/** Why a layout cannot run here (a visible skip), or undefined. */
export function shardedSkipReason(layout: ShardedLayout): string | undefined {
  return layout === "processes" ? standInSkipReason : undefined;
}

/**
 * Several database instances for one suite (docs/sharding.md), as DATABASE_INSTANCES lists them.
 * `namespaces`: deployed-style URLs (`https://NAME.firebaseio.com`), which firebase-admin sends to
 * FIREBASE_DATABASE_EMULATOR_HOST. `processes`: the first instance on that server, each other on
 * a stand-in process of its own, named by emulator URLs (`http://host:port?ns=NAME`), so that a
 * test cannot pass because the instances secretly share one server.
 */
export class ShardedRtdb {
  private readonly apps: App[] = [];
  /** Every adapter made, per function instance, for waiting on their copies. */
  readonly adapters: RtdbStore[] = [];

  readonly urls: readonly string[];
  private readonly siblings: ShardedRtdb[] = [];

  /** `hosts`: each instance's server (`processes`), or none (`namespaces`: deployed-style URLs). */
  private constructor(
    private readonly count: number,
    private readonly hosts: readonly string[] | undefined,
    private readonly standIns: readonly StandIn[],
  ) {
    const names = Array.from({ length: count }, (_, position) => freshNamespace(`shard${position}`));
    this.urls = names.map((name, position) => (hosts === undefined ? `https://${name}.firebaseio.com` : `http://${hosts[position] ?? ""}?ns=${name}`));
  }

  static async start(count: number, layout: ShardedLayout): Promise<ShardedRtdb> {
    const host = process.env.FIREBASE_DATABASE_EMULATOR_HOST;
    if (host === undefined) throw new Error("FIREBASE_DATABASE_EMULATOR_HOST is not set");
    if (layout === "namespaces") return new ShardedRtdb(count, undefined, []);
    const standIns = await Promise.all(Array.from({ length: count - 1 }, () => startStandIn(0)));
    return new ShardedRtdb(count, [host, ...standIns.map((standIn) => standIn.host)], standIns);
  }

  /** New, empty instances on the same servers (fresh namespaces), closed with these. */
  sibling(): ShardedRtdb {
    const sibling = new ShardedRtdb(this.count, this.hosts, []);
    this.siblings.push(sibling);
    return sibling;
  }

  /** DATABASE_INSTANCES for these instances. */
  get param(): string {
    return this.urls.join(",");
  }

  /** One function instance's databases (of `urls`, default all of these): a firebase-admin app of its own, through the production code. */
  databases(urls: readonly string[] = this.urls): Database[] {
    const app = initializeApp({ projectId: "demo-chatify" }, randomUUID());
    this.apps.push(app);
    return instanceDatabases(app, urls);
  }

  /** One function instance's store over every instance (over `databases`, default: a new app's), as composeInstance builds it. */
  store(timeoutMs = 10_000, databases: readonly Database[] = this.databases()): ShardedStore {
    const adapters = instanceStores(databases, timeoutMs);
    this.adapters.push(...adapters);
    return new ShardedStore(adapters, silentLog);
  }

  /** Ids spread over the instances as a function instance places them. */
  newSessionId(): () => string {
    return sessionPlacement(this.urls.length, 0).next;
  }

  /** The position of the instance a session id names. */
  instanceOf(id: string): number {
    return instancePositionOf(id);
  }

  /** Resolves once every copy the adapters sent is acknowledged. */
  async settled(): Promise<void> {
    await Promise.all(this.adapters.map((adapter) => adapter.copiesSettled()));
  }

  async close(): Promise<void> {
    await Promise.all(this.siblings.splice(0).map((sibling) => sibling.close()));
    for (const adapter of this.adapters) adapter.close();
    await Promise.all(this.apps.splice(0).map((app) => deleteApp(app)));
    for (const standIn of this.standIns) standIn.process.kill();
  }
}
