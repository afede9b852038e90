import { performance } from "node:perf_hooks";
import type { PromptMessage } from "../../src/llm/chat-model";
import { lastMessages, planPrompt } from "../../src/session/prompt/context-window";
import type { ChatMessage } from "../../src/store/records";
import { calibration } from "../../src/session/prompt/token-estimate";
import { integerOption, readFlags, runCli } from "../shared/cli";
import { median } from "../shared/figures";
import { Random } from "../shared/random";

/**
 * What the token window costs per message: planPrompt (which estimates every prompt, with or
 * without a budget, to calibrate the next) against the prompt as built before issue 10 (the count
 * window alone, no estimate), on a typical window (20 history messages of ~200 characters, a
 * 2,000-character system prompt, a summary). Medians of many runs, after a warm-up, in µs.
 *
 *   npm run bench:tokens -- [--runs N]
 */
const WINDOW = 20;
const DEFAULT_RUNS = 20_000;
/** Calls per timed sample: one call is below the timer's resolution. */
const BATCH = 50;
const USAGE = `usage: npm run bench:tokens -- [--runs N]   calls per case, timed in batches of ${BATCH} (default ${DEFAULT_RUNS})`;

function text(random: Random, length: number): string {
  const words = ["the", "ship", "sails", "at", "dawn,", "captain", "and", "we", "need", "more", "rum", "before", "storm", "arrives.", "Where", "is", "treasure?"];
  let out = "";
  while (out.length < length) out += `${words[random.int(words.length)] ?? "arr"} `;
  return out.slice(0, length);
}

/** The prompt as it was built before issue 10: system prompt, the last `window` messages, the new one. */
function countWindowOnly(systemPrompt: string, history: readonly ChatMessage[], window: number, userMessage: string): PromptMessage[] {
  return [
    { role: "system", content: systemPrompt },
    ...lastMessages(history, window).map((message) => ({ role: message.role === "assistant" ? "assistant" : "user", content: message.content }) as const),
    { role: "user", content: userMessage },
  ];
}

/** The median µs of one call of `run`, over `runs` calls timed in batches. */
function measure(runs: number, run: () => unknown): number {
  for (let i = 0; i < runs / 10; i += 1) run();
  const samples: number[] = [];
  for (let i = 0; i < runs / BATCH; i += 1) {
    const started = performance.now();
    for (let j = 0; j < BATCH; j += 1) run();
    samples.push(((performance.now() - started) * 1000) / BATCH);
  }
  return median(samples);
}

async function main(argv: readonly string[]): Promise<number> {
  const runs = integerOption("runs", readFlags(argv, ["runs"]).get("runs") ?? String(DEFAULT_RUNS), BATCH, 10_000_000);
  const random = new Random(42);
  const systemPrompt = text(random, 2000);
  const summary = text(random, 600);
  const history: ChatMessage[] = Array.from({ length: WINDOW }, (_, i) => ({ role: i % 2 === 0 ? "user" : "assistant", content: text(random, 200), timestamp: i }));
  const factor = calibration({ prompt_tokens: 900, prompt_estimate: 1000 });
  const roomy = planPrompt({ systemPrompt, summary, history, maxMessages: WINDOW, contextTokens: 100_000, calibration: factor, userMessage: "Where is the treasure?" });
  const tight = planPrompt({ systemPrompt, summary, history, maxMessages: WINDOW, contextTokens: Math.floor(roomy.promptEstimate * factor * 0.6), calibration: factor, userMessage: "Where is the treasure?" });

  const baseline = measure(runs, () => countWindowOnly(systemPrompt, history, WINDOW, "Where is the treasure?"));
  const counted = measure(runs, () => planPrompt({ systemPrompt, summary, history, maxMessages: WINDOW, calibration: factor, userMessage: "Where is the treasure?" }));
  const all = measure(runs, () => planPrompt({ systemPrompt, summary, history, maxMessages: WINDOW, contextTokens: 100_000, calibration: factor, userMessage: "Where is the treasure?" }));
  const cut = measure(runs, () => planPrompt({ systemPrompt, summary, history, maxMessages: WINDOW, contextTokens: Math.floor(roomy.promptEstimate * factor * 0.6), calibration: factor, userMessage: "Where is the treasure?" }));
  const characters = systemPrompt.length + summary.length + history.reduce((total, message) => total + message.content.length, 0);

  console.log(
    [
      `Token window bench, node ${process.version}, ${runs} calls per case (median of batches of ${BATCH})`,
      `  window     ${WINDOW} messages of 200 characters, a 2,000-character system prompt, a 600-character summary (${characters} characters)`,
      `  baseline   the count window as built before issue 10, no estimate: ${baseline.toFixed(2)} µs per message`,
      `  planPrompt no budget (count window, estimated for calibration): ${counted.toFixed(2)} µs per message`,
      `  planPrompt budget fits all ${roomy.sent} (estimate ${roomy.promptEstimate} tokens): ${all.toFixed(2)} µs per message, +${(all - baseline).toFixed(2)} µs`,
      `  planPrompt budget fits ${tight.sent} of ${WINDOW}: ${cut.toFixed(2)} µs per message`,
      `  estimate throughput ~${(characters / all).toFixed(0)} million characters per second`,
    ].join("\n"),
  );
  return 0;
}

runCli("tokens-bench", main, USAGE);
