import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { deleteApp, initializeApp, type App } from "firebase-admin/app";
import { getDatabase, type DataSnapshot } from "firebase-admin/database";
import type { Config } from "../../src/config";
import type { Template } from "../../src/store/records";
import { silentLog } from "../../src/log/log";
import { composeInstance } from "../../src/runtime/instance";
import { LocalServers } from "../../test/support/local-servers";
import { freshNamespace } from "../../test/support/rtdb";
import { NO_TOKENS } from "../../test/support/service-env";
import { createSession, sendMessage } from "../shared/http-client";
import { fmt, median, table } from "../shared/figures";
import type { Section } from "./report";
import { countsSince, type RtdbWire, type WireCounts } from "./rtdb-wire";

/**
 * Sections a and b of the cost bench, in this process: function instances built by the
 * composition root with their production store (firebase-admin on rtdb-wire, whose host is
 * FIREBASE_DATABASE_EMULATOR_HOST), reached over HTTP through the local server. Each case has a
 * database namespace of its own, so that its /.wire/stats counts are its own.
 */
interface Served {
  readonly baseUrl: string;
  close(): Promise<void>;
}

async function startInstance(config: Config, namespace: string, connected = false): Promise<Served> {
  const app = initializeApp({ projectId: "demo-chatify", databaseURL: `https://${namespace}.firebaseio.com` }, randomUUID());
  const servers = new LocalServers();
  const baseUrl = await servers.serve(composeInstance(config, { app, identity: NO_TOKENS, log: silentLog }));
  // As a deployed instance whose start (onInit) opened its database connection before the request came.
  if (connected) await databaseConnected(app);
  return {
    baseUrl,
    async close() {
      await servers.close();
      await deleteApp(app);
    },
  };
}

/** A short message (under 100 characters), numbered. */
const text = (n: number): string => `Message number ${n}: what do you think of that, in a few words?`;

interface Measured {
  readonly ms: number;
  readonly wire: WireCounts;
}

/** One message to `sessionId` through `instance`, timed, and what it cost on the wire. */
async function measureOne(wire: RtdbWire, namespace: string, instance: Served, sessionId: string, n: number, keyed: boolean, latencyMs: number): Promise<Measured> {
  const before = await wire.counts(namespace);
  const started = performance.now();
  await sendMessage(instance.baseUrl, sessionId, text(n), keyed ? randomUUID() : undefined);
  const ms = performance.now() - started;
  // What the instance sends after its answer (off the reply's path) belongs to this message too.
  await sleep(latencyMs + 5);
  return { ms, wire: countsSince(before, await wire.counts(namespace)) };
}

/**
 * The seeded template with issue 10's token window and rolling summary: a budget that holds about
 * four of the bench's messages, so that messages leave the window and the summary call runs.
 */
const TOKEN_WINDOW: Template = {
  name: "Token window",
  personalityPrompt: "You are a concise assistant. Answer in a few words.",
  context_window: 10,
  context_tokens: 120,
  summary: true,
};
const TOKEN_WINDOW_ID = "bench-token-window";

interface Case {
  readonly name: string;
  readonly cold: boolean;
  readonly keyed: boolean;
  /** A cold instance's connection is open before its request (else: opened by it). */
  readonly connected: boolean;
  /** The session's template has a token budget and a rolling summary (issue 10). */
  readonly tokenWindow: boolean;
  /** The instance's config: the section's, or with the deployment-wide cap on (issue 14). */
  readonly config: Config;
  readonly capped: boolean;
  readonly namespace: string;
  readonly sessionId: string;
  /** The warm cases' instance, kept for the whole section. */
  readonly instance: Served | undefined;
  sent: number;
  readonly samples: Record<"fast" | "slow", Measured[]>;
}

/** A session with two messages already; a warm case keeps the instance that sent them. */
async function startCase(config: Config, wire: RtdbWire, cold: boolean, keyed: boolean, connected = true, tokenWindow = false, capped = false): Promise<Case> {
  const namespace = freshNamespace("cost-a");
  await wire.seedTemplates(namespace, { [TOKEN_WINDOW_ID]: TOKEN_WINDOW });
  const instance = await startInstance(config, namespace);
  const sessionId = await createSession(instance.baseUrl, "bench-user", tokenWindow ? TOKEN_WINDOW_ID : undefined);
  for (let n = 1; n <= 2; n += 1) await sendMessage(instance.baseUrl, sessionId, text(n), keyed ? randomUUID() : undefined);
  if (cold) await instance.close();
  const name = `${cold ? "cold" : "warm"}, ${keyed ? "keyed" : "unkeyed"}${cold && !connected ? ", + connection" : ""}${tokenWindow ? ", token window + summary" : ""}${capped ? ", deployment cap on" : ""}`;
  return { name, cold, keyed, connected, tokenWindow, config, capped, namespace, sessionId, instance: cold ? undefined : instance, sent: 2, samples: { fast: [], slow: [] } };
}

/** A warm case: its instance's next message. A cold case: the first message of a fresh instance (its database connection included). */
async function sample(wire: RtdbWire, entry: Case, latencyMs: number): Promise<Measured> {
  const instance = entry.instance ?? (await startInstance(entry.config, entry.namespace, entry.connected));
  entry.sent += 1;
  try {
    return await measureOne(wire, entry.namespace, instance, entry.sessionId, entry.sent, entry.keyed, latencyMs);
  } finally {
    if (entry.cold) await instance.close();
  }
}

/** a. Sequential database round trips per message, from wall time at 0 ms and at `latencyMs` of rtdb-wire latency. */
export async function roundTrips(wire: RtdbWire, config: Config, rounds: number, latencyMs: number): Promise<Section> {
  const cases: Case[] = [];
  for (const cold of [false, true]) for (const keyed of [false, true]) cases.push(await startCase(config, wire, cold, keyed));
  cases.push(await startCase(config, wire, true, false, false));
  cases.push(await startCase(config, wire, false, false, true, true));
  // A cap far above what the bench spends: every message reserves and settles, none is refused.
  const capped = { ...config, limits: { ...config.limits, serviceTokensPerDay: 1_000_000_000 } };
  cases.push(await startCase(capped, wire, false, false, true, false, true));
  try {
    await wire.setLatency(0);
    for (let i = 0; i < 3; i += 1) for (const entry of cases) await sample(wire, entry, 0);
    for (let round = 0; round < rounds; round += 1) {
      const order: ("fast" | "slow")[] = round % 2 === 0 ? ["fast", "slow"] : ["slow", "fast"];
      for (const speed of order) {
        const ms = speed === "fast" ? 0 : latencyMs;
        await wire.setLatency(ms);
        for (const entry of cases) entry.samples[speed].push(await sample(wire, entry, ms));
      }
    }
  } finally {
    await wire.setLatency(0);
    for (const entry of cases) await entry.instance?.close();
  }

  const rows = cases.map((entry) => {
    const all = [...entry.samples.fast, ...entry.samples.slow];
    const count = (pick: (counts: WireCounts) => number, digits = 1): string => fmt(median(all.map((s) => pick(s.wire))), digits).replace(/\.0$/, "");
    const fast = median(entry.samples.fast.map((s) => s.ms));
    const slow = median(entry.samples.slow.map((s) => s.ms));
    const trips = (slow - fast) / latencyMs;
    return {
      entry,
      trips,
      writes: median(all.map((s) => s.wire.writes)),
      cells: [entry.name, fmt(fast, 1), fmt(slow, 1), fmt(trips, 1), count((c) => c.requests), count((c) => c.listens), count((c) => c.gets), count((c) => c.transactionAttempts), count((c) => c.datastale), count((c) => c.writes), count((c) => c.units, 0)],
    };
  });
  const tripsOf = (cold: boolean) => rows.filter((row) => row.entry.cold === cold && row.entry.connected && !row.entry.tokenWindow && !row.entry.capped).map((row) => row.trips);
  const cappedRow = rows.find((row) => row.entry.capped);
  const plainWarm = rows.find((row) => !row.entry.cold && !row.entry.keyed && !row.entry.tokenWindow && !row.entry.capped);
  const tokenWindowTrips = rows.filter((row) => row.entry.tokenWindow).map((row) => row.trips);
  const worst = (cold: boolean) => Math.max(...tripsOf(cold));
  const both = (cold: boolean) => tripsOf(cold).map((trips) => fmt(trips, 1)).join(" / ");
  return {
    lines: [
      `a. Sequential database round trips per message (goal: warm <= 2, cold <= 4), ${rounds} interleaved rounds`,
      ...table([
        ["case", "ms at 0", `ms at ${latencyMs}`, "round trips", "requests", "listens", "gets", "tx attempts", "datastale", "writes", "units in+out"],
        ...rows.map((row) => row.cells),
      ]),
      `  ms: median wall time of a message over HTTP (instant model); round trips = (median at ${latencyMs} - median at 0) / ${latencyMs};`,
      "  counts: median per message of rtdb-wire's /.wire/stats, over both latencies. warm: the next message of a session on the",
      "  instance that sent its earlier ones; cold: a fresh instance's first request, to a session that has messages, its database",
      "  connection open (as a deployed instance opens it when it starts, in onInit; the goal's row); '+ connection': the same,",
      "  its connection opened by the request (1 more round trip on rtdb-wire: the server's handshake). keyed: each message with a",
      "  new Idempotency-Key (a keyed session remembers one more key every round). Requests made without an ID token: with one,",
      "  a cold instance fetches the user's usage beside the session's fields, one round trip less. 'token window + summary': a",
      `  template with context_tokens ${TOKEN_WINDOW.context_tokens} and summary: true (issue 10), whose summary call runs beside the reply.`,
      "  'deployment cap on': SERVICE_TOKENS_PER_DAY set (issue 14): each message reserves on a shard beside its claim and settles",
      "  beside its commit.",
    ],
    goals: [
      { name: "a. warm round trips (unkeyed / keyed)", measured: both(false), goal: "<= 2", met: worst(false) <= 2.5, filed: "10" },
      { name: "a. cold round trips (unkeyed / keyed)", measured: both(true), goal: "<= 4", met: worst(true) <= 4.5, filed: "12" },
      {
        name: "a. warm round trips, token window + summary",
        measured: tokenWindowTrips.map((trips) => fmt(trips, 1)).join(""),
        goal: "as warm (no more)",
        met: Math.max(...tokenWindowTrips) <= worst(false) + 0.5,
        filed: "(issue 10)",
      },
      {
        name: "a. warm, deployment cap on: round trips; writes added",
        measured: `${fmt(cappedRow?.trips ?? Number.NaN, 1)}; +${fmt((cappedRow?.writes ?? Number.NaN) - (plainWarm?.writes ?? Number.NaN), 0)}`,
        goal: "<= 2; +2 (reserve, settle)",
        met: (cappedRow?.trips ?? Infinity) <= 2.5 && (cappedRow?.writes ?? Infinity) - (plainWarm?.writes ?? 0) <= 2,
        filed: "(issue 14)",
      },
    ],
  };
}

/**
 * b. UTF-16 units on the wire per message as the history and the remembered keys grow: two
 * sessions on one warm instance each, one sending every message with an Idempotency-Key, the
 * other none, message by message in turn, at 0 ms latency.
 */
export async function wireTraffic(wire: RtdbWire, config: Config, history: readonly number[], perPoint: number): Promise<Section> {
  const sides = await Promise.all(
    [false, true].map(async (keyed) => {
      const namespace = freshNamespace("cost-b");
      await wire.seedTemplates(namespace);
      const instance = await startInstance(config, namespace);
      return { keyed, namespace, instance, sessionId: await createSession(instance.baseUrl, "bench-user"), units: new Map<number, number[]>() };
    }),
  );
  const last = Math.max(...history) + perPoint;
  const pointOf = (n: number): number | undefined => history.find((h) => n > h && n <= h + perPoint);
  try {
    for (let n = 1; n <= last; n += 1) {
      const point = pointOf(n);
      for (const side of sides) {
        if (point === undefined) {
          await sendMessage(side.instance.baseUrl, side.sessionId, text(n), side.keyed ? randomUUID() : undefined);
          continue;
        }
        const measured = await measureOne(wire, side.namespace, side.instance, side.sessionId, n, side.keyed, 0);
        side.units.set(point, [...(side.units.get(point) ?? []), measured.wire.units]);
      }
    }
  } finally {
    await Promise.all(sides.map((side) => side.instance.close()));
  }
  const unitsAt = (keyed: boolean, point: number): number => median(sides.find((side) => side.keyed === keyed)?.units.get(point) ?? []);
  const first = Math.min(...history);
  const target = history.includes(100) ? 100 : Math.max(...history);
  const keyedAt = unitsAt(true, target);
  const growth = (keyed: boolean) => unitsAt(keyed, Math.max(...history)) / unitsAt(keyed, first);
  const worstGrowth = Math.max(growth(false), growth(true));
  return {
    lines: [
      "b. Wire traffic per message, UTF-16 units in+out (goal: <= 8,000 per keyed message after 100 keyed messages, constant)",
      ...table([
        ["history (exchanges stored)", "unkeyed session", "keyed session", "keys remembered (keyed)"],
        ...history.map((point) => [String(point), fmt(unitsAt(false, point)), fmt(unitsAt(true, point)), String(Math.min(point, 100))]),
        [`x (${Math.max(...history)} vs ${first})`, `x${fmt(growth(false), 2)}`, `x${fmt(growth(true), 2)}`, ""],
      ]),
      `  median of the ${perPoint} messages after each history length (messages of ${text(100).length} characters, instant model replies of about 90),`,
      "  from rtdb-wire's /.wire/stats; one warm instance per session. Done keys live beside the session, not in its state (README).",
    ],
    goals: [
      { name: `b. units per keyed message after ${target}`, measured: fmt(keyedAt), goal: "<= 8,000", met: keyedAt <= 8_000, filed: "108,000 (after 70)" },
      { name: `b. units growth, history ${first} -> ${Math.max(...history)}`, measured: `x${fmt(worstGrowth, 2)}`, goal: "constant (<= x1.10)", met: worstGrowth <= 1.1, filed: "" },
    ],
  };
}

/** Resolves once the app's Realtime Database connection is up (`.info/connected`): an awaited event. */
function databaseConnected(app: App): Promise<void> {
  const ref = getDatabase(app).ref(".info/connected");
  return new Promise((resolve) => {
    const listener = (snapshot: DataSnapshot) => {
      if (snapshot.val() !== true) return;
      ref.off("value", listener);
      resolve();
    };
    ref.on("value", listener);
  });
}
