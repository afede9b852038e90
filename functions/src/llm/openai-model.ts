import OpenAI from "openai";
import { z } from "zod";
import type { ChatModel, Completion, CompletionRequest } from "./chat-model";
import { ModelError } from "./errors";

export interface OpenAiModelOptions {
  readonly apiKey: string;
  readonly baseUrl: string | undefined;
  /** Per attempt. */
  readonly timeoutMs: number;
}

/**
 * Chat completions through the official SDK (the Responses API has no presence or frequency
 * penalty). The timeout is always explicit: the SDK default (10 minutes) outlives any Cloud
 * Function.
 */
export function createOpenAiModel(options: OpenAiModelOptions): ChatModel {
  const client = new OpenAI({
    apiKey: options.apiKey,
    baseURL: options.baseUrl,
    timeout: options.timeoutMs,
    // Retries are ours (see retrying-model.ts): the SDK would wait out any Retry-After, however long.
    maxRetries: 0,
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
    throw new ModelError("bad_response", "the model returned an empty or malformed reply", { retryable: false });
  }
  // A compatible server may send lone surrogates; stored as they are they would wedge the database node.
  return { text: content.toWellFormed(), truncated: choice?.finish_reason === "length", model: parsed.data.model ?? requestedModel };
}

/** Maps SDK errors by class; the provider's own message is kept out of client responses. */
export function toModelError(error: unknown): ModelError {
  if (error instanceof ModelError) return error;
  if (error instanceof OpenAI.APIConnectionTimeoutError) {
    return new ModelError("timeout", "the model did not answer in time", { cause: error });
  }
  if (error instanceof OpenAI.APIConnectionError) {
    return new ModelError("unavailable", "the model provider could not be reached", { cause: error });
  }
  if (error instanceof OpenAI.APIError) {
    const status: unknown = error.status;
    return fromStatus(typeof status === "number" ? status : 0, retryAfter(error.headers as Headers | undefined), error);
  }
  return new ModelError("bad_response", "the model call failed", { cause: error });
}

/** An HTTP error of the provider as a ModelError. */
function fromStatus(status: number, retryAfterMs: number | undefined, cause: unknown): ModelError {
  if (status === 429 || status === 503 || status === 529) {
    return new ModelError("unavailable", "the model provider is overloaded or rate limited", { retryAfterMs, cause });
  }
  if (status === 504 || status === 408) {
    return new ModelError("timeout", "the model provider timed out", { retryAfterMs, cause });
  }
  // A 5xx may pass; a 4xx (bad key, unknown model, oversized prompt) will fail the same way again.
  return new ModelError("bad_response", `the model provider refused the request (status ${status || "unknown"})`, {
    retryAfterMs,
    retryable: status >= 500,
    cause,
  });
}

const HTTP_DATE = /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT$/;

/** How long the provider asked us to wait, in milliseconds (`retry-after-ms`, or `Retry-After` as seconds or HTTP date). */
export function retryAfter(headers: Headers | undefined, now: number = Date.now()): number | undefined {
  const ms = headers?.get("retry-after-ms")?.trim();
  if (ms !== undefined && /^\d+(\.\d+)?$/.test(ms)) return Math.ceil(Number(ms));
  const value = headers?.get("retry-after")?.trim();
  if (value === undefined) return undefined;
  if (/^\d+$/.test(value)) return Number(value) * 1000;
  // Only an HTTP date (IMF-fixdate): Date.parse alone reads nonsense such as "1.5" as a date.
  if (!HTTP_DATE.test(value)) return undefined;
  return Math.max(0, Date.parse(value) - now);
}
