import { existsSync } from "node:fs";
import { join } from "node:path";
import { projectAliases, selectedProject, type DeployProject } from "../local/project-files";

/**
 * The project a deploy goes to and the .firebaserc alias it goes by, for the page's files: the
 * Firebase CLI gives the functions `functions/.env.<alias>` too (functions-env.ts), so the files
 * (the rules' instances, the page's policy) are written and checked for the same pair.
 */

/**
 * Set by `npm run deploy` on the `firebase deploy` it runs: the alias the deploy goes by, empty for
 * none. The CLI tells its hooks the project id alone (firebase-tools 15.34
 * lib/deploy/lifecycleHooks.js `getChildEnvironment`: GCLOUD_PROJECT, PROJECT_DIR, RESOURCE_DIR),
 * over its own environment, which they inherit with this.
 */
export const DEPLOY_ALIAS_VARIABLE = "CHATIFY_DEPLOY_ALIAS";

/**
 * The alias a deploy of `projectId` reads an env file by, when the name the CLI was given for it is
 * not known (a hook of a plain `firebase deploy`; `npm run deploy` without --project, which knows
 * the id alone from `firebase use`): the alias naming it in .firebaserc that has a
 * `functions/.env.<alias>`, if one does (an alias without one changes nothing read). Several:
 * refused, since which one the CLI reads depends on the name it was given.
 */
export function aliasWithEnvFile(root: string, projectId: string): string | undefined {
  const withFiles = Object.entries(projectAliases(root))
    .filter(([alias, id]) => id === projectId && existsSync(join(root, "functions", `.env.${alias}`)))
    .map(([alias]) => alias);
  if (withFiles.length > 1) {
    throw new Error(
      `.firebaserc names ${projectId} by ${withFiles.join(" and ")}, each with a functions/.env.<alias>, and the functions get the one the deploy names: ` +
        `deploy with \`npm run deploy -- --project ALIAS\`.`,
    );
  }
  return withFiles[0];
}

/**
 * The project Hosting's predeploy checks the page's files for: `projectId` (GCLOUD_PROJECT) by the
 * alias `npm run deploy` handed down (DEPLOY_ALIAS_VARIABLE), else, under a plain `firebase
 * deploy`, by aliasWithEnvFile.
 */
export function predeployProject(root: string, projectId: string, handedAlias: string | undefined): DeployProject {
  if (handedAlias === undefined) return { projectId, projectAlias: aliasWithEnvFile(root, projectId) };
  if (handedAlias === "") return { projectId };
  if (projectAliases(root)[handedAlias] !== projectId) throw new Error(`${DEPLOY_ALIAS_VARIABLE}=${handedAlias} is not an alias of ${projectId} in .firebaserc`);
  return { projectId, projectAlias: handedAlias };
}

/** What `npm run deploy [options]` deploys, and how it runs `firebase deploy`. */
export interface DeployCommand {
  readonly project: DeployProject;
  /** `firebase deploy`'s arguments, after `deploy`. */
  readonly args: readonly string[];
  /** Set on `firebase deploy`, for Hosting's predeploy. */
  readonly env: Readonly<Record<string, string>>;
}

/**
 * The deploy of `npm run deploy` with `options` (firebase deploy's): to the project its --project
 * names, resolved as the CLI resolves it (an alias stands for its id), and given to the CLI as it
 * came, so that both read the same env files; without one, to the CLI's active project, whose id
 * alone `activeProjectId` (`firebase use`) tells, by aliasWithEnvFile, named explicitly to the CLI
 * for the same reason. Functions, database and hosting unless the options say `--only`.
 */
export function deployCommand(root: string, options: readonly string[], activeProjectId: () => string): DeployCommand {
  const name = projectOption(options);
  let project: DeployProject;
  if (name === undefined) {
    const projectId = activeProjectId();
    project = { projectId, projectAlias: aliasWithEnvFile(root, projectId) };
  } else {
    project = selectedProject(name, root);
  }
  const rest = withoutProjectOption(options);
  const only = rest.some((option) => option === "--only" || option.startsWith("--only=")) ? [] : ["--only", "functions,database,hosting"];
  return {
    project,
    args: [...only, "--project", name ?? project.projectAlias ?? project.projectId, ...rest],
    env: { [DEPLOY_ALIAS_VARIABLE]: project.projectAlias ?? "" },
  };
}

/** `--project NAME`, `--project=NAME`, `-P NAME`, as the Firebase CLI reads them. */
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
