import { spawn, spawnSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Request } from "firebase-functions/v2/https";
import type { Response } from "express";
import { ConfigError, resolveConfig } from "../../src/config";
import { cloudHandler } from "../../src/http/cloud-adapter";
import { PROJECT_ROOT } from "../../src/local/project-files";
import { silentLog } from "../../src/log/log";
import { composeInstance } from "../../src/runtime/instance";
import { checkConnectionBudget, maintenanceRunMs, timeBudget } from "../../src/runtime/time-budget";
import { MemoryStore } from "../../src/store/memory-store";
import { NO_TOKENS } from "../support/service-env";

describe("the time budget checked at instance start", () => {
  it("shares the deployed 60 s between the model, the database and a keyed repeat's wait", () => {
    // Defaults: 2 attempts x 15 s + 1 wait x 5 s of model time, 4 x 5 s of database time, 1 s margin; a claim leased for the 60 s.
    expect(timeBudget(resolveConfig({}))).toEqual({ modelMs: 35_000, leaseMs: 60_000, keyWaitMs: 4_000, claimWaitMs: 4_000 });
  });

  it("lets a message kept out of the session's last exchanges by running claims wait the time left, one database deadline at most", () => {
    expect(timeBudget(resolveConfig({ TIMEOUT_SECONDS: "120" })).claimWaitMs).toBe(5_000);
    expect(timeBudget(resolveConfig({ TIMEOUT_SECONDS: "120", DB_TIMEOUT_MS: "8000" })).claimWaitMs).toBe(8_000);
    // 8 s left (16 s of database time), one 4 s deadline of it.
    expect(timeBudget(resolveConfig({ DB_TIMEOUT_MS: "4000" })).claimWaitMs).toBe(4_000);
  });

  it("refuses a model budget that outlives the function, naming the params and the overrun", () => {
    const config = resolveConfig({ OPENAI_TIMEOUT_MS: "30000", OPENAI_MAX_RETRIES: "1" });
    expect(() => timeBudget(config)).toThrow(ConfigError);
    expect(() => timeBudget(config)).toThrow(/OPENAI_TIMEOUT_MS.*OPENAI_MAX_RETRIES.*DB_TIMEOUT_MS.*26000 ms too long/s);
  });

  it("counts the database deadlines too", () => {
    expect(() => timeBudget(resolveConfig({ DB_TIMEOUT_MS: "10000" }))).toThrow(/4 x DB_TIMEOUT_MS = 40000 ms/);
    expect(timeBudget(resolveConfig({ DB_TIMEOUT_MS: "5000" }), 60_000).keyWaitMs).toBe(4_000);
  });

  it("leases a claim for the function's whole timeout, which its request cannot outlive, however many database calls follow the claim", () => {
    for (const retries of ["0", "1", "2"]) {
      const budget = timeBudget(resolveConfig({ OPENAI_TIMEOUT_MS: "5000", OPENAI_MAX_RETRIES: retries, DB_TIMEOUT_MS: "2000" }));
      expect(budget.leaseMs).toBe(60_000);
    }
    expect(timeBudget(resolveConfig({ TIMEOUT_SECONDS: "120" })).leaseMs).toBe(120_000);
  });

  it("fits the timeout the functions were deployed with (TIMEOUT_SECONDS), naming it when too short", () => {
    // The defaults need 56 s: a 60 s function fits them, a 50 s one does not, a 120 s one leaves the keyed repeat more wait.
    expect(() => timeBudget(resolveConfig({ TIMEOUT_SECONDS: "50" }))).toThrow(/function timeout \(50 s, TIMEOUT_SECONDS\).*raise TIMEOUT_SECONDS/s);
    expect(timeBudget(resolveConfig({ TIMEOUT_SECONDS: "120" })).keyWaitMs).toBe(64_000);
    expect(() => composeInstance(resolveConfig({ TIMEOUT_SECONDS: "50" }), { store: new MemoryStore(), identity: NO_TOKENS, log: silentLog })).toThrow(ConfigError);
  });

  it("is checked by the composition root, so no instance starts with a budget that cannot hold", () => {
    const config = resolveConfig({ OPENAI_TIMEOUT_MS: "60000" });
    expect(() => composeInstance(config, { store: new MemoryStore(), identity: NO_TOKENS, log: silentLog })).toThrow(ConfigError);
  });
});

/**
 * A user-to-user message waits for its database calls, with MODERATION on for its moderation check
 * (one attempt of up to OPENAI_TIMEOUT_MS, before its transaction: there is no model call to run it
 * beside), then up to NOTIFICATION_DEADLINE_MS for its push; all of it within the function timeout.
 */
describe("the time budget of a user-to-user message, checked at instance start", () => {
  // 60 s deployed: 3 x 7 s of database, 10 s for the push, 1 s margin (32 s); with the check, 30 s more (62 s).
  const deployed = { TIMEOUT_SECONDS: "60", OPENAI_TIMEOUT_MS: "30000", OPENAI_MAX_RETRIES: "0", DB_TIMEOUT_MS: "7000", NOTIFICATION_DEADLINE_MS: "10000" };

  it("fits the database calls and the notification's deadline with MODERATION off", () => {
    expect(() => { checkConnectionBudget(resolveConfig(deployed)); }).not.toThrow();
  });

  it("counts the moderation check's OPENAI_TIMEOUT_MS with MODERATION on, naming the params when it does not fit", () => {
    const config = resolveConfig({ ...deployed, MODERATION: "true" });
    expect(() => { checkConnectionBudget(config); }).toThrow(ConfigError);
    expect(() => { checkConnectionBudget(config); }).toThrow(
      /function timeout \(60 s, TIMEOUT_SECONDS\): 3 x DB_TIMEOUT_MS \+ OPENAI_TIMEOUT_MS \(its moderation check, MODERATION on\) \+ NOTIFICATION_DEADLINE_MS \+ 1000 ms margin = 62000 ms; lower DB_TIMEOUT_MS, OPENAI_TIMEOUT_MS or NOTIFICATION_DEADLINE_MS, or raise TIMEOUT_SECONDS/,
    );
    expect(() => { checkConnectionBudget(resolveConfig({ ...deployed, MODERATION: "true", OPENAI_TIMEOUT_MS: "28000" })); }).not.toThrow();
    expect(() => { checkConnectionBudget(resolveConfig({ ...deployed, MODERATION: "true", OPENAI_TIMEOUT_MS: "28001" })); }).toThrow(ConfigError);
  });

  it("is checked by the composition root, so no instance with MODERATION on starts with a message that could outlive it", () => {
    expect(() => composeInstance(resolveConfig({ ...deployed, MODERATION: "true" }), { store: new MemoryStore(), identity: NO_TOKENS, log: silentLog })).toThrow(/OPENAI_TIMEOUT_MS \(its moderation check/);
  });

  it("leaves a session message's budget as it is with MODERATION on: the check runs beside the model call, within its first attempt", () => {
    const env = { OPENAI_TIMEOUT_MS: "20000", OPENAI_MAX_RETRIES: "1", OPENAI_MAX_RETRY_WAIT_MS: "5000", DB_TIMEOUT_MS: "3000" };
    expect(timeBudget(resolveConfig({ ...env, MODERATION: "true" }))).toEqual(timeBudget(resolveConfig(env)));
  });
});

describe("the time of the scheduled clean-up", () => {
  it("starts batches for its 300 s less a minute, or less four database deadlines when those are longer", () => {
    expect(maintenanceRunMs(resolveConfig({}))).toBe(240_000);
    expect(maintenanceRunMs(resolveConfig({ DB_TIMEOUT_MS: "30000" }))).toBe(180_000);
  });
});

describe("a function instance whose start failed", () => {
  it("answers every request with the JSON 500 CONFIGURATION_ERROR, not the platform's page", async () => {
    const handler = cloudHandler("sendMessage", () => Promise.reject(new ConfigError("OPENAI_TIMEOUT_MS must be an integer")));
    const sent: { status?: number; type?: string; body?: string } = {};
    const response = {
      status(code: number) { sent.status = code; return this; },
      set() { return this; },
      type(type: string) { sent.type = type; return this; },
      send(body: string) { sent.body = body; return this; },
      end() { return this; },
    };
    const request = { method: "POST", path: "/x", headers: {}, rawBody: Buffer.from("{}") };
    await handler(request as unknown as Request, response as unknown as Response);
    expect(sent.status).toBe(500);
    expect(sent.type).toBe("application/json");
    expect(JSON.parse(sent.body ?? "{}")).toEqual({ success: false, error: { code: "CONFIGURATION_ERROR", message: "The service is misconfigured" } });
  });

  /**
   * Called from another origin (the chat page calls the function URLs cross-origin): docs/api.md
   * says every answer carries the CORS headers, without which the page sees a network failure
   * instead of the error, and its preflight fails outright.
   */
  describe("called from another origin", () => {
    const failed = () => Promise.reject(new ConfigError("OPENAI_TIMEOUT_MS must be an integer"));
    const origin = "https://chat.example.com";
    const previous = process.env.CORS_ORIGINS;
    afterEach(() => {
      if (previous === undefined) delete process.env.CORS_ORIGINS;
      else process.env.CORS_ORIGINS = previous;
    });

    function fakeResponse() {
      const sent: { status?: number; headers: Record<string, string>; body?: string } = { headers: {} };
      const response = {
        headersSent: false,
        status(code: number) { sent.status = code; return this; },
        set(headers: Record<string, string>) { for (const [name, value] of Object.entries(headers)) sent.headers[name.toLowerCase()] = value; return this; },
        type() { return this; },
        send(body: string) { sent.body = body; return this; },
        end() { return this; },
      };
      return { sent, response: response as unknown as Response };
    }
    const post = { method: "POST", path: "/", url: "/", headers: { origin, "content-type": "application/json" }, rawBody: Buffer.from("{}"), socket: {} };
    const preflight = {
      method: "OPTIONS", path: "/", url: "/", rawBody: Buffer.alloc(0), socket: {},
      headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "authorization,content-type" },
    };

    it("answers a request with the CORS headers every answer carries (CORS_ORIGINS left at *), so the page can read CONFIGURATION_ERROR", async () => {
      delete process.env.CORS_ORIGINS;
      const { sent, response } = fakeResponse();
      await cloudHandler("createSession", failed)(post as unknown as Request, response);
      expect(sent.status).toBe(500);
      expect(JSON.parse(sent.body ?? "{}")).toMatchObject({ error: { code: "CONFIGURATION_ERROR" } });
      expect(sent.headers["access-control-allow-origin"]).toBe("*");
    });

    it("answers the preflight of that request, allowing the function's methods and the request's headers", async () => {
      delete process.env.CORS_ORIGINS;
      const { sent, response } = fakeResponse();
      await cloudHandler("createSession", failed)(preflight as unknown as Request, response);
      expect(sent.status).toBe(204);
      expect(sent.headers).toMatchObject({
        "access-control-allow-origin": "*",
        "access-control-allow-methods": "POST, OPTIONS",
        "access-control-allow-headers": expect.stringContaining("Authorization") as unknown,
      });
    });

    it("names the function's methods in Allow on an OPTIONS, as a started instance does: HEAD wherever GET is", async () => {
      delete process.env.CORS_ORIGINS;
      const plain = { method: "OPTIONS", path: "/", url: "/", rawBody: Buffer.alloc(0), socket: {}, headers: {} };
      const allowed = async (name: "createSession" | "endSession" | "listSessions") => {
        const { sent, response } = fakeResponse();
        await cloudHandler(name, failed)(plain as unknown as Request, response);
        return { status: sent.status, allow: sent.headers.allow, methods: sent.headers["access-control-allow-methods"] };
      };
      expect(await allowed("createSession")).toEqual({ status: 204, allow: "POST, OPTIONS", methods: "POST, OPTIONS" });
      // endSession also serves getSession's GET on its path (src/http/shared-paths.ts).
      expect(await allowed("endSession")).toEqual({ status: 204, allow: "DELETE, GET, HEAD, OPTIONS", methods: "DELETE, GET, HEAD, OPTIONS" });
      expect(await allowed("listSessions")).toEqual({ status: 204, allow: "GET, HEAD, OPTIONS", methods: "GET, HEAD, OPTIONS" });
    });

    it("allows a listed origin, CORS_ORIGINS being read on its own", async () => {
      process.env.CORS_ORIGINS = `https://other.example.com, ${origin}`;
      const { sent, response } = fakeResponse();
      await cloudHandler("createSession", failed)(post as unknown as Request, response);
      expect(sent.status).toBe(500);
      expect(sent.headers).toMatchObject({ "access-control-allow-origin": origin, vary: "Origin" });
    });

    it("sends no CORS headers when CORS_ORIGINS is itself the bad param, and still answers CONFIGURATION_ERROR", async () => {
      process.env.CORS_ORIGINS = "chat.example.com/path";
      const { sent, response } = fakeResponse();
      await cloudHandler("createSession", failed)(post as unknown as Request, response);
      expect(sent.status).toBe(500);
      expect(JSON.parse(sent.body ?? "{}")).toMatchObject({ error: { code: "CONFIGURATION_ERROR" } });
      expect(sent.headers["access-control-allow-origin"]).toBeUndefined();
    });
  });
});

/** The built local server, what `npm start` runs. */
const LOCAL_MAIN = join(__dirname, "..", "..", "lib", "local", "main.js");

describe("npm start with a bad param", () => {
  it("fails at start with the param's name and why, before listening", () => {
    const env: NodeJS.ProcessEnv = { ...process.env, PORT: "0", OPENAI_MAX_RETRIES: "many" };
    delete env.FIREBASE_DATABASE_EMULATOR_HOST;
    const run = spawnSync(process.execPath, [LOCAL_MAIN], { env, encoding: "utf8", timeout: 15_000 });
    expect(run.status).toBe(1);
    expect(run.stderr).toContain('OPENAI_MAX_RETRIES must be an integer from 0 to 5, got "many"');
    expect(run.stdout).not.toContain("running locally");
  });

  it("refuses an OPENAI_BASE_URL holding a user name and password, showing neither", () => {
    const env: NodeJS.ProcessEnv = { ...process.env, PORT: "0", OPENAI_API_KEY: "sk-test-key", OPENAI_BASE_URL: "http://proxy-user:s3cret-pass@127.0.0.1:9/v1" };
    delete env.FIREBASE_DATABASE_EMULATOR_HOST;
    const run = spawnSync(process.execPath, [LOCAL_MAIN], { env, encoding: "utf8", timeout: 15_000 });
    expect(run.status).toBe(1);
    expect(run.stderr.trim()).toBe("Could not start: OPENAI_BASE_URL must not hold a user name or password: credentials in the URL are not supported (an API key goes in OPENAI_API_KEY)");
    expect(`${run.stdout}${run.stderr}`).not.toMatch(/s3cret-pass|proxy-user/);
  });

  it("refuses an OPENAI_API_KEY no HTTP header can carry, naming the character and showing no part of the key", () => {
    const env: NodeJS.ProcessEnv = { ...process.env, PORT: "0", OPENAI_API_KEY: "\u201csk-s3cret-key\u201d" };
    delete env.FIREBASE_DATABASE_EMULATOR_HOST;
    const run = spawnSync(process.execPath, [LOCAL_MAIN], { env, encoding: "utf8", timeout: 15_000 });
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(/^Could not start: OPENAI_API_KEY cannot be sent in an HTTP header: its character 1 of 15 is U\+201C,/);
    expect(`${run.stdout}${run.stderr}`).not.toContain("s3cret");
  });
});

/** A loopback port nothing listens on: taken from the system, then let go. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((listening) => server.listen(0, "127.0.0.1", listening));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  await new Promise((closed) => server.close(closed));
  return port;
}

/**
 * FIREBASE_DATABASE_EMULATOR_HOST is often left exported from work on the emulators (`firebase
 * emulators:exec` sets it): `npm start` then says which database it looked for, where, how long,
 * and that the embedded store is the variable unset, where it said only "database unavailable
 * during seed template".
 */
describe("npm start with FIREBASE_DATABASE_EMULATOR_HOST where no database answers", () => {
  function startOn(extra: Record<string, string>): { status: number | null; stdout: string; stderr: string } {
    const env: NodeJS.ProcessEnv = { ...process.env, PORT: "0", DB_TIMEOUT_MS: "1000", ...extra };
    delete env.FIREBASE_AUTH_EMULATOR_HOST;
    if (extra.DATABASE_INSTANCES === undefined) delete env.DATABASE_INSTANCES;
    return spawnSync(process.execPath, [LOCAL_MAIN], { env, encoding: "utf8", timeout: 20_000 });
  }
  const advice = "start one there (`firebase emulators:start --only database` listens on 127.0.0.1:9000), or unset FIREBASE_DATABASE_EMULATOR_HOST to keep sessions in the embedded store";

  it("stops naming FIREBASE_DATABASE_EMULATOR_HOST, the address it tried, DB_TIMEOUT_MS and the embedded store, before listening", async () => {
    const host = `127.0.0.1:${await closedPort()}`;
    const run = startOn({ FIREBASE_DATABASE_EMULATOR_HOST: host });
    expect(run.stderr.trim()).toBe(`Could not start: no Realtime Database answered at FIREBASE_DATABASE_EMULATOR_HOST=${host} within DB_TIMEOUT_MS (1000 ms), while seeding the templates: ${advice}`);
    expect(run.status).toBe(1);
    expect(run.stdout).not.toContain("running locally");
  });

  it("names the first of DATABASE_INSTANCES when that is an emulator's own URL, where the templates go", async () => {
    const home = `http://127.0.0.1:${await closedPort()}?ns=demo-chatify-sessions-1`;
    const run = startOn({ FIREBASE_DATABASE_EMULATOR_HOST: `127.0.0.1:${await closedPort()}`, DATABASE_INSTANCES: home });
    expect(run.stderr.trim()).toBe(`Could not start: no Realtime Database answered at ${home} (the first of DATABASE_INSTANCES) within DB_TIMEOUT_MS (1000 ms), while seeding the templates: ${advice}`);
    expect(run.status).toBe(1);
  });
});

describe("npm start when PORT is taken", () => {
  let blocker: Server;
  let port = 0;
  beforeAll(async () => {
    blocker = createServer();
    await new Promise<void>((listening) => blocker.listen(0, "127.0.0.1", listening));
    const address = blocker.address();
    port = typeof address === "object" && address ? address.port : 0;
  });
  afterAll(async () => { await new Promise((closed) => blocker.close(closed)); });

  it("says the port is in use and which setting changes it, and exits 1, without an unhandled error", () => {
    const env: NodeJS.ProcessEnv = { ...process.env, PORT: String(port), HOST: "127.0.0.1" };
    delete env.FIREBASE_DATABASE_EMULATOR_HOST;
    // The port is taken in the kernel: the blocker need not run its event loop while this waits.
    const run = spawnSync(process.execPath, [LOCAL_MAIN], { env, encoding: "utf8", timeout: 15_000 });
    expect(run.status).toBe(1);
    expect(run.stderr.trim()).toBe(`Could not start: port ${port} is in use (set PORT)`);
    expect(run.stdout).not.toContain("running locally");
  });
});

/** The environment `npm start` gets in these tests: the embedded store, no Auth emulator. */
function localEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  delete env.FIREBASE_DATABASE_EMULATOR_HOST;
  delete env.FIREBASE_AUTH_EMULATOR_HOST;
  return env;
}

/** Runs `npm start`'s server until it prints its URLs, or exits, within 15 s; then stops it. What it printed. */
async function startOnce(extra: Record<string, string>): Promise<string> {
  const child = spawn(process.execPath, [LOCAL_MAIN], { env: localEnv(extra), stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      output += "\n(no URLs and no exit within 15 s)";
      resolve();
    }, 15_000);
    const take = (chunk: Buffer) => {
      output += chunk.toString();
      if (/API base URL http/.test(output)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout.on("data", take);
    child.stderr.on("data", take);
    child.on("exit", () => {
      clearTimeout(timer);
      resolve();
    });
  });
  if (child.exitCode === null && child.signalCode === null) {
    const gone = new Promise((done) => child.once("exit", done));
    child.kill("SIGTERM");
    await gone;
  }
  return output;
}

/** README: "Local-only environment variables: `PORT` (default `5000`), `HOST` (default `127.0.0.1`)". */
describe("npm start's PORT and HOST", () => {
  it("prints its URLs with an IPv6 HOST in brackets, as URLs write it", async () => {
    const output = await startOnce({ PORT: "0", HOST: "::1" });
    const printed = /Chat page: (\S+)/.exec(output)?.[1] ?? `no Chat page line in: ${output}`;
    expect(printed).toMatch(/^http:\/\/\[::1\]:\d+\/$/);
    expect(new URL(printed).hostname).toBe("[::1]");
  });

  describe("with port 5000 taken", () => {
    let blocker: Server | undefined;
    beforeAll(async () => {
      // Held here, unless something else holds it already: either way PORT's default is in use.
      const server = createServer();
      blocker = await new Promise<Server | undefined>((resolve) => {
        server.once("error", () => { resolve(undefined); });
        server.listen(5000, "127.0.0.1", () => { resolve(server); });
      });
    });
    afterAll(async () => {
      const held = blocker;
      if (held) await new Promise((closed) => held.close(closed));
    });

    it.each([" ", "", " 5000 "])("reads PORT=%p as port 5000, blank being its default as for every param, not any free port", (raw) => {
      const run = spawnSync(process.execPath, [LOCAL_MAIN], { env: localEnv({ PORT: raw, HOST: "127.0.0.1" }), encoding: "utf8", timeout: 15_000 });
      expect(run.stderr.trim()).toBe("Could not start: port 5000 is in use (set PORT)");
      expect(run.status).toBe(1);
    });
  });

  it.each(["80OO", "5000.5", "-1", "65536", "0x1F90"])("refuses PORT=%p at start, naming PORT and the ports it takes, before listening", (raw) => {
    const run = spawnSync(process.execPath, [LOCAL_MAIN], { env: localEnv({ PORT: raw, HOST: "127.0.0.1" }), encoding: "utf8", timeout: 15_000 });
    expect(run.stderr.trim()).toBe(`Could not start: PORT must be an integer from 0 to 65535, got "${raw}"`);
    expect(run.status).toBe(1);
    expect(run.stdout).not.toContain("running locally");
  });
});

/**
 * `firebase use --add` with the alias `default` (the README's Deploy section) makes a real project
 * .firebaserc's default, which `npm start` runs as; the emulator export holds demo-chatify.json
 * alone. The built server in a copy of the project, nothing in the checkout changed.
 */
describe("npm start once .firebaserc's default names a real project", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "chatify-start-real-default-"));
    for (const part of ["firebase.json", "emulator-data", "public"]) cpSync(join(PROJECT_ROOT, part), join(dir, part), { recursive: true });
    mkdirSync(join(dir, "functions"));
    cpSync(join(PROJECT_ROOT, "functions", "lib"), join(dir, "functions", "lib"), { recursive: true });
    cpSync(join(PROJECT_ROOT, "functions", "package.json"), join(dir, "functions", "package.json"));
    symlinkSync(join(PROJECT_ROOT, "functions", "node_modules"), join(dir, "functions", "node_modules"));
    writeFileSync(join(dir, ".firebaserc"), JSON.stringify({ projects: { default: "chatify-prod-123" } }, null, 2));
  });
  afterAll(() => { rmSync(dir, { recursive: true, force: true }); });

  it("starts, seeded with the templates of the export's own namespace", async () => {
    const env: NodeJS.ProcessEnv = { ...process.env, PORT: "0" };
    delete env.GCLOUD_PROJECT;
    delete env.FIREBASE_DATABASE_EMULATOR_HOST;
    delete env.FIREBASE_AUTH_EMULATOR_HOST;
    const child = spawn(process.execPath, [join(dir, "functions", "lib", "local", "main.js")], { cwd: join(dir, "functions"), env, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    const result = await new Promise<string>((resolve) => {
      const timer = setTimeout(() => { resolve(`no start-up line within 15 s: ${output}`); }, 15_000);
      const take = (chunk: Buffer) => {
        output += chunk.toString();
        if (/API base URL http:\/\//.test(output)) {
          clearTimeout(timer);
          resolve("started");
        }
      };
      child.stdout.on("data", take);
      child.stderr.on("data", take);
      child.on("exit", (code) => {
        clearTimeout(timer);
        resolve(`exited with ${code}: ${output.trim()}`);
      });
    });
    if (child.exitCode === null) {
      const exited = new Promise((done) => child.once("exit", done));
      child.kill("SIGTERM");
      await exited;
    }
    expect(result).toBe("started");
    expect(output).toMatch(/seeded templates: .*friendly-assistant/);
    expect(output).toContain("/chatify-prod-123/us-central1/createSession");
  });
});

/**
 * Starts the built app's instance (lib/runtime/cloud-app.js) in a new process, as a deployed
 * function of chatify-prod-123 does, its params and secrets in `extra`: what it printed and
 * logged (logger.error goes to stderr), with "started" or "refused: <error>".
 */
function startDeployedInstance(extra: NodeJS.ProcessEnv): string {
  const app = join(__dirname, "..", "..", "lib", "runtime", "cloud-app.js");
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    GCLOUD_PROJECT: "chatify-prod-123",
    FIREBASE_CONFIG: JSON.stringify({ projectId: "chatify-prod-123", databaseURL: "https://chatify-prod-123-default-rtdb.firebaseio.com" }),
    ...extra,
  };
  delete env.FIREBASE_DATABASE_EMULATOR_HOST;
  if (extra.FUNCTIONS_EMULATOR === undefined) delete env.FUNCTIONS_EMULATOR;
  if (extra.DATABASE_INSTANCES === undefined) delete env.DATABASE_INSTANCES;
  const script = `require(${JSON.stringify(app)}).cloudInstance().then(() => console.log("started"), (error) => console.log(\`refused: \${error.name}: \${error.message}\`)).then(() => process.exit(0))`;
  const run = spawnSync(process.execPath, ["-e", script], { env, encoding: "utf8", timeout: 15_000 });
  if (run.status !== 0) throw new Error(`node exited ${run.status}: ${run.stderr}`);
  return `${run.stdout}${run.stderr}`;
}

/**
 * A deployed function with an emulator's URL in DATABASE_INSTANCES (say copied from a local
 * functions/.env) would send every database call to that loopback address; on the Functions
 * emulator the same value is what a local run of several instances is made of. The built app, as
 * deployed.
 */
describe("a function instance with an emulator's URL in DATABASE_INSTANCES", () => {
  const INSTANCES = "https://chatify-prod-123-default-rtdb.firebaseio.com,http://127.0.0.1:9000?ns=chatify-prod-123-sessions-2";
  const start = (extra: NodeJS.ProcessEnv) => startDeployedInstance({ DATABASE_INSTANCES: INSTANCES, ...extra });

  it("refuses to start deployed, naming DATABASE_INSTANCES and the emulator's URL", () => {
    expect(start({ OPENAI_API_KEY: "sk-test-key" })).toContain('refused: ConfigError: DATABASE_INSTANCES: "http://127.0.0.1:9000?ns=chatify-prod-123-sessions-2" is an emulator\'s URL');
  });

  it("starts on the Functions emulator", () => {
    expect(start({ FUNCTIONS_EMULATOR: "true" })).toContain("started");
  });
});

/** The OPENAI_API_KEY secret (defineSecret) reaches a deployed instance as this environment variable, read by the same resolveConfig. */
describe("a function instance whose OPENAI_API_KEY secret no HTTP header can carry", () => {
  it("refuses to start deployed, its log naming the character and not the key", () => {
    const said = startDeployedInstance({ OPENAI_API_KEY: "sk-s3cret\u200bkey\n" });
    expect(said).toContain("refused: ConfigError: OPENAI_API_KEY cannot be sent in an HTTP header: its character 10 of 13 is U+200B,");
    expect(said).toContain('"detail":"OPENAI_API_KEY cannot be sent in an HTTP header: its character 10 of 13 is U+200B,');
    expect(said).not.toContain("s3cret");
  });

  it("starts with the same key without that character, its trailing line break trimmed", () => {
    expect(startDeployedInstance({ OPENAI_API_KEY: "sk-s3cretkey\n" })).toContain("started");
  });
});
