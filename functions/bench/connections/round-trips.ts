import { performance } from "node:perf_hooks";
import { fmt, median, table } from "../shared/figures";
import { createSession, sendMessage } from "../shared/http-client";
import { countsSince, type RtdbWire, type WireCounts } from "../cost/rtdb-wire";
import type { ConnectionRig } from "./rig";

/** A case of section a: a message it sends, timed, with its wire counts. */
export interface RoundTripCase {
  readonly name: string;
  readonly measure: (latencyMs: number) => Promise<{ ms: number; wire: WireCounts }>;
}

export function connectionCase(name: string, rig: ConnectionRig, wire: RtdbWire, keyed: boolean): RoundTripCase {
  return { name, measure: (latencyMs) => rig.measured(wire, latencyMs, keyed) };
}

/** The cost bench's warm AI message (2 round trips: its admission, then its commit), as the run's baseline. */
export async function sessionCase(baseUrl: string, wire: RtdbWire, namespace: string): Promise<RoundTripCase> {
  const sessionId = await createSession(baseUrl, "bench-ai-user");
  let n = 0;
  for (; n < 2; n += 1) await sendMessage(baseUrl, sessionId, `Warm-up ${n}`);
  return {
    name: "AI session message, warm (baseline)",
    measure: async (latencyMs) => {
      const before = await wire.counts(namespace);
      const started = performance.now();
      n += 1;
      await sendMessage(baseUrl, sessionId, `Message number ${n}: what do you think of that, in a few words?`);
      const ms = performance.now() - started;
      await new Promise((wake) => setTimeout(wake, latencyMs + 5));
      return { ms, wire: countsSince(before, await wire.counts(namespace)) };
    },
  };
}

/**
 * a. Sequential database round trips per message: each case's median at 0 ms and at `latencyMs`
 * of rtdb-wire latency, interleaved (the order of cases and latencies turns each round); round
 * trips = (slow - fast) / latency. Beside it, the wire counts of the fast messages.
 */
export async function roundTrips(wire: RtdbWire, cases: readonly RoundTripCase[], rounds: number, latencyMs: number): Promise<{ lines: string[]; trips: Map<string, number> }> {
  const samples = cases.map((entry) => ({ entry, fast: [] as number[], slow: [] as number[], wire: [] as WireCounts[] }));
  for (let round = 0; round < rounds; round += 1) {
    for (const latency of round % 2 === 0 ? [0, latencyMs] : [latencyMs, 0]) {
      await wire.setLatency(latency);
      for (const sample of [...samples.slice(round % samples.length), ...samples.slice(0, round % samples.length)]) {
        const measured = await sample.entry.measure(latency);
        (latency === 0 ? sample.fast : sample.slow).push(measured.ms);
        if (latency === 0) sample.wire.push(measured.wire);
      }
    }
  }
  await wire.setLatency(0);
  const trips = new Map<string, number>();
  const rows = [["case", "ms at 0", `ms at ${latencyMs}`, "round trips", "requests", "txn attempts", "datastale", "writes", "units"]];
  for (const sample of samples) {
    const [fast, slow] = [median(sample.fast), median(sample.slow)];
    const trip = (slow - fast) / latencyMs;
    trips.set(sample.entry.name, trip);
    const count = (pick: (counts: WireCounts) => number) => fmt(median(sample.wire.map(pick)), 1);
    rows.push([sample.entry.name, fmt(fast, 1), fmt(slow, 1), fmt(trip, 2), count((c) => c.requests), count((c) => c.transactionAttempts), count((c) => c.datastale), count((c) => c.writes), count((c) => c.units)]);
  }
  return { lines: table(rows), trips };
}
