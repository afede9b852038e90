import { silentLog } from "../../src/log/log";
import { createOfflineSender } from "../../src/notify/offline-sender";
import { composeInstance } from "../../src/runtime/instance";
import { instanceName } from "../../src/sharding/database-instances";
import { instancePositionOf } from "../../src/sharding/session-ids";
import { RtdbConnectionStore } from "../../src/store/rtdb/rtdb-connection-store";
import { FakeOpenAiServer } from "../../test/support/fake-openai-server";
import { LocalServers } from "../../test/support/local-servers";
import { NO_TOKENS, serviceConfig } from "../../test/support/service-env";
import { ShardedRtdb } from "../../test/support/sharded-rtdb";
import { RtdbWire, type WireCounts } from "../cost/rtdb-wire";
import { integerOption, optionReader, runCli, stopIfStuck } from "../shared/cli";
import { send } from "../shared/http-client";
import { fmt, table } from "../shared/figures";
import { Random } from "../shared/random";

const DEFAULTS = { sessions: "4000", databases: "4", functions: "4", messages: "40", seed: "1" } as const;

const USAGE = [
  "usage: npm run bench:sharding -- [--name=value ...]   (or SHARDING_BENCH_NAME=value)",
  "Sessions over several database instances (docs/sharding.md), on rtdb-wire started for the run (each instance a namespace):",
  "  a. where new sessions land: created through function instances picked at random, counted per namespace",
  "  b. what a create and a message write on the home instance (per-user records) and on the session's own",
  `  --sessions   sessions created in section a (default ${DEFAULTS.sessions})`,
  `  --databases  database instances (default ${DEFAULTS.databases})`,
  `  --functions  function instances creating them (default ${DEFAULTS.functions})`,
  `  --messages   messages of section b, on sessions off the home instance (default ${DEFAULTS.messages})`,
  `  --seed       which function instance each create goes to (default ${DEFAULTS.seed})`,
].join("\n");

/** Requests in flight while creating. */
const CONCURRENCY = 32;
/** The goal of issue 18: every instance within this of an even share. */
const EVEN_WITHIN = 0.1;

async function main(argv: readonly string[]): Promise<number> {
  const option = optionReader(argv, process.env, "SHARDING_BENCH_", DEFAULTS);
  const sessions = integerOption("sessions", option("sessions"), 1, 100_000);
  const databases = integerOption("databases", option("databases"), 2, 64);
  const functions = integerOption("functions", option("functions"), 1, 32);
  const messages = integerOption("messages", option("messages"), 1, 10_000);
  const random = new Random(integerOption("seed", option("seed"), 0, 2 ** 32 - 1));
  stopIfStuck("sharding-bench", 15 * 60_000);

  const wire = await RtdbWire.startAsTheDatabase();
  const openai = await FakeOpenAiServer.start();
  const shards = await ShardedRtdb.start(databases, "namespaces");
  const names = shards.urls.map(instanceName);
  const servers = new LocalServers();
  try {
    await wire.seedTemplates(names[0] ?? "");
    const config = serviceConfig(openai.baseUrl, { DATABASE_INSTANCES: shards.param, ADDRESS_SESSIONS_PER_HOUR: "0" });
    const bases: string[] = [];
    for (let i = 0; i < functions; i += 1) {
      const [home, ...others] = shards.databases();
      if (home === undefined) throw new Error("no database");
      const runtime = composeInstance(config, {
        store: shards.store(config.dbTimeoutMs, [home, ...others]),
        connectionStore: new RtdbConnectionStore(home, config.dbTimeoutMs),
        identity: NO_TOKENS,
        log: silentLog,
        pushSender: createOfflineSender(silentLog),
        databaseUrls: shards.urls,
      });
      bases.push(await servers.serve(runtime));
    }
    console.log(`Sharding bench, node ${process.version}, rtdb-wire at ${wire.host}: ${databases} database instances (namespaces), ${functions} function instances`);

    console.log(`\na. ${sessions} new sessions, each through a function instance picked at random (seed), ${CONCURRENCY} at a time`);
    const before = await countsOf(wire, names);
    const ids = await createAll(bases, sessions, random);
    const creates = since(before, await countsOf(wire, names));
    const stored = await Promise.all(names.map((name) => storedSessions(wire.host, name)));
    const even = sessions / databases;
    const rows = names.map((name, position) => {
      const count = stored[position] ?? 0;
      return [`${position} ${name}`, fmt(count), pct(count / sessions), signedPct(count / even - 1), fmt(ids.filter((id) => instancePositionOf(id) === position).length)];
    });
    console.log(table([["instance", "stored", "share", "off even", "ids naming it"], ...rows]).join("\n"));
    const worst = Math.max(...stored.map((count) => Math.abs(count / even - 1)));
    console.log(`worst instance ${signedPct(worst)} off even: goal within ±${pct(EVEN_WITHIN)}: ${worst <= EVEN_WITHIN ? "met" : "NOT met"}`);
    const allCreateWrites = creates.reduce((sum, counts) => sum + counts.writes, 0);
    console.log(`writes per create, all instances: ${per(allCreateWrites, sessions)}; on the home instance ${per(creates[0]?.writes ?? 0, sessions)} (its share of sessions, and every create's per-user records)`);

    console.log(`\nb. ${messages} warm messages (short replies, live partials on), the second of each session, on sessions off the home instance`);
    const away = ids.filter((id) => instancePositionOf(id) !== 0).slice(0, messages);
    const message = async (i: number, id: string) => {
      const answer = await send(`${bases[i % bases.length] ?? ""}/api/v1/chatbot/session/${id}/message`, { body: { message: "How is the weather?" } });
      if (answer.status !== 200) throw new Error(`message ${i}: ${answer.status} ${answer.code ?? answer.error ?? ""}`);
    };
    // The first message of each session warms its function instance (listeners on the state and the user's usage).
    for (const [i, id] of away.entries()) await message(i, id);
    const start = await countsOf(wire, names);
    for (const [i, id] of away.entries()) await message(i, id);
    const sent = since(start, await countsOf(wire, names));
    const own = sent.slice(1).reduce((sum, counts) => sum + counts.writes, 0);
    const rowsB = [
      ["where", "writes per message", "UTF-16 units per message"],
      ["home instance (usage ledger, index entry)", per(sent[0]?.writes ?? 0, away.length), per(sent[0]?.units ?? 0, away.length)],
      ["the session's own instance", per(own, away.length), per(sent.slice(1).reduce((sum, counts) => sum + counts.units, 0), away.length)],
    ];
    console.log(table(rowsB).join("\n"));
    return worst <= EVEN_WITHIN ? 0 : 1;
  } finally {
    await servers.close();
    await shards.close();
    await openai.stop();
    await wire.close();
  }
}

async function createAll(bases: readonly string[], count: number, random: Random): Promise<string[]> {
  const targets = Array.from({ length: count }, () => bases[Math.floor(random.next() * bases.length)] ?? "");
  const ids: string[] = [];
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < count; i = next++) {
      const answer = await send(`${targets[i] ?? ""}/api/v1/chatbot/session`, { body: { user_id: `bench-user-${i}`, template_id: "friendly-assistant" } });
      if (answer.status !== 201) throw new Error(`create ${i}: ${answer.status} ${answer.code ?? answer.error ?? ""}`);
      ids.push(String(answer.body.session_id));
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return ids;
}

/** Sessions stored in namespace `name`, counted by a shallow read of `userSessions` (the stand-in's REST API). */
async function storedSessions(host: string, name: string): Promise<number> {
  const answer = await send(`http://${host}/userSessions.json?ns=${name}&shallow=true`, { method: "GET", headers: { Authorization: "Bearer owner" } });
  return Object.keys(answer.body).length;
}

function countsOf(wire: RtdbWire, names: readonly string[]): Promise<WireCounts[]> {
  return Promise.all(names.map((name) => wire.counts(name)));
}

function since(before: readonly WireCounts[], after: readonly WireCounts[]): { writes: number; units: number }[] {
  return after.map((counts, i) => ({ writes: counts.writes - (before[i]?.writes ?? 0), units: counts.units - (before[i]?.units ?? 0) }));
}

const per = (total: number, count: number): string => fmt(total / count, 2);
const pct = (share: number): string => `${(share * 100).toFixed(1)}%`;
const signedPct = (share: number): string => `${share >= 0 ? "+" : ""}${(share * 100).toFixed(1)}%`;

runCli("sharding-bench", main, USAGE);
