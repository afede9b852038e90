import { randomUUID } from "node:crypto";
import { z } from "zod";
import { localDatabase, localSite } from "../../src/local/project-files";
import { startLocalProcess, type LocalProcess } from "../support/local-process";
import { describeWithRtdb, freshNamespace } from "../support/rtdb";
import { standInSkipReason, startStandIn, type StandIn } from "../support/stand-in";
import { describeUnless } from "../support/visible-skip";

/** What the page's init.js tells its Realtime Database SDK: the namespace (databaseURL's) and the emulator it connects to. */
interface PageDatabase {
  readonly namespace: string | undefined;
  readonly host: string | undefined;
}

async function pageDatabase(local: LocalProcess): Promise<PageDatabase> {
  const init = await (await fetch(`${local.url}/__/firebase/init.js`)).text();
  return {
    namespace: /"databaseURL":"https:\/\/([^.]+)\.firebaseio\.com"/.exec(init)?.[1],
    host: /self\.CHATIFY_DATABASE_EMULATOR = "([^"]+)";/.exec(init)?.[1],
  };
}

async function connectSrc(local: LocalProcess): Promise<string[]> {
  const policy = (await fetch(`${local.url}/`)).headers.get("content-security-policy") ?? "";
  return /(?:^|; )connect-src ([^;]*)/.exec(policy)?.[1]?.split(" ") ?? [];
}

async function post(local: LocalProcess, path: string, body: unknown): Promise<unknown> {
  const answer = await fetch(`${local.url}/api/v1${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  expect(answer.status).toBeLessThan(300);
  return answer.json();
}

/** Two new users connected, one message from the first: the connection's id. */
async function connectionWithMessage(local: LocalProcess, text: string): Promise<string> {
  const [ann, ben] = [`ann_${randomUUID().slice(0, 8)}`, `ben_${randomUUID().slice(0, 8)}`];
  const asked = z.object({ connection: z.object({ connection_id: z.string() }) }).parse(await post(local, "/connections", { user_id: ann, other_user_id: ben }));
  const id = asked.connection.connection_id;
  await post(local, `/connections/${id}/accept`, { user_id: ben });
  await post(local, `/connections/${id}/messages`, { user_id: ann, message: text });
  return id;
}

/** What the page's SDK would read at the connection's messages: that node in the namespace, on the host, init.js names. */
async function messagesThePageReads(page: PageDatabase, connectionId: string): Promise<unknown> {
  if (page.host === undefined || page.namespace === undefined) return undefined;
  const answer = await fetch(`http://${page.host}/connections/${connectionId}/messages.json?ns=${page.namespace}`, { headers: { Authorization: "Bearer owner" } });
  return answer.json();
}

/**
 * `npm start` with DATABASE_INSTANCES: per-user records (connections among them) are on the home
 * instance, the list's first, so the page's People panel must listen there, and its policy must
 * let it reach every instance, as a deployment's does.
 */
describeWithRtdb("npm start with DATABASE_INSTANCES: the page's database", () => {
  const emulator = process.env.FIREBASE_DATABASE_EMULATOR_HOST ?? "";

  describe("none: the emulator's namespace for the project, as before", () => {
    let local: LocalProcess;

    beforeAll(async () => {
      local = await startLocalProcess({ DATABASE_INSTANCES: "" });
    }, 40_000);
    afterAll(() => {
      local.child.kill();
    });

    it("init.js names the project's namespace on FIREBASE_DATABASE_EMULATOR_HOST, where the messages are; the policy that server only", async () => {
      const id = await connectionWithMessage(local, "hello ben");
      const page = await pageDatabase(local);
      expect(page).toEqual({ namespace: "demo-chatify", host: emulator });
      expect(await messagesThePageReads(page, id)).toEqual({ m000000001: expect.objectContaining({ content: "hello ben" }) });
      const auth = `http://${process.env.FIREBASE_AUTH_EMULATOR_HOST ?? ""}`;
      expect((await connectSrc(local)).filter((source) => /^(ws|http):/.test(source) && source !== auth)).toEqual([`ws://${emulator}`, `http://${emulator}`]);
    });
  });

  describe("two namespaces of one server", () => {
    let local: LocalProcess;
    const home = freshNamespace("local-home");

    beforeAll(async () => {
      local = await startLocalProcess({ DATABASE_INSTANCES: `http://${emulator}?ns=${home},http://${emulator}?ns=${home}-b` });
    }, 40_000);
    afterAll(() => {
      local.child.kill();
    });

    it("init.js names the home instance, where the connection's messages are", async () => {
      const id = await connectionWithMessage(local, "hello ben");
      const page = await pageDatabase(local);
      expect(page).toEqual({ namespace: home, host: emulator });
      expect(await messagesThePageReads(page, id)).toEqual({ m000000001: expect.objectContaining({ content: "hello ben" }) });
    });
  });

  describeUnless(standInSkipReason, "the home instance on a second server", () => {
    let second: StandIn;
    let local: LocalProcess;
    const home = freshNamespace("local-home");
    const other = freshNamespace("local-other");

    beforeAll(async () => {
      second = await startStandIn(0);
      local = await startLocalProcess({ DATABASE_INSTANCES: `http://${second.host}?ns=${home},http://${emulator}?ns=${other}` });
    }, 40_000);
    afterAll(() => {
      local.child.kill();
      second.process.kill();
    });

    it("init.js names the home instance's server and namespace, where the connection's messages are", async () => {
      const id = await connectionWithMessage(local, "hello from afar");
      const page = await pageDatabase(local);
      expect(page).toEqual({ namespace: home, host: second.host });
      expect(await messagesThePageReads(page, id)).toEqual({ m000000001: expect.objectContaining({ content: "hello from afar" }) });
    });

    it("the policy's connect-src names every instance's server, its WebSocket and HTTP origins", async () => {
      expect(await connectSrc(local)).toEqual(expect.arrayContaining([`ws://${second.host}`, `http://${second.host}`, `ws://${emulator}`, `http://${emulator}`]));
    });
  });
});

/** The same choice, without a server: each form of DATABASE_INSTANCES (normalised, as config.ts gives it). */
describe("localDatabase: what the page is told for each DATABASE_INSTANCES", () => {
  it("none without a database emulator (the embedded store), whatever the list", () => {
    expect(localDatabase("demo-chatify", undefined, ["http://127.0.0.1:9000?ns=home"])).toBeUndefined();
    expect(localDatabase("demo-chatify", "", [])).toBeUndefined();
  });

  it("the project's namespace on the emulator without a list, exactly as before", () => {
    expect(localDatabase("demo-chatify", "127.0.0.1:9000", [])).toEqual({ host: "127.0.0.1:9000", namespace: "demo-chatify" });
  });

  it("the home instance, and every instance where the server reaches it: deployed names as namespaces of the emulator", () => {
    expect(localDatabase("demo-chatify", "127.0.0.1:9000", ["https://home-db.europe-west1.firebasedatabase.app", "http://127.0.0.1:9002?ns=other", "https://third.firebaseio.com"])).toEqual({
      host: "127.0.0.1:9000",
      namespace: "home-db",
      instances: ["http://127.0.0.1:9000?ns=home-db", "http://127.0.0.1:9002?ns=other", "http://127.0.0.1:9000?ns=third"],
    });
    // A normalised URL drops port 80; the page's SDK needs it named.
    expect(localDatabase("demo-chatify", "127.0.0.1:9000", ["http://localhost?ns=home"])).toMatchObject({ host: "localhost:80", namespace: "home" });
  });

  it("one instance on the emulator: the policy is the one the emulator alone gives", () => {
    const alone = localSite("demo-chatify", undefined, { database: localDatabase("demo-chatify", "127.0.0.1:9000", []) });
    const listed = localSite("demo-chatify", undefined, { database: localDatabase("demo-chatify", "127.0.0.1:9000", ["http://127.0.0.1:9000?ns=demo-chatify"]) });
    expect(listed.policy).toEqual(alone.policy);
    expect(listed.firebaseConfig).toEqual(alone.firebaseConfig);
  });
});
