import { Agent, request } from "node:http";

/**
 * A lean HTTP client for the bench's load: node:http with keep-alive (the bench process's own
 * CPU per request is a fraction of fetch's), the service's original routes.
 */
const agent = new Agent({ keepAlive: true, maxSockets: 1_000 });

/** The seeded template the bench talks to (context_window 10, max_tokens 50), and the plain server mimics. */
export const TEMPLATE_ID = "friendly-assistant";

interface Reply {
  readonly status: number;
  readonly body: Record<string, unknown>;
}

function post(url: string, body: unknown, headers: Readonly<Record<string, string>> = {}): Promise<Reply> {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(url, { method: "POST", agent, headers: { "content-type": "application/json", "content-length": Buffer.byteLength(payload), ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("error", reject);
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        try {
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as Record<string, unknown> });
        } catch {
          resolve({ status: res.statusCode ?? 0, body: { raw: text } });
        }
      });
    });
    req.setTimeout(30_000, () => req.destroy(new Error("no answer within 30 s")));
    req.on("error", reject);
    req.end(payload);
  });
}

export async function createSession(baseUrl: string, userId: string, templateId: string = TEMPLATE_ID): Promise<string> {
  const reply = await post(`${baseUrl}/api/v1/chatbot/session`, { user_id: userId, template_id: templateId });
  if (reply.status !== 201 || typeof reply.body.session_id !== "string") throw new Error(`createSession answered ${reply.status}: ${JSON.stringify(reply.body)}`);
  return reply.body.session_id;
}

/** Sends one message (with an Idempotency-Key when `key` is given); returns the message_count. */
export async function sendMessage(baseUrl: string, sessionId: string, message: string, key?: string): Promise<number> {
  const reply = await post(`${baseUrl}/api/v1/chatbot/session/${sessionId}/message`, { message }, key === undefined ? {} : { "idempotency-key": key });
  if (reply.status !== 200 || typeof reply.body.message_count !== "number") throw new Error(`sendMessage answered ${reply.status}: ${JSON.stringify(reply.body)}`);
  return reply.body.message_count;
}
