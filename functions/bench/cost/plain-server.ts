import { client, completionParams, serveBaseline } from "./baseline-server";
import { processCpuMs } from "./child-server";

/**
 * The cost bench's baseline, in a child process: a plain node:http server keeping sessions in a
 * Map, answering the same two routes with the same template through the same `openai` SDK (one
 * client), with the same window of history. No validation beyond what a careful plain server
 * does, no identity, limits, idempotency or database: what is left of a message when the
 * service's guarantees are taken away.
 *
 * With PLAIN_BURN_MS, each message also spins that much CPU time (section c's CPU budget): what
 * throughput a server spending so much per message can reach at all on this bench, whatever the
 * work is. The spin is cut in four slices on four turns of the event loop, two before the model
 * call and two after, as the service's work falls between its round trips. It counts the
 * process's CPU time, not the clock's: a slice the machine takes away is not counted as spent.
 */
const burnMs = Number(process.env.PLAIN_BURN_MS ?? 0);

async function burn(): Promise<void> {
  if (!Number.isFinite(burnMs) || burnMs <= 0) return;
  for (let slice = 0; slice < 2; slice += 1) {
    if (slice > 0) await new Promise((resolve) => setImmediate(resolve));
    const until = processCpuMs() + burnMs / 4;
    while (processCpuMs() < until) {
      // Spinning: CPU standing for a server's own work.
    }
  }
}

serveBaseline({
  create: () => Promise.resolve(),
  async message(_sessionId, message, history) {
    await burn();
    const completion = await client.chat.completions.create(completionParams(history, message));
    await burn();
    const choice = completion.choices[0];
    return { text: choice?.message.content ?? "", messageCount: history.length / 2 + 1, truncated: choice?.finish_reason === "length" };
  },
});
