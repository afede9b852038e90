import type { PushSender } from "../../src/notify/push-sender";
import { fmt, median, table } from "../shared/figures";
import type { ConnectionRig, SwitchableSender } from "./rig";

export interface SenderCase {
  readonly name: string;
  readonly sender: PushSender;
  /** Before each message of the case (the fake FCM's answer, say). */
  readonly prepare?: () => void;
}

/**
 * b. What the notification adds to a message's answer, under the choice made (the answer waits for
 * the send, at most NOTIFICATION_DEADLINE_MS): the answer's time per sender, interleaved rounds,
 * against the same message whose send returns at once (the baseline: devices read, nothing sent).
 */
export async function notificationCost(rig: ConnectionRig, switchable: SwitchableSender, cases: readonly SenderCase[], rounds: number): Promise<{ lines: string[]; added: Map<string, number> }> {
  const samples = new Map(cases.map((entry) => [entry.name, [] as number[]]));
  for (let round = 0; round < rounds; round += 1) {
    for (let index = 0; index < cases.length; index += 1) {
      const entry = cases[(index + round) % cases.length]!;
      entry.prepare?.();
      switchable.current = entry.sender;
      samples.get(entry.name)!.push(await rig.message());
    }
  }
  const base = median(samples.get(cases[0]!.name)!);
  const added = new Map<string, number>();
  const rows = [["sender (the recipient has 20 devices)", "median ms", "min - max", "added to the answer"]];
  for (const entry of cases) {
    const values = samples.get(entry.name)!;
    const value = median(values);
    added.set(entry.name, value - base);
    rows.push([entry.name, fmt(value, 1), `${fmt(Math.min(...values), 0)} - ${fmt(Math.max(...values), 0)}`, entry === cases[0] ? "(baseline)" : `${fmt(value - base, 1)} ms`]);
  }
  return { lines: table(rows), added };
}
