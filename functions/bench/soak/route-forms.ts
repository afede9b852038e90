/** What one HTTP attempt got back. `status` 0: no answer at all (`error` says why). */
export interface Answer {
  readonly status: number;
  readonly code: string | undefined;
  /** The `Idempotent-Replayed: true` header. */
  readonly replayed: boolean;
  readonly body: Record<string, unknown>;
  readonly error?: string;
}

/** Longest an attempt may take: far beyond any model budget or key lease of the soak's settings. */
const ATTEMPT_TIMEOUT_MS = 30_000;

export async function send(baseUrl: string, method: string, path: string, body: unknown, headers: Record<string, string>): Promise<Answer> {
  try {
    const response = await fetch(`${baseUrl}${path}`, {
      method,
      headers: body === undefined ? headers : { "content-type": "application/json", ...headers },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(ATTEMPT_TIMEOUT_MS),
    });
    const text = await response.text();
    const parsed = parseObject(text);
    const error = parsed.error;
    const code = typeof error === "object" && error !== null && "code" in error && typeof error.code === "string" ? error.code : undefined;
    return { status: response.status, code, replayed: response.headers.get("idempotent-replayed") === "true", body: parsed };
  } catch (error) {
    return { status: 0, code: undefined, replayed: false, body: {}, error: error instanceof Error ? `${error.name}: ${error.message}` : String(error) };
  }
}

function parseObject(text: string): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : { raw: text };
  } catch {
    return { raw: text };
  }
}

/** The three ways a function is reached: the Hosting route, the short and the full direct form. */
const FORMS = [
  { create: "/api/v1/chatbot/session", message: (id: string) => `/api/v1/chatbot/session/${id}/message`, end: (id: string) => `/api/v1/chatbot/session/${id}` },
  { create: "/createSession", message: (id: string) => `/sendMessage/${id}`, end: (id: string) => `/endSession/${id}` },
  {
    create: "/demo-chatify/us-central1/createSession",
    message: (id: string) => `/demo-chatify/us-central1/sendMessage/${id}`,
    end: (id: string) => `/demo-chatify/us-central1/endSession/${id}`,
  },
] as const;

export type RouteForm = (typeof FORMS)[number];

export function routeForm(index: number): RouteForm {
  return FORMS[index % FORMS.length] ?? FORMS[0];
}

export const ROUTE_FORMS = FORMS.length;
