import type { Config } from "../config";
import type { ChatModel } from "./chat-model";
import { ModelError } from "./errors";
import { ModerationNotSupportedError, type Moderator } from "./moderation";
import { createOfflineModel } from "./offline-model";
import { createOpenAiModel } from "./openai-model";
import { createOpenAiModerator } from "./openai-moderation";
import { withRetries } from "./retrying-model";

/**
 * The model of an instance, built once (one SDK client, its connections reused). With an API
 * key or a base URL, the OpenAI SDK (a local OpenAI-compatible server may need no key); with
 * neither, the offline responder where it is allowed (local runs), else a model that answers
 * every call with a 503 saying the model is not configured.
 */
export function modelFromConfig(config: Config, options: { allowOffline: boolean }): ChatModel {
  const { apiKey, baseUrl, timeoutMs, maxRetries, maxRetryWaitMs } = config.openai;
  if (apiKey !== undefined || baseUrl !== undefined) {
    return withRetries(createOpenAiModel({ apiKey: apiKey ?? "unset", baseUrl, timeoutMs }), { maxRetries, maxWaitMs: maxRetryWaitMs });
  }
  if (options.allowOffline) return createOfflineModel();
  return {
    name: "unconfigured",
    complete: () => Promise.reject(new ModelError("unavailable", "no model is configured (OPENAI_API_KEY is not set)")),
  };
}

/**
 * The moderator of an instance, undefined with MODERATION off: OpenAI's moderations through the
 * chat model's base URL and key, with its per-attempt timeout (the check runs beside the model
 * call, so it adds nothing to the time budget). With neither key nor base URL there is nothing to
 * ask: every check fails as a configuration error, as the unconfigured model answers 503.
 */
export function moderatorFromConfig(config: Config): Moderator | undefined {
  if (!config.moderation.enabled) return undefined;
  const { apiKey, baseUrl, timeoutMs } = config.openai;
  if (apiKey === undefined && baseUrl === undefined) {
    const unconfigured = new ModerationNotSupportedError("MODERATION is on but no moderation server is configured (OPENAI_API_KEY or OPENAI_BASE_URL)");
    return { name: "unconfigured", check: () => Promise.reject(unconfigured) };
  }
  return createOpenAiModerator({ apiKey: apiKey ?? "unset", baseUrl, timeoutMs });
}
