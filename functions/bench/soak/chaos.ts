import type { Chaos, RecordedRequest, Scripted } from "../../test/support/fake-openai-server";
import { randomFor } from "../shared/random";

/** How a model call can go wrong; `slow` answers, late but within the timeout. */
export const FAULT_KINDS = ["http500", "http429", "http503", "hang", "drop", "empty", "slow"] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

/** The faults that make a model call fail (every kind but `slow`). */
function isFailure(kind: FaultKind): boolean {
  return kind !== "slow";
}

export type PromptMessage = RecordedRequest["body"]["messages"][number];

/**
 * Decides, per model call, whether the fake OpenAI server answers normally or with a fault.
 * The decision depends only on the seed, the user message of the call and how many calls for
 * that message came before, so a run's faults do not depend on the order requests arrive in.
 */
export class ChaosMonkey {
  readonly injected = Object.fromEntries(FAULT_KINDS.map((kind) => [kind, 0])) as Record<FaultKind, number>;
  /** The prompt of every call answered with a reply, by the reply's text (unique: it carries a number). */
  readonly promptOfReply = new Map<string, readonly PromptMessage[]>();
  calls = 0;
  private readonly callsPerText = new Map<string, number>();

  constructor(
    private readonly seed: number,
    private readonly rate: number,
    private readonly modelTimeoutMs: number,
  ) {}

  get failures(): number {
    return FAULT_KINDS.filter(isFailure).reduce((sum, kind) => sum + this.injected[kind], 0);
  }

  readonly decide: Chaos = (request, defaultReply) => {
    this.calls += 1;
    const text = lastUserText(request.body.messages);
    const nth = (this.callsPerText.get(text) ?? 0) + 1;
    this.callsPerText.set(text, nth);
    const random = randomFor(this.seed, "model call", text, nth);
    const kind = random.chance(this.rate) ? random.pick(FAULT_KINDS) : undefined;
    if (kind !== undefined) this.injected[kind] += 1;
    switch (kind) {
      case undefined:
        return this.remember(defaultReply(), request);
      case "slow":
        return this.remember(defaultReply(random.between(Math.round(this.modelTimeoutMs * 0.3), Math.round(this.modelTimeoutMs * 0.6))), request);
      case "http500":
        return { kind: "status", status: 500 };
      case "http429":
        // A short Retry-After is waited out by the service's retry; a long one goes to the client.
        return { kind: "status", status: 429, headers: random.chance(0.5) ? { "retry-after-ms": "50" } : { "retry-after": "30" } };
      case "http503":
        return { kind: "status", status: 503 };
      case "hang":
        return { kind: "hang" };
      case "drop":
        return { kind: "drop" };
      case "empty":
        return { kind: "reply", text: "" };
    }
  };

  private remember(step: Scripted, request: RecordedRequest): Scripted {
    if (step.kind === "reply") this.promptOfReply.set(step.text, request.body.messages);
    return step;
  }
}

export function lastUserText(messages: readonly PromptMessage[]): string {
  return messages.findLast((message) => message.role === "user")?.content ?? "";
}
