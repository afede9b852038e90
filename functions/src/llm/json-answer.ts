import { ModelError } from "./errors";

/**
 * The most a provider's JSON answer (a chat completion, a moderation verdict) may hold, in bytes
 * as read, after fetch has decompressed it (a gzip bomb counts at its inflated size): far above any
 * honest answer (a reply of 100,000 tokens, the most a template may ask for, is some 400 KB of
 * English, about 1 MB of a script a server writes as `\uXXXX` escapes), so that a body that never
 * ends is refused at once instead of read until the deadline (then retried), with the instance's memory.
 */
export const MAX_JSON_ANSWER_BYTES = 4 * 2 ** 20;

/** How readJsonAnswer reads a body (at most MAX_JSON_ANSWER_BYTES of it): whether its media type decides it is JSON. */
export interface JsonAnswerOptions {
  /**
   * Parse the body as JSON whatever its media type, as `response.json()` does: for a server that
   * ignores `stream` and answers one JSON completion under any label (text/plain included).
   */
  readonly anyMediaType?: boolean;
}

/**
 * A JSON answer's body as the openai SDK (7.57, `defaultParseResponse`) would read it: nothing for
 * a 204 or an empty body, the parsed JSON for a JSON media type (a SyntaxError when malformed), the
 * text otherwise. The SDK reads the whole body first (`response.text()`), however long; here a body
 * past MAX_JSON_ANSWER_BYTES is a bad_response, not retried (the same provider would send it again), and the
 * rest of it is not read (the connection is cancelled).
 */
export async function readJsonAnswer(response: Response, options: JsonAnswerOptions = {}): Promise<unknown> {
  if (response.status === 204) return null;
  const text = await readBoundedText(response);
  const mediaType = response.headers.get("content-type")?.split(";")[0]?.trim().toLowerCase();
  if (!options.anyMediaType && !(mediaType?.includes("application/json") || mediaType?.endsWith("+json"))) return text;
  return text === "" ? undefined : (JSON.parse(text) as unknown);
}

/**
 * A response's body as text, read up to MAX_JSON_ANSWER_BYTES: past it a bad_response, not retried, and the
 * rest is not read (the connection is cancelled). A read that fails otherwise (undici's `TypeError:
 * terminated`: a reset, a proxy dropping the connection, a body its Content-Encoding does not
 * inflate) is the answer breaking off, unavailable and worth another try, as a stream cut partway is
 * (openai-model.ts, streamError). An abort (the call's deadline, the caller) goes through as it
 * came: the caller tells a timeout from an abandoned call by its own signals.
 */
export async function readBoundedText(response: Response): Promise<string> {
  const chunks: Uint8Array[] = [];
  let length = 0;
  const body: AsyncIterable<Uint8Array> | null = response.body;
  if (body) {
    try {
      for await (const chunk of body) {
        length += chunk.byteLength;
        // Leaving the loop cancels the body: nothing more is read.
        if (length > MAX_JSON_ANSWER_BYTES) throw new ModelError("bad_response", `the model's answer is longer than ${MAX_JSON_ANSWER_BYTES} bytes`, { retryable: false });
        chunks.push(chunk);
      }
    } catch (error) {
      if (error instanceof ModelError || isAbort(error)) throw error;
      throw new ModelError("unavailable", "the model's answer broke off", { cause: error });
    }
  }
  return new TextDecoder().decode(Buffer.concat(chunks, length));
}

/** An abort, whatever its realm (a test VM's DOMException is no Error of this one). */
function isAbort(error: unknown): boolean {
  return typeof error === "object" && error !== null && "name" in error && (error.name === "AbortError" || error.name === "TimeoutError");
}
