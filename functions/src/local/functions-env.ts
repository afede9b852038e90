import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

/**
 * The functions' env files as the Firebase CLI reads them for a deploy, which sets what it reads
 * on the functions as their environment (the params among it): a deploy's other files (the
 * database rules' instances, the page's policy) must read the same values. The rules are
 * firebase-tools 15.34's (lib/functions/env.js `parse`, `findEnvfiles`, `loadUserEnvs`),
 * reimplemented: that module is the CLI's internal API, and firebase-tools a development
 * dependency only.
 * test/unit/functions-env.test.ts holds this reading to the CLI's own on the same files.
 */

/**
 * One `NAME=value` of a file, as the CLI matches it (its LINE_RE, verbatim): an optional `export`;
 * a value single-quoted, double-quoted (either may span lines) or bare up to a `#`; then an
 * optional `# comment`. Spaces around the `=` and the value are dropped.
 */
const LINE = /^\s*(?:export)?\s*([\w./]+)\s*=[\f\t\v]*(\s*'(?:\\'|[^'])*'|\s*"(?:\\"|[^"])*"|[^#\r\n]*)?\s*(?:#[^\n]*)?$/gms;
const QUOTED = /^(["'])(.*)\1$/ms;
/** The escapes a double-quoted value may hold; a single-quoted value keeps every character as written. */
const ESCAPES: Readonly<Record<string, string>> = { "\\n": "\n", "\\r": "\r", "\\t": "\t", "\\v": "\v", "\\\\": "\\", "\\'": "'", '\\"': '"' };
const ESCAPE = /\\[nrtv\\'"]/g;

/** What one file sets, the last of a repeated name winning, and the lines that set nothing (neither blank nor a comment). */
export function parseEnvFile(text: string): { readonly values: Readonly<Record<string, string>>; readonly unreadLines: readonly string[] } {
  // Only the first CRLF becomes LF, as in firebase-tools 15.34 (`data.replace(/\r\n?/, "\n")`, no
  // `g`): the others stay, and LINE then reads an `\r` before a newline as trailing space.
  const data = text.replace(/\r\n?/, "\n");
  const values: Record<string, string> = {};
  for (const [, name = "", raw] of data.matchAll(LINE)) {
    let value = (raw ?? "").trim();
    const quoted = QUOTED.exec(value);
    if (quoted) {
      value = quoted[2] ?? "";
      if (quoted[1] === '"') value = value.replace(ESCAPE, (escape) => ESCAPES[escape] ?? escape);
    }
    values[name] = value;
  }
  const unreadLines = data
    .replace(LINE, "")
    .split(/[\r\n]+/)
    .map((line) => line.trim())
    .filter((line) => line.length > 0 && !line.startsWith("#"));
  return { values, unreadLines };
}

/**
 * What a deploy of `projectId` sets from `functionsDir`'s env files: `.env`, then
 * `.env.<projectId>` and, for a deploy given the project by a .firebaserc alias (`--project prod`,
 * project-files.ts `selectedProject`), `.env.<projectAlias>` over it, name by name, an empty value
 * included (so the project's file can empty a shared value, DATABASE_INSTANCES say; a deploy knob
 * left blank is refused before the deploy: project-files.ts checkDeployKnobs). `.env.local` is the Functions
 * emulator's alone: a deploy never reads it. Throws where the CLI refuses the deploy: when both
 * the id's and the alias's files exist (one file, when the alias is the id itself), and for a line
 * it cannot read, naming the file and the lines. (The CLI also refuses names it reserves,
 * FIREBASE_CONFIG say: that fails the deploy itself, with the CLI's message, and changes no value
 * read here.)
 */
export function deployedEnv(functionsDir: string, projectId: string, projectAlias?: string): Readonly<Record<string, string>> {
  const files = [".env", `.env.${projectId}`, ...(projectAlias ? [`.env.${projectAlias}`] : [])].filter((file) => existsSync(join(functionsDir, file)));
  if (projectAlias && files.includes(`.env.${projectId}`) && files.includes(`.env.${projectAlias}`)) {
    throw new Error(
      `${functionsDir}: the Firebase CLI refuses to deploy ${projectId} by its alias ${projectAlias} while both .env.${projectId} and .env.${projectAlias} exist: keep one`,
    );
  }
  let values: Record<string, string> = {};
  for (const file of files) {
    const path = join(functionsDir, file);
    const parsed = parseEnvFile(readFileSync(path, "utf8"));
    if (parsed.unreadLines.length > 0) {
      throw new Error(`${path}: the Firebase CLI cannot read these lines, and would refuse the deploy: ${parsed.unreadLines.join(", ")}`);
    }
    values = { ...values, ...parsed.values };
  }
  return values;
}
