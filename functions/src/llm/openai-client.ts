import OpenAI from "openai";

export interface OpenAiClientOptions {
  readonly apiKey: string;
  readonly baseUrl: string | undefined;
  /** Per attempt. */
  readonly timeoutMs: number;
}

/**
 * The SDK client every OpenAI adapter (chat, moderation) builds the same way. The timeout is
 * always explicit: the SDK default (10 minutes) outlives any Cloud Function.
 */
export function createOpenAiClient(options: OpenAiClientOptions): OpenAI {
  return new OpenAI({
    apiKey: options.apiKey,
    baseURL: options.baseUrl,
    timeout: options.timeoutMs,
    // Retries are the caller's (see retrying-model.ts): the SDK would wait out any Retry-After, however long.
    maxRetries: 0,
    fetch: fetchWithLocalAbortErrors,
  });
}

/**
 * `fetch` whose aborts are errors of this realm. The SDK tells a timeout from other
 * connection failures by the error's name, and it rebuilds errors that fail `instanceof
 * Error` without their name: an abort raised in another realm (a test VM, a polyfill) would
 * then read as "connection error" instead of "timed out".
 */
async function fetchWithLocalAbortErrors(input: string | URL | Request, init?: RequestInit): Promise<Response> {
  try {
    return await fetch(input, init);
  } catch (error) {
    if (typeof error === "object" && error !== null && "name" in error && error.name === "AbortError" && !(error instanceof Error)) {
      const local = new Error("The operation was aborted", { cause: error });
      local.name = "AbortError";
      throw local;
    }
    throw error;
  }
}
