import type { APIError } from "openai";
import { ModelError } from "./errors";

/** What an error inside a streamed reply stands for: a request refused for good, or a failure that may pass. */
type ErrorEventKind = "refused" | "transient";

/**
 * The names an in-stream error may carry, as its `code` or its `type`: OpenAI's, and those of
 * compatible providers (Azure's content filter, Anthropic's types). Lower case.
 */
const ERROR_EVENT_KINDS: ReadonlyMap<string, ErrorEventKind> = new Map([
  ["invalid_request_error", "refused"],
  ["authentication_error", "refused"],
  ["invalid_api_key", "refused"],
  ["permission_error", "refused"],
  ["permission_denied", "refused"],
  ["content_filter", "refused"],
  ["content_policy_violation", "refused"],
  ["server_error", "transient"],
  ["api_error", "transient"],
  ["rate_limit_exceeded", "transient"],
  ["rate_limit_error", "transient"],
  ["overloaded_error", "transient"],
  ["overloaded", "transient"],
]);

/**
 * An error event inside a streamed reply (`data: {"error": {...}}` after a 200) as a ModelError.
 * It comes once the status and headers went out, so no status tells what it is: OpenAI sends
 * `server_error` this way when a stream fails partway, a 5xx it can no longer send as a status.
 * Its names tell, as the openai SDK (7.57) reads them from the error's body into its APIError's
 * `code` and `type`: the code first, the more precise (OpenAI's rate limit is code
 * `rate_limit_exceeded`, type `requests` or `tokens`). A name none of them knows is a failure of the
 * provider's that may pass, as a stream breaking off is: a request it refuses for good (a bad key, a
 * bad request) is refused with a status, before any stream.
 */
export function fromErrorEvent(error: APIError, retryAfterMs: number | undefined): ModelError {
  if (errorEventKind([error.code, error.type]) === "refused") {
    return new ModelError("bad_response", "the model provider refused the request in its stream", { retryable: false, cause: error });
  }
  return new ModelError("unavailable", "the model provider failed partway into its stream", { retryAfterMs, cause: error });
}

/** The kind of the first name known, the provider's body being whatever it sent (a code may be a number). */
function errorEventKind(names: readonly unknown[]): ErrorEventKind {
  for (const name of names) {
    // Some gateways name the status they could not send (`"code": 429`): a 4xx but 408 and 429 is refused again.
    if (typeof name === "number" || (typeof name === "string" && /^\d{3}$/.test(name))) {
      const status = Number(name);
      return status >= 400 && status < 500 && status !== 408 && status !== 429 ? "refused" : "transient";
    }
    const kind = typeof name === "string" ? ERROR_EVENT_KINDS.get(name.toLowerCase()) : undefined;
    if (kind) return kind;
  }
  return "transient";
}
