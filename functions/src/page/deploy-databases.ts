import { configuredValue } from "../local/project-files";
import { emulatorUrlProblem, instanceName, parseDatabaseInstances } from "../sharding/database-instances";

/** The rules file every database instance is deployed with. */
const RULES = "database.rules.json";

/**
 * DATABASE_INSTANCES as the project's env files set it for `projectId` (deployed by
 * `projectAlias`, if given), read as the Firebase CLI reads them for the functions (the param the
 * functions read, docs/sharding.md): what a deploy's files name besides the functions (the page's
 * policy, firebase.json's rules). Empty: the default database alone. An emulator's URL is refused
 * for a project that is not `demo-` (one deployed for real), as hostingPolicy never names the Auth
 * emulator for one: its functions would send every database call there, and its page's policy
 * would name it.
 */
export function configuredDatabaseInstances(root: string, projectId: string, projectAlias?: string): readonly string[] {
  const parsed = parseDatabaseInstances(configuredValue(root, projectId, "DATABASE_INSTANCES", projectAlias) ?? "");
  if ("problem" in parsed) throw new Error(`DATABASE_INSTANCES for ${projectId}: ${parsed.problem}`);
  const emulated = projectId.startsWith("demo-") ? undefined : emulatorUrlProblem(parsed.urls);
  if (emulated !== undefined) throw new Error(`DATABASE_INSTANCES for ${projectId}: ${emulated}`);
  return parsed.urls;
}

/**
 * firebase.json's `database`: the rules for the default database, or with DATABASE_INSTANCES the
 * same rules for each instance it lists, by name, so that `firebase deploy` guards every one
 * alike. One listed instance is named too: it need not be the default database, which a bare
 * `{rules}` would deploy to instead, leaving the sessions' instance without these rules.
 */
export function databaseSection(urls: readonly string[]): unknown {
  return urls.length === 0 ? { rules: RULES } : urls.map((url) => ({ instance: instanceName(url), rules: RULES }));
}
