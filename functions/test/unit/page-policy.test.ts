import { spawnSync } from "node:child_process";
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ERROR_CODES } from "../../src/http/error-codes";
import { defaultProjectId, PROJECT_ROOT, selectedProject } from "../../src/local/project-files";
import { databaseSection } from "../../src/page/deploy-databases";
import { deployCommand, predeployProject } from "../../src/page/deploy-project";
import { hostingPolicy, pageFiles, writePageFiles } from "../../src/page/page-files";
import { pageOrigins } from "../../src/page/page-policy";
import { defaultDatabaseUrl, parseDatabaseInstances } from "../../src/sharding/database-instances";

/** A policy's directives, each with its sources. */
function directives(policy: string): Map<string, string[]> {
  return new Map(policy.split(";").map((directive) => {
    const [name = "", ...sources] = directive.trim().split(/\s+/);
    return [name, sources];
  }));
}

const readJson = (path: string): unknown => JSON.parse(readFileSync(path, "utf8"));

describe("the page's policy", () => {
  it("is in the committed firebase.json, public/api-bases.json and public/error-codes.json as the generator writes them for .firebaserc's project", () => {
    // Fails after a change to the policy, to firebase.json's rewrites or to the API's error codes: run
    // `npm --prefix functions run page-files -- write` and commit what it writes.
    const stale = pageFiles(PROJECT_ROOT, defaultProjectId()).filter((file) => !file.current);
    expect(stale.map((file) => file.path)).toEqual([]);
  });

  const policy = hostingPolicy(PROJECT_ROOT, "my-project-123");
  const csp = directives(policy.headers["Content-Security-Policy"] ?? "");

  it("is a strict Content-Security-Policy: nothing by default, no inline script or eval, no wildcard but the database servers' WebSocket hosts, never framed", () => {
    expect(csp.get("default-src")).toEqual(["'none'"]);
    expect(csp.get("script-src")).toEqual(["'self'"]);
    expect(csp.get("object-src")).toEqual(["'none'"]);
    expect(csp.get("base-uri")).toEqual(["'none'"]);
    expect(csp.get("frame-ancestors")).toEqual(["'none'"]);
    for (const [name, sources] of csp) {
      for (const source of sources) {
        const wildcard = source.includes("*") && !(name === "connect-src" && source === "wss://*.firebaseio.com");
        expect({ name, source, wildcard, unsafe: source.startsWith("'unsafe-"), scheme: /^[a-z]+:$/.test(source) }).toMatchObject({ wildcard: false, unsafe: false, scheme: false });
      }
    }
  });

  it("connects to its own origin, the project's function URLs, Firebase Auth and its default database, named exactly, and to that database's servers", () => {
    expect(csp.get("connect-src")).toEqual([
      "'self'",
      "https://us-central1-my-project-123.cloudfunctions.net",
      // The Realtime Database SDK moves its WebSocket to the server its handshake names
      // (wss://s-dal5-nss-27.firebaseio.com in FirebaseExtended/emberfire#175).
      "wss://*.firebaseio.com",
      "https://identitytoolkit.googleapis.com",
      "https://securetoken.googleapis.com",
      // Without DATABASE_INSTANCES, sessions are on the default database, which createSession names.
      "https://my-project-123-default-rtdb.firebaseio.com",
      "wss://my-project-123-default-rtdb.firebaseio.com",
    ]);
    expect(policy.apiBasesFile).toEqual({ project: "my-project-123", apiBases: ["https://us-central1-my-project-123.cloudfunctions.net"] });
  });

  it("names firebase.json's Auth emulator for a demo- project only, which exists on the emulators alone", () => {
    const demo = directives(hostingPolicy(PROJECT_ROOT, "demo-chatify").headers["Content-Security-Policy"] ?? "");
    expect(demo.get("connect-src")).toEqual([...(csp.get("connect-src") ?? []).map((source) => source.replace("my-project-123", "demo-chatify")), "http://127.0.0.1:9099"]);
  });

  it("sets the other headers of a strict deployment", () => {
    expect(policy.headers).toMatchObject({
      "X-Frame-Options": "DENY",
      "X-Content-Type-Options": "nosniff",
      "Referrer-Policy": "strict-origin",
      "Cross-Origin-Opener-Policy": "same-origin",
    });
    expect(policy.headers["Permissions-Policy"]).toMatch(/^([a-z-]+=\(\))(, [a-z-]+=\(\))*$/);
    expect(policy.headers["Permissions-Policy"]).toContain("camera=()");
  });

  it("names each region's function URLs for the project given", () => {
    expect(pageOrigins("my-project-123", ["us-central1", "europe-west1", "us-central1"]).apiBases).toEqual([
      "https://europe-west1-my-project-123.cloudfunctions.net",
      "https://us-central1-my-project-123.cloudfunctions.net",
    ]);
  });

  it.each(["*", "evil.example", "demo-chatify; script-src *", "Demo-Chatify", "demo", "demo-chatify https://evil.example"])("refuses the project id %j", (projectId) => {
    expect(() => pageOrigins(projectId, ["us-central1"])).toThrow(/project id/);
  });

  it.each(["*", "us-central1; script-src *", "us-central1.evil.example"])("refuses the region %j", (region) => {
    expect(() => pageOrigins("demo-chatify", [region])).toThrow(/region/);
  });

  it("adds an Auth emulator to the services only", () => {
    const plain = pageOrigins("demo-chatify", ["us-central1"]);
    expect(pageOrigins("demo-chatify", ["us-central1"], { authEmulatorHost: "[::1]:9099" })).toEqual({ ...plain, services: [...plain.services, "http://[::1]:9099"] });
  });

  it.each(["127.0.0.1:9099; script-src *", "127.0.0.1:9099 https://evil.example", "127.0.0.1", "*:9099"])("refuses the Auth emulator host %j", (host) => {
    expect(() => pageOrigins("demo-chatify", ["us-central1"], { authEmulatorHost: host })).toThrow(/host:port/);
  });
});

describe("the page's files for a deploy", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "chatify-page-files-"));
    mkdirSync(join(dir, "public"));
    cpSync(join(PROJECT_ROOT, "firebase.json"), join(dir, "firebase.json"));
    cpSync(join(PROJECT_ROOT, "public", "api-bases.json"), join(dir, "public", "api-bases.json"));
    cpSync(join(PROJECT_ROOT, "public", "error-codes.json"), join(dir, "public", "error-codes.json"));
    cpSync(join(PROJECT_ROOT, "public", "app-check.json"), join(dir, "public", "app-check.json"));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it("are rewritten for the project deployed to, and nothing else in firebase.json changes", () => {
    const before = readJson(join(dir, "firebase.json")) as { hosting: Record<string, unknown> };
    expect(writePageFiles(dir, "my-project-123")).toEqual(["firebase.json", "public/api-bases.json"]);

    const after = readJson(join(dir, "firebase.json")) as { hosting: { headers: { headers: { key: string; value: string }[] }[] } };
    expect({ ...after, hosting: { ...after.hosting, headers: before.hosting.headers } }).toEqual(before);
    const policy = after.hosting.headers[0]?.headers.find((header) => header.key === "Content-Security-Policy")?.value ?? "";
    expect(directives(policy).get("connect-src")).toContain("https://us-central1-my-project-123.cloudfunctions.net");
    expect(policy).not.toContain("demo-chatify");
    expect(readJson(join(dir, "public", "api-bases.json"))).toEqual({ project: "my-project-123", apiBases: ["https://us-central1-my-project-123.cloudfunctions.net"] });

    expect(pageFiles(dir, "my-project-123").every((file) => file.current)).toBe(true);
    // Another project's origins; the error codes are the same for every project.
    expect(pageFiles(dir, "demo-chatify").filter((file) => !file.current).map((file) => file.path)).toEqual(["firebase.json", "public/api-bases.json"]);
    // Written once: a second run has nothing to write.
    expect(writePageFiles(dir, "my-project-123")).toEqual([]);
  });

  it("are written where missing", () => {
    rmSync(join(dir, "public", "api-bases.json"));
    rmSync(join(dir, "public", "error-codes.json"));
    expect(writePageFiles(dir, "demo-chatify")).toEqual(["public/api-bases.json", "public/error-codes.json"]);
    expect(existsSync(join(dir, "public", "api-bases.json"))).toBe(true);
    expect(readJson(join(dir, "public", "error-codes.json"))).toEqual({ errorCodes: ERROR_CODES });
  });

  it("are rewritten when the API's error codes change, whatever the project", () => {
    writeFileSync(join(dir, "public", "error-codes.json"), JSON.stringify({ errorCodes: { RATE_LIMITED: { status: 429, retryAfter: "wait" } } }));
    expect(pageFiles(dir, "demo-chatify").filter((file) => !file.current).map((file) => file.path)).toEqual(["public/error-codes.json"]);
    expect(writePageFiles(dir, "demo-chatify")).toEqual(["public/error-codes.json"]);
    expect(readJson(join(dir, "public", "error-codes.json"))).toEqual({ errorCodes: ERROR_CODES });
  });

  it("have the page attest itself with reCAPTCHA Enterprise when the project's env file sets a site key, its policy naming what that loads", () => {
    const key = "6LcAbCdEfGhIjKlMnOpQrStUvWxYz0123456789_";
    mkdirSync(join(dir, "functions"));
    writeFileSync(join(dir, "functions", ".env.my-project-123"), `OPENAI_TIMEOUT_MS=9000\nAPP_CHECK_RECAPTCHA_SITE_KEY="${key}"\n`);
    expect(writePageFiles(dir, "my-project-123")).toEqual(["firebase.json", "public/api-bases.json", "public/app-check.json"]);
    expect(readJson(join(dir, "public", "app-check.json"))).toEqual({ provider: "recaptcha-enterprise", siteKey: key });
    const csp = directives(hostingPolicy(dir, "my-project-123").headers["Content-Security-Policy"] ?? "");
    expect(csp.get("script-src")).toEqual(["'self'", "https://www.google.com/recaptcha/", "https://www.gstatic.com/recaptcha/"]);
    expect(csp.get("frame-src")).toEqual(["https://www.google.com/recaptcha/", "https://recaptcha.google.com/recaptcha/"]);
    expect(csp.get("connect-src")).toContain("https://content-firebaseappcheck.googleapis.com");
    // Another project, without a key: no App Check, no frame, nothing of Google's beyond Auth.
    const other = directives(hostingPolicy(dir, "other-project-1").headers["Content-Security-Policy"] ?? "");
    expect(other.get("frame-src")).toBeUndefined();
    expect(other.get("script-src")).toEqual(["'self'"]);
    expect(hostingPolicy(dir, "other-project-1").appCheckFile).toEqual({ provider: "none" });
    // functions/.env serves every project that sets none of its own.
    writeFileSync(join(dir, "functions", ".env"), `APP_CHECK_RECAPTCHA_SITE_KEY=${key}\n`);
    expect(hostingPolicy(dir, "other-project-1").appCheckFile).toEqual({ provider: "recaptcha-enterprise", siteKey: key });
  });

  it("give every database instance of DATABASE_INSTANCES the rules and its origins and servers in the policy, and the default database's without", () => {
    mkdirSync(join(dir, "functions"));
    writeFileSync(join(dir, "functions", ".env.my-project-123"), "DATABASE_INSTANCES=https://my-project-123-default-rtdb.firebaseio.com,https://my-project-123-eu.europe-west1.firebasedatabase.app/\n");
    expect(writePageFiles(dir, "my-project-123")).toEqual(["firebase.json", "public/api-bases.json"]);
    const written = readJson(join(dir, "firebase.json")) as { database: unknown };
    expect(written.database).toEqual([
      { instance: "my-project-123-default-rtdb", rules: "database.rules.json" },
      { instance: "my-project-123-eu", rules: "database.rules.json" },
    ]);
    const connect = directives(hostingPolicy(dir, "my-project-123").headers["Content-Security-Policy"] ?? "").get("connect-src");
    expect(connect?.filter((source) => /firebaseio|firebasedatabase/.test(source))).toEqual([
      // The servers the SDK's handshake may move the WebSocket to: every firebaseio.com host, and the region's hosts.
      "wss://*.firebaseio.com",
      "wss://*.europe-west1.firebasedatabase.app",
      "https://my-project-123-default-rtdb.firebaseio.com",
      "wss://my-project-123-default-rtdb.firebaseio.com",
      "https://my-project-123-eu.europe-west1.firebasedatabase.app",
      "wss://my-project-123-eu.europe-west1.firebasedatabase.app",
    ]);
    // A project without the param: the one rules entry, and its default database, where createSession places sessions.
    expect(writePageFiles(dir, "other-project-1")).toContain("firebase.json");
    expect((readJson(join(dir, "firebase.json")) as { database: unknown }).database).toEqual({ rules: "database.rules.json" });
    expect(directives(hostingPolicy(dir, "other-project-1").headers["Content-Security-Policy"] ?? "").get("connect-src")?.filter((source) => source.includes("firebaseio.com"))).toEqual([
      "wss://*.firebaseio.com",
      "https://other-project-1-default-rtdb.firebaseio.com",
      "wss://other-project-1-default-rtdb.firebaseio.com",
    ]);
    // One instance listed, not the default database: named, so that the deploy guards it and not the default one.
    writeFileSync(join(dir, "functions", ".env.my-project-123"), "DATABASE_INSTANCES=https://my-project-123-eu.europe-west1.firebasedatabase.app\n");
    writePageFiles(dir, "my-project-123");
    expect((readJson(join(dir, "firebase.json")) as { database: unknown }).database).toEqual([{ instance: "my-project-123-eu", rules: "database.rules.json" }]);
    writeFileSync(join(dir, "functions", ".env.my-project-123"), "DATABASE_INSTANCES=https://evil.example.com\n");
    expect(() => hostingPolicy(dir, "my-project-123")).toThrow(/DATABASE_INSTANCES/);
  });

  it("tell the page to send each message a limited-use token when the project's functions consume the message calls' App Check tokens", () => {
    const key = "6LcAbCdEfGhIjKlMnOpQrStUvWxYz0123456789_";
    mkdirSync(join(dir, "functions"));
    const deployedWith = (params: string) => {
      writeFileSync(join(dir, "functions", ".env.my-project-123"), `APP_CHECK_RECAPTCHA_SITE_KEY=${key}\n${params}`);
    };
    const appCheckFile = () => hostingPolicy(dir, "my-project-123").appCheckFile;
    deployedWith("REQUIRE_APP_CHECK=true\nAPP_CHECK_REPLAY_PROTECTION=true\n");
    expect(writePageFiles(dir, "my-project-123")).toContain("public/app-check.json");
    expect(readJson(join(dir, "public", "app-check.json"))).toEqual({ provider: "recaptcha-enterprise", siteKey: key, replayProtection: true });
    // Read as the instances read the params: 1 is true.
    deployedWith("REQUIRE_APP_CHECK=1\nAPP_CHECK_REPLAY_PROTECTION= TRUE\n");
    expect(appCheckFile()).toEqual({ provider: "recaptcha-enterprise", siteKey: key, replayProtection: true });
    // Replay protection off, or without App Check required (nothing consumed then): a standard token for every call.
    for (const params of ["REQUIRE_APP_CHECK=true\n", "REQUIRE_APP_CHECK=true\nAPP_CHECK_REPLAY_PROTECTION=false\n", "APP_CHECK_REPLAY_PROTECTION=true\n"]) {
      deployedWith(params);
      expect(appCheckFile()).toEqual({ provider: "recaptcha-enterprise", siteKey: key });
    }
    // The file written for replay protection is stale once the functions no longer consume, and the other way round.
    expect(pageFiles(dir, "my-project-123").filter((file) => !file.current).map((file) => file.path)).toEqual(["public/app-check.json"]);
    // A value the functions would refuse at start is refused here too.
    deployedWith("REQUIRE_APP_CHECK=true\nAPP_CHECK_REPLAY_PROTECTION=yes\n");
    expect(() => appCheckFile()).toThrow(/APP_CHECK_REPLAY_PROTECTION must be true or false/);
  });

  it("refuse a site key that is not one, rather than write it into the page's files", () => {
    mkdirSync(join(dir, "functions"));
    writeFileSync(join(dir, "functions", ".env.my-project-123"), 'APP_CHECK_RECAPTCHA_SITE_KEY=abc"; script-src *\n');
    expect(() => hostingPolicy(dir, "my-project-123")).toThrow(/not a reCAPTCHA site key/);
  });

  const cli = join(PROJECT_ROOT, "functions", "lib", "page", "page-files-cli.js");
  const check = (project: string, alias?: string) =>
    spawnSync(process.execPath, [cli, "check"], { env: { ...process.env, GCLOUD_PROJECT: project, ...(alias === undefined ? {} : { CHATIFY_DEPLOY_ALIAS: alias }) }, encoding: "utf8" });

  it("are checked by Hosting's predeploy against the project the Firebase CLI deploys to (GCLOUD_PROJECT)", () => {
    expect(existsSync(cli)).toBe(true); // built by `npm run build`, which `npm test` runs first
    const refused = check("my-project-123");
    expect(refused.status).toBe(1);
    expect(refused.stderr).toContain("not written for my-project-123");
    expect(refused.stderr).toContain("npm run deploy -- --project my-project-123");
    expect(check(defaultProjectId()).status).toBe(0);
    // By the alias `npm run deploy` hands down (.firebaserc's `default` names demo-chatify).
    expect(check(defaultProjectId(), "default").status).toBe(0);
    expect(check(defaultProjectId(), "prod").stderr).toContain(`CHATIFY_DEPLOY_ALIAS=prod is not an alias of ${defaultProjectId()}`);
  });

  it("are written by `npm run deploy` for the project it deploys to, then `firebase deploy` runs for that project", () => {
    // A stand-in `firebase` on PATH that records its arguments; the project is .firebaserc's, so
    // the committed files are already right and nothing is written into the working tree.
    const bin = join(dir, "bin");
    mkdirSync(bin);
    const log = join(dir, "firebase-calls.log");
    writeFileSync(join(bin, "firebase"), `#!/bin/sh\necho "$@" "alias=$CHATIFY_DEPLOY_ALIAS" >> "${log}"\nif [ "$1" = use ]; then echo '{"status":"success","result":"${defaultProjectId()}"}'; fi\n`);
    chmodSync(join(bin, "firebase"), 0o755);
    const deploy = (...args: string[]) => spawnSync(process.execPath, [cli, "deploy", ...args], { env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? ""}` }, encoding: "utf8" });

    expect(deploy().status).toBe(0);
    expect(deploy("--project", defaultProjectId(), "--force").status).toBe(0);
    expect(deploy("--only", "hosting", `--project=${defaultProjectId()}`).stdout).toContain(`written for ${defaultProjectId()}`);
    // By .firebaserc's alias: written for the id it names, the CLI given the alias, and the hooks told it.
    expect(deploy("--project", "default").stdout).toContain(`written for ${defaultProjectId()} (alias default)`);
    expect(readFileSync(log, "utf8").trim().split("\n")).toEqual([
      "use --json alias=",
      `deploy --only functions,database,hosting --project ${defaultProjectId()} alias=`,
      `deploy --only functions,database,hosting --project ${defaultProjectId()} --force alias=`,
      `deploy --project ${defaultProjectId()} --only hosting alias=`,
      "deploy --only functions,database,hosting --project default alias=default",
    ]);
  });
});

/**
 * A deploy's project named as the Firebase CLI names it (firebase-tools 15.34 lib/command.js
 * `applyRC`): a .firebaserc alias stands for the id it names, and the functions get
 * `functions/.env.<alias>` too; the page's files are written and checked for that id, from that file.
 */
describe("the project of a deploy, named by a .firebaserc alias", () => {
  const PROD = "my-prod-123";
  const INSTANCES = "DATABASE_INSTANCES=https://my-prod-123-default-rtdb.firebaseio.com,https://my-prod-123-eu.europe-west1.firebasedatabase.app\n";
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "chatify-deploy-alias-"));
    mkdirSync(join(dir, "public"));
    mkdirSync(join(dir, "functions"));
    cpSync(join(PROJECT_ROOT, "firebase.json"), join(dir, "firebase.json"));
    writeFileSync(join(dir, ".firebaserc"), JSON.stringify({ projects: { default: "demo-chatify", prod: PROD } }));
  });
  afterEach(() => { rmSync(dir, { recursive: true, force: true }); });
  const notAsked = (): string => { throw new Error("`firebase use` asked, though the deploy names its project"); };

  it("is the id the alias names, given to the CLI as it came; the page's files are written for that id from the alias's file", () => {
    writeFileSync(join(dir, "functions", ".env.prod"), INSTANCES);
    const command = deployCommand(dir, ["--project", "prod", "--force"], notAsked);
    expect(command).toEqual({ project: { projectId: PROD, projectAlias: "prod" }, args: ["--only", "functions,database,hosting", "--project", "prod", "--force"], env: { CHATIFY_DEPLOY_ALIAS: "prod" } });
    writePageFiles(dir, command.project.projectId, command.project.projectAlias);
    expect(readJson(join(dir, "public", "api-bases.json"))).toEqual({ project: PROD, apiBases: [`https://us-central1-${PROD}.cloudfunctions.net`] });
    expect((readJson(join(dir, "firebase.json")) as { database: unknown }).database).toEqual([
      { instance: "my-prod-123-default-rtdb", rules: "database.rules.json" },
      { instance: "my-prod-123-eu", rules: "database.rules.json" },
    ]);
    // By its id, the deploy has no alias, and the CLI reads no alias's file.
    expect(deployCommand(dir, [`--project=${PROD}`], notAsked)).toEqual({ project: { projectId: PROD }, args: ["--only", "functions,database,hosting", "--project", PROD], env: { CHATIFY_DEPLOY_ALIAS: "" } });
  });

  it("without --project, is the active project by the alias naming it that has an env file, named so to the CLI; several are refused", () => {
    expect(deployCommand(dir, [], () => PROD).args).toEqual(["--only", "functions,database,hosting", "--project", PROD]);
    writeFileSync(join(dir, "functions", ".env.prod"), INSTANCES);
    expect(deployCommand(dir, [], () => PROD)).toEqual({ project: { projectId: PROD, projectAlias: "prod" }, args: ["--only", "functions,database,hosting", "--project", "prod"], env: { CHATIFY_DEPLOY_ALIAS: "prod" } });
    writeFileSync(join(dir, ".firebaserc"), JSON.stringify({ projects: { prod: PROD, live: PROD } }));
    writeFileSync(join(dir, "functions", ".env.live"), INSTANCES);
    expect(() => deployCommand(dir, [], () => PROD)).toThrow(`.firebaserc names ${PROD} by prod and live, each with a functions/.env.<alias>`);
  });

  it("without a name, is .firebaserc's only alias, else its default, as the CLI's", () => {
    expect(selectedProject(undefined, dir)).toEqual({ projectId: "demo-chatify", projectAlias: "default" });
    writeFileSync(join(dir, ".firebaserc"), JSON.stringify({ projects: { prod: PROD } }));
    expect(selectedProject(undefined, dir)).toEqual({ projectId: PROD, projectAlias: "prod" });
    writeFileSync(join(dir, ".firebaserc"), JSON.stringify({ projects: { prod: PROD, staging: "my-staging-123" } }));
    expect(() => selectedProject(undefined, dir)).toThrow(/no project named/);
  });

  it("is checked by Hosting's predeploy by the alias `npm run deploy` hands down, else by the alias with an env file", () => {
    writeFileSync(join(dir, "functions", ".env.prod"), INSTANCES);
    writePageFiles(dir, PROD, "prod");
    expect(predeployProject(dir, PROD, "prod")).toEqual({ projectId: PROD, projectAlias: "prod" });
    expect(predeployProject(dir, PROD, undefined)).toEqual({ projectId: PROD, projectAlias: "prod" });
    expect(pageFiles(dir, PROD, "prod").every((file) => file.current)).toBe(true);
    // Deployed by the id, the functions get no DATABASE_INSTANCES: the files written by the alias are not for it.
    expect(predeployProject(dir, PROD, "")).toEqual({ projectId: PROD });
    expect(pageFiles(dir, PROD).filter((file) => !file.current).map((file) => file.path)).toEqual(["firebase.json"]);
    expect(() => predeployProject(dir, PROD, "default")).toThrow(`CHATIFY_DEPLOY_ALIAS=default is not an alias of ${PROD}`);
  });
});

/**
 * firebase.json's `database` (the instances the rules are deployed to) and the page's policy name
 * DATABASE_INSTANCES as the Firebase CLI gives it to the functions of the same deploy, from the
 * same env files (firebase-tools 15.34 lib/functions/env.js `loadUserEnvs`, a development
 * dependency): otherwise the functions place sessions on instances the deploy leaves without the
 * rules, or put the rules on instances they do not use.
 */
describe("the database rules of a deploy, for the DATABASE_INSTANCES its functions get", () => {
  const PROJECT = "chatify-prod-123";
  const TWO = "https://chatify-prod-123-default-rtdb.firebaseio.com,https://chatify-prod-123-sessions-2.firebaseio.com";
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- the CLI's own reading, for comparison; it has no types of its own to import
  const cliEnv = require("firebase-tools/lib/functions/env") as {
    loadUserEnvs(opts: { functionsSource: string; projectId: string; projectAlias?: string; projectDir: string; isEmulator?: boolean }): Record<string, string>;
  };
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "chatify-deploy-env-"));
    mkdirSync(join(dir, "public"));
    mkdirSync(join(dir, "functions"));
    cpSync(join(PROJECT_ROOT, "firebase.json"), join(dir, "firebase.json"));
  });
  afterEach(() => { rmSync(dir, { recursive: true, force: true }); });

  it.each([
    ["with `export` before the name", { ".env": "", [`.env.${PROJECT}`]: `export DATABASE_INSTANCES=${TWO}\n` }],
    ["with a comment after the value", { ".env": "", [`.env.${PROJECT}`]: `DATABASE_INSTANCES=${TWO} # two instances\n` }],
    ["when the project's file empties the shared value", { ".env": `DATABASE_INSTANCES=${TWO}\n`, [`.env.${PROJECT}`]: "DATABASE_INSTANCES=\n" }],
    ["when the project's file sets it over the shared one", { ".env": "DATABASE_INSTANCES=https://chatify-prod-123-default-rtdb.firebaseio.com\n", [`.env.${PROJECT}`]: `DATABASE_INSTANCES="${TWO}"\n` }],
    ["when a name is given twice (the last wins)", { ".env": "", [`.env.${PROJECT}`]: `DATABASE_INSTANCES=https://old-instance.firebaseio.com\nDATABASE_INSTANCES=${TWO}\n` }],
    ["and not from .env.local, the Functions emulator's alone", { ".env": `DATABASE_INSTANCES=${TWO}\n`, ".env.local": "DATABASE_INSTANCES=\n" }],
  ])("names the instances the functions get %s", (_case, files: Record<string, string>) => {
    for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, "functions", name), text);
    const functions = parseDatabaseInstances(cliEnv.loadUserEnvs({ functionsSource: join(dir, "functions"), projectId: PROJECT, projectDir: dir }).DATABASE_INSTANCES ?? "");
    if ("problem" in functions) throw new Error(functions.problem);
    const firebaseJson = pageFiles(dir, PROJECT).find((file) => file.path === "firebase.json");
    expect((firebaseJson?.expected as { database: unknown } | undefined)?.database).toEqual(databaseSection(functions.urls));
    const connect = directives(hostingPolicy(dir, PROJECT).headers["Content-Security-Policy"] ?? "").get("connect-src") ?? [];
    // None listed: the default database, which the functions then use; then the hosts its servers may move a client to.
    const listened = functions.urls.length > 0 ? functions.urls : [defaultDatabaseUrl(PROJECT)];
    expect(connect.filter((origin) => origin.includes("firebaseio.com"))).toEqual(["wss://*.firebaseio.com", ...listened.flatMap((url) => [url, url.replace("https:", "wss:")])]);
  });

  it("names the instances the functions get from the alias's file, the deploy naming the project by its .firebaserc alias", () => {
    writeFileSync(join(dir, ".firebaserc"), JSON.stringify({ projects: { prod: PROJECT } }));
    writeFileSync(join(dir, "functions", ".env.prod"), `DATABASE_INSTANCES=${TWO}\n`);
    const { projectId, projectAlias = "" } = selectedProject("prod", dir);
    const functions = parseDatabaseInstances(cliEnv.loadUserEnvs({ functionsSource: join(dir, "functions"), projectId, projectAlias, projectDir: dir }).DATABASE_INSTANCES ?? "");
    if ("problem" in functions) throw new Error(functions.problem);
    expect(functions.urls).toHaveLength(2);
    const firebaseJson = pageFiles(dir, projectId, projectAlias).find((file) => file.path === "firebase.json");
    expect((firebaseJson?.expected as { database: unknown } | undefined)?.database).toEqual(databaseSection(functions.urls));
    const connect = directives(hostingPolicy(dir, projectId, projectAlias).headers["Content-Security-Policy"] ?? "").get("connect-src") ?? [];
    expect(connect.filter((origin) => origin.includes("firebaseio.com") && !origin.includes("*"))).toEqual(functions.urls.flatMap((url) => [url, url.replace("https:", "wss:")]));
  });

  // An emulator's URL is for the emulators and npm start: deployed, the functions would send every database call there, and the page's policy would name it.
  it.each([
    ["the emulator alone", `http://127.0.0.1:9000?ns=${PROJECT}-default-rtdb`],
    ["an emulator beside a deployed instance", `https://${PROJECT}-default-rtdb.firebaseio.com,http://localhost:9000?ns=${PROJECT}-sessions-2`],
  ])("are refused for a real project whose DATABASE_INSTANCES names an emulator, naming the param: %s", (_case, value) => {
    writeFileSync(join(dir, "functions", ".env"), `DATABASE_INSTANCES=${value}\n`);
    expect(() => pageFiles(dir, PROJECT)).toThrow(new RegExp(`^DATABASE_INSTANCES for ${PROJECT}: "http://[^"]+" is an emulator's URL`));
    expect(() => writePageFiles(dir, PROJECT)).toThrow(/DATABASE_INSTANCES/);
    expect(readJson(join(dir, "firebase.json"))).toEqual(readJson(join(PROJECT_ROOT, "firebase.json")));
  });

  it("name an emulator of DATABASE_INSTANCES for a demo- project, which runs on the emulators alone", () => {
    writeFileSync(join(dir, "functions", ".env"), "DATABASE_INSTANCES=http://127.0.0.1:9000?ns=demo-chatify,http://127.0.0.1:9000?ns=demo-chatify-2\n");
    const connect = directives(hostingPolicy(dir, "demo-chatify").headers["Content-Security-Policy"] ?? "").get("connect-src") ?? [];
    expect(connect).toEqual(expect.arrayContaining(["http://127.0.0.1:9000", "ws://127.0.0.1:9000"]));
  });
});

/**
 * A deploy knob left blank in the functions' env files (`MAX_INSTANCES=`) is deployed by the
 * Firebase CLI as 0 (firebase-tools 15.34 `+""`), which the platform reads as unset, while an
 * instance refuses it at start (config.ts blankDeployKnobs). The page's files, which `npm run
 * deploy` writes and Hosting's predeploy checks before anything is uploaded, are refused for it.
 */
describe("the page's files for a deploy whose env files leave a deploy knob blank", () => {
  const PROJECT = "chatify-prod-123";
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "chatify-deploy-knobs-"));
    mkdirSync(join(dir, "public"));
    mkdirSync(join(dir, "functions"));
    cpSync(join(PROJECT_ROOT, "firebase.json"), join(dir, "firebase.json"));
    writeFileSync(join(dir, ".firebaserc"), JSON.stringify({ projects: { prod: PROJECT } }));
  });
  afterEach(() => { rmSync(dir, { recursive: true, force: true }); });

  const writeFiles = (files: Record<string, string>): void => {
    for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, "functions", name), text);
  };

  it.each([
    ["left blank in .env", { ".env": "MAX_INSTANCES=\n" }, "MAX_INSTANCES is"],
    ["emptied by the project's file over .env's value", { ".env": "MAX_INSTANCES=20\n", [`.env.${PROJECT}`]: "MAX_INSTANCES=\n" }, "MAX_INSTANCES is"],
    ["quoted blank, and a second knob bare", { [`.env.${PROJECT}`]: 'TIMEOUT_SECONDS=" "\nMEMORY_MIB=\n' }, "MEMORY_MIB and TIMEOUT_SECONDS are"],
  ])("are refused, naming the knob, when it is %s", (_case, files: Record<string, string>, named) => {
    writeFiles(files);
    const error = `${named} set but blank for a deploy of ${PROJECT} (functions/.env or .env.${PROJECT}): the Firebase CLI deploys a blank deploy knob as 0`;
    expect(() => pageFiles(dir, PROJECT)).toThrow(error);
    expect(() => writePageFiles(dir, PROJECT)).toThrow(error);
    expect(readJson(join(dir, "firebase.json"))).toEqual(readJson(join(PROJECT_ROOT, "firebase.json")));
  });

  it("are refused, naming the alias's file, when the deploy goes by an alias whose file leaves a knob blank", () => {
    writeFiles({ ".env": "CONCURRENCY=40\n", ".env.prod": "CONCURRENCY=\n" });
    expect(() => pageFiles(dir, PROJECT, "prod")).toThrow(`CONCURRENCY is set but blank for a deploy of ${PROJECT} (functions/.env, .env.${PROJECT} or .env.prod): `);
    // By the id, the alias's file is not read: the knob has its value.
    expect(() => pageFiles(dir, PROJECT)).not.toThrow();
  });

  it("are written when every knob has a value, and another param is emptied by the project's file", () => {
    writeFiles({ ".env": "MAX_INSTANCES=20\nDATABASE_INSTANCES=https://chatify-prod-123-default-rtdb.firebaseio.com\n", [`.env.${PROJECT}`]: "MAX_INSTANCES=10\nDATABASE_INSTANCES=\nOPENAI_BASE_URL=\n" });
    expect(writePageFiles(dir, PROJECT)).toContain("firebase.json");
    expect((readJson(join(dir, "firebase.json")) as { database: unknown }).database).toEqual(databaseSection([]));
  });
});
