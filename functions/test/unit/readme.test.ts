import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, posix } from "node:path";
import { DECLARED_PARAMS } from "../../src/config";
import { ERROR_CODES } from "../../src/http/error-codes";
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

/** Clients act on the error table of docs/api.md: it must list the codes the API answers, each with its status. */
describe("docs/api.md error table", () => {
  const documented = tableRows(readDoc("docs/api.md"), "Status").flatMap((row) => {
    const [, status = "", codes = ""] = row.split("|").map((cell) => cell.trim());
    return [...codes.matchAll(/`([A-Z_]+)`/g)].map((match) => [match[1]!, Number(status)] as const);
  });

  it("lists every code of http/error-codes.ts with its status, and no other", () => {
    const listed = Object.entries(ERROR_CODES).map(([code, facts]) => [code, facts.status] as const);
    expect(Object.fromEntries(documented)).toEqual(Object.fromEntries(listed));
    expect(documented).toHaveLength(listed.length);
  });
});

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens. */
const anchorOf = (heading: string) => heading.toLowerCase().replace(/[^\p{L}\p{N} _-]/gu, "").replaceAll(" ", "-");

/** The anchors of a markdown file's headings, outside code fences. */
function anchors(markdown: string): Set<string> {
  let fenced = false;
  const found = new Set<string>();
  for (const line of markdown.split("\n")) {
    if (line.startsWith("```")) fenced = !fenced;
    const heading = fenced ? null : /^#{1,6} (.+)$/.exec(line);
    if (heading) found.add(anchorOf(heading[1]!));
  }
  return found;
}

/** The README is a map into docs/: a link that leads nowhere, or to a heading since renamed, strands the reader. */
describe("links between the README and docs/", () => {
  const files = ["README.md", ...readdirSync(join(PROJECT_ROOT, "docs")).filter((name) => name.endsWith(".md")).map((name) => `docs/${name}`)];
  const links = files.flatMap((file) =>
    [...readDoc(file).matchAll(/\]\(([^)\s]+)\)/g)]
      .map((match) => match[1]!)
      .filter((target) => !/^[a-z]+:/.test(target))
      .map((target) => ({ file, target })),
  );

  it("has links to check", () => {
    expect(links.length).toBeGreaterThan(0);
  });

  it.each(links)("$file -> $target", ({ file, target }) => {
    const [path = "", anchor] = target.split("#");
    const resolved = path === "" ? file : posix.join(posix.dirname(file), path);
    expect(existsSync(join(PROJECT_ROOT, resolved))).toBe(true);
    if (anchor !== undefined) expect([...anchors(readDoc(resolved))]).toContain(anchor);
  });
});
