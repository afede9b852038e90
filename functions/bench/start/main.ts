import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { initializeApp } from "firebase-admin/app";
import { getDatabase } from "firebase-admin/database";
import { silentLog } from "../../src/log/log";
import { seedTemplates } from "../../src/local/project-files";
import { composeInstance } from "../../src/runtime/instance";
import { RtdbStore } from "../../src/store/rtdb/rtdb-store";
import { FakeOpenAiServer } from "../../test/support/fake-openai-server";
import { freshNamespace } from "../../test/support/rtdb";
import { NO_TOKENS, serviceConfig } from "../../test/support/service-env";
import { databaseFromEnv, integerOption, readFlags, runCli } from "../shared/cli";
import { median } from "../shared/figures";

/** functions/, from build/bench/start/. */
const FUNCTIONS_DIR = resolve(__dirname, "..", "..", "..");
const LOAD_GOAL_RATIO = 5;
const LOAD_GOAL_RSS_MIB = 80;
const USAGE = `Usage: npm run bench:start -- [--runs N] [--entry FILE]

The cold start of the deployed functions, as a new instance pays it, in N interleaved rounds
(default 15, after one warm-up round), medians:
  - module load of the entry (default: functions/package.json "main") vs a bare \`node -e 0\`,
    each a fresh process timed from spawn to exit; the ratio of the medians and the median ratio;
  - RSS and CommonJS modules after the load;
  - load + first request: a fresh process loads the entry and calls its exported sendMessage, as
    the platform does, with a message to an existing session, on the Realtime Database of
    FIREBASE_DATABASE_EMULATOR_HOST and a fake OpenAI server (skipped without a database).
Goals: load at most ${LOAD_GOAL_RATIO}x bare node and at most ${LOAD_GOAL_RSS_MIB} MiB RSS.`;

/** Prints what the process measured; `-e 0` plus this line is the bare baseline. */
const REPORT = "process.stdout.write('\\n' + JSON.stringify({ rss: process.memoryUsage().rss, modules: Object.keys(require.cache).length }))";

/**
 * A first request as Cloud Functions makes it: the platform's Express request (method, path,
 * headers, the raw body it has read) and response, reduced to what an onRequest handler uses.
 */
const FIRST_REQUEST = `
const [entry, sessionId] = process.argv.slice(1);
const functions = require(entry);
const loadedMs = performance.now();
const rawBody = Buffer.from(JSON.stringify({ message: "Hello" }));
const headers = { "content-type": "application/json", "content-length": String(rawBody.length) };
const request = { method: "POST", path: "/" + sessionId, url: "/" + sessionId, headers, rawBody, body: JSON.parse(rawBody), header: (name) => headers[name.toLowerCase()] };
const sent = { status: 200 };
const response = {
  headersSent: false,
  status(code) { sent.status = code; return this; },
  set() { return this; },
  type() { return this; },
  send(body) { sent.body = String(body); this.headersSent = true; return this; },
  end() { this.headersSent = true; return this; },
};
functions.sendMessage(request, response).then(() => {
  process.stdout.write("\\n" + JSON.stringify({ status: sent.status, body: sent.body, loadedMs, answeredMs: performance.now(), rss: process.memoryUsage().rss, modules: Object.keys(require.cache).length }));
  process.exit(0);
}, (error) => {
  console.error(error);
  process.exit(1);
});
`;

interface Run {
  readonly ms: number;
  readonly out: { rss: number; modules: number; status?: number; body?: string; loadedMs?: number; answeredMs?: number };
}

async function main(argv: readonly string[]): Promise<number> {
  const flags = readFlags(argv, ["runs", "entry"]);
  const runs = integerOption("runs", flags.get("runs") ?? "15", 1, 1_000);
  const packageMain = (JSON.parse(readFileSync(join(FUNCTIONS_DIR, "package.json"), "utf8")) as { main: string }).main;
  const entry = resolve(FUNCTIONS_DIR, flags.get("entry") ?? packageMain);
  const databaseHost = await databaseFromEnv(process.env, "start-bench-probe");
  const firstRequest = databaseHost === undefined ? undefined : await firstRequestRig(databaseHost, runs + 1);
  try {
    const bare: Run[] = [];
    const load: Run[] = [];
    const first: Run[] = [];
    for (let round = 0; round <= runs; round += 1) {
      // One warm-up round (file cache), then the kinds in a rotating order, so none always goes first.
      const kinds = [
        async () => { bare.push(await timed(["-e", `0;${REPORT}`])); },
        async () => { load.push(await timed(["-e", `require(${JSON.stringify(entry)});${REPORT}`])); },
        ...(firstRequest ? [async () => { first.push(await timed(["-e", FIRST_REQUEST, entry, firstRequest.sessions[round] ?? ""], firstRequest.env)); }] : []),
      ];
      for (let k = 0; k < kinds.length; k += 1) await kinds[(round + k) % kinds.length]?.();
      if (round === 0) [bare, load, first].forEach((list) => list.splice(0));
    }
    const shown = relative(FUNCTIONS_DIR, entry).startsWith("..") ? entry : relative(FUNCTIONS_DIR, entry);
    return report(shown, runs, bare, load, first, firstRequest === undefined);
  } finally {
    await firstRequest?.close();
  }
}

function report(entry: string, runs: number, bare: Run[], load: Run[], first: Run[], noDatabase: boolean): number {
  const bareMs = median(bare.map((run) => run.ms));
  const loadMs = median(load.map((run) => run.ms));
  const loadRss = median(load.map((run) => run.out.rss)) / 2 ** 20;
  const ratio = loadMs / bareMs;
  const pairedRatio = median(load.map((run, i) => run.ms / (bare[i]?.ms ?? NaN)));
  const pass = ratio <= LOAD_GOAL_RATIO && loadRss <= LOAD_GOAL_RSS_MIB;
  const lines = [
    `Start-up bench: ${entry}, ${runs} interleaved rounds, medians (each a fresh process, spawn to exit)`,
    `  bare node (node -e 0)        ${ms(bareMs)}   RSS ${mib(median(bare.map((run) => run.out.rss)))}`,
    `  module load (require entry)  ${ms(loadMs)}   ${ratio.toFixed(1)}x bare (median paired ratio ${pairedRatio.toFixed(1)}x)   RSS ${loadRss.toFixed(1)} MiB   ${median(load.map((run) => run.out.modules))} CommonJS modules`,
  ];
  if (noDatabase) {
    lines.push("  load + first request         skipped: set FIREBASE_DATABASE_EMULATOR_HOST to a Realtime Database (emulator or stand-in)");
  } else {
    const statuses = [...new Set(first.map((run) => run.out.status))].join(", ");
    const firstMs = median(first.map((run) => run.ms));
    const inProcess = median(first.map((run) => (run.out.answeredMs ?? NaN) - (run.out.loadedMs ?? NaN)));
    lines.push(
      `  load + first request         ${ms(firstMs)}   ${(firstMs / bareMs).toFixed(1)}x bare   RSS ${mib(median(first.map((run) => run.out.rss)))}   ${median(first.map((run) => run.out.modules))} CommonJS modules`,
      `    the first request alone    ${ms(inProcess)}   sendMessage to an existing session: HTTP ${statuses} (onInit: config, firebase-admin, openai; one model call)`,
    );
    if (first.some((run) => run.out.status !== 200)) lines.push(`    unexpected answer: ${first.find((run) => run.out.status !== 200)?.out.body ?? ""}`);
  }
  lines.push(`Goal: load at most ${LOAD_GOAL_RATIO}x bare node and ${LOAD_GOAL_RSS_MIB} MiB: ${pass ? "PASS" : "FAIL"}`);
  console.log(lines.join("\n"));
  return pass && first.every((run) => run.out.status === 200) ? 0 : 1;
}

/** A database with the templates and one session per round, a fake model, and the env of a deployed instance. */
async function firstRequestRig(databaseHost: string, sessions: number) {
  const namespace = freshNamespace("start-bench");
  const fake = await FakeOpenAiServer.start();
  const app = initializeApp({ projectId: "demo-chatify", databaseURL: `https://${namespace}.firebaseio.com` }, namespace);
  const store = new RtdbStore(getDatabase(app), 10_000);
  await store.seedTemplates(seedTemplates());
  const instance = composeInstance(serviceConfig(fake.baseUrl), { store, identity: NO_TOKENS, log: silentLog });
  const ids: string[] = [];
  for (let i = 0; i < sessions; i += 1) {
    const body = Buffer.from(JSON.stringify({ user_id: `bench-user-${i}`, template_id: "friendly-assistant" }));
    const created = await instance.api("createSession", { method: "POST", path: "/", headers: { "content-type": "application/json" }, body });
    ids.push(String((created?.body as { session_id?: string } | undefined)?.session_id));
  }
  return {
    sessions: ids,
    env: {
      ...process.env,
      FIREBASE_CONFIG: JSON.stringify({ projectId: "demo-chatify", databaseURL: `https://${namespace}.firebaseio.com` }),
      GCLOUD_PROJECT: "demo-chatify",
      FIREBASE_DATABASE_EMULATOR_HOST: databaseHost,
      OPENAI_API_KEY: "sk-bench",
      OPENAI_BASE_URL: fake.baseUrl,
      OPENAI_MAX_RETRIES: "0",
      REQUIRE_AUTH: "false",
    },
    close: async () => { await fake.stop(); },
  };
}

/** Runs `node args` in a fresh process; wall time from spawn to exit, and the JSON it printed. */
function timed(args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<Run> {
  return new Promise((done, fail) => {
    const started = process.hrtime.bigint();
    const child = spawn(process.execPath, args, { cwd: FUNCTIONS_DIR, env, stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
    child.on("error", fail);
    child.on("exit", (code) => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      if (code !== 0) fail(new Error(`node ${args[0] ?? ""} ... exited ${code}: ${out}`));
      // The last line: anything before it is the functions' own logging.
      else done({ ms, out: JSON.parse(out.trim().split("\n").at(-1) ?? "") as Run["out"] });
    });
  });
}

const ms = (value: number) => `${value.toFixed(1).padStart(6)} ms`;
const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

runCli("start-bench", main, USAGE);
