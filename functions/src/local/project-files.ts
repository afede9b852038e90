import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { z } from "zod";
import { appCheckParams, blankDeployKnobs, messageTokensConsumed } from "../config";
import { DEFAULT_FUNCTION_REGION, pageOrigins, pagePolicy } from "../page/page-policy";
import { instanceName } from "../sharding/database-instances";
import { templateSchema, type Template } from "../store/records";
import { deployedEnv } from "./functions-env";
import type { StaticSite } from "./static-site";

/** The repository root: the nearest folder above this file that holds firebase.json. */
export const PROJECT_ROOT = findRoot(__dirname);

function findRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, "firebase.json"))) return dir;
    if (dirname(dir) === dir) throw new Error(`no firebase.json above ${from}`);
  }
}

function readJson(relativePath: string, root = PROJECT_ROOT): unknown {
  return JSON.parse(readFileSync(join(root, relativePath), "utf8"));
}

/**
 * The default project of `.firebaserc`: `demo-chatify` as committed, a `demo-` id, so nothing
 * reaches a real project (`firebase use --add` with the alias `default` names a real one instead).
 */
export function defaultProjectId(root = PROJECT_ROOT): string {
  const rc = z.object({ projects: z.object({ default: z.string().min(1) }) }).parse(readJson(".firebaserc", root));
  return rc.projects.default;
}

/** .firebaserc's project aliases (`projects`: alias to project id); none without the file. */
export function projectAliases(root = PROJECT_ROOT): Readonly<Record<string, string>> {
  if (!existsSync(join(root, ".firebaserc"))) return {};
  return z.object({ projects: z.record(z.string(), z.string()).default({}) }).parse(readJson(".firebaserc", root)).projects;
}

/**
 * A project a deploy goes to, as the Firebase CLI names it: its id, and the .firebaserc alias the
 * deploy was given for it, whose `functions/.env.<alias>` the functions get too (functions-env.ts).
 */
export interface DeployProject {
  readonly projectId: string;
  readonly projectAlias?: string | undefined;
}

/**
 * The project the Firebase CLI selects for `name` (a --project, or the active project of `firebase
 * use`), as firebase-tools 15.34 lib/command.js `applyRC` does: a name that is an alias in
 * .firebaserc stands for the id it names, and is the deploy's alias; any other name is an id, with
 * no alias. Without a name: .firebaserc's only alias, else its `default`.
 */
export function selectedProject(name: string | undefined, root = PROJECT_ROOT): DeployProject {
  const aliases = projectAliases(root);
  const named = (alias: string): string | undefined => (Object.hasOwn(aliases, alias) && aliases[alias] ? aliases[alias] : undefined);
  if (name) {
    const projectId = named(name);
    return projectId === undefined ? { projectId: name } : { projectId, projectAlias: name };
  }
  const keys = Object.keys(aliases);
  const alias = keys.length === 1 ? keys[0] : named("default") === undefined ? undefined : "default";
  const projectId = alias === undefined ? undefined : named(alias);
  if (alias === undefined || projectId === undefined) throw new Error(`no project named, and ${join(root, ".firebaserc")} names none by default: name one (an id, or an alias of .firebaserc)`);
  return { projectId, projectAlias: alias };
}

/**
 * The database namespace the Functions emulator gives a `demo-` project's functions
 * (databaseURL `https://{projectId}.firebaseio.com`): the local server uses the same one,
 * and the emulator export stores the templates under that name.
 */
export function databaseNamespace(projectId: string): string {
  return projectId;
}

/** Where the emulator export keeps each database namespace's data, as `{namespace}.json`. */
const DATABASE_EXPORT = join("emulator-data", "database_export");

/**
 * The templates of the emulator export that `firebase emulators:start --import` loads too: the
 * namespace the export holds (`demo-chatify.json`), whatever project is active, since `firebase
 * use --add` may make a real project .firebaserc's `default`, and the export names none but its
 * own. An export of several namespaces: that of .firebaserc's default project.
 */
export function seedTemplates(root = PROJECT_ROOT): Record<string, Template> {
  const dir = join(root, DATABASE_EXPORT);
  const files = readdirSync(dir).filter((name) => name.endsWith(".json")).sort();
  const file = files.length === 1 ? files[0] : files.find((name) => name === `${databaseNamespace(defaultProjectId(root))}.json`);
  if (file === undefined) {
    throw new Error(`${dir} holds ${files.length === 0 ? "no namespace" : `${files.join(", ")}, none of .firebaserc's default project`}: the templates are seeded from one namespace's file`);
  }
  const data = z.object({ templates: z.record(z.string(), templateSchema) }).parse(readJson(join(DATABASE_EXPORT, file), root));
  return data.templates;
}

export interface HostingRewrite {
  readonly source: string;
  readonly functionId: string;
  /** Where Hosting sends it: firebase.json's, else Hosting's default. */
  readonly region: string;
}

const hostingSchema = z.object({
  public: z.string().min(1),
  ignore: z.array(z.string()).default([]),
  rewrites: z.array(z.object({
    source: z.string(),
    function: z.union([z.string(), z.object({ functionId: z.string(), region: z.string().optional() })]),
  })),
});

function hostingConfig(root = PROJECT_ROOT): z.infer<typeof hostingSchema> {
  return z.object({ hosting: hostingSchema }).parse(readJson("firebase.json", root)).hosting;
}

/** The Hosting rewrites of `firebase.json` (under `root`), in order: the local server routes exactly as Hosting does. */
export function hostingRewrites(root = PROJECT_ROOT): HostingRewrite[] {
  return hostingConfig(root).rewrites.map((entry) => ({
    source: entry.source,
    functionId: typeof entry.function === "string" ? entry.function : entry.function.functionId,
    region: (typeof entry.function === "string" ? undefined : entry.function.region) ?? DEFAULT_FUNCTION_REGION,
  }));
}

/** The regions the page's API lives in: those firebase.json's rewrites send it to. */
export function functionRegions(root = PROJECT_ROOT): string[] {
  return [...new Set(hostingRewrites(root).map((rewrite) => rewrite.region))];
}

/** host:port of the Auth emulator of firebase.json's `emulators` section, if it names one. */
export function configuredAuthEmulator(root = PROJECT_ROOT): string | undefined {
  const auth = z.object({ emulators: z.object({ auth: z.object({ host: z.string(), port: z.number().int() }).optional() }).optional() }).parse(readJson("firebase.json", root)).emulators?.auth;
  return auth === undefined ? undefined : `${auth.host}:${auth.port}`;
}

/** Where a deployment names the reCAPTCHA Enterprise site key the page attests with (not a param: the functions never read it). */
export const APP_CHECK_SITE_KEY_VARIABLE = "APP_CHECK_RECAPTCHA_SITE_KEY";

/**
 * The reCAPTCHA Enterprise site key set for `projectId` in `functions/.env`,
 * `functions/.env.<projectId>` or, deployed by an alias, `functions/.env.<projectAlias>` (the files
 * where a deployment sets its params), if any: with it the page gets App Check tokens and sends them.
 */
export function configuredAppCheckSiteKey(root: string, projectId: string, projectAlias?: string): string | undefined {
  return configuredValue(root, projectId, APP_CHECK_SITE_KEY_VARIABLE, projectAlias);
}

/**
 * Whether a deploy of `projectId` (by `projectAlias`, if given) has its message calls consume
 * their App Check token, as its env files set REQUIRE_APP_CHECK and APP_CHECK_REPLAY_PROTECTION
 * (read as its instances read them): its page must then send each message a limited-use token.
 */
export function configuredReplayProtection(root: string, projectId: string, projectAlias?: string): boolean {
  return messageTokensConsumed(appCheckParams(deployedEnv(join(root, "functions"), projectId, projectAlias)));
}

/**
 * Refuses a deploy of `projectId` (by `projectAlias`, if given) whose env files leave a deploy knob
 * set but blank (config.ts blankDeployKnobs: the CLI would deploy it as 0), naming it: checked with
 * the page's files, before `firebase deploy` runs and again in Hosting's predeploy, so that nothing
 * is uploaded. Another param left blank keeps its meaning (empty, or its default).
 */
export function checkDeployKnobs(root: string, projectId: string, projectAlias?: string): void {
  const files = projectAlias === undefined ? `.env or .env.${projectId}` : `.env, .env.${projectId} or .env.${projectAlias}`;
  const blank = blankDeployKnobs(deployedEnv(join(root, "functions"), projectId, projectAlias), ` for a deploy of ${projectId} (functions/${files})`);
  if (blank !== undefined) throw new Error(blank);
}

/**
 * The value `name` is set to for a deploy of `projectId` (by `projectAlias`, if given) by the env
 * files of `root`'s functions, read as the Firebase CLI reads them (functions-env.ts: the id's or
 * the alias's file over `.env`), so that a deploy's files follow the values its functions get;
 * undefined when none sets it, or the last to set it left it empty.
 */
export function configuredValue(root: string, projectId: string, name: string, projectAlias?: string): string | undefined {
  const env = deployedEnv(join(root, "functions"), projectId, projectAlias);
  const value = Object.hasOwn(env, name) ? env[name] : undefined;
  return value === "" ? undefined : value;
}

/** The database the local server stores in, as the page is told it (init.js) and allowed to reach it (its policy). */
export interface LocalDatabase {
  /** host:port of the server the home instance is on: the page's SDK connects there. */
  readonly host: string;
  /** The home instance's namespace: init.js's databaseURL names it. */
  readonly namespace: string;
  /** Every instance of DATABASE_INSTANCES, as the emulator URL the server reaches it at; absent: the one above alone. */
  readonly instances?: readonly string[];
}

/**
 * Where the local server's page finds its database: none with the embedded store (no
 * `emulatorHost`); the project's namespace on `emulatorHost` without `instances` (normalised
 * DATABASE_INSTANCES); else the home instance, the list's first, because every per-user record
 * (connections, which the People panel listens to) is kept there, and any instance may hold a
 * session, so the policy names them all.
 */
export function localDatabase(projectId: string, emulatorHost: string | undefined, instances: readonly string[]): LocalDatabase | undefined {
  if (!emulatorHost) return undefined;
  const served = instances.map((url) => servedUrl(url, emulatorHost));
  const home = served[0];
  if (home === undefined) return { host: emulatorHost, namespace: databaseNamespace(projectId) };
  const parsed = new URL(home);
  // A normalised URL drops the default port; the page's SDK (useEmulator) needs one.
  return { host: `${parsed.hostname}:${parsed.port || "80"}`, namespace: instanceName(home), instances: served };
}

/**
 * Where the local server reaches the instance `url`: an emulator's URL as given (instanceDatabases
 * honours it), a deployed instance's name as a namespace of `emulatorHost`, where firebase-admin
 * sends every other URL while FIREBASE_DATABASE_EMULATOR_HOST is set.
 */
function servedUrl(url: string, emulatorHost: string): string {
  return url.startsWith("http:") ? url : `http://${emulatorHost}?ns=${instanceName(url)}`;
}

/**
 * The site of `firebase.json`'s Hosting (its public folder and ignore globs), as the local server
 * serves it at `/`, with the Firebase SDK's compat builds from node_modules when installed (a
 * development dependency: `npm start` alone does not install it), an init.js for `projectId`
 * whose API key the Auth emulator accepts (it accepts any), and the page's policy for
 * `projectId` with the Auth emulator the server checks tokens on, the App Check site key the page
 * attests with, if any (and whether the server consumes the message calls' tokens), and with
 * `database` the database the server stores in (localDatabase: the home instance's namespace in
 * init.js's config, on the server init.js names), where the page listens to connections live, and
 * in the policy every instance's server, as a deployment's names every instance.
 */
export function localSite(
  projectId: string,
  authEmulatorHost?: string,
  extra: { readonly appCheckSiteKey?: string | undefined; readonly appCheckReplayProtection?: boolean | undefined; readonly database?: LocalDatabase | undefined } = {},
): StaticSite {
  const { appCheckSiteKey, appCheckReplayProtection, database } = extra;
  const hosting = hostingConfig();
  const sdk = join(PROJECT_ROOT, "functions", "node_modules", "firebase");
  const emulator = authEmulatorHost === "" ? undefined : authEmulatorHost;
  return {
    publicDir: join(PROJECT_ROOT, hosting.public),
    ignore: hosting.ignore,
    ...(existsSync(join(sdk, "firebase-app-compat.js")) ? { firebaseSdkDir: sdk } : {}),
    firebaseConfig: {
      projectId,
      apiKey: "fake-api-key",
      authDomain: `${projectId}.firebaseapp.com`,
      ...(database === undefined ? {} : { databaseURL: `https://${database.namespace}.firebaseio.com` }),
    },
    ...(emulator === undefined ? {} : { authEmulatorHost: emulator }),
    ...(database === undefined ? {} : { databaseEmulatorHost: database.host }),
    policy: pagePolicy(projectId, pageOrigins(projectId, functionRegions(), { authEmulatorHost: emulator, appCheckSiteKey: appCheckSiteKey || undefined, appCheckReplayProtection, databaseEmulatorHost: database?.host, databaseInstances: database?.instances })),
  };
}
