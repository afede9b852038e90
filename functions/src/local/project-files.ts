import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { z } from "zod";
import { templateSchema, type Template } from "../store/records";

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

/** The Hosting rewrites of `firebase.json`, in order: the local server routes exactly as Hosting does. */
export function hostingRewrites(): HostingRewrite[] {
  const rewrite = z.object({
    source: z.string(),
    function: z.union([z.string(), z.object({ functionId: z.string() })]),
  });
  const config = z.object({ hosting: z.object({ rewrites: z.array(rewrite) }) }).parse(readJson("firebase.json"));
  return config.hosting.rewrites.map((entry) => ({
    source: entry.source,
    functionId: typeof entry.function === "string" ? entry.function : entry.function.functionId,
  }));
}
