import { configuredValue } from "../local/project-files";
import { instanceName, parseDatabaseInstances } from "../sharding/database-instances";

/** The rules file every database instance is deployed with. */
const RULES = "database.rules.json";

/**
 * DATABASE_INSTANCES as the project's env files set it for `projectId` (the param the functions
 * read, docs/sharding.md): what a deploy's files name besides the functions (the page's policy,
 * firebase.json's rules). Empty: the default database alone.
 */
export function configuredDatabaseInstances(root: string, projectId: string): readonly string[] {
  const parsed = parseDatabaseInstances(configuredValue(root, projectId, "DATABASE_INSTANCES") ?? "");
  if ("problem" in parsed) throw new Error(`DATABASE_INSTANCES for ${projectId}: ${parsed.problem}`);
  return parsed.urls;
}

/**
 * firebase.json's `database`: the rules for the default database, or with several instances the
 * same rules for each, by instance name, so that `firebase deploy` guards every one alike.
 */
export function databaseSection(urls: readonly string[]): unknown {
  return urls.length <= 1 ? { rules: RULES } : urls.map((url) => ({ instance: instanceName(url), rules: RULES }));
}
