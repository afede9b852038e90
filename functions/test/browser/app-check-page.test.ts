import { generateKeyPairSync } from "node:crypto";
import type { Page, Request } from "playwright-core";
import { firebaseAppCheck } from "../../src/auth/firebase-app-check";
import { APP_CHECK_SITE_KEY_VARIABLE } from "../../src/local/project-files";
import { typeAndSend } from "../support/chat-page-steps";
import { cspViolations, describeWithChromium, launchChromium, recordCspViolations, type LaunchedBrowser } from "../support/chromium";
import { startHarness, type Harness } from "../support/http-harness";
import { appCheckToken, LocalAppCheck } from "../support/local-app-check";
import { recordingLog } from "../support/recording-log";

/** A site key as the console issues them: the page's file names it, the custom provider stands in for reCAPTCHA. */
const SITE_KEY = "6LeTestSiteKeyForTheChatPage0000000000000";

/** The App Check tokens the page sent with its API calls, in order. */
function sentTokens(requests: readonly Request[]): (string | undefined)[] {
  return requests.filter((request) => new URL(request.url()).pathname.startsWith("/api/")).map((request) => request.headers()["x-firebase-appcheck"]);
}

/** Whether `request` sends a message (the one call whose token the server consumes with replay protection). */
const isMessage = (request: Request): boolean => request.method() === "POST" && /^\/api\/v1\/chatbot\/session\/[^/]+\/message$/.test(new URL(request.url()).pathname);

/**
 * The chat page's App Check path in a real Chromium, against a server that requires App Check
 * (REQUIRE_APP_CHECK) and verifies tokens with firebase-admin against locally served keys. The
 * deployment names reCAPTCHA Enterprise (APP_CHECK_RECAPTCHA_SITE_KEY); the test gives the page a
 * custom provider returning test-signed tokens (`window.chatifyAppCheckProvider`), since reCAPTCHA
 * and the debug provider both need Google.
 */
describeWithChromium("the chat page with App Check", () => {
  const signing = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const previousKey = process.env.APP_CHECK_RECAPTCHA_SITE_KEY;
  let google: LocalAppCheck;
  let attested: Harness;
  /** The same server, its page told of no provider. */
  let unattested: Harness;
  /** A server consuming each message's token (APP_CHECK_REPLAY_PROTECTION), its page told so. */
  let replayProtected: Harness;
  let browser: LaunchedBrowser;
  let page: Page;
  let minted: string[];
  let requests: Request[];

  beforeAll(async () => {
    google = await LocalAppCheck.start(signing.publicKey);
    const options = { store: "memory" as const, env: { REQUIRE_APP_CHECK: "true" } };
    unattested = await startHarness({ ...options, appCheck: firebaseAppCheck(google.app().app, { log: recordingLog().log }) });
    // The local server reads the site key when it starts, as `npm start` does.
    process.env[APP_CHECK_SITE_KEY_VARIABLE] = SITE_KEY;
    attested = await startHarness({ ...options, appCheck: firebaseAppCheck(google.app().app, { log: recordingLog().log }) });
    replayProtected = await startHarness({ store: "memory", env: { ...options.env, APP_CHECK_REPLAY_PROTECTION: "true" }, appCheck: firebaseAppCheck(google.app().app, { log: recordingLog().log }) });
    browser = await launchChromium({ width: 390, height: 844 });
    await recordCspViolations(browser);
  }, 60_000);
  afterAll(async () => {
    if (previousKey === undefined) delete process.env.APP_CHECK_RECAPTCHA_SITE_KEY;
    else process.env.APP_CHECK_RECAPTCHA_SITE_KEY = previousKey;
    await browser.close();
    await attested.close();
    await unattested.close();
    await replayProtected.close();
    await google.close();
  });
  beforeEach(async () => {
    google.reset();
    minted = [];
    requests = [];
    page = await browser.context.newPage();
    page.on("request", (request) => requests.push(request));
    // The page's provider: a fresh test-signed token each time App Check asks for one.
    await page.exposeFunction("chatifyAppCheckProvider", () => {
      const token = appCheckToken(signing.privateKey, { claims: { jti: String(minted.length) } });
      minted.push(token);
      return { token, expireTimeMillis: Date.now() + 3_600_000 };
    });
  });
  afterEach(async () => {
    expect(await cspViolations(page)).toEqual([]);
    await page.close();
  });

  /** Opens the page `harness` serves and asks it for a session as `userId`. */
  async function startSession(harness: Harness, userId: string): Promise<void> {
    await page.goto(`${harness.api.baseUrl}/`);
    await page.waitForSelector("body[data-ready=true]");
    await page.fill("#user", userId);
    await page.click("#start-button");
  }

  it("gets a token from its provider when the deployment names one, and sends it with every call", async () => {
    await startSession(attested, "user_app_check");
    await page.waitForSelector("body[data-state=active]");
    await page.fill("#message", "Hello with a token");
    await page.press("#message", "Enter");
    await page.waitForSelector("body[data-state=active] #log .assistant:not(.streaming)");
    expect(await page.textContent("#log .assistant .text")).toBe("reply #1 to: Hello with a token");
    await page.click("#end-button");
    await page.waitForSelector("body[data-state=ended]");

    const sent = sentTokens(requests);
    // The session's three calls, besides the reads of the conversation list (issue 16).
    const sessionCalls = requests.filter((request) => /^\/api\/v1\/chatbot\/session(\/|$)/.test(new URL(request.url()).pathname) && request.method() !== "GET").map((request) => request.method());
    expect(sessionCalls).toEqual(["POST", "POST", "DELETE"]);
    expect(sent.length).toBeGreaterThan(3);
    expect(minted.length).toBeGreaterThanOrEqual(1);
    // Each call carried a token the provider minted (App Check reuses one until it nears expiry).
    for (const token of sent) expect(minted).toContain(token);
    expect(await page.textContent("#identity")).toContain("App Check: a token from the page's own provider goes with each call.");
    expect(requests.map((request) => new URL(request.url()).pathname)).toContain("/__/firebase/12.19.0/firebase-app-check-compat.js");
    expect(requests.every((request) => new URL(request.url()).hostname === "127.0.0.1")).toBe(true);
  });

  it("sends each message a limited-use token of its own when the server consumes them (replay protection): every message is answered, not only the first", async () => {
    // Each token consumed once, as App Check does: the token App Check keeps for an hour would pass once.
    google.consumeOnce();
    await startSession(replayProtected, "user_replay_protected");
    await page.waitForSelector("body[data-state=active]");
    await typeAndSend(page, "First message");
    await page.waitForSelector("#log .assistant:not(.streaming)");
    await typeAndSend(page, "Second message");
    // The second reply, or the page's error: whichever comes first.
    await page.waitForSelector(":nth-match(#log .assistant:not(.streaming), 2), #error:not([hidden])", { timeout: 10_000 });
    const replies = await page.locator("#log .assistant .text").allTextContents();
    const error = (await page.locator("#error").isVisible()) ? await page.textContent("#error") : "";
    expect({ replies, error }).toEqual({ replies: ["reply #1 to: First message", "reply #2 to: Second message"], error: "" });

    // Each message went with a token of its own, minted for it, which no other call carried.
    const messageTokens = requests.filter(isMessage).map((request) => request.headers()["x-firebase-appcheck"]);
    const otherTokens = sentTokens(requests.filter((request) => !isMessage(request)));
    expect(messageTokens).toHaveLength(2);
    expect(new Set(messageTokens).size).toBe(2);
    for (const token of messageTokens) {
      expect(minted).toContain(token);
      expect(otherTokens).not.toContain(token);
    }
    // The server consumed those two, and nothing else.
    const consumed = google.received.filter((request) => request.path.endsWith(":verifyAppCheckToken")).map((request) => (JSON.parse(request.body) as { app_check_token: string }).app_check_token);
    expect(consumed).toEqual(messageTokens);
  });

  it("says, when the server refuses its token (APP_CHECK_INVALID), that nothing was done and that reloading will not help, since App Check keeps the token it stored", async () => {
    // App Check says every message's token was used before.
    google.answers.replay = { status: 200, body: JSON.stringify({ alreadyConsumed: true }) };
    await startSession(replayProtected, "user_token_refused");
    await page.waitForSelector("body[data-state=active]");
    const modelCalls = replayProtected.fake.requests.length;
    await typeAndSend(page, "Refused");
    await page.waitForSelector("#error:not([hidden])");
    expect(await page.textContent("#error")).toBe(
      "This site answers only its own app, and refused the App Check token this page sent, so nothing was done. Reloading will not help: the site's App Check setup does not match this page. Let the site's owner know.",
    );
    expect(replayProtected.fake.requests).toHaveLength(modelCalls);
  });

  it("activates App Check again at the next call when its SDK script failed to load once", async () => {
    // The App Check script fails once (a phone between networks, a deploy under way), then is served again.
    let requested = 0;
    await page.route("**/__/firebase/*/firebase-app-check-compat.js", async (route) => {
      requested++;
      if (requested === 1) await route.abort("connectionreset");
      else await route.continue();
    });
    await page.goto(`${attested.api.baseUrl}/`);
    await page.waitForSelector("body[data-ready=true]");
    // The list read at start finds no token to send, and sends nothing.
    await page.waitForSelector("#error:not([hidden])");
    expect(await page.textContent("#error")).toBe(
      "App Check could not attest this page: could not load /__/firebase/12.19.0/firebase-app-check-compat.js. Nothing was sent; try again in a moment.",
    );
    expect(sentTokens(requests)).toEqual([]);

    // The visitor starts a session: App Check loads its script again, and the call carries a token.
    await page.fill("#user", "user_app_check_again");
    await page.click("#start-button");
    await page.waitForSelector("body[data-state=active], body[data-state=idle] #error:not([hidden])");
    expect({ state: await page.getAttribute("body", "data-state"), error: await page.textContent("#error"), requested }).toEqual({ state: "active", error: "", requested: 2 });
    // Every call carried a token (App Check may reuse one it stored for the browser earlier), and the server took it.
    const sent = sentTokens(requests);
    expect(sent.length).toBeGreaterThanOrEqual(1);
    for (const token of sent) expect(token).toEqual(expect.any(String));
    expect(await page.locator('script[src$="/firebase-app-check-compat.js"]').count()).toBe(1);
  });

  it("names the refusal when its deployment gives it no provider and the server requires App Check", async () => {
    await startSession(unattested, "user_no_app_check");
    await page.waitForSelector("#error:not([hidden])");
    expect(await page.textContent("#error")).toBe("This site answers only its own app, and this page sent no App Check token: its deployment names no App Check provider for it.");
    expect(await page.getAttribute("body", "data-state")).toBe("idle");
    // No sign-in was tried: the 401 was App Check's, not the ID token's.
    expect(requests.some((request) => new URL(request.url()).pathname.includes("firebase-auth-compat"))).toBe(false);
    expect(sentTokens(requests)).toEqual([undefined]);
    expect(minted).toEqual([]);
  });
});
