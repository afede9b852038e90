import { cpus, loadavg } from "node:os";
import { performance } from "node:perf_hooks";
import { PARTIAL_MAX_INTERVAL_MS } from "../../src/session/message/partial-writer";
import { FakeOpenAiServer } from "../../test/support/fake-openai-server";
import { integerOption, optionReader, runCli, stopIfStuck } from "../shared/cli";
import { fmt, median, table } from "../shared/figures";
import { goalTable, type Goal } from "../cost/report";
import { RtdbWire } from "../cost/rtdb-wire";
import { partialTexts, unitsByForm } from "./write-form";
import { measureMessage, startCadence, type CadenceCase, type MessageCost } from "./write-budget";

const SPECS = {
  rounds: { fallback: "5", help: "w: interleaved rounds (each cadence sends one short and one streamed message per round)" },
  "stream-seconds": { fallback: "5", help: "w, f: seconds from the streamed reply's first token to its last" },
  chars: { fallback: "1000", help: "w, f: characters of the streamed reply (sent in 100 chunks)" },
  cadences: { fallback: `250,1000,${PARTIAL_MAX_INTERVAL_MS}`, help: "PARTIAL_MAX_INTERVAL_MS values compared (250: the steady 250 ms of before issue 18)" },
  only: { fallback: "wf", help: "sections: w write budget per message, f write form (whole text vs appended deltas)" },
  "time-limit": { fallback: "600", help: "seconds after which the run stops itself and fails" },
} as const;

const USAGE = [
  "usage: npm run bench:capacity -- [--name=value ...]   (or CAPACITY_BENCH_NAME=value)",
  ...Object.entries(SPECS).map(([flag, spec]) => `  --${flag.padEnd(15)} ${spec.help} (default ${spec.fallback})`),
  "Needs rtdb-wire (RTDB_WIRE_DIR, else ../shared/rtdb-wire beside the project) for its /.wire/stats counts.",
].join("\n");

/** One database instance's documented write limit (Firebase: about 1,000 writes a second). */
const WRITES_PER_SECOND = 1_000;
/** How often the capacity model's user sends a message. */
const SECONDS_BETWEEN_MESSAGES = 30;

/**
 * The capacity bench (`npm run bench:capacity`, issue 18): what one message writes to the database
 * (writes and UTF-16 units, counted by rtdb-wire), short and streamed, under each partial cadence,
 * when a listener first sees the partial after the model's first token, and what one database
 * instance carries at its write limit. Exit code 0 when the run completed, whatever the goals say.
 */
async function main(argv: readonly string[]): Promise<number> {
  const raw = optionReader(argv, process.env, "CAPACITY_BENCH_", Object.fromEntries(Object.entries(SPECS).map(([flag, spec]) => [flag, spec.fallback])));
  const rounds = integerOption("rounds", raw("rounds"), 1, 100);
  const streamMs = integerOption("stream-seconds", raw("stream-seconds"), 1, 60) * 1000;
  const chars = integerOption("chars", raw("chars"), 100, 100_000);
  const cadences = [...new Set(raw("cadences").split(",").map((part) => integerOption("cadences", part, 250, 60_000)))];
  const only = raw("only");
  stopIfStuck("capacity-bench", integerOption("time-limit", raw("time-limit"), 10, 86_400) * 1000);
  const started = performance.now();
  const wire = await RtdbWire.startAsTheDatabase();
  const fake = await FakeOpenAiServer.start();
  const chunkChars = Math.max(1, Math.round(chars / 100));
  const chunks = Array.from({ length: 100 }, (_, i) => `${`w${i} `.padEnd(chunkChars - 1, "x")} `.slice(0, chunkChars));
  const chunkDelayMs = streamMs / (chunks.length - 1);
  const short = ["Short", " and", " to", " the", " point."];
  console.log(
    [
      "Capacity bench (issue 18: a write budget per message)",
      `  machine    ${cpus().length} cores, node ${process.version}, load average ${load()} at the start`,
      `  database   rtdb-wire at ${wire.host} (its /.wire/stats count writes and units; stand-in only), latency 0`,
      `  model      fake OpenAI server; short reply: ${short.join("").length} characters at once; streamed: ${chunks.join("").length} characters in ${chunks.length} chunks over ${streamMs / 1000} s`,
      "",
    ].join("\n"),
  );
  const goals: Goal[] = [];
  try {
    if (only.includes("w")) goals.push(...(await writeBudget(wire, fake, cadences, rounds, { short, chunks, chunkDelayMs })));
    if (only.includes("f")) await writeForm(wire, cadences, chunks, chunkDelayMs);
  } finally {
    await fake.stop();
    await wire.close();
  }
  console.log(["Goals", ...goalTable(goals), `Ran in ${fmt((performance.now() - started) / 1000)} s; load average ${load()} at the end.`].join("\n"));
  return 0;
}

async function writeBudget(
  wire: RtdbWire,
  fake: FakeOpenAiServer,
  cadences: readonly number[],
  rounds: number,
  replies: { readonly short: readonly string[]; readonly chunks: readonly string[]; readonly chunkDelayMs: number },
): Promise<Goal[]> {
  const cases: CadenceCase[] = [];
  for (const ms of cadences) cases.push(await startCadence(wire, fake, ms === 250 ? "steady 250 ms (before)" : `ramp to ${ms} ms${ms === PARTIAL_MAX_INTERVAL_MS ? " (default)" : ""}`, ms));
  const samples = new Map<CadenceCase, { short: MessageCost[]; streamed: MessageCost[] }>(cases.map((entry) => [entry, { short: [], streamed: [] }]));
  let sent = 0;
  try {
    for (let round = 0; round < rounds; round += 1) {
      for (let i = 0; i < cases.length; i += 1) {
        const entry = cases[(i + round) % cases.length];
        const of = entry && samples.get(entry);
        if (!entry || !of) continue;
        sent = of.short.length + of.streamed.length + 1;
        of.short.push(await measureMessage(wire, fake, entry, replies.short, 0, sent));
        of.streamed.push(await measureMessage(wire, fake, entry, replies.chunks, replies.chunkDelayMs, sent + 1));
      }
    }
  } finally {
    for (const entry of cases) await entry.close();
  }
  const spread = (values: readonly number[], digits = 0) => `${fmt(median(values), digits)} (${fmt(Math.min(...values), digits)}-${fmt(Math.max(...values), digits)})`;
  const writes = (list: readonly MessageCost[]) => list.map((cost) => cost.wire.writes);
  const units = (list: readonly MessageCost[]) => list.map((cost) => cost.unitsIn);
  const first = (list: readonly MessageCost[]) => list.flatMap((cost) => (cost.firstPartialMs === undefined ? [] : [cost.firstPartialMs]));
  const rows = cases.map((entry) => {
    const { short, streamed } = samples.get(entry) ?? { short: [], streamed: [] };
    return [entry.name, spread(writes(short)), spread(units(short)), spread(writes(streamed)), spread(units(streamed)), spread(first(streamed), 1), spread(streamed.map((cost) => cost.wire.units))];
  });
  console.log(
    [
      "w. Writes per message, by partial cadence (PARTIAL_MAX_INTERVAL_MS), counted by the database",
      ...table([["cadence", "short: writes", "short: units up", "streamed: writes", "streamed: units up", "first partial ms", "streamed: units both ways"], ...rows]),
      `  medians (range) of ${rounds} interleaved rounds; one warm instance and session per cadence, on a namespace of its own. writes: puts + merges + transaction`,
      "  attempts (the real service's limit counts these); units up: UTF-16 units the instance sent; both ways adds what the database sent back (a listener of",
      "  the bench's own sees the partial: its pushes are left out of the first two). first partial: from the model's first token (the fake server) to",
      "  the first value event of the session's partials at that listener.",
      "",
    ].join("\n"),
  );
  const best = cases.find((entry) => entry.maxIntervalMs === PARTIAL_MAX_INTERVAL_MS) ?? cases.at(-1);
  const chosen = best && samples.get(best);
  if (!chosen) return [];
  const shortWrites = median(writes(chosen.short));
  const streamedWrites = median(writes(chosen.streamed));
  const lines = ["Capacity of one database instance at its documented ~1,000 writes a second (default cadence; from w's medians)"];
  const capacity = (perMessage: number) => [fmt(WRITES_PER_SECOND / perMessage), fmt((WRITES_PER_SECOND / perMessage) * SECONDS_BETWEEN_MESSAGES)];
  const before = cases.find((entry) => entry.maxIntervalMs === 250);
  const beforeOf = before && samples.get(before);
  lines.push(
    ...table([
      ["message", "writes", "messages/s", `conversations (a message every ${SECONDS_BETWEEN_MESSAGES} s)`],
      ["short reply", fmt(shortWrites), ...capacity(shortWrites)],
      [`streamed ${replies.chunks.length} chunks over ${fmt((replies.chunkDelayMs * (replies.chunks.length - 1)) / 1000)} s`, fmt(streamedWrites), ...capacity(streamedWrites)],
      ...(beforeOf ? [["streamed, steady 250 ms (before)", fmt(median(writes(beforeOf.streamed))), ...capacity(median(writes(beforeOf.streamed)))]] : []),
    ]),
    `  n instances carry n times as much (issue 18's sharding), less the per-user writes (3 of each message's: the usage admission and settlement, the index entry) that stay on one instance.`,
    "",
  );
  console.log(lines.join("\n"));
  return [
    { name: "w. writes, streamed 5 s reply", measured: spread(writes(chosen.streamed)), goal: "<= 10", met: streamedWrites <= 10, filed: "25" },
    { name: "w. writes, short reply", measured: spread(writes(chosen.short)), goal: "<= 7", met: shortWrites <= 7, filed: "6" },
    { name: "w. first partial after first token (ms)", measured: spread(first(chosen.streamed), 1), goal: "<= 300", met: Math.max(...first(chosen.streamed)) <= 300, filed: "-" },
    { name: "w. units up, streamed 1,000 chars", measured: spread(units(chosen.streamed)), goal: "<= 8,000", met: median(units(chosen.streamed)) <= 8_000, filed: "up to 19,000" },
  ];
}

async function writeForm(wire: RtdbWire, cadences: readonly number[], chunks: readonly string[], chunkDelayMs: number): Promise<void> {
  const rows: string[][] = [];
  for (const ms of cadences) {
    const texts = await partialTexts(chunks, chunkDelayMs, ms);
    const { whole, deltas } = await unitsByForm(wire, texts);
    rows.push([ms === 250 ? "steady 250 ms" : `ramp to ${ms} ms`, String(texts.length), fmt(whole), fmt(deltas), `${fmt(deltas / whole, 2)}x`]);
  }
  console.log(
    [
      "f. The partial's writes alone, by form: whole text with set (the stored shape) vs new text appended with update",
      ...table([["cadence", "partial writes", "units up: whole text", "units up: deltas", "deltas / whole"], ...rows]),
      "  The texts a PartialWriter sends for the streamed reply in real time, then written in each form to a namespace of their own; units: rtdb-wire's unitsIn.",
      "",
    ].join("\n"),
  );
}

function load(): string {
  return loadavg().map((value) => value.toFixed(1)).join(" ");
}

runCli("capacity-bench", main, USAGE);
