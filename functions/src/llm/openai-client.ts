import OpenAI from "openai";
import { ModelError } from "./errors";
import { readBoundedText } from "./json-answer";

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
 * `fetch` whose aborts are errors of this realm, whose error answers are read with a bound, and
 * which follows no redirect. fetch follows up to 20 by default (Node 24's undici): a provider, or
 * whatever answers at OPENAI_BASE_URL, could send the user's whole prompt to any host it names
 * (307, 308), or make the service send a request from inside its network (301, 302, 303), and take
 * that host's answer for the reply. OpenAI's API never redirects: a 3xx reaches the SDK as the
 * error answer it is, a bad_response naming its status, not retried.
 * The SDK tells a timeout from other connection failures by the error's name, and it rebuilds
 * errors that fail `instanceof Error` without their name: an abort raised in another realm (a
 * test VM, a polyfill) would then read as "connection error" instead of "timed out".
 */
async function fetchWithLocalAbortErrors(input: string | URL | Request, init?: RequestInit): Promise<Response> {
  try {
    const response = await fetch(input, { ...init, redirect: "manual" });
    return response.ok ? response : await boundedErrorAnswer(response, init?.signal);
  } catch (error) {
    if (typeof error === "object" && error !== null && "name" in error && error.name === "AbortError" && !(error instanceof Error)) {
      const local = new Error("The operation was aborted", { cause: error });
      local.name = "AbortError";
      throw local;
    }
    throw error;
  }
}

/**
 * An error answer (not 2xx) with its body read here, up to MAX_JSON_ANSWER_BYTES. The SDK (openai
 * 7.57, `makeRequest`) reads an error answer's body whole (`response.text()`) before it throws, and
 * takes a failed read as the error's message: a provider whose error answer never ends was read
 * until the deadline, then retried as a timeout. Past the bound this throws a bad_response, not
 * retried, which the SDK wraps as an APIConnectionError (its cause, see toModelError); within it,
 * the SDK gets the same status and headers (Retry-After) with the text read. Only the bound and an
 * abort end the call here: whatever else this fetch throws the SDK wraps as an APIConnectionError
 * ("could not be reached"), losing the status (a 401 retried, a 429's Retry-After ignored). So an
 * error answer whose body breaks off (a reset, a cut proxy, a Content-Encoding it is not in) keeps
 * its status and headers, with no text: the SDK's own read kept them too, taking the failure's
 * message for the text (`response.text().catch(...)`).
 */
async function boundedErrorAnswer(response: Response, signal: AbortSignal | null | undefined): Promise<Response> {
  let text = "";
  try {
    text = await readBoundedText(response);
  } catch (error) {
    if (signal?.aborted || !(error instanceof ModelError) || error.failure === "bad_response") throw error;
  }
  return rebuiltErrorAnswer(response, text);
}

/**
 * The answer's status and headers with `text` as its body. Without its status text: the SDK (7.57)
 * never reads it, and the Response constructor refuses one above U+00FF (a reason phrase sent as
 * UTF-8, `429 请求过多`, which fetch reads as it came). The constructor refuses a status of 600 or
 * more too, which fetch passes on (HTTP allows 100 to 999): such an answer is built as a 599 and
 * given its own status back, so that the SDK reads it as it would have (a 5xx error, `status >= 500`).
 */
function rebuiltErrorAnswer(response: Response, text: string): Response {
  const status = response.status;
  const rebuilt = new Response(text === "" ? null : text, { status: Math.min(status, 599), headers: response.headers });
  if (status > 599) Object.defineProperty(rebuilt, "status", { value: status });
  return rebuilt;
}

/** A call's own deadline, joined to the caller's signal (see callDeadline). */
export interface CallDeadline {
  /** Aborts once the deadline passes or the caller gives up: the signal to make the call with. */
  readonly signal: AbortSignal;
  /** Whether the deadline itself passed (not the caller). */
  readonly expired: boolean;
  /** Stops the timer; call it once the call settled. */
  clear(): void;
}

/**
 * A deadline over a whole call, body included. The SDK's own timeout (openai 7.57) ends when the
 * headers arrive, and its body timeout applies only to the bodies it parses itself: a streamed
 * body, or a JSON one read from `.asResponse()` (as json-answer.ts does), has none but this.
 */
export function callDeadline(timeoutMs: number, caller: AbortSignal | undefined): CallDeadline {
  const deadline = new AbortController();
  const timer = setTimeout(() => { deadline.abort(); }, timeoutMs);
  return {
    signal: caller ? AbortSignal.any([deadline.signal, caller]) : deadline.signal,
    get expired() {
      return deadline.signal.aborted;
    },
    clear: () => { clearTimeout(timer); },
  };
}
