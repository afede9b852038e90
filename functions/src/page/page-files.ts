import { isDeepStrictEqual } from "node:util";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { checkDeployKnobs, configuredAppCheckSiteKey, configuredAuthEmulator, configuredReplayProtection, functionRegions } from "../local/project-files";
import { configuredDatabaseInstances, databaseSection } from "./deploy-databases";
import { pageDataFiles } from "./page-data";
import { pageOrigins, pagePolicy, type PagePolicy } from "./page-policy";

/**
 * The files that carry what the server computes for the page to Hosting, which serves files and
 * firebase.json's `headers` but nothing computed: the policy's headers in firebase.json, and the
 * page's data files in public/ (page-data.ts: the API bases, the error codes, App Check). What they must
 * hold for a deploy to a project, a comparison with what they hold, and a writer. The origins
 * depend on the project, so they are written for the project selected at deploy (`npm run
 * deploy`) and checked again by Hosting's predeploy.
 */
export interface PageFile {
  /** Relative to the project root. */
  readonly path: string;
  /** What it must hold, parsed. */
  readonly expected: unknown;
  /** Its text with `expected` in place, formatted as written. */
  readonly text: string;
  /** Whether what it holds already means `expected` (formatting aside). */
  readonly current: boolean;
}

/** firebase.json's Hosting `headers`: one rule for every path. */
export function hostingHeaders(policy: PagePolicy): unknown {
  return [{ source: "**", headers: Object.entries(policy.headers).map(([key, value]) => ({ key, value })) }];
}

/**
 * The policy Hosting serves for `projectId` from the project at `root`: its function regions as
 * firebase.json's rewrites name them, and the App Check site key (and whether the message calls
 * consume their App Check token) its env files set for a deploy of it (by `projectAlias`, if the
 * deploy names it by a .firebaserc alias: that alias's file counts too). A `demo-` project exists on the emulators only (Firebase deploys none), where the Hosting
 * emulator's init.js connects the page to the Auth emulator firebase.json names: its policy names
 * that emulator too. A real project's never does.
 */
export function hostingPolicy(root: string, projectId: string, projectAlias?: string): PagePolicy {
  const emulator = projectId.startsWith("demo-") ? configuredAuthEmulator(root) : undefined;
  return pagePolicy(
    projectId,
    pageOrigins(projectId, functionRegions(root), {
      authEmulatorHost: emulator,
      appCheckSiteKey: configuredAppCheckSiteKey(root, projectId, projectAlias),
      appCheckReplayProtection: configuredReplayProtection(root, projectId, projectAlias),
      databaseInstances: configuredDatabaseInstances(root, projectId, projectAlias),
    }),
  );
}

/**
 * The files as a deploy of `projectId` (by `projectAlias`, if given) needs them, firebase.json
 * first, each saying whether it is already so. Throws for env files that deploy would refuse or
 * deploy wrong (a deploy knob left blank, a bad DATABASE_INSTANCES): `npm run deploy` and Hosting's
 * predeploy read these files first, so the deploy stops before anything is uploaded.
 */
export function pageFiles(root: string, projectId: string, projectAlias?: string): PageFile[] {
  checkDeployKnobs(root, projectId, projectAlias);
  const policy = hostingPolicy(root, projectId, projectAlias);
  const config = z.object({ hosting: z.record(z.string(), z.unknown()), database: z.unknown() }).loose().parse(readJson(root, "firebase.json"));
  const headers = hostingHeaders(policy);
  // Every database instance sessions are placed on gets the rules (docs/sharding.md).
  const database = databaseSection(configuredDatabaseInstances(root, projectId, projectAlias));
  const dataFiles = [...pageDataFiles(policy)].map(([served, expected]): PageFile => {
    const path = join(publicDir(config.hosting), served);
    return { path, expected, text: `${JSON.stringify(expected, null, 2)}\n`, current: isDeepStrictEqual(readJsonIfAny(root, path), expected) };
  });
  return [
    {
      path: "firebase.json",
      expected: { headers, database },
      text: `${JSON.stringify({ ...config, database, hosting: { ...config.hosting, headers } }, null, 2)}\n`,
      current: isDeepStrictEqual(config.hosting.headers, headers) && isDeepStrictEqual(config.database, database),
    },
    ...dataFiles,
  ];
}

/** Writes the files that are not yet as a deploy of `projectId` (by `projectAlias`, if given) needs them; returns their paths. */
export function writePageFiles(root: string, projectId: string, projectAlias?: string): string[] {
  const stale = pageFiles(root, projectId, projectAlias).filter((file) => !file.current);
  for (const file of stale) writeFileSync(join(root, file.path), file.text);
  return stale.map((file) => file.path);
}

function publicDir(hosting: Record<string, unknown>): string {
  return z.string().min(1).parse(hosting.public);
}

function readJson(root: string, path: string): unknown {
  return JSON.parse(readFileSync(join(root, path), "utf8"));
}

/** The file's JSON, or undefined when it is missing or not JSON (then it is written whole). */
function readJsonIfAny(root: string, path: string): unknown {
  try {
    return readJson(root, path);
  } catch {
    return undefined;
  }
}
