import OpenAI from "openai";
import { z } from "zod";
import { readJsonAnswer } from "./json-answer";
import { callDeadline, createOpenAiClient, type OpenAiClientOptions } from "./openai-client";
import { toModelError } from "./openai-model";
import { ModerationAbandonedError, ModerationNotSupportedError, ModerationUnavailableError, type ModerationVerdict, type Moderator } from "./moderation";

/** OpenAI's current moderation model: text and images, every category, free of charge. */
export const MODERATION_MODEL = "omni-moderation-latest";

/**
 * Moderation through the same SDK client, base URL and key as the chat model
 * (`POST {base}/moderations`). One attempt, no retry: a failure goes to the caller's outage
 * choice at once, rather than holding the first delta back.
 */
export function createOpenAiModerator(options: OpenAiClientOptions): Moderator {
  const client = createOpenAiClient(options);
  return {
    name: "openai",
    async check(text, { signal } = {}): Promise<ModerationVerdict> {
      // The raw response, its body read here with a bound (json-answer.ts), under the call's deadline.
      const deadline = callDeadline(options.timeoutMs, signal);
      let response: unknown;
      try {
        response = await readJsonAnswer(await client.moderations.create({ model: MODERATION_MODEL, input: text }, { signal: deadline.signal }).asResponse());
      } catch (error) {
        if (signal?.aborted) throw new ModerationAbandonedError("the moderation check was abandoned", { cause: error });
        if (deadline.expired) throw new ModerationUnavailableError("timeout", "moderation: the model did not answer in time", { cause: error });
        throw toModerationError(error);
      } finally {
        deadline.clear();
      }
      return readVerdict(response);
    },
  };
}

function toModerationError(error: unknown): ModerationNotSupportedError | ModerationUnavailableError {
  const status = error instanceof OpenAI.APIError && typeof error.status === "number" ? error.status : undefined;
  // OpenAI answers 404 for an unknown model too: either way this server cannot moderate.
  if (status === 404) {
    return new ModerationNotSupportedError(
      `MODERATION is on but the server at OPENAI_BASE_URL has no moderations endpoint or no "${MODERATION_MODEL}" model (404): ` +
        "point OPENAI_BASE_URL at a server that moderates, or turn MODERATION off",
      { cause: error },
    );
  }
  const modelError = toModelError(error);
  return new ModerationUnavailableError(modelError.failure, `moderation: ${modelError.message}`, { ...(status === undefined ? {} : { status }), cause: error });
}

/**
 * The part of a moderation answer the service uses; a compatible server may send anything. The
 * verdict is `flagged`; the categories are for the logs only, so categories of another shape
 * (null, an array, "true" for true) read as none instead of overturning the verdict: an outage
 * would let a flagged message through with MODERATION_ON_OUTAGE=open, and refuse a clean one with closed.
 */
const moderationSchema = z.object({
  results: z.array(z.object({ flagged: z.boolean(), categories: z.record(z.string(), z.unknown()).optional().catch(undefined) })).min(1),
});

function readVerdict(response: unknown): ModerationVerdict {
  const parsed = moderationSchema.safeParse(response);
  const result = parsed.success ? parsed.data.results[0] : undefined;
  if (result === undefined) throw new ModerationUnavailableError("bad_response", "moderation: the server returned no verdict");
  const named = Object.entries(result.categories ?? {}).filter(([, flagged]) => flagged === true).map(([name]) => name.slice(0, MAX_CATEGORY_CHARS));
  const categories = named.length > MAX_CATEGORIES ? [...named.slice(0, MAX_CATEGORIES), `+${named.length - MAX_CATEGORIES} more`] : named;
  return { flagged: result.flagged, categories };
}

/**
 * How many categories, and how much of each name, a verdict keeps. OpenAI names 13 at most, a few
 * words each; a compatible server may name thousands within the 4 MiB an answer may hold, and the
 * log entry of a flagged message carrying them all would pass Cloud Logging's 256 KB per entry,
 * which refuses it whole: the flag's record lost.
 */
const MAX_CATEGORIES = 32;
const MAX_CATEGORY_CHARS = 64;
