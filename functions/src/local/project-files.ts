import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { z } from "zod";
import { templateSchema, type Template } from "../store/records";
import type { StaticSite } from "./static-site";

/** The repository root: the nearest folder above this file that holds firebase.json. */
export const PROJECT_ROOT = findRoot(__dirname);

function findRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, "firebase.json"))) return dir;
    if (dirname(dir) === dir) throw new Error(`no firebase.json above ${from}`);
  }
}

function readJson(relativePath: string): unknown {
  return JSON.parse(readFileSync(join(PROJECT_ROOT, relativePath), "utf8"));
}

/** The default project of `.firebaserc`: a `demo-` id, so nothing ever reaches a real project. */
export function defaultProjectId(): string {
  const rc = z.object({ projects: z.object({ default: z.string().min(1) }) }).parse(readJson(".firebaserc"));
  return rc.projects.default;
}

/**
 * The database namespace the Functions emulator gives a `demo-` project's functions
 * (databaseURL `https://{projectId}.firebaseio.com`): the local server uses the same one,
 * and the emulator export stores the templates under that name.
 */
export function databaseNamespace(projectId: string): string {
  return projectId;
}

/**
 * The templates of the emulator export that `firebase emulators:start --import` loads too (the
 * `.firebaserc` project's database); a local server run for another project seeds the same ones.
 */
export function seedTemplates(): Record<string, Template> {
  const path = join("emulator-data", "database_export", `${databaseNamespace(defaultProjectId())}.json`);
  const data = z.object({ templates: z.record(z.string(), templateSchema) }).parse(readJson(path));
  return data.templates;
}

export interface HostingRewrite {
  readonly source: string;
  readonly functionId: string;
}

const hostingSchema = z.object({
  public: z.string().min(1),
  ignore: z.array(z.string()).default([]),
  rewrites: z.array(z.object({
    source: z.string(),
    function: z.union([z.string(), z.object({ functionId: z.string() })]),
  })),
});

function hostingConfig(): z.infer<typeof hostingSchema> {
  return z.object({ hosting: hostingSchema }).parse(readJson("firebase.json")).hosting;
}

/** The Hosting rewrites of `firebase.json`, in order: the local server routes exactly as Hosting does. */
export function hostingRewrites(): HostingRewrite[] {
  return hostingConfig().rewrites.map((entry) => ({
    source: entry.source,
    functionId: typeof entry.function === "string" ? entry.function : entry.function.functionId,
  }));
}

/**
 * The site of `firebase.json`'s Hosting (its public folder and ignore globs), as the local server
 * serves it at `/`, with the Firebase SDK's compat builds from node_modules when installed (a
 * development dependency: `npm start` alone does not install it) and an init.js for `projectId`
 * whose API key the Auth emulator accepts (it accepts any).
 */
export function localSite(projectId: string, authEmulatorHost?: string): StaticSite {
  const hosting = hostingConfig();
  const sdk = join(PROJECT_ROOT, "functions", "node_modules", "firebase");
  return {
    publicDir: join(PROJECT_ROOT, hosting.public),
    ignore: hosting.ignore,
    ...(existsSync(join(sdk, "firebase-app-compat.js")) ? { firebaseSdkDir: sdk } : {}),
    firebaseConfig: { projectId, apiKey: "fake-api-key", authDomain: `${projectId}.firebaseapp.com` },
    ...(authEmulatorHost ? { authEmulatorHost } : {}),
  };
}
