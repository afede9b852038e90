import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { DECLARED_PARAMS } from "../../src/config";

const FUNCTIONS_DIR = resolve(__dirname, "..", "..");
const MAIN = resolve(FUNCTIONS_DIR, (JSON.parse(readFileSync(join(FUNCTIONS_DIR, "package.json"), "utf8")) as { main: string }).main);

function node(args: string[], env: NodeJS.ProcessEnv = process.env) {
  const run = spawnSync(process.execPath, args, { cwd: FUNCTIONS_DIR, env, encoding: "utf8", timeout: 30_000 });
  if (run.status !== 0) throw new Error(`node exited ${run.status}: ${run.stderr}`);
  return run.stdout;
}

/** The built bundle (`npm run build`, as deployed): what a cold start and the Firebase CLI load. */
describe("the deployed entry (package.json main)", () => {
  it("loads the triggers alone: one file, none of the app or its packages until the first request", () => {
    const loaded = JSON.parse(node(["-e", `require(${JSON.stringify(MAIN)}); console.log(JSON.stringify(Object.keys(require.cache)))`])) as string[];
    expect(loaded).toEqual([MAIN]);
  });

  it("makes the database client's frames surrogate-safe in the bundled app too (one @firebase/util, patched)", () => {
    const app = join(FUNCTIONS_DIR, "lib", "runtime", "cloud-app.js");
    const script = `require(${JSON.stringify(app)}).cloudInstance().then(() => console.log(require("@firebase/util").stringify({ text: "\\u{1F600}" })))`;
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      GCLOUD_PROJECT: "demo-chatify",
      FIREBASE_CONFIG: JSON.stringify({ projectId: "demo-chatify", databaseURL: "https://demo-chatify-default-rtdb.firebaseio.com" }),
      FIREBASE_DATABASE_EMULATOR_HOST: "127.0.0.1:9",
    };
    // The emoji leaves as ASCII escapes: a frame boundary cannot cut it.
    expect(node(["-e", `${script}.then(() => process.exit(0))`], env).trim()).toBe('{"text":"\\ud83d\\ude00"}');
  });

  it("declares to the Firebase CLI's discovery every trigger, its options and secret, and every param", () => {
    const dir = mkdtempSync(join(tmpdir(), "chatify-manifest-"));
    try {
      const output = join(dir, "manifest.json");
      // What `firebase deploy` and the emulators run: the installed firebase-functions on the source directory.
      node([join(FUNCTIONS_DIR, "node_modules", "firebase-functions", "lib", "bin", "firebase-functions.js")], { ...process.env, FUNCTIONS_MANIFEST_OUTPUT_PATH: output });
      const manifest = JSON.parse(readFileSync(output, "utf8")) as {
        endpoints: Record<string, { httpsTrigger?: { invoker?: string[] }; callableTrigger?: unknown; scheduleTrigger?: unknown; eventTrigger?: unknown; secretEnvironmentVariables?: { key: string }[]; timeoutSeconds: unknown; availableMemoryMb: unknown; concurrency: unknown; maxInstances?: unknown; minInstances?: unknown }>;
        params: { name: string }[];
      };
      const userData = ["listSessions", "getSession", "exportUserData", "eraseUserData"];
      const connectionFunctions = ["acceptConnection", "blockConnection", "connection", "connectionMessages", "connections", "declineConnection", "devices"];
      const connectionCallables = ["requestConnection", "listConnections", "getConnection", "endConnection", "acceptConnection", "declineConnection", "blockConnection", "unblockConnection", "sendConnectionMessage", "listConnectionMessages", "registerDevice", "unregisterDevice"];
      const callables = ["chat-createSession", "chat-endSession", "chat-sendMessage", ...[...userData, ...connectionCallables].map((name) => `chat-${name}`)];
      expect(Object.keys(manifest.endpoints).sort()).toEqual(["createSession", "endSession", "eraseDeletedUser", "expireSessions", "sendMessage", ...userData, ...connectionFunctions, ...callables].sort());
      // The deploy knobs, as the params the CLI resolves at deploy (function-options.ts).
      const knobs = { timeoutSeconds: "{{ params.TIMEOUT_SECONDS }}", availableMemoryMb: "{{ params.MEMORY_MIB }}", concurrency: "{{ params.CONCURRENCY }}", maxInstances: "{{ params.MAX_INSTANCES }}" };
      for (const name of ["createSession", "sendMessage", "endSession", ...userData, ...connectionFunctions]) {
        expect(manifest.endpoints[name]).toMatchObject({ httpsTrigger: { invoker: ["public"] }, ...knobs });
      }
      // Warm instances for the message function only.
      expect(manifest.endpoints.sendMessage?.minInstances).toBe("{{ params.MIN_INSTANCES }}");
      expect(manifest.endpoints.createSession?.minInstances ?? null).toBeNull();
      expect(manifest.endpoints.sendMessage?.secretEnvironmentVariables).toEqual([{ key: "OPENAI_API_KEY" }]);
      // The callables: the same knobs, the message one with the key and the warm instances.
      for (const name of callables) {
        expect(manifest.endpoints[name]).toMatchObject({ callableTrigger: {}, ...knobs });
      }
      expect(manifest.endpoints["chat-sendMessage"]).toMatchObject({ minInstances: "{{ params.MIN_INSTANCES }}", secretEnvironmentVariables: [{ key: "OPENAI_API_KEY" }] });
      expect(manifest.endpoints["chat-endSession"]?.secretEnvironmentVariables).toBeUndefined();
      // The key on the functions that may call OpenAI (the model, or moderation of a message to another user), on no other.
      const withKey = Object.entries(manifest.endpoints).filter(([, endpoint]) => endpoint.secretEnvironmentVariables !== undefined);
      expect(Object.fromEntries(withKey.map(([name, endpoint]) => [name, endpoint.secretEnvironmentVariables]))).toEqual({
        sendMessage: [{ key: "OPENAI_API_KEY" }],
        "chat-sendMessage": [{ key: "OPENAI_API_KEY" }],
        connectionMessages: [{ key: "OPENAI_API_KEY" }],
        "chat-sendConnectionMessage": [{ key: "OPENAI_API_KEY" }],
      });
      expect(manifest.endpoints.connectionMessages?.minInstances ?? null).toBeNull();
      expect(manifest.endpoints.expireSessions).toMatchObject({ timeoutSeconds: 300, availableMemoryMb: 512, maxInstances: "{{ params.MAX_INSTANCES }}" });
      expect(manifest.endpoints.expireSessions?.scheduleTrigger).toMatchObject({ schedule: "every 15 minutes" });
      // The 2nd gen Auth trigger (a 1st gen one could not run on nodejs24), retried until the erasure is recorded.
      expect(manifest.endpoints.eraseDeletedUser).toMatchObject({ platform: "gcfv2", eventTrigger: { eventType: "google.firebase.auth.user.v2.deleted", retry: true } });
      // An event trigger may have 540 s at most: TIMEOUT_SECONDS (up to 3600) capped, as the CLI resolves it.
      expect(manifest.endpoints.eraseDeletedUser?.timeoutSeconds).toBe("{{ params.TIMEOUT_SECONDS <= 540 ? params.TIMEOUT_SECONDS : 540 }}");
      expect(manifest.params.map((param) => param.name).sort()).toEqual([...DECLARED_PARAMS.map((param) => param.name), "OPENAI_API_KEY"].sort());
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
