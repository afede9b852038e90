import { readFileSync } from "node:fs";
import { join } from "node:path";
import { DECLARED_PARAMS } from "../../src/config";
import { PROJECT_ROOT } from "../../src/local/project-files";

/** The README's configuration table is documentation users act on: it must match the code. */
describe("README configuration table", () => {
  const readme = readFileSync(join(PROJECT_ROOT, "README.md"), "utf8");
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
