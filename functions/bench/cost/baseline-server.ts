import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import OpenAI from "openai";
import { seedTemplates } from "../../src/local/project-files";
import { TEMPLATE_ID } from "../shared/http-client";
import { reportToParent } from "./child-server";

/**
 * What the cost bench's baselines (plain-server.ts, floor-server.ts) share, each in a child
 * process: the template's settings, one `openai` client, and the service's two routes with their
 * JSON, no validation beyond what a careful plain server does. Each baseline says what a session's
 * creation and a message do besides.
 */
const found = seedTemplates()[TEMPLATE_ID];
if (!found) throw new Error(`emulator-data has no template ${TEMPLATE_ID}`);
export const template = found;
export const client = new OpenAI({ apiKey: process.env.OPENAI_API_KEY, baseURL: process.env.OPENAI_BASE_URL, timeout: 30_000, maxRetries: 0 });

export type History = { role: "user" | "assistant"; content: string }[];

/** The prompt a message sends: the template's, the window of history, the message. */
function promptOf(history: History, message: string): OpenAI.ChatCompletionMessageParam[] {
  const { personalityPrompt, context_window: window = 10 } = template;
  return [{ role: "system", content: personalityPrompt }, ...history.slice(-window), { role: "user", content: message }];
}

/** A message's model call as the baselines send it: the prompt and the template's settings (the service's defaults where it sets none). */
export function completionParams(history: History, message: string): OpenAI.ChatCompletionCreateParamsNonStreaming {
  const { model = "gpt-4o-mini", temperature, max_tokens, presence_penalty, frequency_penalty } = template;
  // eslint-disable-next-line @typescript-eslint/no-deprecated
  return { model, messages: promptOf(history, message), temperature, max_tokens, presence_penalty, frequency_penalty };
}

export interface BaselineRoutes {
  /** A new session, `id`, for `userId`. */
  readonly create: (id: string, userId: unknown) => Promise<void>;
  /** The reply to `message` in session `sessionId` with its `history` so far (the exchange is added to it after). */
  readonly message: (sessionId: string, message: string, history: History) => Promise<{ readonly text: string; readonly messageCount: number; readonly truncated: boolean }>;
}

const MESSAGE_ROUTE = /^\/api\/v1\/chatbot\/session\/([0-9a-f-]{36})\/message$/;

/** Serves `routes` on a free port of loopback and tells the parent process which. */
export function serveBaseline(routes: BaselineRoutes): void {
  const sessions = new Map<string, History>();
  const handle = async (request: IncomingMessage, response: ServerResponse): Promise<void> => {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, unknown>;
    if (request.url === "/api/v1/chatbot/session") {
      const id = randomUUID();
      await routes.create(id, body.user_id);
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
    const { text, messageCount, truncated } = await routes.message(sessionId, message, history);
    history.push({ role: "user", content: message }, { role: "assistant", content: text });
    reply(response, 200, { success: true, response: text, session_id: sessionId, message_count: messageCount, truncated });
  };
  const server = createServer((request, response) => {
    handle(request, response).catch(() => { reply(response, 500, { success: false }); });
  });
  server.listen(0, "127.0.0.1", () => { reportToParent((server.address() as AddressInfo).port); });
}

function reply(response: ServerResponse, status: number, body: unknown): void {
  const payload = JSON.stringify(body);
  response.writeHead(status, { "content-type": "application/json; charset=utf-8", "content-length": Buffer.byteLength(payload) }).end(payload);
}
