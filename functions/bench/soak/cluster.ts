import { silentLog, type Log } from "../../src/log/log";
import { createOfflineSender } from "../../src/notify/offline-sender";
import { composeInstance } from "../../src/runtime/instance";
import { MemoryStore } from "../../src/store/memory-store";
import type { Template } from "../../src/store/records";
import { RtdbStore } from "../../src/store/rtdb/rtdb-store";
import type { SessionStore } from "../../src/store/session-store";
import { FakeOpenAiServer, type Chaos } from "../../test/support/fake-openai-server";
import { LocalServers } from "../../test/support/local-servers";
import { freshNamespace, RtdbInstances } from "../../test/support/rtdb";
import { NO_TOKENS, serviceConfig } from "../../test/support/service-env";
import { ShardedRtdb } from "../../test/support/sharded-rtdb";
import { instanceName } from "../../src/sharding/database-instances";
import { UsageError } from "../shared/cli";

/** Three personalities whose windows differ: the whole recent history, an odd slice, none. */
export const SOAK_TEMPLATES: Readonly<Record<string, Template>> = {
  "soak-wide": { name: "Soak Wide", personalityPrompt: "You are the wide-window soak personality.", context_window: 10 },
  "soak-narrow": { name: "Soak Narrow", personalityPrompt: "You are the narrow-window soak personality.", context_window: 3 },
  "soak-none": { name: "Soak None", personalityPrompt: "You are the soak personality without history.", context_window: 0 },
};

export interface Cluster {
  readonly mode: "memory" | "rtdb";
  /** Where sessions are kept, in words. */
  readonly label: string;
  readonly fake: FakeOpenAiServer;
  /** The instances' base URLs (one runtime, cache and database connection each). */
  readonly instances: readonly string[];
  /** The database itself, read past every instance's cache (in RTDB mode through an app of its own). */
  readonly store: SessionStore;
  /** What the instances logged of failed requests other than model failures: "instance N: endpoint Error: detail". */
  readonly serverErrors: readonly string[];
  close(): Promise<void>;
}

export interface ClusterOptions {
  readonly instances: number;
  readonly chaos: Chaos;
  readonly modelTimeoutMs: number;
  /** A Realtime Database emulator's host:port, or undefined for the embedded store. */
  readonly databaseHost: string | undefined;
  /** Database instances sessions are spread over: namespaces of that emulator (docs/sharding.md). */
  readonly databases: number;
}

/**
 * A fake OpenAI server and several function instances on loopback, sharing one store: the
 * embedded MemoryStore, or a fresh namespace of the Realtime Database with one firebase-admin
 * app per instance.
 */
export async function startCluster(options: ClusterOptions): Promise<Cluster> {
  if (options.databases > 1 && options.databaseHost === undefined) throw new UsageError("--databases above 1 needs a Realtime Database (FIREBASE_DATABASE_EMULATOR_HOST)");
  const fake = await FakeOpenAiServer.start({ chaos: options.chaos });
  // Sessions over several database instances: namespaces of the one server (docs/sharding.md).
  const shards = options.databases > 1 ? await ShardedRtdb.start(options.databases, "namespaces") : undefined;
  // No sign-in and no usage limits, where the service has them: the soak is about consistency.
  const config = serviceConfig(fake.baseUrl, {
    OPENAI_TIMEOUT_MS: String(options.modelTimeoutMs),
    OPENAI_MAX_RETRIES: "1",
    OPENAI_MAX_RETRY_WAIT_MS: "300",
    ...(shards ? { DATABASE_INSTANCES: shards.param } : {}),
  });
  const rtdb = options.databaseHost === undefined || shards ? undefined : new RtdbInstances(freshNamespace("soak"));
  const memory = new MemoryStore();
  const checker: SessionStore = shards ? shards.store(30_000) : rtdb ? new RtdbStore(rtdb.database(), 30_000) : memory;
  await checker.seedTemplates(SOAK_TEMPLATES);

  const serverErrors: string[] = [];
  const servers = new LocalServers();
  const instances: string[] = [];
  for (let i = 0; i < options.instances; i += 1) {
    const store = shards ? shards.store(config.dbTimeoutMs) : rtdb ? new RtdbStore(rtdb.database(), config.dbTimeoutMs) : memory;
    instances.push(await servers.serve(composeInstance(config, { store, identity: NO_TOKENS, log: errorsOf(i, serverErrors), pushSender: createOfflineSender(silentLog), ...(shards ? { databaseUrls: shards.urls } : {}) })));
  }

  const label = shards
    ? `Realtime Database at ${options.databaseHost ?? ""}, ${options.databases} instances (namespaces ${shards.urls.map(instanceName).join(", ")}), one firebase-admin app per function instance`
    : rtdb
      ? `Realtime Database at ${options.databaseHost ?? ""}, namespace ${rtdb.namespace}, one firebase-admin app per instance`
      : `embedded MemoryStore shared by the instances`;
  return {
    mode: rtdb || shards ? "rtdb" : "memory",
    label,
    fake,
    instances,
    store: checker,
    serverErrors,
    async close() {
      await servers.close();
      await fake.stop();
      await rtdb?.close();
      await shards?.close();
    },
  };
}

/** A log that keeps what an instance says about failed requests, model failures aside. */
function errorsOf(instance: number, errors: string[]): Log {
  const ignore = () => undefined;
  return {
    info: ignore,
    warn: ignore,
    error: (message, fields = {}) => {
      if (fields.error === "ModelError") return;
      errors.push(`instance ${instance}: ${message}: ${String(fields.endpoint)} ${String(fields.error)}: ${String(fields.detail)}`);
    },
  };
}
