/** Matches an answer's `usage` whatever its counts: for tests about something else than tokens (token-usage.test.ts checks them). */
export function anyUsage(): unknown {
  return expect.objectContaining({ prompt_tokens: expect.any(Number), completion_tokens: expect.any(Number), total_tokens: expect.any(Number) });
}
