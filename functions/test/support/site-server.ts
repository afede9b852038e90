import type { AddressInfo } from "node:net";
import type { Api } from "../../src/http/api";
import { createLocalServer } from "../../src/local/local-server";
import { hostingRewrites } from "../../src/local/project-files";
import type { StaticSite } from "../../src/local/static-site";

export interface SiteServer {
  readonly baseUrl: string;
  close(): Promise<void>;
}

/** An API that is never meant to be reached: for a server asked only for the site's files. */
const noApi: Api = () => Promise.reject(new Error("this server serves files only"));

/** The local server of `npm start` for `site` (and `api`, if given) on a free loopback port. */
export async function startSiteServer(site: StaticSite, api: Api = noApi): Promise<SiteServer> {
  const server = createLocalServer({ api, maxBodyBytes: 1024, rewrites: hostingRewrites(), projectId: "demo-chatify", region: "us-central1", site });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
