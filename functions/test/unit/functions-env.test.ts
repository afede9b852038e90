import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { deployedEnv, parseEnvFile } from "../../src/local/functions-env";

/**
 * The functions' env files read as the Firebase CLI reads them for a deploy: held to the CLI's own
 * reading (firebase-tools 15.34 lib/functions/env.js, a development dependency) on the same text
 * and the same files.
 */
// eslint-disable-next-line @typescript-eslint/no-require-imports -- the CLI's own reading, for comparison; it has no types of its own to import
const cliEnv = require("firebase-tools/lib/functions/env") as {
  parse(data: string): { envs: Record<string, string>; errors: string[] };
  loadUserEnvs(opts: { functionsSource: string; projectId: string; projectAlias?: string; projectDir: string; isEmulator?: boolean }): Record<string, string>;
};

const PROJECT = "chatify-prod-123";

describe("parseEnvFile", () => {
  it.each([
    ["a plain value, spaces around the = and the value", "A=1\n B = two words  \nC=b=c\n"],
    ["`export` before the name", "export A=1\nexport  B = 2\nexportC=3\n"],
    ["a comment after a bare value, or right after it", "A=https://one.example,https://two.example # two\nB=b#c\n"],
    ["a # inside quotes, and a comment after them", "A=\"b # c\"\nB='b # c' # comment\n"],
    ["escapes in double quotes, none in single quotes", "A=\"x\\ny\\t\\\"q\\\"\\\\\"\nB='x\\ny'\nC=\"\\a\"\n"],
    ["a quoted value over several lines", "A=\"line 1\nline 2\"\nB='one\ntwo'\nC=3\n"],
    ["a name given twice: the last wins", "A=first\nA=second\nA=\n"],
    ["empty values", "A=\nB=\"\"\nC=''\nD= # nothing\n"],
    ["comments and blank lines", "# a comment\n\n   # indented\nA=1\n\n"],
    ["CRLF line ends", "A=1\r\nB=\"two\"\r\nC=3 # c\r\n"],
    ["names with dots and slashes", "a.b/c=1\n"],
    ["lines it cannot read", "A=1\nnot a line\n= no name\nB=2\n"],
    ["an unclosed quote", "A=\"open\nB=2\n"],
  ])("reads as the Firebase CLI does: %s", (_case, text) => {
    const cli = cliEnv.parse(text);
    expect(parseEnvFile(text)).toEqual({ values: cli.envs, unreadLines: cli.errors });
  });

  it("reads what the CLI reads in the cases the deploy's files depend on", () => {
    expect(parseEnvFile("export DATABASE_INSTANCES=https://a.firebaseio.com # one\nDATABASE_INSTANCES=https://b.firebaseio.com\n").values).toEqual({ DATABASE_INSTANCES: "https://b.firebaseio.com" });
    expect(parseEnvFile("A=\"x\\ny\"\nB='x\\ny'\n").values).toEqual({ A: "x\ny", B: "x\\ny" });
  });
});

describe("deployedEnv", () => {
  let dir: string;
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), "chatify-functions-env-")); });
  afterEach(() => { rmSync(dir, { recursive: true, force: true }); });

  const write = (files: Record<string, string>) => {
    for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  };
  const cli = () => cliEnv.loadUserEnvs({ functionsSource: dir, projectId: PROJECT, projectDir: dir });

  it.each([
    ["no file", {}],
    [".env alone", { ".env": "A=1\nB=2\n" }],
    ["the project's file alone", { [`.env.${PROJECT}`]: "A=1\n" }],
    ["the project's file over .env, name by name", { ".env": "A=1\nB=2\n", [`.env.${PROJECT}`]: "B=3\nC=4\n" }],
    ["an empty value in the project's file over .env's", { ".env": "A=1\n", [`.env.${PROJECT}`]: "A=\n" }],
    ["another project's file, never read", { ".env": "A=1\n", ".env.other-project-1": "A=2\n" }],
    [".env.local, the Functions emulator's alone", { ".env": "A=1\n", ".env.local": "A=2\nB=3\n" }],
  ])("reads as a deploy does: %s", (_case, files: Record<string, string>) => {
    write(files);
    expect(deployedEnv(dir, PROJECT)).toEqual(cli());
  });

  // `firebase deploy --project prod`, .firebaserc naming PROJECT `prod` (project-files.ts `selectedProject`).
  const cliByAlias = (alias: string) => () => cliEnv.loadUserEnvs({ functionsSource: dir, projectId: PROJECT, projectAlias: alias, projectDir: dir });

  it.each([
    ["the alias's file over .env", { ".env": "A=1\nB=2\n", ".env.prod": "B=3\nC=4\n" }],
    ["the alias's file, not another alias's", { ".env.prod": "A=1\n", ".env.staging": "A=2\n" }],
  ])("reads as a deploy given the project by an alias does: %s", (_case, files: Record<string, string>) => {
    write(files);
    expect(deployedEnv(dir, PROJECT, "prod")).toEqual(cliByAlias("prod")());
  });

  it.each([
    ["the id's file and the alias's", "prod", { [`.env.${PROJECT}`]: "A=1\n", ".env.prod": "A=2\n" }],
    ["the id's file, by an alias that is the id itself", PROJECT, { [`.env.${PROJECT}`]: "A=1\n" }],
  ])("refuses where the CLI refuses a deploy by an alias: %s", (_case, alias, files: Record<string, string>) => {
    write(files);
    expect(cliByAlias(alias)).toThrow(/Can't have both dotenv files/);
    expect(() => deployedEnv(dir, PROJECT, alias)).toThrow(`refuses to deploy ${PROJECT} by its alias ${alias} while both .env.${PROJECT} and .env.${alias} exist`);
  });

  it("refuses, naming the file and the lines, a file whose lines the CLI cannot read (the CLI refuses the deploy)", () => {
    write({ ".env": "A=1\n", [`.env.${PROJECT}`]: "B=2\nnot a line\n" });
    expect(cli).toThrow(/Failed to load environment variables from \.env\.chatify-prod-123/);
    expect(() => deployedEnv(dir, PROJECT)).toThrow(`${join(dir, `.env.${PROJECT}`)}: the Firebase CLI cannot read these lines, and would refuse the deploy: not a line`);
  });
});
