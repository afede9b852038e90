import { spawnSync } from "node:child_process";
import { join } from "node:path";
import type { Request } from "firebase-functions/v2/https";
import type { Response } from "express";
import { ConfigError, resolveConfig } from "../../src/config";
import { cloudHandler } from "../../src/http/cloud-adapter";
import { silentLog } from "../../src/log/log";
import { composeInstance } from "../../src/runtime/instance";
import { checkConnectionBudget, maintenanceRunMs, timeBudget } from "../../src/runtime/time-budget";
import { MemoryStore } from "../../src/store/memory-store";
import { NO_TOKENS } from "../support/service-env";

describe("the time budget checked at instance start", () => {
  it("shares the deployed 60 s between the model, the database and a keyed repeat's wait", () => {
    // Defaults: 2 attempts x 15 s + 1 wait x 5 s of model time, 4 x 5 s of database time, 1 s margin; a claim leased for the 60 s.
    expect(timeBudget(resolveConfig({}))).toEqual({ modelMs: 35_000, leaseMs: 60_000, keyWaitMs: 4_000 });
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
});

describe("npm start with a bad param", () => {
  it("fails at start with the param's name and why, before listening", () => {
    const main = join(__dirname, "..", "..", "lib", "local", "main.js");
    const env: NodeJS.ProcessEnv = { ...process.env, PORT: "0", OPENAI_MAX_RETRIES: "many" };
    delete env.FIREBASE_DATABASE_EMULATOR_HOST;
    const run = spawnSync(process.execPath, [main], { env, encoding: "utf8", timeout: 15_000 });
    expect(run.status).toBe(1);
    expect(run.stderr).toContain('OPENAI_MAX_RETRIES must be an integer from 0 to 5, got "many"');
    expect(run.stdout).not.toContain("running locally");
  });
});
