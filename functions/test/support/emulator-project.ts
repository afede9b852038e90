import { cpSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { writePageFiles } from "../../src/page/page-files";
import { freePort, startEmulators } from "../support/child-process";

const FUNCTIONS_DIR = resolve(__dirname, "..", "..");
const PROJECT_ROOT = resolve(FUNCTIONS_DIR, "..");

export interface EmulatorProject {
  readonly hostingUrl: string;
  readonly functionsUrl: string;
  /** host:port of the Auth emulator, as FIREBASE_AUTH_EMULATOR_HOST wants it. */
  readonly authHost: string;
  /** Everything the emulators printed, for a failing test to show. */
  output(): string;
  stop(): Promise<void>;
}

export interface EmulatorProjectOptions {
  readonly projectId: string;
  /** Emulators to run, e.g. ["functions", "hosting"]. */
  readonly only: readonly string[];
  /** Values for functions/.env.local and .secret.local of the throwaway copy. */
  readonly env: Record<string, string>;
  readonly secrets: Record<string, string>;
  readonly importDir?: string;
}

/**
 * Runs the real project (built `lib/`, firebase.json with its Hosting rewrites) on the
 * Firebase emulators, from a throwaway copy of the project layout with free ports and its own
 * env files, so it never touches a developer's `.env.local` or clashes with `npm start`.
 */
export async function startEmulatorProject(options: EmulatorProjectOptions): Promise<EmulatorProject> {
  const dir = mkdtempSync(join(tmpdir(), "chatify-e2e-"));
  const functions = join(dir, "functions");
  mkdirSync(functions);
  symlinkSync(join(FUNCTIONS_DIR, "node_modules"), join(functions, "node_modules"));
  cpSync(join(FUNCTIONS_DIR, "package.json"), join(functions, "package.json"));
  if (options.only.includes("functions")) cpSync(join(FUNCTIONS_DIR, "lib"), join(functions, "lib"), { recursive: true });
  cpSync(join(PROJECT_ROOT, "public"), join(dir, "public"), { recursive: true });
  writeFileSync(join(functions, ".env.local"), envFile(options.env));
  writeFileSync(join(functions, ".secret.local"), envFile(options.secrets));
  writeFileSync(join(dir, ".firebaserc"), JSON.stringify({ projects: { default: options.projectId } }));

  const [hosting, functionsPort, hub, logging, auth] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);
  const config = JSON.parse(readFileSync(join(PROJECT_ROOT, "firebase.json"), "utf8")) as {
    functions: { predeploy?: unknown }[];
    emulators: Record<string, unknown>;
  };
  for (const codebase of config.functions) delete codebase.predeploy;
  config.emulators = {
    ...config.emulators,
    hosting: { host: "127.0.0.1", port: hosting },
    functions: { host: "127.0.0.1", port: functionsPort },
    auth: { host: "127.0.0.1", port: auth },
    hub: { host: "127.0.0.1", port: hub },
    logging: { host: "127.0.0.1", port: logging },
    ui: { enabled: false },
  };
  writeFileSync(join(dir, "firebase.json"), JSON.stringify(config, null, 2));
  // As `npm run deploy` does for the project deployed to: the page's headers and API bases name its origins, its error codes are the API's.
  writePageFiles(dir, options.projectId);

  const args = ["--project", options.projectId, "--only", options.only.join(",")];
  if (options.importDir) args.push("--import", options.importDir);
  const emulators = await startEmulators(dir, args);
  return {
    hostingUrl: `http://127.0.0.1:${hosting}`,
    functionsUrl: `http://127.0.0.1:${functionsPort}/${options.projectId}/us-central1`,
    authHost: `127.0.0.1:${auth}`,
    output: emulators.output,
    stop: emulators.stop,
  };
}

function envFile(values: Record<string, string>): string {
  return Object.entries(values)
    .map(([key, value]) => `${key}=${value}\n`)
    .join("");
}
