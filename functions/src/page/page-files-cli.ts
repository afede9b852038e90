import { spawnSync } from "node:child_process";
import { z } from "zod";
import { PROJECT_ROOT, selectedProject, type DeployProject } from "../local/project-files";
import { DEPLOY_ALIAS_VARIABLE, deployCommand, predeployProject } from "./deploy-project";
import { pageFiles, writePageFiles } from "./page-files";

/**
 * The files Hosting serves for the page (firebase.json's `hosting.headers`, public/api-bases.json,
 * public/error-codes.json, public/app-check.json) for a project. A PROJECT is named as the Firebase CLI names one: an
 * alias of .firebaserc stands for its id, and the functions then get the alias's env file too.
 *
 *   deploy [firebase deploy options]  `npm run deploy`: writes them for the project the deploy
 *                                     goes to (its --project, else the Firebase CLI's active
 *                                     project), then runs `firebase deploy` for that project
 *                                     (deploy-project.ts `deployCommand`)
 *   check [PROJECT]                   Hosting's predeploy: fails when they are for another project
 *                                     (PROJECT, else the GCLOUD_PROJECT the Firebase CLI sets, by
 *                                     the alias `npm run deploy` hands down, else .firebaserc's)
 *   write [PROJECT]                   writes them (PROJECT, else .firebaserc's only alias, else
 *                                     its default)
 */
function main(argv: readonly string[]): number {
  const [command, ...rest] = argv;
  switch (command) {
    case "deploy":
      return deploy(rest);
    case "check": {
      const hookProject = process.env.GCLOUD_PROJECT;
      return check(rest[0] === undefined && hookProject ? predeployProject(PROJECT_ROOT, hookProject, process.env[DEPLOY_ALIAS_VARIABLE]) : selectedProject(rest[0]));
    }
    case "write": {
      const project = selectedProject(rest[0]);
      report(project, writePageFiles(PROJECT_ROOT, project.projectId, project.projectAlias));
      return 0;
    }
    default:
      process.stderr.write("usage: page-files-cli deploy [firebase deploy options] | check [PROJECT] | write [PROJECT]\n");
      return 2;
  }
}

function check(project: DeployProject): number {
  const stale = pageFiles(PROJECT_ROOT, project.projectId, project.projectAlias).filter((file) => !file.current);
  if (stale.length === 0) return 0;
  const name = project.projectAlias ?? project.projectId;
  process.stderr.write(
    `${stale.map((file) => file.path).join(" and ")} ${stale.length === 1 ? "is" : "are"} not written for ${described(project)}: the page's Content-Security-Policy ` +
      `and API bases would name another project's origins, its App Check setup (site key, replay protection) another deployment's, or its error codes differ from the API's. Deploy with \`npm run deploy -- --project ${name}\`, ` +
      `or write them first: \`npm --prefix functions run page-files -- write ${name}\`.\n`,
  );
  return 1;
}

function deploy(options: readonly string[]): number {
  const { project, args, env } = deployCommand(PROJECT_ROOT, options, activeProjectId);
  report(project, writePageFiles(PROJECT_ROOT, project.projectId, project.projectAlias));
  const result = spawnSync("firebase", ["deploy", ...args], { cwd: PROJECT_ROOT, env: { ...process.env, ...env }, stdio: "inherit", shell: process.platform === "win32" });
  if (result.error) throw result.error;
  return result.status ?? 1;
}

function report(project: DeployProject, written: readonly string[]): void {
  process.stdout.write(written.length === 0 ? `The page's files are written for ${described(project)}.\n` : `Wrote ${written.join(" and ")} for ${described(project)}.\n`);
}

function described(project: DeployProject): string {
  return project.projectAlias === undefined ? project.projectId : `${project.projectId} (alias ${project.projectAlias})`;
}

/** The id of the project `firebase deploy` would pick without --project: the one `firebase use` names (an alias resolved, else .firebaserc's default). */
function activeProjectId(): string {
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
