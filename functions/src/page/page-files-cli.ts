import { spawnSync } from "node:child_process";
import { z } from "zod";
import { defaultProjectId, PROJECT_ROOT } from "../local/project-files";
import { pageFiles, writePageFiles } from "./page-files";

/**
 * The files Hosting serves for the page (firebase.json's `hosting.headers`, public/api-bases.json,
 * public/error-codes.json) for a project:
 *
 *   deploy [firebase deploy options]  `npm run deploy`: writes them for the project the deploy
 *                                     goes to (its --project, else the Firebase CLI's active
 *                                     project), then runs `firebase deploy` for that project
 *   check [PROJECT]                   Hosting's predeploy: fails when they are for another project
 *                                     (PROJECT, else the GCLOUD_PROJECT the Firebase CLI sets)
 *   write [PROJECT]                   writes them (PROJECT, else .firebaserc's default)
 */
function main(argv: readonly string[]): number {
  const [command, ...rest] = argv;
  switch (command) {
    case "deploy":
      return deploy(rest);
    case "check":
      return check(rest[0] ?? process.env.GCLOUD_PROJECT ?? defaultProjectId());
    case "write": {
      const projectId = rest[0] ?? defaultProjectId();
      report(projectId, writePageFiles(PROJECT_ROOT, projectId));
      return 0;
    }
    default:
      process.stderr.write("usage: page-files-cli deploy [firebase deploy options] | check [PROJECT] | write [PROJECT]\n");
      return 2;
  }
}

function check(projectId: string): number {
  const stale = pageFiles(PROJECT_ROOT, projectId).filter((file) => !file.current);
  if (stale.length === 0) return 0;
  process.stderr.write(
    `${stale.map((file) => file.path).join(" and ")} ${stale.length === 1 ? "is" : "are"} not written for ${projectId}: the page's Content-Security-Policy ` +
      `and API bases would name another project's origins, or its error codes differ from the API's. Deploy with \`npm run deploy -- --project ${projectId}\`, ` +
      `or write them first: \`npm --prefix functions run page-files -- write ${projectId}\`.\n`,
  );
  return 1;
}

function deploy(options: readonly string[]): number {
  const projectId = projectOption(options) ?? activeProject();
  report(projectId, writePageFiles(PROJECT_ROOT, projectId));
  const rest = withoutProjectOption(options);
  const only = rest.some((option) => option === "--only" || option.startsWith("--only=")) ? [] : ["--only", "functions,database,hosting"];
  const result = spawnSync("firebase", ["deploy", ...only, "--project", projectId, ...rest], { cwd: PROJECT_ROOT, stdio: "inherit", shell: process.platform === "win32" });
  if (result.error) throw result.error;
  return result.status ?? 1;
}

function report(projectId: string, written: readonly string[]): void {
  process.stdout.write(written.length === 0 ? `The page's files are written for ${projectId}.\n` : `Wrote ${written.join(" and ")} for ${projectId}.\n`);
}

/** `--project ID`, `--project=ID`, `-P ID`, as the Firebase CLI reads them. */
function projectOption(options: readonly string[]): string | undefined {
  for (const [index, option] of options.entries()) {
    if (option === "--project" || option === "-P") return options[index + 1];
    if (option.startsWith("--project=")) return option.slice("--project=".length);
  }
  return undefined;
}

function withoutProjectOption(options: readonly string[]): string[] {
  return options.filter((option, index) => !(option === "--project" || option === "-P" || option.startsWith("--project=") || options[index - 1] === "--project" || options[index - 1] === "-P"));
}

/** The project `firebase deploy` would pick without --project: the one `firebase use` names (an alias resolved, else .firebaserc's default). */
function activeProject(): string {
  const answer = spawnSync("firebase", ["use", "--json"], { cwd: PROJECT_ROOT, encoding: "utf8", shell: process.platform === "win32" });
  if (answer.error) throw answer.error;
  const parsed = z.object({ status: z.literal("success"), result: z.string().min(1) }).safeParse(parseJson(answer.stdout));
  if (!parsed.success) throw new Error(`\`firebase use\` named no active project: ${answer.stdout.trim() || answer.stderr.trim()}`);
  return parsed.data.result;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

try {
  process.exitCode = main(process.argv.slice(2));
} catch (error) {
  process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
}
