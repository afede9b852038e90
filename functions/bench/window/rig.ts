import type { Config } from "../../src/config";
import { silentLog } from "../../src/log/log";
import { composeInstance, sessionPolicy, type Instance } from "../../src/runtime/instance";
import type { SessionPolicy } from "../../src/session/session-rules";
import { MemoryStore } from "../../src/store/memory-store";
import type { Template } from "../../src/store/records";
import { RtdbStore } from "../../src/store/rtdb/rtdb-store";
import type { SessionStore } from "../../src/store/session-store";
import { FakeOpenAiServer } from "../../test/support/fake-openai-server";
import { freshNamespace, RtdbInstances } from "../../test/support/rtdb";
import { NO_TOKENS, serviceConfig } from "../../test/support/service-env";
import { parseHost, TcpProxy, type ByteCounts } from "../../test/support/tcp-proxy";
import { CountingStore } from "./counting-store";

export const BENCH_TEMPLATE_ID = "bench-window";

export type CacheMode = "cold" | "warm";

/**
 * Everything a window-bench run talks to, on loopback: a fake OpenAI server, the store, and two
 * runtimes (the service's own wiring) on one counting store, one with the session cache off.
 */
export interface Rig {
  readonly mode: "memory" | "rtdb";
  /** Where sessions are kept, in words. */
  readonly label: string;
  readonly fake: FakeOpenAiServer;
  readonly policy: SessionPolicy;
  /** Creates sessions and writes histories, past the measured store (in RTDB mode through an app of its own). */
  readonly setupStore: SessionStore;
  readonly setup: Instance;
  /** The store the measured runtimes use, counting what they ask of it. */
  readonly measured: CountingStore;
  /** Bytes on the measured runtimes' database connection; undefined with the embedded store. */
  bytes(): ByteCounts | undefined;
  runtime(mode: CacheMode): Instance;
  close(): Promise<void>;
}

/** `databaseHost`: a Realtime Database emulator's host:port, or undefined for the embedded store. */
export async function startRig(options: { window: number; databaseHost: string | undefined }): Promise<Rig> {
  const fake = await FakeOpenAiServer.start();
  // No sign-in and limits out of the way: the bench measures the work of a message, not the limits.
  const config = serviceConfig(fake.baseUrl);
  const coldConfig = serviceConfig(fake.baseUrl, { SESSION_CACHE_MAX_ENTRIES: "0" });

  const { databaseHost } = options;
  const namespace = freshNamespace("window-bench");
  const proxy = databaseHost === undefined ? undefined : await TcpProxy.start(parseHost(databaseHost));
  const direct = databaseHost === undefined ? undefined : new RtdbInstances(namespace);
  const proxied = proxy === undefined ? undefined : new RtdbInstances(namespace, proxy.address);
  const memory = new MemoryStore();
  const setupStore: SessionStore = direct ? new RtdbStore(direct.database(), 30_000) : memory;
  const measured = new CountingStore(proxied ? new RtdbStore(proxied.database(), config.dbTimeoutMs) : memory);

  const template: Template = { name: "Bench Window", personalityPrompt: "You are the window-bench personality.", context_window: options.window };
  await setupStore.seedTemplates({ [BENCH_TEMPLATE_ID]: template });
  const build = (store: SessionStore, from: Config): Instance => composeInstance(from, { store, identity: NO_TOKENS, log: silentLog });
  const runtimes: Record<CacheMode, Instance> = { cold: build(measured, coldConfig), warm: build(measured, config) };

  return {
    mode: databaseHost === undefined ? "memory" : "rtdb",
    label:
      databaseHost === undefined
        ? "embedded MemoryStore (in this process)"
        : `Realtime Database at ${databaseHost} through firebase-admin (RtdbStore), namespace ${namespace}; measured runtimes on their own app behind a byte-counting proxy`,
    fake,
    policy: sessionPolicy(config),
    setupStore,
    setup: build(setupStore, config),
    measured,
    bytes: () => proxy?.counts(),
    runtime: (mode) => runtimes[mode],
    async close() {
      await fake.stop();
      await proxied?.close();
      await direct?.close();
      await proxy?.stop();
    },
  };
}
