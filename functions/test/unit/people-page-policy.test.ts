import { staticAnswer } from "../../src/local/static-site";
import { localSite } from "../../src/local/project-files";
import { pageOrigins } from "../../src/page/page-policy";

/**
 * Where the chat page's People panel may listen to connections live: locally, the database
 * emulator the server stores in, named by the server only (its init.js and its policy), never by
 * the page's address. Deployed, the panel polls the API (the policy names the deployment's
 * database instances, for a client of the sessions' database_url).
 */
describe("the page's database origin, for the People panel", () => {
  it("adds the database emulator's WebSocket and HTTP origins to the services, in place of the project's default database", () => {
    const plain = pageOrigins("demo-chatify", ["us-central1"]);
    const deployed = ["https://demo-chatify-default-rtdb.firebaseio.com", "wss://demo-chatify-default-rtdb.firebaseio.com"];
    expect(pageOrigins("demo-chatify", ["us-central1"], { databaseEmulatorHost: "127.0.0.1:9000" })).toEqual({
      ...plain,
      services: [...plain.services.filter((origin) => !deployed.includes(origin)), "ws://127.0.0.1:9000", "http://127.0.0.1:9000"],
      databaseServers: [],
    });
  });

  it.each(["127.0.0.1:9000; script-src *", "127.0.0.1", "evil.example:9000/x", "*:9000"])("refuses %j as a database emulator host", (host) => {
    expect(() => pageOrigins("demo-chatify", ["us-central1"], { databaseEmulatorHost: host })).toThrow(/host:port/);
  });

  it("names the database, and its namespace, in the local init.js and the policy only when the server uses one", async () => {
    const withDatabase = localSite("demo-chatify", undefined, { database: { host: "127.0.0.1:9000", namespace: "demo-chatify" } });
    const init = await staticAnswer(withDatabase, "GET", "/__/firebase/init.js");
    const script = init?.kind === "file" ? init.body.toString("utf8") : "";
    expect(script).toContain('"databaseURL":"https://demo-chatify.firebaseio.com"');
    expect(script).toContain('self.CHATIFY_DATABASE_EMULATOR = "127.0.0.1:9000";');
    expect(withDatabase.policy.headers["Content-Security-Policy"]).toContain("ws://127.0.0.1:9000 http://127.0.0.1:9000");

    const without = localSite("demo-chatify");
    const plain = await staticAnswer(without, "GET", "/__/firebase/init.js");
    expect(plain?.kind === "file" ? plain.body.toString("utf8") : "").not.toMatch(/databaseURL|CHATIFY_DATABASE_EMULATOR/);
    expect(without.policy.headers["Content-Security-Policy"]).not.toContain("ws:");
  });
});
