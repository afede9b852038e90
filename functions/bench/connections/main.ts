import { silentLog } from "../../src/log/log";
import { createFcmSender } from "../../src/notify/fcm-sender";
import { createOfflineSender } from "../../src/notify/offline-sender";
import { FakeOpenAiServer } from "../../test/support/fake-openai-server";
import { ACCEPT, fakeFcmMessaging, FakeFcmServer, fcmError, type FcmAnswer } from "../../test/support/fake-fcm-server";
import type { PushSender } from "../../src/notify/push-sender";
import { freshNamespace } from "../../test/support/rtdb";
import { serviceConfig } from "../../test/support/service-env";
import { RtdbWire } from "../cost/rtdb-wire";
import { fmt } from "../shared/figures";
import { integerOption, optionReader, runCli, stopIfStuck } from "../shared/cli";
import { notificationCost, type SenderCase } from "./notify-cost";
import { ConnectionRig, SwitchableSender } from "./rig";
import { connectionCase, roundTrips, sessionCase } from "./round-trips";

const DEFAULTS = { rounds: "15", "latency-ms": "20", "notify-rounds": "7", "slow-ms": "300", "deadline-ms": "1000" } as const;

const USAGE = [
  "usage: npm run bench:connections -- [--name=value ...]   (or CONNECTIONS_BENCH_NAME=value)",
  "What a user-to-user message costs (issue 17), on rtdb-wire started for the run:",
  "  a. sequential database round trips of a warm message, keyed and not, against the AI side's warm message in the same run",
  "  b. what its push notification adds to the answer, the answer waiting for the send at most NOTIFICATION_DEADLINE_MS",
  `  --rounds         interleaved rounds of section a (default ${DEFAULTS.rounds})`,
  `  --latency-ms     rtdb-wire's latency for the slow half of section a (default ${DEFAULTS["latency-ms"]})`,
  `  --notify-rounds  interleaved rounds of section b (default ${DEFAULTS["notify-rounds"]}; the failing cases wait the deadline each)`,
  `  --slow-ms        how late the slow FCM case answers (default ${DEFAULTS["slow-ms"]})`,
  `  --deadline-ms    NOTIFICATION_DEADLINE_MS of the instance (default ${DEFAULTS["deadline-ms"]}, the param's default)`,
].join("\n");

async function main(argv: readonly string[]): Promise<number> {
  const option = optionReader(argv, process.env, "CONNECTIONS_BENCH_", DEFAULTS);
  const rounds = integerOption("rounds", option("rounds"), 1, 200);
  const latencyMs = integerOption("latency-ms", option("latency-ms"), 1, 500);
  const notifyRounds = integerOption("notify-rounds", option("notify-rounds"), 1, 100);
  const slowMs = integerOption("slow-ms", option("slow-ms"), 0, 10_000);
  const deadlineMs = integerOption("deadline-ms", option("deadline-ms"), 0, 10_000);
  stopIfStuck("connections-bench", 20 * 60_000);

  const wire = await RtdbWire.startAsTheDatabase();
  const openai = await FakeOpenAiServer.start();
  const config = serviceConfig(openai.baseUrl, { NOTIFICATION_DEADLINE_MS: String(deadlineMs) });
  try {
    console.log(`Connections bench, node ${process.version}, rtdb-wire at ${wire.host}`);

    console.log(`\na. round trips per message: medians of ${rounds} interleaved rounds at 0 and ${latencyMs} ms of database latency`);
    const namespace = freshNamespace("connections-a");
    await wire.seedTemplates(namespace);
    const offline = createOfflineSender(silentLog);
    const rig = await ConnectionRig.start(config, offline, { devices: 1, namespace });
    const a = await roundTrips(wire, [connectionCase("user-to-user, warm, unkeyed", rig, wire, false), connectionCase("user-to-user, warm, keyed", rig, wire, true), await sessionCase(rig.baseUrl, wire, namespace)], rounds, latencyMs);
    console.log(a.lines.join("\n"));
    await rig.close();

    console.log(`\nb. what the notification adds to the answer (NOTIFICATION_DEADLINE_MS ${deadlineMs}), ${notifyRounds} interleaved rounds, database latency 0`);
    const switchable = new SwitchableSender();
    const notifyRig = await ConnectionRig.start(config, switchable, { devices: 20, namespace: freshNamespace("connections-b") });
    const cases: SenderCase[] = [
      { name: "a send that returns at once (baseline)", sender: { name: "none", send: async (_notification, tokens) => tokens.map((token) => ({ token, outcome: "delivered" as const })) } },
      { name: "the offline sender (npm start)", sender: offline },
      { name: "FCM accepts", sender: await fcmCase(ACCEPT) },
      { name: `FCM accepts after ${slowMs} ms`, sender: await fcmCase({ kind: "accept", delayMs: slowMs }) },
      { name: "FCM 503 (firebase-admin retries for 7 s)", sender: await fcmCase(fcmError("UNAVAILABLE")) },
      { name: "FCM never answers", sender: await fcmCase({ kind: "hang" }) },
    ];
    const b = await notificationCost(notifyRig, switchable, cases, notifyRounds);
    console.log(b.lines.join("\n"));
    await notifyRig.close();

    const warm = Math.max(a.trips.get("user-to-user, warm, unkeyed") ?? Number.NaN, a.trips.get("user-to-user, warm, keyed") ?? Number.NaN);
    console.log("\nGoals (issue 17)");
    console.log(`  a warm user-to-user message waits for at most 1 sequential database round trip: ${fmt(warm, 2)} measured (AI baseline ${fmt(a.trips.get("AI session message, warm (baseline)") ?? Number.NaN, 2)}): ${Math.round(warm) <= 1 ? "met" : "NOT met"}`);
    console.log(`  what the notification adds: ${fmt(b.added.get("FCM accepts") ?? Number.NaN, 1)} ms when FCM accepts (one FCM round trip: here loopback), at most the deadline (${deadlineMs} ms) whatever FCM does`);
    return 0;
  } finally {
    await openai.stop();
    await wire.close();
  }
}

/**
 * The FCM adapter on firebase-admin's legacy transport to a fake FCM of its own that answers every
 * device as `answer` says: one fake and one connection pool per case, so that the requests a
 * failing case leaves retrying (firebase-admin keeps at them for up to 82 s) never queue another
 * case's sends. Left to the process's exit for the same reason: a stopped fake would be dialled again.
 */
async function fcmCase(answer: FcmAnswer): Promise<PushSender> {
  const fake = await FakeFcmServer.start({ projectId: "demo-chatify" });
  fake.respond = () => answer;
  return createFcmSender(fakeFcmMessaging(fake).messaging);
}

runCli("connections-bench", main, USAGE);
