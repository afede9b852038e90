import type { SoakOptions } from "./options";
import { randomFor } from "../shared/random";

export interface SessionPlan {
  readonly index: number;
  readonly userId: string;
  readonly templateId: string;
  /** Set for a create sent with an Idempotency-Key: `createCopies` concurrent attempts, then one more. */
  readonly createKey: string | undefined;
  readonly createCopies: number;
}

export interface MessagePlan {
  readonly index: number;
  readonly session: number;
  /** Unique in the run, so that a stored message names the request it came from. */
  readonly text: string;
  /** Keyed messages are retried with the same key and body. */
  readonly key: string | undefined;
  /** Attempts sent at once, on distinct instances where there are enough. */
  readonly copies: number;
}

export type Task =
  | { readonly kind: "message"; readonly message: MessagePlan }
  /** A keyed message sent again later, after other traffic. */
  | { readonly kind: "repeat"; readonly message: MessagePlan }
  | { readonly kind: "end"; readonly session: number; readonly copies: number };

export interface Plan {
  readonly sessions: readonly SessionPlan[];
  readonly messages: readonly MessagePlan[];
  /** In the order they start; up to `concurrency` run at once. */
  readonly tasks: readonly Task[];
}

const WORDS = ["alpha", "bravo", "naïve café", "日本語のテキスト", "emoji 🎉", "quote \"x\"", "slash / back\\slash", "tab\there", "dots . # $ [ ]"];

/** The whole workload, from the seed alone. */
export function makePlan(options: SoakOptions, templateIds: readonly string[]): Plan {
  const random = randomFor(options.seed, "plan");
  const sessions: SessionPlan[] = Array.from({ length: options.sessions }, (_, index) => {
    const keyed = random.chance(options.createKeyRate);
    return {
      index,
      userId: `soak-user-${index}`,
      templateId: random.pick(templateIds),
      createKey: keyed ? `soak-${options.seed}-create-${index}` : undefined,
      createCopies: keyed ? random.between(2, 3) : 1,
    };
  });

  const messages: MessagePlan[] = Array.from({ length: options.messages }, (_, index) => {
    const session = random.int(options.sessions);
    const keyed = random.chance(options.keyedRate);
    return {
      index,
      session,
      text: `s${session} m${index}: ${random.pick(WORDS)}`,
      key: keyed ? `soak-${options.seed}-m${index}` : undefined,
      copies: keyed && random.chance(0.4) ? random.between(2, 3) : 1,
    };
  });

  // One slot per message, in order; an end or a late repeat joins the slot it follows.
  const slots: Task[][] = messages.map((message) => [{ kind: "message", message }]);
  for (const session of sessions) {
    const own = messages.filter((message) => message.session === session.index);
    if (own.length < 2 || !random.chance(options.endRate)) continue;
    const after = own[random.between(1, own.length - 1) - 1];
    if (after) slots[after.index]?.push({ kind: "end", session: session.index, copies: random.chance(0.3) ? 2 : 1 });
  }
  for (const message of messages) {
    if (message.key === undefined || !random.chance(0.3)) continue;
    slots[Math.min(message.index + random.between(3, 60), slots.length - 1)]?.push({ kind: "repeat", message });
  }
  return { sessions, messages, tasks: slots.flat() };
}
