import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { build, type BuildOptions } from "esbuild";
import { ConfigError, resolveConfig } from "../../src/config";
import { openaiApiKey } from "../../src/config-params";
import * as triggers from "../../src/index";
import {
  DEPLOY_PARAMS,
  deployParams,
  EVENT_TIMEOUT_MAX_SECONDS,
  eventTriggerTimeoutSeconds,
  FUNCTION_CONCURRENCY,
  FUNCTION_MEMORY,
  FUNCTION_TIMEOUT_SECONDS,
  httpsOptions,
  MAX_INSTANCES,
} from "../../src/function-options";
import { parseEnvFile } from "../../src/local/functions-env";
import { deletionTime, erasureDeadline } from "../../src/runtime/cloud-app";

const FUNCTIONS_DIR = resolve(__dirname, "..", "..");
const NODE_MODULES = join(FUNCTIONS_DIR, "node_modules");

function node(args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv }): string {
  const run = spawnSync(process.execPath, args, { cwd: options.cwd, env: { ...process.env, ...options.env }, encoding: "utf8", timeout: 30_000 });
  if (run.status !== 0) throw new Error(`node exited ${run.status}: ${run.stderr}`);
  return run.stdout;
}

interface ManifestEndpoint {
  readonly availableMemoryMb?: unknown;
  readonly timeoutSeconds?: unknown;
  readonly minInstances?: unknown;
  readonly maxInstances?: unknown;
  readonly concurrency?: unknown;
  readonly secretEnvironmentVariables?: readonly { key: string }[];
  readonly httpsTrigger?: unknown;
}

describe("httpsOptions", () => {
  it("passes each knob as its param, for the CLI to resolve at deploy", () => {
    expect(httpsOptions("session")).toEqual({
      invoker: "public",
      timeoutSeconds: deployParams.TIMEOUT_SECONDS,
      memory: deployParams.MEMORY_MIB,
      concurrency: deployParams.CONCURRENCY,
      maxInstances: deployParams.MAX_INSTANCES,
    });
  });

  it("gives the message function the OpenAI key and the warm instances, and the session functions neither", () => {
    expect(httpsOptions("message")).toEqual({ ...httpsOptions("session"), minInstances: deployParams.MIN_INSTANCES, secrets: [openaiApiKey] });
  });

  it("gives a function that moderates users' messages the OpenAI key alone, with the session functions' other options", () => {
    expect(httpsOptions("moderated")).toEqual({ ...httpsOptions("session"), secrets: [openaiApiKey] });
  });

  it("keeps the constants the triggers and the time budget used, at the params' defaults", () => {
    expect({ FUNCTION_TIMEOUT_SECONDS, FUNCTION_MEMORY, FUNCTION_CONCURRENCY, MAX_INSTANCES }).toEqual({
      FUNCTION_TIMEOUT_SECONDS: 60,
      FUNCTION_MEMORY: "512MiB",
      FUNCTION_CONCURRENCY: 80,
      MAX_INSTANCES: 10,
    });
    expect(DEPLOY_PARAMS.MIN_INSTANCES.default).toBe(0);
  });

  it("reads each knob at run time from the variable the deploy sets", () => {
    const previous = process.env.TIMEOUT_SECONDS;
    process.env.TIMEOUT_SECONDS = "90";
    try {
      expect(deployParams.TIMEOUT_SECONDS.value()).toBe(90);
    } finally {
      if (previous === undefined) delete process.env.TIMEOUT_SECONDS;
      else process.env.TIMEOUT_SECONDS = previous;
    }
  });
});

/**
 * Which deployed functions get OPENAI_API_KEY: Cloud Functions (and the Functions emulator) mount
 * a secret only on the functions that declare it. Those that may call OpenAI declare it: the
 * message functions (the model, and with MODERATION the check beside it) and the functions that
 * send a message to another user (with MODERATION, checked before it is stored); no other does.
 */
describe("the triggers' options (index.ts)", () => {
  type Endpoint = { __endpoint: { secretEnvironmentVariables?: readonly { key: string }[] } };
  const withKey = (triggers: Readonly<Record<string, unknown>>, prefix = ""): string[] =>
    Object.entries(triggers).flatMap(([name, trigger]) => {
      if (typeof trigger === "function" && "__endpoint" in trigger) {
        const secrets = (trigger as unknown as Endpoint).__endpoint.secretEnvironmentVariables ?? [];
        return secrets.some((secret) => secret.key === "OPENAI_API_KEY") ? [`${prefix}${name}`] : [];
      }
      return typeof trigger === "object" && trigger !== null ? withKey(trigger as Record<string, unknown>, `${prefix}${name}-`) : [];
    });

  it("declares OPENAI_API_KEY on the functions that call the model or moderate a message to another user, and on no other", () => {
    expect(withKey(triggers as unknown as Record<string, unknown>).sort()).toEqual(["chat-sendConnectionMessage", "chat-sendMessage", "connectionMessages", "sendMessage"]);
  });
});

/**
 * Bundles `entry` (esbuild options naming what to bundle) into `dir` as a functions package and
 * runs the firebase-functions bin on it, as `firebase deploy` discovers triggers: the manifest
 * lands in `dir`/manifest.json.
 */
async function discoverManifest(dir: string, entry: Pick<BuildOptions, "stdin" | "entryPoints">): Promise<void> {
  await build({ ...entry, bundle: true, platform: "node", format: "cjs", target: "node24", packages: "external", outfile: join(dir, "entry.js"), logLevel: "error" });
  writeFileSync(join(dir, "package.json"), JSON.stringify({ main: "entry.js" }));
  node([join(NODE_MODULES, "firebase-functions", "lib", "bin", "firebase-functions.js")], {
    cwd: dir,
    env: { NODE_PATH: NODE_MODULES, FUNCTIONS_MANIFEST_OUTPUT_PATH: join(dir, "manifest.json") },
  });
}

/**
 * What `firebase deploy` does with them, with the installed tools: the firebase-functions bin
 * (discovery) reads a bundle of two triggers built with `httpsOptions`, and firebase-tools'
 * own resolution (lib/deploy/functions/build.js `resolveBackend`, firebase-tools 15.34) turns the
 * manifest and a project's values into the deployed settings and environment. No network: the
 * secret, whose resolution asks Secret Manager, is left out.
 */
describe("httpsOptions through the Firebase CLI's discovery and deploy resolution", () => {
  let dir: string;
  let manifest: { endpoints: Record<string, ManifestEndpoint>; params: { name: string; default?: unknown; description?: string; input?: unknown }[] };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "chatify-options-"));
    await discoverManifest(dir, {
      stdin: {
        contents: [
          'import { onRequest } from "firebase-functions/v2/https";',
          'import { httpsOptions } from "./src/function-options";',
          'export const sendMessage = onRequest(httpsOptions("message"), (_request, response) => { response.end(); });',
          'export const createSession = onRequest(httpsOptions("session"), (_request, response) => { response.end(); });',
        ].join("\n"),
        resolveDir: FUNCTIONS_DIR,
        loader: "ts",
      },
    });
    manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")) as typeof manifest;
  });

  afterAll(() => { rmSync(dir, { recursive: true, force: true }); });

  it("declares the knobs in the manifest as param expressions", () => {
    expect(manifest.endpoints.sendMessage).toMatchObject({
      availableMemoryMb: "{{ params.MEMORY_MIB }}",
      timeoutSeconds: "{{ params.TIMEOUT_SECONDS }}",
      minInstances: "{{ params.MIN_INSTANCES }}",
      maxInstances: "{{ params.MAX_INSTANCES }}",
      concurrency: "{{ params.CONCURRENCY }}",
      secretEnvironmentVariables: [{ key: "OPENAI_API_KEY" }],
      httpsTrigger: { invoker: ["public"] },
    });
    expect(manifest.endpoints.createSession).toMatchObject({ availableMemoryMb: "{{ params.MEMORY_MIB }}", minInstances: null });
    expect(manifest.endpoints.createSession?.secretEnvironmentVariables).toBeUndefined();
  });

  it("declares each knob with its default and description, memory as a choice of sizes", () => {
    const declared = new Map(manifest.params.map((param) => [param.name, param]));
    for (const [name, spec] of Object.entries(DEPLOY_PARAMS)) {
      expect(declared.get(name)).toMatchObject({ default: spec.default, description: spec.description });
    }
    expect(declared.get("MEMORY_MIB")?.input).toEqual({ select: { options: DEPLOY_PARAMS.MEMORY_MIB.choices.map((value) => ({ value })) } });
  });

  /**
   * What the CLI deploys the two functions with, and the environment it sets on them, for a
   * project's env files setting `values`: every other param given its default (a non-interactive
   * deploy asks for none).
   */
  function deployed(values: Readonly<Record<string, string>>): { endpoints: Record<string, unknown>; environment: Record<string, string> } {
    const script = `
      const tools = ${JSON.stringify(join(NODE_MODULES, "firebase-tools", "lib", "deploy", "functions"))};
      const { buildFromV1Alpha1 } = require(tools + "/runtimes/discovery/v1alpha1");
      const { resolveBackend } = require(tools + "/build");
      const manifest = JSON.parse(require("fs").readFileSync(${JSON.stringify(join(dir, "manifest.json"))}, "utf8"));
      const wanted = buildFromV1Alpha1(manifest, "demo-chatify", "us-central1", "nodejs24");
      wanted.params = wanted.params.filter((param) => param.type !== "secret");
      const userEnvs = Object.fromEntries(wanted.params.map((param) => [param.name, String(param.default)]));
      Object.assign(userEnvs, ${JSON.stringify(values)});
      resolveBackend({ build: wanted, firebaseConfig: { projectId: "demo-chatify" }, userEnvs, nonInteractive: true, isEmulator: false }).then(({ backend, envs }) => {
        const endpoints = Object.fromEntries(Object.entries(backend.endpoints["us-central1"]).map(([id, endpoint]) =>
          [id, { availableMemoryMb: endpoint.availableMemoryMb, timeoutSeconds: endpoint.timeoutSeconds, minInstances: endpoint.minInstances, maxInstances: endpoint.maxInstances, concurrency: endpoint.concurrency }]));
        const environment = Object.fromEntries(Object.entries(envs).map(([name, value]) => [name, value.toSDK()]));
        console.log(JSON.stringify({ endpoints, environment }));
      });
    `;
    return JSON.parse(node(["-e", script], { cwd: dir })) as { endpoints: Record<string, unknown>; environment: Record<string, string> };
  }

  it("is resolved by the CLI to a project's values, and the instance reads the same timeout back", () => {
    const { endpoints, environment } = deployed({ MIN_INSTANCES: "2", MEMORY_MIB: "1024", TIMEOUT_SECONDS: "90" });
    expect(endpoints).toEqual({
      sendMessage: { availableMemoryMb: 1024, timeoutSeconds: 90, minInstances: 2, maxInstances: 10, concurrency: 80 },
      createSession: { availableMemoryMb: 1024, timeoutSeconds: 90, minInstances: null, maxInstances: 10, concurrency: 80 },
    });
    // The resolved values become the functions' environment (lib/deploy/functions/prepare.js), which the instance reads.
    expect(resolveConfig(environment).deploy).toEqual({ minInstances: 2, maxInstances: 10, concurrency: 80, memoryMib: 1024, timeoutSeconds: 90 });
  });

  // firebase-tools 15.34 resolves a blank int param as `+""`, 0, and Cloud Functions reads maxInstances 0 as
  // unset (its own 100 instances): an instance reading blank as the default 10 ran under a bound that was not deployed.
  it("deploys a MAX_INSTANCES left blank in an env file as 0, and an instance deployed so refuses to start, naming it", () => {
    const { endpoints, environment } = deployed(parseEnvFile("MAX_INSTANCES=\n").values);
    expect(endpoints.sendMessage).toMatchObject({ maxInstances: 0 });
    expect(environment.MAX_INSTANCES).toBe("");
    expect(() => resolveConfig(environment)).toThrow(ConfigError);
    expect(() => resolveConfig(environment)).toThrow(/^MAX_INSTANCES is set but blank: the Firebase CLI deploys a blank deploy knob as 0/);
  });

  it("deploys a MAX_INSTANCES given a value in an env file as the instance reads it", () => {
    const { endpoints, environment } = deployed(parseEnvFile("MAX_INSTANCES=7\n").values);
    expect(endpoints.sendMessage).toMatchObject({ maxInstances: 7 });
    expect(resolveConfig(environment).deploy.maxInstances).toBe(7);
  });
});

/**
 * Every TIMEOUT_SECONDS the param accepts (1 to 3600) deploys. The Firebase CLI refuses the whole
 * deploy when one function's timeout is above the limit of its trigger type (firebase-tools 15.34
 * lib/deploy/functions/validate.js validateTimeoutConfig: 3600 s for HTTPS and callables, 1800 s
 * for a scheduled function, 540 s for an event trigger). The real triggers (index.ts), through the
 * CLI's discovery, its resolution of the params and that check.
 */
describe("the triggers (index.ts) through the Firebase CLI's timeout validation", () => {
  const TIMEOUTS = [1, 60, 540, 541, 600, 1_800, 3_600];
  let results: Record<string, { valid: { ok: boolean; message?: string }; timeouts: Record<string, number> }>;

  beforeAll(async () => {
    const dir = mkdtempSync(join(tmpdir(), "chatify-triggers-"));
    try {
      await discoverManifest(dir, { entryPoints: [join(FUNCTIONS_DIR, "src", "index.ts")] });
      const script = `
        const tools = ${JSON.stringify(join(NODE_MODULES, "firebase-tools", "lib", "deploy", "functions"))};
        const { buildFromV1Alpha1 } = require(tools + "/runtimes/discovery/v1alpha1");
        const { resolveBackend } = require(tools + "/build");
        const { allEndpoints } = require(tools + "/backend");
        const validate = require(tools + "/validate");
        const manifest = JSON.parse(require("fs").readFileSync(${JSON.stringify(join(dir, "manifest.json"))}, "utf8"));
        const resolveWith = async (timeoutSeconds) => {
          const wanted = buildFromV1Alpha1(manifest, "demo-chatify", "us-central1", "nodejs24");
          wanted.params = wanted.params.filter((param) => param.type !== "secret");
          const userEnvs = Object.fromEntries(wanted.params.map((param) => [param.name, String(param.default)]));
          userEnvs.TIMEOUT_SECONDS = String(timeoutSeconds);
          const { backend } = await resolveBackend({ build: wanted, firebaseConfig: { projectId: "demo-chatify" }, userEnvs, nonInteractive: true, isEmulator: false });
          const endpoints = allEndpoints(backend);
          let valid = { ok: true };
          try { validate.validateTimeoutConfig(endpoints); } catch (error) { valid = { ok: false, message: String(error.message) }; }
          return [timeoutSeconds, { valid, timeouts: Object.fromEntries(endpoints.map((endpoint) => [endpoint.id, endpoint.timeoutSeconds])) }];
        };
        Promise.all(${JSON.stringify(TIMEOUTS)}.map(resolveWith)).then((entries) => console.log(JSON.stringify(Object.fromEntries(entries))));
      `;
      results = JSON.parse(node(["-e", script], { cwd: dir })) as typeof results;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it.each(TIMEOUTS)("deploys with TIMEOUT_SECONDS=%i: the HTTPS functions get it, the Auth trigger at most 540 s", (timeoutSeconds) => {
    expect(resolveConfig({ TIMEOUT_SECONDS: String(timeoutSeconds) }).deploy.timeoutSeconds).toBe(timeoutSeconds);
    const result = results[String(timeoutSeconds)];
    expect(result?.valid).toEqual({ ok: true });
    expect(result?.timeouts).toMatchObject({
      sendMessage: timeoutSeconds,
      connectionMessages: timeoutSeconds,
      "chat-sendMessage": timeoutSeconds,
      expireSessions: 300,
      eraseDeletedUser: Math.min(timeoutSeconds, 540),
    });
  });

  it("ends the deleted user's first erasure pass within half the timeout its trigger really gets", () => {
    expect(EVENT_TIMEOUT_MAX_SECONDS).toBe(540);
    expect([60, 540, 600, 3_600].map(eventTriggerTimeoutSeconds)).toEqual([60, 540, 540, 540]);
    expect(erasureDeadline(1_000, 3_600)).toBe(1_000 + 270_000);
    expect(erasureDeadline(1_000, 60)).toBe(1_000 + 30_000);
  });

  it("erases a deleted user's data up to the hour after the deletion event's time, the same on each retry of the event", () => {
    expect(deletionTime("2026-04-01T09:00:00.000Z", 5)).toBe(Date.parse("2026-04-01T09:00:00Z"));
    expect(deletionTime(undefined, 5)).toBe(5);
    expect(deletionTime("not a time", 5)).toBe(5);
  });
});
