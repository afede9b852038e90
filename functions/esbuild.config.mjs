// `npm run build`: bundles src/ into lib/ with esbuild (no type check: `npm run typecheck` does
// that, and `npm test` and the deploy run it). Four bundles:
//
//   lib/index.js              package.json `main`, what Cloud Functions and the Firebase CLI load:
//                             the triggers and their params only, with the firebase-functions entry
//                             points they use (tree-shaken from its ES build): one file to read at a
//                             cold start. The app is left out, and imported on first use.
//   lib/runtime/cloud-app.js  the app behind the triggers (config, session module, adapters) with
//                             the packages it uses (firebase-admin, openai, zod): one file to read
//                             and compile on the first request instead of some 560 modules.
//   lib/local/main.js         the local server of `npm start`, packages left to node_modules.
//   lib/page/page-files-cli.js  writes and checks the page's policy files for the project a
//                             deploy goes to (`npm run deploy`, Hosting's predeploy); not loaded
//                             by the functions.
//
// firebase-functions stays an installed dependency all the same: the Firebase CLI runs its
// discovery (`firebase-functions` bin) from node_modules on lib/index.js, and the params and
// triggers the bundle declares reach it through the globals firebase-functions keeps for that.
import { build } from "esbuild";
import { rmSync } from "node:fs";
import { createRequire } from "node:module";

const common = {
  absWorkingDir: import.meta.dirname,
  bundle: true,
  platform: "node",
  target: "node24",
  format: "cjs",
  // Names are kept, so stack traces stay readable; --enable-source-maps maps them to src/.
  minifyWhitespace: true,
  minifySyntax: true,
  sourcemap: "linked",
  sourcesContent: false,
  logLevel: "warning",
};

/** In the triggers' bundle: the app stays a separate file, loaded by `import()` on first use. */
const appOnFirstUse = {
  name: "app-on-first-use",
  setup(esbuild) {
    esbuild.onResolve({ filter: /\/runtime\/cloud-app\.js$/ }, (args) => ({ path: args.path, external: true }));
  },
};

/**
 * The callables (`onCall`) verify ID and App Check tokens with firebase-admin, which
 * firebase-functions 7.4 imports at the top of its https and app modules (firebase-admin/app,
 * /auth, /app-check). In the triggers' bundle each of those imports becomes a module whose
 * functions require the real one on their first call: a cold start still reads one file, and
 * firebase-admin (from node_modules, as firebase-functions uses it) loads when a callable first
 * checks a token. Imports nothing uses (database, firestore) are dropped with their wrappers.
 */
const FIRST_CALL = "firebase-admin-on-first-call";
const firebaseAdminOnFirstCall = {
  name: FIRST_CALL,
  setup(esbuild) {
    esbuild.onResolve({ filter: /^firebase-admin(\/|$)/ }, (args) =>
      args.namespace === FIRST_CALL ? { path: args.path, external: true } : { path: args.path, namespace: FIRST_CALL, sideEffects: false });
    esbuild.onLoad({ filter: /.*/, namespace: FIRST_CALL }, (args) => {
      const real = createRequire(import.meta.url)(args.path);
      const functions = Object.keys(real).filter((name) => typeof real[name] === "function");
      const load = `require(${JSON.stringify(args.path)})`;
      return { contents: functions.map((name) => `export function ${name}(...args) { return ${load}.${name}(...args); }`).join("\n"), loader: "js", resolveDir: import.meta.dirname };
    });
  },
};

rmSync(new URL("lib", import.meta.url), { recursive: true, force: true });
await Promise.all([
  build({ ...common, entryPoints: { index: "src/index.ts" }, outdir: "lib", plugins: [appOnFirstUse, firebaseAdminOnFirstCall] }),
  // The database client (with the websocket code it inlines) calls url.parse(), which Node 24
  // warns about once per process unless the caller lives in node_modules: left there, the logs
  // stay clean. @firebase/util stays there with it: src/store/rtdb/frame-safe-json.ts replaces an
  // export of the very module object the database client reads, which a bundled copy is not.
  build({ ...common, entryPoints: { "runtime/cloud-app": "src/runtime/cloud-app.ts" }, outdir: "lib", external: ["@firebase/database-compat", "@firebase/database", "@firebase/util"] }),
  build({ ...common, entryPoints: { "local/main": "src/local/main.ts" }, outdir: "lib", packages: "external" }),
  build({ ...common, entryPoints: { "page/page-files-cli": "src/page/page-files-cli.ts" }, outdir: "lib", packages: "external" }),
]);
