import { z } from "zod";
import type { ReportedUsage } from "./chat-model";

/*
 * What the service reads of a provider's answers: a completion, or the chunks of a streamed one.
 * The SDK does not validate bodies: a compatible server may send anything.
 */

/**
 * Token counts as OpenAI reports them. A block that does not fit (negative, fractional, missing a
 * count) reads as none: the reply is still good, and the caller estimates what is missing.
 */
const usageSchema = z
  .object({ prompt_tokens: z.number().int().nonnegative(), completion_tokens: z.number().int().nonnegative() })
  .nullish()
  .catch(undefined)
  // Only the two counts, whatever else the server sent (total_tokens, details).
  .transform((usage): ReportedUsage | undefined => usage ? { prompt_tokens: usage.prompt_tokens, completion_tokens: usage.completion_tokens } : undefined);

/** A choice's position among the completion's choices; a server that sends one may leave it out. */
const choiceIndex = z.number().int().nullish();

/**
 * The reply among a completion's choices: choice 0 (or one without an index). A server may send
 * several though one was asked for (as OpenAI does for n > 1: a stream then interleaves them, one
 * choice a chunk, each named by its `index`); the others are not the reply and must not mix into it.
 */
export function replyChoice<Choice extends { readonly index?: number | null }>(choices: readonly Choice[] | null | undefined): Choice | undefined {
  return choices?.find((choice) => (choice.index ?? 0) === 0);
}

/** The part of a completion the service uses. */
export const completionSchema = z.object({
  model: z.string().optional(),
  choices: z
    .array(z.object({ index: choiceIndex, message: z.object({ content: z.string().nullish() }), finish_reason: z.string().nullish() }))
    .min(1),
  usage: usageSchema,
});

/** The part of a streamed chunk the service uses: what readStreamChunk takes. */
export const chunkSchema = z.object({
  model: z.string().optional(),
  // OpenAI sends `usage: null` in every chunk but the last when asked to include it.
  usage: usageSchema,
  // The usage summary's chunk has `choices: []` from OpenAI, none at all from DeepInfra or
  // Fireworks, `choices: null` from MiniMax.
  choices: z.array(z.object({ index: choiceIndex, delta: z.object({ content: z.string().nullish() }).nullish(), finish_reason: z.string().nullish() })).nullish(),
});

export type StreamChunk = z.infer<typeof chunkSchema>;

/**
 * A streamed chunk as chunkSchema reads it, undefined for one it refuses. A chunk comes about once
 * per token of the reply, so this runs more often than anything else in a message: the typical
 * chunk (one choice, its text, no usage) is checked here by hand, any other (the usage chunk,
 * several choices or none, a field of another type) goes to chunkSchema, which decides, so the two
 * cannot read a chunk differently. Timed around each call in the cost bench's section c, the
 * timer's own cost included: 3.6 µs a chunk with chunkSchema alone, 2.4 µs with this check (about
 * 20 µs of a message streamed in 16 chunks, under 1% of the service's CPU per message).
 */
export function readStreamChunk(value: unknown): StreamChunk | undefined {
  const typical = typicalChunk(value);
  if (typical) return typical;
  const parsed = chunkSchema.safeParse(value);
  return parsed.success ? parsed.data : undefined;
}

/** `value` read as chunkSchema reads it when it is a typical chunk, else undefined (not decided). */
function typicalChunk(value: unknown): StreamChunk | undefined {
  if (!isObject(value)) return undefined;
  const { model, usage, choices } = value;
  if ((model !== undefined && typeof model !== "string") || (usage !== undefined && usage !== null)) return undefined;
  if (!Array.isArray(choices) || choices.length !== 1) return undefined;
  const choice: unknown = choices[0];
  if (!isObject(choice)) return undefined;
  const { index, delta, finish_reason: finishReason } = choice;
  if (!isNullish(index) && !(typeof index === "number" && Number.isSafeInteger(index))) return undefined;
  if (!isNullish(finishReason) && typeof finishReason !== "string") return undefined;
  if (isNullish(delta)) return { model, usage: undefined, choices: [{ index, delta, finish_reason: finishReason }] };
  if (!isObject(delta)) return undefined;
  const { content } = delta;
  if (!isNullish(content) && typeof content !== "string") return undefined;
  return { model, usage: undefined, choices: [{ index, delta: { content }, finish_reason: finishReason }] };
}

/** What z.object takes: any object but an array (JSON.parse makes no other). */
function isObject(value: unknown): value is Readonly<Record<string, unknown>> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isNullish(value: unknown): value is null | undefined {
  return value === null || value === undefined;
}
