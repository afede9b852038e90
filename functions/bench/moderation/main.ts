import { randomUUID } from "node:crypto";
import { streamCall } from "../../test/support/event-stream-client";
import { ROUTES, startHarness, type Harness } from "../../test/support/http-harness";
import { integerOption, optionReader, runCli, stopIfStuck } from "../shared/cli";
import { fmt, median, table } from "../shared/figures";

/**
 * Time to first delta with moderation on: the message's check runs beside its model call, so
 * the first delta should come at the later of the model's first token and the verdict, plus what
 * today's path adds (the HTTP boundary, the admission, the stream), never at their sum.
 *
 * One local server per setting (MODERATION off, on), the embedded store, the fake OpenAI server
 * streaming the reply's first token after --first-token-ms and answering moderation after each
 * verdict delay; each case one streamed message (SSE) per round, the cases of a round in
 * rotating order, --rounds rounds after a warm-up. Medians of the time from the request to its
 * first delta event, and to its done event.
 *
 *   npm run bench:moderation -- [--rounds N] [--first-token-ms MS] [--verdicts MS,MS,...]
 */
const DEFAULTS = { rounds: "15", "first-token-ms": "200", verdicts: "50,200,400" } as const;
const USAGE = [
  "usage: npm run bench:moderation -- [options]   (each also as MODERATION_BENCH_<NAME>)",
  `  --rounds N           interleaved rounds, after one warm-up round (default ${DEFAULTS.rounds})`,
  `  --first-token-ms MS  when the fake model streams the reply's first token (default ${DEFAULTS["first-token-ms"]})`,
  `  --verdicts MS,...    when the fake moderation answers, one case each (default ${DEFAULTS.verdicts})`,
].join("\n");

/** Chunks after the first, each `CHUNK_GAP_MS` apart: a reply that is still being written when the verdict comes. */
const CHUNKS = ["The", " reply", " as", " it", " is", " written."];
const CHUNK_GAP_MS = 20;

interface Case {
  readonly label: string;
  /** Undefined: moderation off. */
  readonly verdictMs: number | undefined;
}

interface Sample {
  readonly firstDeltaMs: number;
  readonly doneMs: number;
}

/** One streamed message: the fake streams the first token after `firstTokenMs`, the rest after it; the verdict, if any, after `verdictMs`. */
async function streamedMessage(harness: Harness, sessionId: string, firstTokenMs: number, verdictMs: number | undefined): Promise<Sample> {
  harness.fake.enqueue({ kind: "stream", chunks: CHUNKS, firstChunkDelayMs: firstTokenMs, chunkDelayMs: CHUNK_GAP_MS });
  if (verdictMs !== undefined) harness.fake.enqueueModeration({ kind: "verdict", flagged: false, delayMs: verdictMs });
  const answer = await streamCall(harness.api.baseUrl, ROUTES.message(sessionId), { message: "How long until the first word?" });
  const first = answer.events.find((event) => event.event === "delta");
  const done = answer.events.find((event) => event.event === "done");
  if (!first || !done) throw new Error(`the message was not streamed to its end: ${answer.status} ${JSON.stringify(answer.json ?? answer.events.at(-1))}`);
  return { firstDeltaMs: first.at, doneMs: done.at };
}

async function main(argv: readonly string[]): Promise<number> {
  const option = optionReader(argv, process.env, "MODERATION_BENCH_", DEFAULTS);
  const rounds = integerOption("rounds", option("rounds"), 1, 1_000);
  const firstTokenMs = integerOption("first-token-ms", option("first-token-ms"), 0, 10_000);
  const verdicts = option("verdicts").split(",").map((text) => integerOption("verdicts", text, 0, 10_000));
  stopIfStuck("moderation-bench", 600_000);

  const off = await startHarness({ store: "memory" });
  const on = await startHarness({ store: "memory", env: { MODERATION: "true" } });
  const cases: [Case, ...Case[]] = [{ label: "moderation off", verdictMs: undefined }, ...verdicts.map((ms) => ({ label: `on, verdict at ${ms} ms`, verdictMs: ms }))];
  const sessions = new Map<Case, string>();
  for (const each of cases) {
    const harness = each.verdictMs === undefined ? off : on;
    const created = await harness.api.call("POST", ROUTES.create, { user_id: `bench-${randomUUID()}`, template_id: "friendly-assistant" });
    sessions.set(each, String(created.body.session_id));
  }
  const samples = new Map<Case, Sample[]>(cases.map((each) => [each, []]));
  try {
    for (let round = -1; round < rounds; round += 1) {
      // Rotating order, so no case always runs first (or right after another).
      const order = cases.map((_, index) => cases[(index + Math.max(0, round)) % cases.length] ?? cases[0]);
      for (const each of order) {
        const harness = each.verdictMs === undefined ? off : on;
        const sample = await streamedMessage(harness, sessions.get(each) ?? "", firstTokenMs, each.verdictMs);
        if (round >= 0) samples.get(each)?.push(sample);
      }
    }
  } finally {
    await off.close();
    await on.close();
  }
  print(cases, samples, firstTokenMs, rounds);
  return 0;
}

function print(cases: readonly [Case, ...Case[]], samples: ReadonlyMap<Case, readonly Sample[]>, firstTokenMs: number, rounds: number): void {
  const firstDelta = (each: Case) => median((samples.get(each) ?? []).map((sample) => sample.firstDeltaMs));
  const done = (each: Case) => median((samples.get(each) ?? []).map((sample) => sample.doneMs));
  const [baseline] = cases;
  // What today's path adds to the model's first token: the moderation-off case's first delta, less the token's time.
  const added = firstDelta(baseline) - firstTokenMs;
  const rows = [["case", "first delta ms", "done ms", "bound ms", "over bound ms", "vs off"]];
  let met = true;
  for (const each of cases) {
    const bound = Math.max(firstTokenMs, each.verdictMs ?? 0) + added;
    const over = firstDelta(each) - bound;
    // Within the noise of one run: 5 ms or 5 % of the bound.
    if (each.verdictMs !== undefined && over > Math.max(5, bound * 0.05)) met = false;
    rows.push([each.label, fmt(firstDelta(each), 1), fmt(done(each), 1), fmt(bound, 1), each === baseline ? "" : fmt(over, 1), `${fmt(firstDelta(each) / firstDelta(baseline), 2)}x`]);
  }
  console.log(
    [
      `Moderation bench, node ${process.version}: time to the first delta of a streamed message (SSE, local server, embedded store),`,
      `fake OpenAI server: first token at ${firstTokenMs} ms, then ${CHUNKS.length - 1} more ${CHUNK_GAP_MS} ms apart; medians of ${rounds} interleaved rounds`,
      ...table(rows),
      `  today's path adds ${fmt(added, 1)} ms to the model's first token (moderation off); bound = max(first token, verdict) + that`,
      `  goal (first delta at most the bound, within 5 ms or 5 %): ${met ? "met" : "NOT met"}`,
    ].join("\n"),
  );
}

runCli("moderation-bench", main, USAGE);
