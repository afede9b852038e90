/**
 * What the service knows of the models it may call: how many tokens each takes in all (prompt
 * and reply), and its list price in US dollars per million tokens, for the cost estimate next to
 * each call's tokens. Prices from openai.com/api/pricing as published for standard requests
 * (no batch or cached-input discount); edit this table when they change, or to add a model.
 * A model not listed gets no cost and no context check: nothing else depends on it.
 */
interface ModelFacts {
  readonly contextTokens: number;
  readonly inputUsdPerMillion: number;
  readonly outputUsdPerMillion: number;
}

// A Map, not an object: the name looked up is the provider's (`Completion.model`), and on an object
// "constructor" or "__proto__" would find Object.prototype's members, with no prices.
const MODELS: ReadonlyMap<string, ModelFacts> = new Map(Object.entries({
  "gpt-4o-mini": { contextTokens: 128_000, inputUsdPerMillion: 0.15, outputUsdPerMillion: 0.6 },
  "gpt-4o": { contextTokens: 128_000, inputUsdPerMillion: 2.5, outputUsdPerMillion: 10 },
  "gpt-4.1": { contextTokens: 1_047_576, inputUsdPerMillion: 2, outputUsdPerMillion: 8 },
  "gpt-4.1-mini": { contextTokens: 1_047_576, inputUsdPerMillion: 0.4, outputUsdPerMillion: 1.6 },
  "gpt-4.1-nano": { contextTokens: 1_047_576, inputUsdPerMillion: 0.1, outputUsdPerMillion: 0.4 },
  "gpt-4-turbo": { contextTokens: 128_000, inputUsdPerMillion: 10, outputUsdPerMillion: 30 },
  "gpt-3.5-turbo": { contextTokens: 16_385, inputUsdPerMillion: 0.5, outputUsdPerMillion: 1.5 },
}));

/**
 * The facts of `model`, also under a dated snapshot name as the provider reports it
 * ("gpt-4o-mini-2024-07-18" is gpt-4o-mini; the longest listed name wins, so not gpt-4o).
 */
export function modelFacts(model: string): ModelFacts | undefined {
  const exact = MODELS.get(model);
  if (exact) return exact;
  let best: string | undefined;
  for (const name of MODELS.keys()) {
    if (model.startsWith(`${name}-`) && /^\d{4}-\d{2}-\d{2}$/.test(model.slice(name.length + 1)) && (best === undefined || name.length > best.length)) best = name;
  }
  return best === undefined ? undefined : MODELS.get(best);
}

/** The list price of a call's tokens, rounded to a millionth of a dollar; undefined for an unlisted model. */
export function costUsd(model: string, promptTokens: number, completionTokens: number): number | undefined {
  const facts = modelFacts(model);
  if (!facts) return undefined;
  return roundUsd((promptTokens * facts.inputUsdPerMillion + completionTokens * facts.outputUsdPerMillion) / 1_000_000);
}

/** Dollars rounded to a millionth, as every cost is kept: sums of rounded costs stay free of float dust. */
export function roundUsd(usd: number): number {
  return Math.round(usd * 1_000_000) / 1_000_000;
}
