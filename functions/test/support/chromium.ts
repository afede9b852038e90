import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { BrowserContext, Page } from "playwright-core";
import { describeUnless } from "./visible-skip";

/**
 * Where a Chromium is: `CHROMIUM_PATH`, else Debian's `chromium` package (playwright-core drives
 * a browser that is already installed; its own downloads cannot be fetched here). `.ci/run`
 * installs the package when it is missing.
 */
function chromiumPath(): string | undefined {
  const candidates = [process.env.CHROMIUM_PATH, "/usr/bin/chromium", "/usr/bin/chromium-browser"];
  return candidates.find((path): path is string => path !== undefined && path !== "" && existsSync(path));
}

function skipReason(): string | undefined {
  try {
    require.resolve("playwright-core");
  } catch {
    return "playwright-core is not installed (a development dependency: `npm ci` in functions/)";
  }
  if (chromiumPath() === undefined) {
    return "no Chromium at CHROMIUM_PATH, /usr/bin/chromium or /usr/bin/chromium-browser (Debian: `apt-get install chromium`; .ci/run does it)";
  }
  return undefined;
}

/** Runs `body` when a Chromium and playwright-core are at hand; otherwise says why and skips, visibly. */
export function describeWithChromium(name: string, body: () => void): void {
  describeUnless(skipReason(), name, body);
}

export interface LaunchedBrowser {
  readonly context: BrowserContext;
  close(): Promise<void>;
}

/**
 * A headless Chromium with a profile of its own (a fresh folder, removed on close) and nothing
 * that reaches the network by itself: this machine has none, and a test must not wait on it.
 */
export async function launchChromium(viewport: { width: number; height: number }): Promise<LaunchedBrowser> {
  // Loaded here, not imported at the top: without the package the suite must load and skip, not fail.
  const { chromium } = createRequire(__filename)("playwright-core") as typeof import("playwright-core");
  const profile = mkdtempSync(join(tmpdir(), "chatify-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath() ?? "",
    headless: true,
    viewport,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/**
 * Collects the page's Content-Security-Policy violations (`securitypolicyviolation` events) in
 * `window.cspViolations`, from before any script of the page runs: the page must run under its
 * policy without one.
 */
export async function recordCspViolations(browser: LaunchedBrowser): Promise<void> {
  await browser.context.addInitScript(`
    window.cspViolations = [];
    document.addEventListener("securitypolicyviolation", (event) => window.cspViolations.push(event.effectiveDirective + " " + event.blockedURI));
  `);
}

/** The violations `recordCspViolations` collected on `page`. */
export const cspViolations = (page: Page): Promise<unknown> => page.evaluate("window.cspViolations");

/**
 * A headless Chromium with `count` contexts of its own (fresh, in memory, sharing nothing: no
 * cookie, storage or signed-in user), as that many people on as many devices would be.
 */
export async function launchChromiumContexts(count: number, viewport: { width: number; height: number }): Promise<{ readonly contexts: readonly BrowserContext[]; close(): Promise<void> }> {
  const { chromium } = createRequire(__filename)("playwright-core") as typeof import("playwright-core");
  const browser = await chromium.launch({
    executablePath: chromiumPath() ?? "",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
  });
  const contexts = await Promise.all(Array.from({ length: count }, () => browser.newContext({ viewport })));
  return { contexts, close: () => browser.close() };
}

/**
 * Lets the first POST to `pattern` reach the server and then loses its answer (the connection
 * reset on the way back), as a dropped link does after the server acted; later POSTs go through.
 * The Idempotency-Key of every POST is pushed to the returned list, in order.
 */
export async function loseFirstPostAnswer(page: Page, pattern: string): Promise<(string | undefined)[]> {
  const keys: (string | undefined)[] = [];
  let lost = false;
  await page.route(pattern, async (route) => {
    if (route.request().method() !== "POST") return route.continue();
    keys.push(route.request().headers()["idempotency-key"]);
    if (lost) return route.continue();
    lost = true;
    await route.fetch();
    await route.abort("connectionreset");
  });
  return keys;
}

