import { client, completionParams, serveBaseline } from "./baseline-server";

/**
 * The cost bench's baseline, in a child process: a plain node:http server keeping sessions in a
 * Map, answering the same two routes with the same template through the same `openai` SDK (one
 * client), with the same window of history. No validation beyond what a careful plain server
 * does, no identity, limits, idempotency or database: what is left of a message when the
 * service's guarantees are taken away.
 */
serveBaseline({
  create: () => Promise.resolve(),
  async message(_sessionId, message, history) {
    const completion = await client.chat.completions.create(completionParams(history, message));
    const choice = completion.choices[0];
    return { text: choice?.message.content ?? "", messageCount: history.length / 2 + 1, truncated: choice?.finish_reason === "length" };
  },
});
