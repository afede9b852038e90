import OpenAI from "openai";
import { z } from "zod";
import type { ChatModel, Completion, CompletionRequest } from "./chat-model";
import { ModelError } from "./errors";

export interface OpenAiModelOptions {
  readonly apiKey: string;
  readonly baseUrl: string | undefined;
  readonly timeoutMs: number;
  readonly maxRetries: number;
}

/**
 * Chat completions through the official SDK (the Responses API has no presence or frequency
 * penalty). Timeout and retries are always explicit: the SDK defaults (10 minutes, 2 retries)
 * outlive any Cloud Function.
 */
export function createOpenAiModel(options: OpenAiModelOptions): ChatModel {
  const client = new OpenAI({
    apiKey: options.apiKey,
    baseURL: options.baseUrl,
    timeout: options.timeoutMs,
    maxRetries: options.maxRetries,
    fetch: fetchWithLocalAbortErrors,
  });
  return {
    name: "openai",
    async complete(request: CompletionRequest): Promise<Completion> {
      let response: unknown;
      try {
        response = await client.chat.completions.create({
          model: request.model,
          messages: request.messages.map((message) => ({ role: message.role, content: message.content })),
          temperature: request.temperature,
          // The field the product specifies and every OpenAI-compatible server understands;
          // `max_completion_tokens` is newer and not yet served by all of them.
          // eslint-disable-next-line @typescript-eslint/no-deprecated
          max_tokens: request.max_tokens,
          presence_penalty: request.presence_penalty,
          frequency_penalty: request.frequency_penalty,
        });
      } catch (error) {
        throw toModelError(error);
      }
      return readCompletion(response, request.model);
    },
  };
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

/** The part of a completion the service uses. The SDK does not validate bodies: a compatible server may send anything. */
const completionSchema = z.object({
  model: z.string().optional(),
  choices: z
    .array(z.object({ message: z.object({ content: z.string().nullish() }), finish_reason: z.string().nullish() }))
    .min(1),
});

function readCompletion(response: unknown, requestedModel: string): Completion {
  const parsed = completionSchema.safeParse(response);
  const choice = parsed.success ? parsed.data.choices[0] : undefined;
  const content = choice?.message.content;
  if (!parsed.success || typeof content !== "string" || content.trim() === "") {
    throw new ModelError("bad_response", "the model returned an empty or malformed reply");
  }
  return { text: content, truncated: choice?.finish_reason === "length", model: parsed.data.model ?? requestedModel };
}

/** Maps SDK errors by class; the provider's own message is kept out of client responses. */
export function toModelError(error: unknown): ModelError {
  if (error instanceof ModelError) return error;
  if (error instanceof OpenAI.APIConnectionTimeoutError) {
    return new ModelError("timeout", "the model did not answer in time", undefined, { cause: error });
  }
  if (error instanceof OpenAI.APIConnectionError) {
    return new ModelError("unavailable", "the model provider could not be reached", undefined, { cause: error });
  }
  if (error instanceof OpenAI.APIError) {
    const retryAfter = retryAfterSeconds(error.headers as Headers | undefined);
    if (error.status === 429 || error.status === 503 || error.status === 529) {
      return new ModelError("unavailable", "the model provider is overloaded or rate limited", retryAfter, { cause: error });
    }
    if (error.status === 504 || error.status === 408) {
      return new ModelError("timeout", "the model provider timed out", retryAfter, { cause: error });
    }
    return new ModelError("bad_response", `the model provider refused the request (status ${error.status ?? "unknown"})`, retryAfter, {
      cause: error,
    });
  }
  return new ModelError("bad_response", "the model call failed", undefined, { cause: error });
}

const HTTP_DATE = /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT$/;

/** `Retry-After` as seconds (delta or HTTP date), when the provider sent one. */
export function retryAfterSeconds(headers: Headers | undefined, now: number = Date.now()): number | undefined {
  const raw = headers?.get("retry-after-ms") ?? undefined;
  if (raw !== undefined && /^\d+(\.\d+)?$/.test(raw)) return Math.max(1, Math.ceil(Number(raw) / 1000));
  const value = headers?.get("retry-after")?.trim();
  if (value === undefined) return undefined;
  if (/^\d+$/.test(value)) return Number(value);
  // Only an HTTP date (IMF-fixdate): Date.parse alone reads nonsense such as "1.5" as a date.
  if (!HTTP_DATE.test(value)) return undefined;
  return Math.max(0, Math.ceil((Date.parse(value) - now) / 1000));
}
