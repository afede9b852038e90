import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/** A chat completions request as the server received it. */
export interface RecordedRequest {
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: {
    model: string;
    messages: { role: string; content: string }[];
    temperature?: number;
    max_tokens?: number;
    presence_penalty?: number;
    frequency_penalty?: number;
    [key: string]: unknown;
  };
}

/** The text of a recorded request's last message: the user's new message. */
export const lastUser = (request: RecordedRequest): string => request.body.messages.at(-1)?.content ?? "";

/** Token counts as the fake reports them (OpenAI's `usage` block, less its total). */
export interface FakeUsage {
  readonly prompt_tokens: number;
  readonly completion_tokens: number;
}

/**
 * The usage the fake reports for `replyText` answering `request`, unless a script says otherwise:
 * a rough tokenizer (a token per 4 characters, rounded up), with OpenAI's framing overhead of
 * 4 tokens per message and 3 to prime the reply. Exact by contract: tests compute expectations with it.
 *   prompt_tokens     = sum over messages of (ceil(content.length / 4) + 4) + 3
 *   completion_tokens = ceil(replyText.length / 4)
 */
export function fakeUsage(request: { readonly messages: readonly { readonly content: string }[] }, replyText: string): FakeUsage {
  const prompt = request.messages.reduce((sum, message) => sum + Math.ceil(message.content.length / 4) + 4, 3);
  return { prompt_tokens: prompt, completion_tokens: Math.ceil(replyText.length / 4) };
}

/**
 * How to answer one request. Without a script the server replies `reply #n to: <last user message>`.
 * A `reply` to a streaming request (`stream: true`) is streamed word by word, without pauses;
 * `stream` streams the given chunks, pausing `chunkDelayMs` before each (`firstChunkDelayMs` before
 * the first, when given), and with `cutAfter`
 * cuts the connection after that many chunks (no finish reason, no `[DONE]`), as a provider that
 * fails mid-reply. Usage is reported as OpenAI does: in every non-streamed reply, and in a last
 * chunk of a stream only when the request asked for it (`stream_options.include_usage`); the
 * counts are `fakeUsage`'s unless `usage` gives others, and `usage: null` reports none.
 */
export type Scripted =
  | { readonly kind: "reply"; readonly text: string; readonly finishReason?: string; readonly delayMs?: number; readonly usage?: FakeUsage | null }
  | {
      readonly kind: "stream";
      readonly chunks: readonly string[];
      readonly chunkDelayMs?: number;
      /** The pause before the first chunk, when it differs from the others' (a model slow to start). */
      readonly firstChunkDelayMs?: number;
      readonly finishReason?: string;
      readonly cutAfter?: number;
      readonly usage?: FakeUsage | null;
      /** Called as each chunk is sent (its index): when the model's tokens left, for a test that times what follows. */
      readonly onChunk?: (index: number) => void;
    }
  | { readonly kind: "status"; readonly status: number; readonly headers?: Record<string, string>; readonly body?: unknown }
  | { readonly kind: "raw"; readonly status: number; readonly body: string }
  | { readonly kind: "hang" }
  | { readonly kind: "drop" };

/** A moderations request (`POST /v1/moderations`) as the server received it. */
export interface RecordedModeration {
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: { model?: string; input: unknown; [key: string]: unknown };
}

/**
 * How to answer one moderations request. Without a script the verdict is clean (not flagged).
 * `verdict` answers as OpenAI does (one result, every category false but those named, which are
 * true), optionally after `delayMs`; `status` (a 404 stands for a server without the endpoint),
 * `raw`, `hang` and `drop` as for chat completions.
 */
export type ModerationScripted =
  | { readonly kind: "verdict"; readonly flagged: boolean; readonly categories?: readonly string[]; readonly delayMs?: number }
  | Fault;

/** The scripted answers both endpoints can fail with. */
type Fault = Extract<Scripted, { readonly kind: "status" | "raw" | "hang" | "drop" }>;

/** The categories of `omni-moderation-latest`, as its answers list them. */
const MODERATION_CATEGORIES = [
  "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent", "self-harm",
  "self-harm/instructions", "self-harm/intent", "sexual", "sexual/minors", "violence", "violence/graphic",
] as const;

/**
 * Decides how to answer a request the script does not cover: `defaultReply` is the usual reply
 * (optionally after `delayMs`), anything else injects a fault. Without one, every such request
 * gets the default reply.
 */
export type Chaos = (request: RecordedRequest, defaultReply: (delayMs?: number) => Scripted) => Scripted;

export interface FakeOpenAiOptions {
  readonly chaos?: Chaos;
}

/**
 * An OpenAI-compatible HTTP server on loopback, so tests run the real `openai` SDK end to end.
 * It records every request and answers from a script, defaulting to a reply that names the
 * message it answers (so a test can tell replies apart and check their order).
 */
export class FakeOpenAiServer {
  /** Chat completions requests only: moderations are recorded apart, in `moderationRequests`. */
  readonly requests: RecordedRequest[] = [];
  readonly moderationRequests: RecordedModeration[] = [];
  private readonly script: Scripted[] = [];
  private readonly moderationScript: ModerationScripted[] = [];
  private readonly server: Server;
  private readonly hanging = new Set<() => void>();
  private readonly noneHanging: (() => void)[] = [];
  private readonly waiters: { readonly reached: () => boolean; readonly resolve: () => void }[] = [];
  private replies = 0;

  private constructor(private readonly options: FakeOpenAiOptions) {
    this.server = createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on("data", (chunk: Buffer) => chunks.push(chunk));
      request.on("end", () => {
        const path = request.url ?? "";
        if (request.method === "POST" && path.endsWith("/moderations")) {
          this.moderate(path, request, response, Buffer.concat(chunks).toString("utf8"));
          return;
        }
        if (request.method !== "POST" || !path.endsWith("/chat/completions")) {
          response.writeHead(404, { "content-type": "application/json" }).end('{"error":{"message":"not found"}}');
          return;
        }
        const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as RecordedRequest["body"];
        const recorded: RecordedRequest = { path, headers: request.headers, body };
        this.requests.push(recorded);
        this.wakeWaiters();
        const step = this.script.shift() ?? this.unscripted(recorded);
        if (this.held) void this.held.then(() => { this.answer(step, body, request, response); });
        else this.answer(step, body, request, response);
      });
    });
  }

  /** Answers a chat completions request with its scripted step. */
  private answer(step: Scripted, body: RecordedRequest["body"], request: IncomingMessage, response: ServerResponse): void {
    switch (step.kind) {
      case "reply": {
        const usage = step.usage === undefined ? fakeUsage(body, step.text) : step.usage;
        const send = () => {
          if (response.destroyed) return;
          if (body.stream === true) {
            const chunks = step.text.match(/\s*\S+/g) ?? [step.text];
            void streamChunks(response, body, { chunks, finishReason: step.finishReason, usage });
            return;
          }
          response.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(completion(body.model, step.text, step.finishReason, usage)));
        };
        if (step.delayMs) setTimeout(send, step.delayMs);
        else send();
        return;
      }
      case "stream":
        void streamChunks(response, body, { ...step, usage: step.usage === undefined ? fakeUsage(body, step.chunks.join("")) : step.usage });
        return;
      default:
        this.fault(step, request, response);
    }
  }

  /** Set while answers are held (`holdAnswers`): every chat completion waits for it. */
  private held: Promise<void> | undefined;

  /**
   * Holds every chat completion's answer (requests are still recorded as they come) until the
   * returned function is called: many calls in flight at once, whatever the machine's speed.
   */
  holdAnswers(): () => void {
    let release: () => void = () => undefined;
    this.held = new Promise<void>((resolve) => { release = resolve; });
    return () => {
      this.held = undefined;
      release();
    };
  }

  static async start(options: FakeOpenAiOptions = {}): Promise<FakeOpenAiServer> {
    const fake = new FakeOpenAiServer(options);
    await new Promise<void>((resolve) => fake.server.listen(0, "127.0.0.1", resolve));
    return fake;
  }

  /** The base URL to give the SDK. */
  get baseUrl(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/v1`;
  }

  /** Answers the next requests, in order, from `steps`. */
  enqueue(...steps: Scripted[]): void {
    this.script.push(...steps);
  }

  /** Answers the next moderations requests, in order, from `steps`. */
  enqueueModeration(...steps: ModerationScripted[]): void {
    this.moderationScript.push(...steps);
  }

  /** Resolves once `count` chat completions requests have been received (counted since the last `reset`). */
  awaitRequests(count: number): Promise<void> {
    return this.await(() => this.requests.length >= count);
  }

  /** Resolves once `count` moderations requests have been received (counted since the last `reset`). */
  awaitModerationRequests(count: number): Promise<void> {
    return this.await(() => this.moderationRequests.length >= count);
  }

  /** Decides unscripted answers from now on, in place of the one the server started with; `reset` clears it. */
  chaos: Chaos | undefined;

  reset(): void {
    this.requests.length = 0;
    this.script.length = 0;
    this.moderationRequests.length = 0;
    this.moderationScript.length = 0;
    this.replies = 0;
    this.chaos = undefined;
  }

  /** Ends every request left hanging (a `hang` step): its connection is cut, as a dead provider's would be. */
  releaseHanging(): void {
    for (const release of this.hanging) release();
  }

  /** Resolves once no request is left hanging: each one's connection has closed (the client gave up, or `releaseHanging`). */
  noRequestHanging(): Promise<void> {
    if (this.hanging.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.noneHanging.push(resolve));
  }

  async stop(): Promise<void> {
    this.releaseHanging();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => { resolve(); }));
  }

  private await(reached: () => boolean): Promise<void> {
    if (reached()) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ reached, resolve }));
  }

  private wakeWaiters(): void {
    for (const waiter of [...this.waiters]) {
      if (!waiter.reached()) continue;
      this.waiters.splice(this.waiters.indexOf(waiter), 1);
      waiter.resolve();
    }
  }

  /** Answers a moderations request from its own script, a clean verdict when there is none. */
  private moderate(path: string, request: IncomingMessage, response: ServerResponse, text: string): void {
    const body = JSON.parse(text) as RecordedModeration["body"];
    this.moderationRequests.push({ path, headers: request.headers, body });
    this.wakeWaiters();
    const step = this.moderationScript.shift() ?? { kind: "verdict", flagged: false };
    if (step.kind !== "verdict") {
      this.fault(step, request, response);
      return;
    }
    const send = () => {
      if (!response.destroyed) response.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(moderation(body.model, step)));
    };
    if (step.delayMs) setTimeout(send, step.delayMs);
    else send();
  }

  private fault(step: Fault, request: IncomingMessage, response: ServerResponse): void {
    switch (step.kind) {
      case "status":
        response
          .writeHead(step.status, { "content-type": "application/json", ...step.headers })
          .end(JSON.stringify(step.body ?? { error: { message: `scripted ${step.status}`, type: "server_error" } }));
        return;
      case "raw":
        response.writeHead(step.status, { "content-type": "application/json" }).end(step.body);
        return;
      case "hang": {
        const release = () => response.destroy();
        this.hanging.add(release);
        response.on("close", () => {
          this.hanging.delete(release);
          if (this.hanging.size === 0) for (const wake of this.noneHanging.splice(0)) wake();
        });
        return;
      }
      case "drop":
        request.socket.destroy();
        return;
    }
  }

  private unscripted(request: RecordedRequest): Scripted {
    const defaultReply = (delayMs?: number) => this.defaultReply(request.body, delayMs);
    const chaos = this.chaos ?? this.options.chaos;
    return chaos ? chaos(request, defaultReply) : defaultReply();
  }

  private defaultReply(body: RecordedRequest["body"], delayMs?: number): Scripted {
    this.replies += 1;
    const userMessage = [...body.messages].reverse().find((message) => message.role === "user");
    return { kind: "reply", text: `reply #${this.replies} to: ${userMessage?.content ?? ""}`, ...(delayMs === undefined ? {} : { delayMs }) };
  }
}

/**
 * Answers as the OpenAI API streams a chat completion: one SSE `data:` line per chunk, then `[DONE]`.
 * Asked to include usage, it sends `usage: null` in every chunk and the counts in one more chunk,
 * with no choices, after the finish reason.
 */
async function streamChunks(
  response: ServerResponse,
  body: RecordedRequest["body"],
  step: {
    readonly chunks: readonly string[];
    readonly chunkDelayMs?: number;
    readonly firstChunkDelayMs?: number;
    readonly finishReason?: string | undefined;
    readonly cutAfter?: number;
    readonly usage: FakeUsage | null;
    readonly onChunk?: (index: number) => void;
  },
): Promise<void> {
  const id = `chatcmpl-${Math.random().toString(36).slice(2)}`;
  const created = Math.floor(Date.now() / 1000);
  // A script that reports no usage stands for a server that ignores the option altogether.
  const usage = isObject(body.stream_options) && body.stream_options.include_usage === true ? step.usage : null;
  const frame = (fields: Record<string, unknown>) =>
    `data: ${JSON.stringify({ id, object: "chat.completion.chunk", created, model: body.model, ...(usage && { usage: null }), ...fields })}\n\n`;
  const chunk = (delta: Record<string, string>, finishReason: string | null) =>
    frame({ choices: [{ index: 0, delta, finish_reason: finishReason, logprobs: null }] });
  response.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
  response.write(chunk({ role: "assistant", content: "" }, null));
  // A cut comes after the chunks before it have left: the client reads them, then the break.
  const cut = async () => {
    await new Promise((flushed) => response.write("", flushed));
    response.destroy();
  };
  for (const [index, text] of step.chunks.entries()) {
    if (step.cutAfter === index) return cut();
    const pause = index === 0 ? (step.firstChunkDelayMs ?? step.chunkDelayMs) : step.chunkDelayMs;
    if (pause) await new Promise((wake) => setTimeout(wake, pause));
    if (response.destroyed) return;
    response.write(chunk({ content: text }, null));
    step.onChunk?.(index);
  }
  if (step.cutAfter !== undefined) return cut();
  const usageChunk = usage ? frame({ choices: [], usage: withTotal(usage) }) : "";
  response.end(`${chunk({}, step.finishReason ?? "stop")}${usageChunk}data: [DONE]\n\n`);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null;
}

function withTotal(usage: FakeUsage) {
  return { prompt_tokens: usage.prompt_tokens, completion_tokens: usage.completion_tokens, total_tokens: usage.prompt_tokens + usage.completion_tokens };
}

function completion(model: string, text: string, finishReason: string | undefined, usage: FakeUsage | null) {
  return {
    id: `chatcmpl-${Math.random().toString(36).slice(2)}`,
    object: "chat.completion",
    created: Math.floor(Date.now() / 1000),
    model,
    choices: [{ index: 0, message: { role: "assistant", content: text }, finish_reason: finishReason ?? "stop", logprobs: null }],
    ...(usage && { usage: withTotal(usage) }),
  };
}

/** A moderation answer as OpenAI gives it: one result for a single input. */
function moderation(model: string | undefined, step: { readonly flagged: boolean; readonly categories?: readonly string[] }) {
  const flaggedCategories = new Set(step.categories ?? []);
  const categories = Object.fromEntries(MODERATION_CATEGORIES.map((name) => [name, flaggedCategories.has(name)]));
  const scores = Object.fromEntries(MODERATION_CATEGORIES.map((name) => [name, flaggedCategories.has(name) ? 0.97 : 0.0001]));
  return {
    id: `modr-${Math.random().toString(36).slice(2)}`,
    model: model ?? "omni-moderation-latest",
    results: [{ flagged: step.flagged, categories, category_scores: scores, category_applied_input_types: {} }],
  };
}
