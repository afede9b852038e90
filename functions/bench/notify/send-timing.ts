import { performance } from "node:perf_hooks";
import { createFcmSender } from "../../src/notify/fcm-sender";
import { notificationPreview } from "../../src/notify/push-notification";
import { PushSendError, type TokenResult } from "../../src/notify/push-sender";
import { ACCEPT, fakeFcmMessaging, FakeFcmServer, fcmError, type FcmAnswer, type FcmRequest } from "../../test/support/fake-fcm-server";
import { fmt, median, table } from "../shared/figures";

/** One way FCM may answer, as the fake plays it for every token of a send. */
export interface SendCase {
  readonly name: string;
  readonly respond: (request: FcmRequest) => FcmAnswer;
  /** Measured in the first round only (a case that takes minutes). */
  readonly once?: boolean;
}

export interface SendCaseOptions {
  readonly slowMs: number;
  readonly retryAfterSeconds: number;
  readonly hang: boolean;
}

export function sendCases(options: SendCaseOptions): SendCase[] {
  return [
    { name: "accepted (baseline)", respond: () => ACCEPT },
    { name: "429, not retried", respond: () => fcmError("QUOTA_EXCEEDED") },
    { name: "503 once, then accepted", respond: (request) => (request.attempt === 1 ? fcmError("UNAVAILABLE") : ACCEPT) },
    { name: "503 always", respond: () => fcmError("UNAVAILABLE") },
    { name: `503 always, Retry-After: ${options.retryAfterSeconds}`, respond: () => fcmError("UNAVAILABLE", { retryAfterSeconds: options.retryAfterSeconds }) },
    { name: `accepted after ${fmt(options.slowMs)} ms`, respond: () => ({ kind: "accept", delayMs: options.slowMs }) },
    ...(options.hang ? [{ name: "no answer at all", respond: (): FcmAnswer => ({ kind: "hang" }), once: true }] : []),
  ];
}

interface Sample {
  readonly ms: number;
  readonly attempts: number;
  readonly outcomes: string;
}

/**
 * Times `createFcmSender(...).send` of one notification to `tokens` devices under each case, in
 * `rounds` rounds, the cases taking turns in an order that rotates each round; firebase-admin
 * 14.5's legacy transport to a local fake (the retries and timeouts timed here are the SDK's
 * request client's, the same for its HTTP/2 transport). Prints a table of medians.
 */
export async function timeSends(cases: readonly SendCase[], rounds: number, tokens: number): Promise<string[]> {
  const fake = await FakeFcmServer.start();
  const fcm = fakeFcmMessaging(fake);
  const sender = createFcmSender(fcm.messaging);
  const devices = Array.from({ length: tokens }, (_, index) => `bench-device-${index}`);
  const notification = { connectionId: "bench-connection", kind: "message", preview: notificationPreview("Are we still on for tonight?", 100) } as const;
  const samples: Sample[][] = cases.map(() => []);
  try {
    // A warm-up: the first send pays for firebase-admin's access token and the agent's first connections.
    await sender.send(notification, devices);
    for (let round = 0; round < rounds; round += 1) {
      for (let turn = 0; turn < cases.length; turn += 1) {
        const index = (turn + round) % cases.length;
        const entry = cases[index];
        if (entry === undefined || (round > 0 && entry.once)) continue;
        fake.reset();
        fake.respond = entry.respond;
        const started = performance.now();
        const outcomes = await sender.send(notification, devices).then(outcomeSummary, (error: unknown) => {
          if (error instanceof PushSendError) return `PushSendError (${error.failure}: ${error.code})`;
          throw error;
        });
        const ms = performance.now() - started;
        samples[index]?.push({ ms, attempts: fake.requests.length / tokens, outcomes });
        process.stdout.write(".");
      }
    }
  } finally {
    await fcm.close();
    await fake.stop();
  }
  process.stdout.write("\n");
  const baseline = median(samples[0]?.map((sample) => sample.ms) ?? []);
  const rows = cases.map((entry, index) => {
    const times = samples[index]?.map((sample) => sample.ms) ?? [];
    const first = samples[index]?.[0];
    return [entry.name, String(times.length), fmt(median(times)), fmt(Math.min(...times)), fmt(Math.max(...times)), `${fmt(median(times) / baseline, 1)}x`, fmt(first?.attempts ?? Number.NaN, 1), first?.outcomes ?? ""];
  });
  return table([["case", "runs", "median ms", "min", "max", "vs baseline", "attempts/token", "outcome"], ...rows]);
}

function outcomeSummary(results: readonly TokenResult[]): string {
  const counts = new Map<string, number>();
  for (const result of results) {
    const key = result.code === undefined ? result.outcome : `${result.outcome} (${result.code})`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return [...counts].map(([key, count]) => `${count} ${key}`).join(", ");
}
