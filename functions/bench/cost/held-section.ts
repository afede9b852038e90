import { freshNamespace } from "../../test/support/rtdb";
import { createSession, sendMessage } from "../shared/http-client";
import { fmt, median, table } from "../shared/figures";
import { ChildServer } from "./child-server";
import { childEnv } from "./load-sections";
import type { Section } from "./report";

/** Messages per batch: one batch per server in turn, the CPU per message of each batch is one sample. */
const PER_BATCH = 50;
/** How many sessions get their first message at once while the listeners are set up. */
const SETUP_CONCURRENCY = 20;

interface Kind {
  readonly name: string;
  readonly script: string;
  readonly env: Readonly<Record<string, string>>;
}

const KINDS: readonly Kind[] = [
  { name: "service, database", script: "service-server.js", env: {} },
  { name: "floor, copy from the root", script: "floor-server.js", env: { FLOOR_COPY_AT: "root" } },
  { name: "floor, copy from each record", script: "floor-server.js", env: {} },
];

/**
 * f. What the listeners an instance holds cost each message. The service listens to the `state`
 * and usage record of every session it served lately (up to 512 nodes, 5 minutes unused), so
 * that a warm message's transactions start from the server's value. Each server here first
 * serves `held` other sessions one message each, then answers sequential messages on one more
 * session; its CPU per message is compared across `held`. The two floors tell where a difference
 * comes from: the same operations, the copy sent as one update from the root or as one update
 * from each record it touches.
 */
export async function heldListeners(modelBaseUrl: string, databaseHost: string, held: readonly number[], batches: number, setModelDelay: (ms: number) => void): Promise<Section> {
  setModelDelay(0);
  const env = { ...childEnv(modelBaseUrl), FIREBASE_DATABASE_EMULATOR_HOST: databaseHost };
  const servers: { kind: Kind; held: number; server: ChildServer; sessionId: string; cpu: number[] }[] = [];
  try {
    for (const kind of KINDS) {
      for (const count of held) {
        const server = await ChildServer.start(`${kind.name}, ${count} held`, kind.script, { ...env, ...kind.env, BENCH_PROJECT_ID: freshNamespace("cost-f") });
        // Listed at once, so that it is stopped if what follows fails.
        const entry = { kind, held: count, server, sessionId: "", cpu: [] as number[] };
        servers.push(entry);
        const others = await Promise.all(Array.from({ length: count }, (_, i) => createSession(server.baseUrl, `held-${i}`)));
        for (let i = 0; i < others.length; i += SETUP_CONCURRENCY) {
          await Promise.all(others.slice(i, i + SETUP_CONCURRENCY).map((id) => sendMessage(server.baseUrl, id, "Hello there.")));
        }
        entry.sessionId = await createSession(server.baseUrl, "held-measured");
      }
    }
    // Batch 0 warms each server up and is not counted.
    for (let batch = 0; batch <= batches; batch += 1) {
      for (let i = 0; i < servers.length; i += 1) {
        const entry = servers[(i + batch) % servers.length];
        if (!entry) continue;
        const before = await entry.server.usage();
        for (let n = 0; n < PER_BATCH; n += 1) await sendMessage(entry.server.baseUrl, entry.sessionId, `Message ${batch}.${n}: what do you think of that, in a few words?`);
        const after = await entry.server.usage();
        if (batch > 0) entry.cpu.push((after.cpuMs - before.cpuMs) / PER_BATCH);
      }
    }
  } finally {
    for (const entry of servers) entry.server.stop();
  }
  const cpuOf = (kind: Kind, count: number): number => median(servers.find((entry) => entry.kind === kind && entry.held === count)?.cpu ?? []);
  const first = held[0] ?? 0;
  const last = held.at(-1) ?? 0;
  return {
    lines: [
      "f. Held listeners: CPU per message while the instance listens to the state and usage record of other sessions it served",
      ...table([
        ["server", ...held.map((count) => `${count} held, CPU ms/msg`), `${last} vs ${first}`],
        ...KINDS.map((kind) => [kind.name, ...held.map((count) => fmt(cpuOf(kind, count), 2)), `${fmt(cpuOf(kind, last) - cpuOf(kind, first), 2)} ms`]),
      ]),
      `  Each server in a child process of its own per count: the other sessions get one message each (their listeners start), then one more`,
      `  session gets ${batches} batches of ${PER_BATCH} sequential messages, the servers in turn (rotating order) after one batch each to warm up;`,
      "  instant model, rtdb-wire at 0 ms; CPU: the server process's user+system time per message, median over the batches.",
      "  The floors differ only in how the copy is sent: @firebase/database 1.1.5 acknowledges an update sent from the root by visiting",
      "  every node it listens to (AckUserWrite.operationForChild keeps descending where the update wrote nothing).",
    ],
    goals: [],
  };
}
