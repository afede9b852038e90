import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import OpenAI from "openai";
import { seedTemplates } from "../../src/local/project-files";
import { TEMPLATE_ID } from "../shared/http-client";
import { reportToParent } from "./child-server";

/**
 * The cost bench's baseline, in a child process: a plain node:http server keeping sessions in a
 * Map, answering the same two routes with the same template through the same `openai` SDK (one
 * client), with the same window of history. No validation beyond what a careful plain server
 * does, no identity, limits, idempotency or database: what is left of a message when the
 * service's guarantees are taken away.
 */
const template = seedTemplates()[TEMPLATE_ID];
if (!template) throw new Error(`emulator-data has no template ${TEMPLATE_ID}`);
const { personalityPrompt, context_window: window = 10, model = "gpt-4o-mini", temperature, max_tokens, presence_penalty, frequency_penalty } = template;
const client = new OpenAI({ apiKey: process.env.OPENAI_API_KEY, baseURL: process.env.OPENAI_BASE_URL, timeout: 30_000, maxRetries: 0 });
const sessions = new Map<string, { role: "user" | "assistant"; content: string }[]>();
const MESSAGE_ROUTE = /^\/api\/v1\/chatbot\/session\/([0-9a-f-]{36})\/message$/;

async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, unknown>;
  if (request.url === "/api/v1/chatbot/session") {
    const id = randomUUID();
    sessions.set(id, []);
    reply(response, 201, { success: true, session_id: id, user_id: body.user_id, template_id: TEMPLATE_ID });
    return;
  }
  const sessionId = MESSAGE_ROUTE.exec(request.url ?? "")?.[1] ?? "";
  const history = sessions.get(sessionId);
  const message = body.message;
  if (!history || typeof message !== "string" || message.trim() === "") {
    reply(response, history ? 400 : 404, { success: false });
    return;
  }
  const completion = await client.chat.completions.create({
    model,
    messages: [{ role: "system", content: personalityPrompt }, ...history.slice(-window), { role: "user", content: message }],
    temperature,
    // eslint-disable-next-line @typescript-eslint/no-deprecated
    max_tokens,
    presence_penalty,
    frequency_penalty,
  });
  const choice = completion.choices[0];
  const text = choice?.message.content ?? "";
  history.push({ role: "user", content: message }, { role: "assistant", content: text });
  reply(response, 200, { success: true, response: text, session_id: sessionId, message_count: history.length / 2, truncated: choice?.finish_reason === "length" });
}

function reply(response: ServerResponse, status: number, body: unknown): void {
  const payload = JSON.stringify(body);
  response.writeHead(status, { "content-type": "application/json; charset=utf-8", "content-length": Buffer.byteLength(payload) }).end(payload);
}

const server = createServer((request, response) => {
  handle(request, response).catch(() => { reply(response, 500, { success: false }); });
});
server.listen(0, "127.0.0.1", () => { reportToParent((server.address() as AddressInfo).port); });
