import type { Config } from "../config";
import type { ChatModel } from "./chat-model";
import { ModelError } from "./errors";
import { createOfflineModel } from "./offline-model";
import { createOpenAiModel } from "./openai-model";
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
