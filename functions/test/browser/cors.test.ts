import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Page } from "playwright-core";
import { describeWithChromium, launchChromium, type LaunchedBrowser } from "../support/chromium";
import { ROUTES, startHarness, type Harness } from "../support/http-harness";

/**
 * docs/api.md: a request body may be sent compressed, and the API answers the origins of
 * CORS_ORIGINS (default `*`), so that a page on another origin may call it. Content-Encoding is no
 * CORS-safelisted request header: the browser asks for it in a preflight, and sends the request
 * only if the answer allows it.
 */
describeWithChromium("a page on another origin calling the API", () => {
  let harness: Harness;
  let browser: LaunchedBrowser;
  let site: Server;
  let page: Page;

  beforeAll(async () => {
    harness = await startHarness({ store: "memory" });
    // Another origin: a blank page on a port of its own.
    site = createServer((_request, response) => {
      response.writeHead(200, { "content-type": "text/html" });
      response.end("<!doctype html><title>other origin</title>");
    });
    await new Promise<void>((resolve) => site.listen(0, "127.0.0.1", resolve));
    browser = await launchChromium({ width: 800, height: 600 });
    page = await browser.context.newPage();
    await page.goto(`http://127.0.0.1:${(site.address() as AddressInfo).port}/`);
  }, 60_000);
  afterAll(async () => {
    await browser.close();
    site.closeAllConnections();
    await new Promise((resolve) => site.close(resolve));
    await harness.close();
  });

  /** POSTs a session's body from the page, gzip-compressed or not; the status, or the fetch's failure. */
  const post = (compressed: boolean) =>
    page.evaluate(
      async ({ url, compressed }) => {
        const json = JSON.stringify({ user_id: "cross-origin-user", template_id: "friendly-assistant" });
        const body = compressed ? await new Response(new Blob([json]).stream().pipeThrough(new CompressionStream("gzip"))).arrayBuffer() : json;
        const headers: Record<string, string> = { "content-type": "application/json", ...(compressed ? { "content-encoding": "gzip" } : {}) };
        try {
          return (await fetch(url, { method: "POST", headers, body })).status;
        } catch (error) {
          return String(error);
        }
      },
      { url: `${harness.api.baseUrl}${ROUTES.create}`, compressed },
    );

  it("sends a compressed body as it sends an uncompressed one: the preflight allows Content-Encoding", async () => {
    expect(await post(false)).toBe(201);
    expect(await post(true)).toBe(201);
  });
});
