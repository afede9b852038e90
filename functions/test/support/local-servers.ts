import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { messageTokensConsumed } from "../../src/config";
import { createLocalServer } from "../../src/local/local-server";
import { APP_CHECK_SITE_KEY_VARIABLE, hostingRewrites, localSite } from "../../src/local/project-files";
import type { Instance } from "../../src/runtime/instance";

/** Local servers on loopback, one per function instance, closed together. */
export class LocalServers {
  private readonly servers: Server[] = [];

  /** Serves `instance` on a free port, as `npm start` does; returns its base URL. `database`: where its connections are, for the page to listen to. */
  async serve(instance: Instance, database?: { readonly host: string; readonly namespace: string }): Promise<string> {
    // The page too, as `npm start` serves it, telling it the Auth emulator the instance checks tokens on
    // and the App Check site key it attests with, if any, and whether the instance consumes the message calls' tokens.
    const site = localSite("demo-chatify", process.env.FIREBASE_AUTH_EMULATOR_HOST, {
      appCheckSiteKey: process.env[APP_CHECK_SITE_KEY_VARIABLE],
      appCheckReplayProtection: messageTokensConsumed(instance.config),
      database,
    });
    const server = createLocalServer({ api: instance.api, maxBodyBytes: instance.config.maxBodyBytes, rewrites: hostingRewrites(), projectId: "demo-chatify", region: "us-central1", site });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    this.servers.push(server);
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    for (const server of this.servers) server.closeAllConnections();
    await Promise.all(this.servers.map((server) => new Promise((resolve) => server.close(resolve))));
  }
}
