import OpenAI from "openai";
import type { ChatModel, Completion, CompletionRequest, ReplySink, ReportedUsage } from "./chat-model";
import { completionSchema, readStreamChunk, replyChoice } from "./completion-shapes";
import { abandonedError, ModelError } from "./errors";
import { readJsonAnswer } from "./json-answer";
import { callDeadline, createOpenAiClient, type OpenAiClientOptions } from "./openai-client";
import { MAX_EVENT_CHARS, serverSentEvents, StreamTooLongError, type ServerSentEvent } from "./server-sent-events";
import { fromErrorEvent } from "./stream-error-event";

export type OpenAiModelOptions = OpenAiClientOptions;

/** Chat completions through the official SDK (the Responses API has no presence or frequency penalty). */
export function createOpenAiModel(options: OpenAiModelOptions): ChatModel {
  const client = createOpenAiClient(options);
  return {
    name: "openai",
    async complete(request: CompletionRequest, sink?: ReplySink): Promise<Completion> {
      if (sink) return streamCompletion(client, request, options.timeoutMs, sink);
      // The raw response, its body read here with a bound (json-answer.ts), under the call's deadline.
      const deadline = callDeadline(options.timeoutMs, request.signal);
      let response: unknown;
      try {
        response = await readJsonAnswer(await client.chat.completions.create(completionParams(request), { signal: deadline.signal }).asResponse());
      } catch (error) {
        if (request.signal?.aborted) throw abandonedError(error);
        throw deadline.expired ? timeoutError(error) : toModelError(error);
      } finally {
        deadline.clear();
      }
      return readCompletion(response, request.model);
    },
  };
}

/**
 * The request's fields as chat completions parameters, streamed or not. Each field is named:
 * spreading the request would send what is ours alone (the caller's `signal`) to the provider.
 */
function completionParams(request: CompletionRequest) {
  return {
    model: request.model,
    messages: request.messages.map((message) => ({ role: message.role, content: message.content })),
    temperature: request.temperature,
    // The field the product specifies and every OpenAI-compatible server understands;
    // `max_completion_tokens` is newer and not yet served by all of them.
    max_tokens: request.max_tokens,
    presence_penalty: request.presence_penalty,
    frequency_penalty: request.frequency_penalty,
  };
}

/**
 * A streamed completion (`stream: true`): each chunk's text goes to the sink as it arrives. The
 * SDK's timeout ends when the response's headers arrive, so the whole stream gets a deadline of
 * its own here: a provider that stalls mid-reply is a timeout, as a silent one is. The caller's
 * signal aborts it too, and then the call is abandoned, whatever the deadline did.
 */
async function streamCompletion(client: OpenAI, request: CompletionRequest, timeoutMs: number, sink: ReplySink): Promise<Completion> {
  // Only this deadline and the caller abort the call: an aborted signal means one of them did.
  const deadline = callDeadline(timeoutMs, request.signal);
  const signal = deadline.signal;
  const text = new StreamedText(sink, maxReplyChars(request.max_tokens));
  const ending: StreamEnding = { done: false };
  let finishReason: string | undefined;
  let model: string | undefined;
  let usage: ReportedUsage | undefined;
  try {
    let events: AsyncIterable<ServerSentEvent> | readonly ServerSentEvent[];
    let headers: Headers;
    try {
      // Usage comes in one last chunk, and only when asked for; a server that ignores the option sends none.
      const params = { ...completionParams(request), stream: true, stream_options: { include_usage: true } } as const;
      // The response as the SDK hands it over once its status is a success (its retries and its
      // errors for a refused request apply as for any call); its body is read here (chunkOfEvent).
      const response = await client.chat.completions.create(params, { signal }).asResponse();
      // Some OpenAI-compatible servers ignore `stream` and answer with one JSON completion; the
      // SDK would read that as an empty stream. Read it as the whole reply, passed on at once.
      if (!isEventStream(response.headers.get("content-type"))) {
        const completion = readCompletion(await readJsonAnswer(response, { anyMediaType: true }), request.model);
        text.add(completion.text);
        return { ...completion, text: text.finish() };
      }
      events = response.body ? serverSentEvents(response.body, maxStreamChars(request.max_tokens)) : [];
      headers = response.headers;
    } catch (error) {
      if (request.signal?.aborted) throw abandonedError(error);
      if (error instanceof ModelError) throw error;
      if (error instanceof SyntaxError) throw new ModelError("bad_response", "the model returned an empty or malformed reply", { retryable: false, cause: error });
      throw deadline.expired ? timeoutError(error) : toModelError(error);
    }
    try {
      for await (const event of events) {
        const chunk = chunkOfEvent(event, headers);
        if (chunk === DONE) {
          ending.done = true;
          break;
        }
        const parsed = readStreamChunk(chunk);
        if (!parsed) throw new ModelError("bad_response", "the model streamed a malformed chunk", { retryable: false });
        // Azure OpenAI opens with a prompt-filter chunk whose model is "": the model is the first one named.
        if (model === undefined && isNamed(parsed.model)) model = parsed.model;
        // Servers that count as they go send a running total in each chunk: the last one is the whole.
        usage = parsed.usage ?? usage;
        // A chunk may carry no choice at all (the usage summary, after the finish reason).
        const choice = replyChoice(parsed.choices);
        if (choice?.delta?.content) text.add(choice.delta.content);
        if (choice?.finish_reason) finishReason = choice.finish_reason;
      }
    } catch (error) {
      if (request.signal?.aborted) throw abandonedError(error);
      const timedOut = deadline.expired;
      // A connection cut after the finish reason (before the usage or `[DONE]`) loses nothing of
      // the reply, and the provider bills it: it is complete, its usage estimated if it never came.
      if (finishReason === undefined || timedOut || !isConnectionCut(error)) throw streamError(error, timedOut);
    }
  } finally {
    deadline.clear();
  }
  // The SDK ends an aborted stream quietly, as if it were complete: only the finish reason or `[DONE]` tells.
  if (request.signal?.aborted) throw abandonedError(undefined);
  if (deadline.expired) throw timeoutError(undefined);
  // `[DONE]` ends a whole reply even without a finish reason (Gemini proxies, LocalAI and some
  // gateways send none, as a non-streamed reply may not); with neither, the stream was cut.
  if (finishReason === undefined && !ending.done) throw new ModelError("unavailable", "the model's stream ended before the reply was complete");
  return { text: text.finish(), truncated: finishReason === "length", model: model ?? request.model, ...(usage && { usage }) };
}

/** How a stream of chunks ended: `done` once it reached `[DONE]`, the provider's end of a whole reply. */
interface StreamEnding {
  done: boolean;
}

/** `[DONE]`: the provider's end of a whole reply (what follows is ignored). */
const DONE = Symbol("[DONE]");

/**
 * The JSON chunk an event of a streamed completion carries, as the openai SDK's stream (7.57,
 * legacy mode) reads it: DONE for `[DONE]`, a `data` that is not JSON a SyntaxError, an `error`
 * event or a chunk carrying `error` the SDK's APIError, thrown as the ModelError it stands for
 * (fromErrorEvent: a refusal, or a failure that may pass). An aborted body ends in its AbortError,
 * which the caller reads from its signals, as it did with the SDK's quiet end; a body past the
 * reader's bound in a StreamTooLongError (see maxStreamChars). Read in the caller's own loop over
 * the events: a generator of chunks between the two cost each chunk another round of promises.
 */
function chunkOfEvent(sse: ServerSentEvent, headers: Headers): unknown {
  if (sse.data === "[DONE]") return DONE;
  let data: unknown;
  try {
    data = JSON.parse(sse.data);
  } catch {
    if (sse.unterminated) throw new UnterminatedEventError("Error reading response: server-sent event JSON cut short by the body's end.");
    throw new SyntaxError("Error reading response: malformed server-sent event JSON.");
  }
  const carried = typeof data === "object" && data !== null && "error" in data ? data.error : undefined;
  if (sse.event === "error" || carried) {
    // The SDK's APIError takes the error body as an object (it reads its message, code and type from it).
    const error = new OpenAI.APIError(undefined, (carried ?? data) as object | undefined, undefined, headers);
    throw fromErrorEvent(error, retryAfter(headers));
  }
  return data;
}

function isEventStream(contentType: string | null): boolean {
  return contentType?.split(";")[0]?.trim().toLowerCase() === "text/event-stream";
}

function timeoutError(cause: unknown): ModelError {
  return new ModelError("timeout", "the model did not answer in time", { cause });
}

/** A failure while reading the stream: the deadline, a provider's error event, bad JSON, a stream past its bound, or a connection cut. */
function streamError(error: unknown, timedOut: boolean): ModelError {
  if (timedOut) return timeoutError(error);
  if (error instanceof ModelError || error instanceof OpenAI.APIError) return toModelError(error);
  if (error instanceof StreamTooLongError) {
    return new ModelError("bad_response", `the model's stream is longer than ${error.maxChars} characters`, { retryable: false, cause: error });
  }
  if (error instanceof SyntaxError) return new ModelError("bad_response", "the model streamed malformed data", { retryable: false, cause: error });
  // What is left is the connection failing under the body (undici's "terminated"): worth another try.
  return new ModelError("unavailable", "the model's stream broke off", { cause: error });
}

/**
 * Malformed JSON in the last event, which the body's end completed rather than a blank line: with
 * a close-delimited body (HTTP/1.1 without a length or chunks) a connection cut mid-event reads
 * as a clean end, so this may be the cut, not what the provider said.
 */
class UnterminatedEventError extends SyntaxError {}

/** Whether a failure while reading the body (neither the deadline nor the caller) is the connection failing, not what the provider said. */
function isConnectionCut(error: unknown): boolean {
  if (error instanceof UnterminatedEventError) return true;
  return !(error instanceof ModelError || error instanceof OpenAI.APIError || error instanceof SyntaxError || error instanceof StreamTooLongError);
}





/** Whether a provider named a model: a blank name (Azure's first chunk has "") names none. */
function isNamed(model: string | undefined): model is string {
  return model !== undefined && model.trim() !== "";
}

/** Characters a streamed reply may have per token of its `max_tokens`: four times what a token of English averages. */
const REPLY_CHARS_PER_TOKEN = 16;

/**
 * The longest streamed reply, in UTF-16 units: REPLY_CHARS_PER_TOKEN per token of `max_tokens`,
 * and never under MAX_EVENT_CHARS (what one event may carry), so that a provider that ignores
 * `max_tokens` still gets a long reply through. Past it the stream is refused at once (a
 * bad_response, not retried) instead of gathered until the deadline, then retried, with the
 * instance's memory: each event is bounded (server-sent-events.ts), but not how many come.
 */
export function maxReplyChars(maxTokens: number): number {
  return Math.max(MAX_EVENT_CHARS, REPLY_CHARS_PER_TOKEN * maxTokens);
}

/**
 * Characters of a stream per token of `max_tokens`: several times what an honest provider sends.
 * OpenAI streams about a token a chunk, each 150 to 300 characters of JSON (id, created, model,
 * system_fingerprint, `usage: null`, its `obfuscation` padding); Azure adds content filter results
 * to each (some 250 more); a reasoning model streams its reasoning (`reasoning_content`) in chunks
 * of the same kind, and `max_tokens` counts those tokens too; a role chunk, a prompt-filter chunk,
 * a usage chunk and keep-alive comments come once or now and then.
 */
const STREAM_CHARS_PER_TOKEN = 1024;

/**
 * The most read of a streamed reply's body, in UTF-16 units (events, comments, all): what the
 * reply's own bound (maxReplyChars) misses, as chunks of another choice or of no choice, padding
 * or comments, all read and dropped. STREAM_CHARS_PER_TOKEN per token of `max_tokens` (about 100
 * Mi characters at the 100,000 a template may ask), and never under four times MAX_EVENT_CHARS
 * (4 Mi), so that a short reply's stream has room: a provider that ignores a small `max_tokens`
 * still gets some 16,000 chunks through, and the bound is never under the reply's. Past it, as
 * past the reply's, the stream is refused at once (a bad_response, not retried) instead of read
 * until the deadline, then retried. What is read is parsed and dropped (memory is held by the
 * bounds of an event and of the reply), so this bounds the time a provider's bytes can take.
 */
export function maxStreamChars(maxTokens: number): number {
  return Math.max(4 * MAX_EVENT_CHARS, STREAM_CHARS_PER_TOKEN * maxTokens);
}

const isHighSurrogate = (code: number) => code >= 0xd800 && code <= 0xdbff;

/**
 * A streamed reply's text, passed on as deltas. Leading blank text is held back, so a blank reply
 * fails before anything is shown, as a non-streamed one does. A trailing high surrogate is held
 * until its pair arrives (a server may split a pair across chunks): each delta is well-formed on
 * its own, and the deltas concatenate to the stored text exactly. Longer than `maxChars`, it is
 * refused (see maxReplyChars), judged from the lengths it holds: a comparison a chunk, no more.
 */
class StreamedText {
  private sent = "";
  private pending = "";
  /**
   * Whether all text so far is blank: kept as chunks come, each trimmed alone, since trimming all
   * that is held at each chunk would take time quadratic in a long run of blank chunks.
   */
  private blank = true;

  constructor(
    private readonly sink: ReplySink,
    private readonly maxChars: number,
  ) {}

  add(content: string): void {
    if (this.sent.length + this.pending.length + content.length > this.maxChars) {
      throw new ModelError("bad_response", `the model's reply is longer than ${this.maxChars} characters`, { retryable: false });
    }
    this.pending += content;
    this.blank &&= content.trim() === "";
    if (this.blank) return;
    const cut = isHighSurrogate(this.pending.charCodeAt(this.pending.length - 1)) ? this.pending.length - 1 : this.pending.length;
    if (cut === 0) return;
    this.emit(this.pending.slice(0, cut));
    this.pending = this.pending.slice(cut);
  }

  /** The whole text, once the stream is complete; the rest held back is passed on first. */
  finish(): string {
    if (this.blank) {
      throw new ModelError("bad_response", "the model returned an empty or malformed reply", { retryable: false });
    }
    if (this.pending !== "") this.emit(this.pending);
    this.pending = "";
    return this.sent;
  }

  private emit(piece: string): void {
    // A lone surrogate stored as it is would wedge the database node (see readCompletion).
    const text = piece.toWellFormed();
    this.sent += text;
    this.sink.write(text);
  }
}


function readCompletion(response: unknown, requestedModel: string): Completion {
  const parsed = completionSchema.safeParse(response);
  const choice = parsed.success ? replyChoice(parsed.data.choices) : undefined;
  const content = choice?.message.content;
  if (!parsed.success || typeof content !== "string" || content.trim() === "") {
    throw new ModelError("bad_response", "the model returned an empty or malformed reply", { retryable: false });
  }
  // A compatible server may send lone surrogates; stored as they are they would wedge the database node.
  const usage = parsed.data.usage;
  const model = isNamed(parsed.data.model) ? parsed.data.model : requestedModel;
  return { text: content.toWellFormed(), truncated: choice?.finish_reason === "length", model, ...(usage && { usage }) };
}

/** Maps SDK errors by class; the provider's own message is kept out of client responses. */
export function toModelError(error: unknown): ModelError {
  if (error instanceof ModelError) return error;
  if (error instanceof OpenAI.APIConnectionTimeoutError) {
    return new ModelError("timeout", "the model did not answer in time", { cause: error });
  }
  if (error instanceof OpenAI.APIConnectionError) {
    // What our fetch refused (an error answer past its bound, openai-client.ts) the SDK wraps as a connection error.
    if (error.cause instanceof ModelError) return error.cause;
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

/**
 * How long the provider asked us to wait, in milliseconds (`retry-after-ms`, or `Retry-After` as
 * seconds or HTTP date), as it said: ModelError bounds it (MAX_RETRY_AFTER_MS).
 */
export function retryAfter(headers: Headers | undefined, now: number = Date.now()): number | undefined {
  const ms = headers?.get("retry-after-ms")?.trim();
  if (ms !== undefined && /^\d+(\.\d+)?$/.test(ms)) return Math.ceil(Number(ms));
  const value = headers?.get("retry-after")?.trim();
  if (value === undefined) return undefined;
  if (/^\d+$/.test(value)) return Number(value) * 1000;
  // Only an HTTP date (IMF-fixdate): Date.parse alone reads nonsense such as "1.5" as a date.
  if (!HTTP_DATE.test(value)) return undefined;
  // The pattern lets through a day or an hour out of range ("99:99:99"), which Date.parse reads as NaN.
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}
