import { chunkSchema, readStreamChunk } from "../../src/llm/completion-shapes";

/** Each value, or the field left out (ABSENT). */
const ABSENT = Symbol("absent");
type Field = unknown;

function withFields(fields: Readonly<Record<string, Field>>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== ABSENT));
}

function* product(options: Readonly<Record<string, readonly Field[]>>): Generator<Record<string, unknown>> {
  const names = Object.keys(options);
  const at = names.map(() => 0);
  for (;;) {
    yield withFields(Object.fromEntries(names.map((name, i) => [name, options[name]?.[at[i] ?? 0]])));
    let i = 0;
    while (i < names.length && (at[i] = ((at[i] ?? 0) + 1) % (options[names[i] ?? ""]?.length ?? 1)) === 0) i += 1;
    if (i === names.length) return;
  }
}

const choices = [
  ...product({
    index: [ABSENT, 0, 1, null, 0.5, "0", 2 ** 53, -1],
    delta: [ABSENT, null, {}, { content: "Hi" }, { content: "" }, { content: null }, { content: 5 }, { content: "a", role: "assistant" }, [], "text"],
    finish_reason: [ABSENT, null, "stop", "length", 5],
  }),
];

describe("readStreamChunk", () => {
  it("reads every chunk as chunkSchema does: what it takes, with the same fields, and what it refuses", () => {
    const chunks = [
      ...product({
        model: [ABSENT, "gpt-4o-mini", "", null, 5],
        usage: [ABSENT, null, { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 }, { prompt_tokens: -1, completion_tokens: 2 }, "none"],
        choices: [ABSENT, null, [], "x", [5], [[]], ...choices.map((choice) => [choice]), [{ index: 1, delta: { content: "other" } }, { index: 0, delta: { content: "mine" } }]],
      }),
      null,
      "chunk",
      7,
      [],
      [{ choices: [] }],
      JSON.parse('{"__proto__":{"model":5},"choices":[{"delta":{"content":"x"}}]}') as unknown,
    ];
    expect(chunks.length).toBeGreaterThan(10_000);
    let taken = 0;
    for (const chunk of chunks) {
      const parsed = chunkSchema.safeParse(chunk);
      if (parsed.success) taken += 1;
      expect({ chunk, read: readStreamChunk(chunk) }).toEqual({ chunk, read: parsed.success ? parsed.data : undefined });
    }
    // Both outcomes are well represented.
    expect(taken).toBeGreaterThan(1_000);
    expect(chunks.length - taken).toBeGreaterThan(1_000);
  });

  it("reads a typical chunk's text, index and finish reason, and no usage", () => {
    expect(readStreamChunk({ id: "c1", object: "chat.completion.chunk", model: "gpt-4o-mini", usage: null, choices: [{ index: 0, delta: { content: " there" }, logprobs: null, finish_reason: null }] })).toEqual({
      model: "gpt-4o-mini",
      choices: [{ index: 0, delta: { content: " there" }, finish_reason: null }],
    });
    expect(readStreamChunk({ choices: [{ index: 0, delta: {}, finish_reason: "stop" }] })).toEqual({ choices: [{ index: 0, delta: {}, finish_reason: "stop" }] });
  });
});
