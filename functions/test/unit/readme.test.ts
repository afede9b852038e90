import { readFileSync } from "node:fs";
import { join } from "node:path";
import { DECLARED_PARAMS } from "../../src/config";
import { PROJECT_ROOT } from "../../src/local/project-files";

const readDoc = (path: string) => readFileSync(join(PROJECT_ROOT, path), "utf8");
const readme = readDoc("README.md");
const defaults = new Map(DECLARED_PARAMS.map((param) => [param.name, param.default]));

/** The lines of the markdown table whose header row starts with `| firstHeading |`. */
function tableRows(markdown: string, firstHeading: string): string[] {
  const lines = markdown.split("\n");
  const header = lines.findIndex((line) => line.startsWith(`| ${firstHeading} |`));
  if (header < 0) return [];
  const end = lines.findIndex((line, index) => index > header && !line.startsWith("|"));
  return lines.slice(header + 2, end < 0 ? undefined : end);
}

/** The README's configuration table is documentation users act on: it must match the code. */
describe("README configuration table", () => {
  const rows = new Map(
    [...readme.matchAll(/^\| `([A-Z_]+)` \| ([^|]+) \| `?([^|`]*)`? \|/gm)].map((match) => [match[1], { kind: match[2]!.trim(), default: match[3]! }]),
  );

  it.each(DECLARED_PARAMS)("documents $name with its default", (param) => {
    expect(rows.get(param.name)).toEqual({ kind: expect.stringContaining("param"), default: param.default === "" ? '""' : param.default });
  });

  it("documents the secret", () => {
    expect(rows.get("OPENAI_API_KEY")?.kind).toBe("secret");
  });
});

/**
 * The security table (docs/security.md, linked from the README) says what bounds a caller; an operator sizes a deployment by its figures. Every
 * default it states must be the code's: a param followed by a bracket with a number or the word
 * "default" (`MAX_MESSAGE_CHARS` (default 4,000 characters)), or `NAME=value` (the deployed default).
 */
describe("docs/security.md protections table", () => {
  const table = tableRows(readDoc("docs/security.md"), "Protection").join("\n");
  const stated = [...table.matchAll(/`([A-Z][A-Z0-9_]*)(?:=([^`]*))?` \(([^)]*)\)/g)]
    .filter((match) => defaults.has(match[1]!) && /\d|default/.test(match[3]!))
    .map((match) => ({ name: match[1]!, stated: match[2] ?? match[3]!.match(/\d[\d,]*/)?.[0].replaceAll(",", "") }));

  it("states the defaults of the limits it names", () => {
    expect(stated.length).toBeGreaterThan(0);
  });

  it.each(stated)("states $name's default as $stated", ({ name, stated: value }) => {
    expect(value).toBe(defaults.get(name));
  });
});

