#!/usr/bin/env node
// Runs an npm script of functions/ on Node 24, from a fresh clone, in one command:
// it installs functions/ dependencies when they are missing or stale, and when the Node
// running this script is older than 24 (the Cloud Functions runtime), it uses a Node 24
// installed from the npm registry into .cache/ (the `node-<platform>-<arch>` packages).
// `start` needs the server's dependencies only (`npm ci --omit=dev`: no firebase-tools, no
// test tools); every other script installs the development tools as well.
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const FUNCTIONS = join(ROOT, "functions");
const NODE_MAJOR = 24;
const script = process.argv[2];

if (!script) {
  console.error("usage: node scripts/run.mjs <npm script of functions/>");
  process.exit(2);
}

function run(command, args, options = {}) {
  const result = spawnSync(command, args, { stdio: "inherit", shell: process.platform === "win32", ...options });
  if (result.error) throw result.error;
  return result.status ?? 1;
}

function major(version) {
  return Number(version.replace(/^v/, "").split(".")[0]);
}

/** The directory of a Node >= 24 binary: this one, or one installed into .cache/. */
function node24Dir() {
  if (major(process.version) >= NODE_MAJOR) return dirname(process.execPath);
  const platform = { linux: "linux", darwin: "darwin", win32: "win" }[process.platform];
  const pkg = `node-${platform}-${process.arch}`;
  const prefix = join(ROOT, ".cache", `node${NODE_MAJOR}`);
  const bin = join(prefix, "node_modules", pkg, "bin");
  const binary = join(bin, process.platform === "win32" ? "node.exe" : "node");
  if (!existsSync(binary)) {
    console.log(`Node ${process.version} is older than ${NODE_MAJOR} (the Cloud Functions runtime); installing ${pkg}@${NODE_MAJOR} into .cache/ ...`);
    if (!platform || run("npm", ["install", "--prefix", prefix, "--no-save", "--no-audit", "--no-fund", `${pkg}@${NODE_MAJOR}`]) !== 0 || !existsSync(binary)) {
      console.error(`Could not install Node ${NODE_MAJOR}. Install it yourself (see .nvmrc, e.g. \`nvm use\`) and run again.`);
      process.exit(1);
    }
  }
  return bin;
}

/** Scripts that run the server only: they need `dependencies`, not `devDependencies`. */
const SERVER_ONLY = new Set(["start"]);

/**
 * True when functions/node_modules matches functions/package-lock.json (npm's hidden lockfile
 * written after it) and holds every package `names` lists, so that `npm test` after `npm start`
 * installs the development tools that `npm start` left out.
 */
function dependenciesInstalled(names) {
  const modules = join(FUNCTIONS, "node_modules");
  const marker = join(modules, ".package-lock.json");
  if (!existsSync(marker) || statSync(marker).mtimeMs < statSync(join(FUNCTIONS, "package-lock.json")).mtimeMs) return false;
  return names.every((name) => existsSync(join(modules, name, "package.json")));
}

const bin = node24Dir();
const env = { ...process.env, PATH: `${bin}${process.platform === "win32" ? ";" : ":"}${process.env.PATH ?? ""}` };
const manifest = JSON.parse(readFileSync(join(FUNCTIONS, "package.json"), "utf8"));
const scripts = manifest.scripts ?? {};
if (!(script in scripts)) {
  console.error(`functions/package.json has no script "${script}"`);
  process.exit(2);
}
const serverOnly = SERVER_ONLY.has(script);
const needed = Object.keys({ ...manifest.dependencies, ...(serverOnly ? {} : manifest.devDependencies) });
if (!dependenciesInstalled(needed)) {
  const args = ["ci", ...(serverOnly ? ["--omit=dev"] : []), "--no-audit", "--no-fund"];
  console.log(`Installing functions/ ${serverOnly ? "server dependencies" : "dependencies and development tools"} (npm ${args.slice(0, serverOnly ? 2 : 1).join(" ")}) ...`);
  if (run("npm", args, { cwd: FUNCTIONS, env }) !== 0) process.exit(1);
}
const extra = process.argv.slice(3);
process.exit(run("npm", ["run", script, ...(extra.length > 0 ? ["--", ...extra] : [])], { cwd: FUNCTIONS, env }));
