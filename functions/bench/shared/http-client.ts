import { Agent, request } from "node:http";

/**
 * The benches' one HTTP client: node:http with keep-alive, because the load generator shares the
 * machine with the servers it measures, and its CPU per request is a fraction of fetch's.
 */
const agent = new Agent({ keepAlive: true, maxSockets: 1_000 });

/** Longest a request may wait for a byte: far beyond any model budget or key lease of the benches' settings. */
const IDLE_TIMEOUT_MS = 30_000;

/** What one request got back. `status` 0: no answer at all (`error` says why). */
export interface Answer {
  readonly status: number;
  /** The `error.code` of a JSON error body. */
  readonly code: string | undefined;
  /** The `Idempotent-Replayed: true` header. */
  readonly replayed: boolean;
  /** The JSON object answered, or `{ raw: text }`. */
  readonly body: Record<string, unknown>;
  readonly error?: string;
}

export interface Request {
  readonly method?: string;
  /** Sent as JSON. */
  readonly body?: unknown;
  readonly headers?: Readonly<Record<string, string>>;
  readonly timeoutMs?: number;
}

/** Sends one request; never rejects: a request that got no answer has status 0. */
export function send(url: string, { method = "POST", body, headers = {}, timeoutMs = IDLE_TIMEOUT_MS }: Request = {}): Promise<Answer> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const sent = payload === undefined ? headers : { "content-type": "application/json", "content-length": String(Buffer.byteLength(payload)), ...headers };
  return new Promise((resolve) => {
    const failed = (error: Error) => { resolve({ status: 0, code: undefined, replayed: false, body: {}, error: `${error.name}: ${error.message}` }); };
    const req = request(url, { method, agent, headers: sent }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("error", failed);
      res.on("end", () => {
        const parsed = parseObject(Buffer.concat(chunks).toString("utf8"));
        const error = parsed.error;
        const code = typeof error === "object" && error !== null && "code" in error && typeof error.code === "string" ? error.code : undefined;
        resolve({ status: res.statusCode ?? 0, code, replayed: res.headers["idempotent-replayed"] === "true", body: parsed });
      });
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs / 1000} s`)));
    req.on("error", failed);
    req.end(payload);
  });
}

function parseObject(text: string): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : { raw: text };
  } catch {
    return { raw: text };
  }
}

/** The seeded template the cost bench talks to (context_window 10, max_tokens 50), and its plain server mimics. */
export const TEMPLATE_ID = "friendly-assistant";

export async function createSession(baseUrl: string, userId: string, templateId: string = TEMPLATE_ID): Promise<string> {
  const answer = await send(`${baseUrl}/api/v1/chatbot/session`, { body: { user_id: userId, template_id: templateId } });
  if (answer.status !== 201 || typeof answer.body.session_id !== "string") throw new Error(`createSession answered ${failure(answer)}`);
  return answer.body.session_id;
}

/** Sends one message (with an Idempotency-Key when `key` is given); returns the message_count. */
export async function sendMessage(baseUrl: string, sessionId: string, message: string, key?: string): Promise<number> {
  const answer = await send(`${baseUrl}/api/v1/chatbot/session/${sessionId}/message`, { body: { message }, headers: key === undefined ? {} : { "idempotency-key": key } });
  if (answer.status !== 200 || typeof answer.body.message_count !== "number") throw new Error(`sendMessage answered ${failure(answer)}`);
  return answer.body.message_count;
}

function failure(answer: Answer): string {
  return answer.status === 0 ? `nothing (${answer.error ?? ""})` : `${answer.status}: ${JSON.stringify(answer.body)}`;
}
