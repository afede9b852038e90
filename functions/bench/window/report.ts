import { table } from "../shared/figures";
import type { StoreCall } from "./counting-store";
import type { Sample } from "./measure";
import type { CacheMode } from "./rig";

/** Process memory, after a full GC when one could be forced. */
export interface Memory {
  readonly rssMb: number;
  readonly heapUsedMb: number;
  readonly afterGc: boolean;
}

/** The figures of one history length. */
export interface SizeResult {
  readonly history: number;
  readonly prefillMs: number;
  /** After this length's sessions were pre-filled. */
  readonly memory: Memory;
  readonly samples: Readonly<Record<CacheMode, readonly Sample[]>>;
}

/** One table row: a mode at one history length. */
interface Row {
  readonly history: number;
  readonly p50: number;
  readonly p95: number;
  /** Median CPU time of this process per message (a mean would follow the odd GC). */
  readonly cpu: number;
  readonly meanRead: number;
  readonly maxRead: number;
  /** Messages that read the history from the store (cache misses, in warm mode). */
  readonly historyReads: number;
  readonly meanCalls: number;
  readonly callsByKind: Readonly<Partial<Record<StoreCall, number>>>;
  /** Mean time of one call, per kind. */
  readonly msPerCall: Readonly<Partial<Record<StoreCall, number>>>;
  readonly meanPrompt: number;
  readonly maxPrompt: number;
  readonly bytesReceived: number | undefined;
  readonly bytesSent: number | undefined;
  readonly count: number;
}

const MODE_TITLES: Record<CacheMode, string> = {
  cold: "cold: session cache off (SESSION_CACHE_MAX_ENTRIES=0): every message reads the session's fields, state and history",
  warm: "warm: one runtime kept across messages (default cache): the cache holds the fields and the last window",
};

const DATABASE_NOTE =
  "  note: wall latency includes the database server's own time per call (the mean time per store call, above); cpu, bytes, calls and messages read are this process's share";

/** The largest number of history messages any measured message read. */
export function maxMessagesRead(results: readonly SizeResult[]): number {
  return Math.max(0, ...results.flatMap((result) => [...result.samples.cold, ...result.samples.warm].map((sample) => sample.messagesRead)));
}

/** The largest prompt (in messages) any measured message sent to the model. */
export function maxPromptMessages(results: readonly SizeResult[]): number {
  return Math.max(0, ...results.flatMap((result) => [...result.samples.cold, ...result.samples.warm].map((sample) => sample.promptMessages)));
}

/** The tables of one mode, with the ratios between the largest and the smallest non-zero history. */
export function modeReport(mode: CacheMode, results: readonly SizeResult[]): string[] {
  const rows = results.map((result) => toRow(result.history, result.samples[mode]));
  const withBytes = rows.some((row) => row.bytesReceived !== undefined);
  const header = ["history", "p50 ms", "p95 ms", "cpu ms p50", "msgs read/send", "max read", "history reads", "store calls/send", "prompt msgs (max)"];
  if (withBytes) header.push("bytes in/send", "bytes out/send");
  const body = rows.map((row) => {
    const cells = [
      String(row.history),
      row.p50.toFixed(2),
      row.p95.toFixed(2),
      row.cpu.toFixed(2),
      row.meanRead.toFixed(2),
      String(row.maxRead),
      `${row.historyReads}/${row.count}`,
      row.meanCalls.toFixed(2),
      `${row.meanPrompt.toFixed(1)} (${row.maxPrompt})`,
    ];
    if (withBytes) cells.push(Math.round(row.bytesReceived ?? 0).toLocaleString("en-US"), Math.round(row.bytesSent ?? 0).toLocaleString("en-US"));
    return cells;
  });
  const kinds = [...new Set(rows.flatMap((row) => Object.keys(row.callsByKind) as StoreCall[]))];
  const kindCell = (row: Row, kind: StoreCall) => `${(row.callsByKind[kind] ?? 0).toFixed(2)} (${(row.msPerCall[kind] ?? 0).toFixed(2)} ms)`;
  const kindTable = [["history", ...kinds], ...rows.map((row) => [String(row.history), ...kinds.map((kind) => kindCell(row, kind))])];
  return [
    MODE_TITLES[mode],
    ...table([header, ...body], "right"),
    "  store calls per send, by kind (mean time of one call):",
    ...table(kindTable, "right").map((line) => `  ${line}`),
    ratios(rows, withBytes),
    ...(withBytes ? [DATABASE_NOTE] : []),
  ];
}

/** Per history length, what the warm cache saves a message against the cold path. */
export function cacheReport(results: readonly SizeResult[]): string[] {
  const lines = results.map((result) => {
    const [cold, warm] = [toRow(result.history, result.samples.cold), toRow(result.history, result.samples.warm)];
    const figures: [string, (row: Row) => number, number][] = [
      ["messages read/send", (row) => row.meanRead, 2],
      ["store calls/send", (row) => row.meanCalls, 2],
    ];
    if (cold.bytesReceived !== undefined) figures.push(["bytes in/send", (row) => row.bytesReceived ?? 0, 0]);
    figures.push(["cpu ms p50", (row) => row.cpu, 2], ["p50 ms", (row) => row.p50, 2], ["p95 ms", (row) => row.p95, 2]);
    const parts = figures.map(([name, pick, digits]) => `${name} ${pick(cold).toFixed(digits)} -> ${pick(warm).toFixed(digits)} (${ratio(pick(cold), pick(warm))})`);
    return `  history ${result.history}: ${parts.join(", ")}`;
  });
  return ["warm cache effect (cold -> warm):", ...lines];
}

/** Memory after each history length was pre-filled, and after every message was measured. */
export function memoryReport(results: readonly SizeResult[], final: Memory, storeInProcess: boolean): string[] {
  const gc = [...results.map((result) => result.memory), final].every((memory) => memory.afterGc) ? "after a forced full GC" : "no GC could be forced";
  const row = (label: string, seconds: string, memory: Memory) => [label, seconds, memory.rssMb.toFixed(1), memory.heapUsedMb.toFixed(1)];
  const lines = table([
    ["after", "took s", "rss MB", "heap used MB"],
    ...results.map((result) => row(`pre-fill of ${result.history}`, (result.prefillMs / 1000).toFixed(1), result.memory)),
    row("all measured messages", "", final),
  ], "right");
  const heap = storeInProcess
    ? "the heap holds the embedded store, so it grows with every exchange stored"
    : "the database keeps the histories in its own process; the heap holds the service, the SDK clients and the samples";
  return [
    `process memory (${gc}; ${heap};`,
    `  rss also keeps the allocator's high-water mark of the loopback traffic: the fake model server${storeInProcess ? " runs" : " and the byte-counting proxy run"} in this process):`,
    ...lines,
  ];
}

function toRow(history: number, samples: readonly Sample[]): Row {
  const mean = (pick: (sample: Sample) => number): number => samples.reduce((sum, sample) => sum + pick(sample), 0) / Math.max(1, samples.length);
  const latencies = samples.map((sample) => sample.ms).sort((a, b) => a - b);
  const kinds = new Set(samples.flatMap((sample) => Object.keys(sample.calls) as StoreCall[]));
  const callsByKind = Object.fromEntries([...kinds].map((kind) => [kind, mean((sample) => sample.calls[kind] ?? 0)]));
  const total = (pick: (sample: Sample) => number): number => samples.reduce((sum, sample) => sum + pick(sample), 0);
  const msPerCall = Object.fromEntries([...kinds].map((kind) => [kind, total((sample) => sample.callMs[kind] ?? 0) / Math.max(1, total((sample) => sample.calls[kind] ?? 0))]));
  const measuredBytes = samples.every((sample) => sample.bytesReceived !== undefined);
  return {
    history,
    p50: percentile(latencies, 0.5),
    p95: percentile(latencies, 0.95),
    cpu: percentile(samples.map((sample) => sample.cpuMs).sort((a, b) => a - b), 0.5),
    meanRead: mean((sample) => sample.messagesRead),
    maxRead: Math.max(0, ...samples.map((sample) => sample.messagesRead)),
    historyReads: samples.filter((sample) => (sample.calls.readWindow ?? 0) > 0).length,
    meanCalls: mean((sample) => sample.totalCalls),
    callsByKind,
    msPerCall,
    meanPrompt: mean((sample) => sample.promptMessages),
    maxPrompt: Math.max(0, ...samples.map((sample) => sample.promptMessages)),
    bytesReceived: measuredBytes ? mean((sample) => sample.bytesReceived ?? 0) : undefined,
    bytesSent: measuredBytes ? mean((sample) => sample.bytesSent ?? 0) : undefined,
    count: samples.length,
  };
}

/** Nearest-rank percentile of sorted values. */
function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))] ?? 0;
}

/** "history x50 (100 -> 5000): messages read per send x1.00, ..." between the smallest non-zero and the largest history. */
function ratios(rows: readonly Row[], withBytes: boolean): string {
  const nonZero = rows.filter((row) => row.history > 0);
  const [small, large] = [nonZero[0], nonZero[nonZero.length - 1]];
  if (!small || !large || small === large) return "  ratios: need two non-zero history lengths";
  const figures: [string, (row: Row) => number][] = [
    ["messages read per send", (row) => row.meanRead],
    ["store calls per send", (row) => row.meanCalls],
    ["prompt messages", (row) => row.meanPrompt],
  ];
  if (withBytes) figures.push(["bytes received per send", (row) => row.bytesReceived ?? 0], ["bytes sent per send", (row) => row.bytesSent ?? 0]);
  figures.push(["CPU per send (p50)", (row) => row.cpu], ["p50 latency", (row) => row.p50], ["p95 latency", (row) => row.p95]);
  const parts = figures.map(([name, pick]) => `${name} ${ratio(pick(small), pick(large))}`);
  return `  history x${formatFactor(large.history / small.history)} (${small.history} -> ${large.history} exchanges): ${parts.join(", ")}`;
}

function ratio(from: number, to: number): string {
  if (from === 0) return to === 0 ? "x1.00 (0 -> 0)" : `n/a (0 -> ${to.toFixed(2)})`;
  return `x${(to / from).toFixed(2)}`;
}

function formatFactor(factor: number): string {
  return Number.isInteger(factor) ? String(factor) : factor.toFixed(1);
}
