import type { PushSender } from "../../src/notify/push-sender";
import { fmt, median, table } from "../shared/figures";
import type { ConnectionRig, SwitchableSender } from "./rig";

export interface SenderCase {
  readonly name: string;
  readonly sender: PushSender;
}

/**
 * b. What the notification adds to a message's answer, under the choice made (the answer waits for
 * the send, at most NOTIFICATION_DEADLINE_MS): the answer's time per sender, interleaved rounds,
 * against the same message whose send returns at once (the first case, the baseline: devices
 * read, nothing sent).
 */
export async function notificationCost(rig: ConnectionRig, switchable: SwitchableSender, cases: readonly SenderCase[], rounds: number): Promise<{ lines: string[]; added: Map<string, number> }> {
  const samples = cases.map((entry) => ({ entry, ms: [] as number[] }));
  for (let round = 0; round < rounds; round += 1) {
    for (const sample of [...samples.slice(round % samples.length), ...samples.slice(0, round % samples.length)]) {
      switchable.current = sample.entry.sender;
      sample.ms.push(await rig.message());
    }
  }
  const base = median(samples[0]?.ms ?? []);
  const added = new Map<string, number>();
  const rows = [["sender (the recipient has 20 devices)", "median ms", "min - max", "added to the answer"]];
  for (const [index, { entry, ms }] of samples.entries()) {
    const value = median(ms);
    added.set(entry.name, value - base);
    rows.push([entry.name, fmt(value, 1), `${fmt(Math.min(...ms), 0)} - ${fmt(Math.max(...ms), 0)}`, index === 0 ? "(baseline)" : `${fmt(value - base, 1)} ms`]);
  }
  return { lines: table(rows), added };
}
