import type { GenerationSettings, Template } from "../../store/records";

/** What every message is generated with unless its template says otherwise. */
export const GENERATION_DEFAULTS = {
  model: "gpt-4o-mini",
  temperature: 0.9,
  max_tokens: 50,
  presence_penalty: 0.6,
  frequency_penalty: 0.6,
} as const;

/** The settings a new session freezes from its template, with `contextWindow` as the fallback window. */
export function resolveGenerationSettings(template: Template, contextWindow: number): GenerationSettings {
  return {
    model: template.model ?? GENERATION_DEFAULTS.model,
    temperature: template.temperature ?? GENERATION_DEFAULTS.temperature,
    max_tokens: template.max_tokens ?? GENERATION_DEFAULTS.max_tokens,
    presence_penalty: template.presence_penalty ?? GENERATION_DEFAULTS.presence_penalty,
    frequency_penalty: template.frequency_penalty ?? GENERATION_DEFAULTS.frequency_penalty,
    context_window: template.context_window ?? contextWindow,
    ...(template.context_tokens === undefined ? {} : { context_tokens: template.context_tokens }),
    ...(template.summary ? { summary: true } : {}),
  };
}
