import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { BrowserContext, Page } from "playwright-core";
import { PROJECT_ROOT } from "../../src/local/project-files";
import { startEmulatorProject, type EmulatorProject } from "../support/emulator-project";
import { describeWithChromium, launchChromium, launchChromiumContexts, loseFirstPostAnswer, type LaunchedBrowser } from "../support/chromium";
import { ApiUser, HOSTING_ROUTES } from "../support/connection-api";
import { ROUTES, startHarness, type Harness } from "../support/http-harness";
import { describeWithRtdb } from "../support/rtdb";
import { deleteCursorSecret, olderPageReads } from "../support/refused-cursors";
import { CuttingProxy, firstHalf } from "../support/cutting-proxy";

/** Collects the page's Content-Security-Policy violations from before any of its scripts runs. */
async function recordCspViolations(context: BrowserContext): Promise<void> {
  await context.addInitScript(`
    window.cspViolations = [];
    document.addEventListener("securitypolicyviolation", (event) => window.cspViolations.push(event.effectiveDirective + " " + event.blockedURI));
  `);
}

/**
 * Opens the People panel of a new visitor's page; returns the user's id. The page first reads the
 * visitor's conversations, meeting the 401 and signing in anonymously, and draws the (empty) list
 * above the panel: the panel is clicked once that is drawn, since a click while the list moved the
 * panel down could land beside it (seen once in CI: the panel stayed closed).
 */
async function openPeople(page: Page, baseUrl: string): Promise<string> {
  await page.goto(`${baseUrl}/`);
  await page.waitForSelector("body[data-ready=true]");
  await page.waitForSelector("#identity:has-text('signed in anonymously')", { state: "attached", timeout: 30_000 });
  await page.waitForSelector("#no-conversations:not([hidden])");
  await page.click("#people summary");
  await page.waitForSelector("#people[open]");
  return (await page.textContent("#people-you")) ?? "";
}

/** The messages a page shows in its open conversation, in order: "key who: text". */
async function shown(page: Page): Promise<string[]> {
  const items = await page.$$("#people-log li");
  const text = async (item: (typeof items)[number], selector: string) => (await (await item.$(selector))?.textContent()) ?? "";
  return Promise.all(items.map(async (item) => `${(await item.getAttribute("data-id")) ?? ""} ${await text(item, ".who")}: ${await text(item, ".text")}`));
}

/** Waits (bounded) for `check`, saying `what` did not come. */
async function until(check: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Waits until the panel has acted on every answer it asked for (`data-pending`, counted by people.js). */
async function settled(page: Page): Promise<void> {
  await page.waitForSelector("#people[data-pending='0']", { state: "attached" });
}

/** A test's users on `harness` (named, not signed in), each `name-<stamp>` with one stamp for all of them. */
function namedUsers<const Names extends readonly string[]>(harness: Harness, ...names: Names): { readonly [K in keyof Names]: ApiUser } {
  const stamp = Date.now();
  return names.map((name) => new ApiUser(`${name}-${stamp}`, harness.api, HOSTING_ROUTES)) as { readonly [K in keyof Names]: ApiUser };
}

/** Opens the People panel on `page` as `user` (named, not signed in), its list read. */
async function openPanelOf(page: Page, harness: Harness, user: ApiUser): Promise<void> {
  await page.goto(`${harness.api.baseUrl}/`);
  await page.waitForSelector("body[data-ready=true]");
  await page.fill("#user", user.id);
  await page.click("#people summary");
  await page.waitForSelector("#people[open]");
  await page.click("#connections-refresh");
}

/** What has the keyboard focus: an element's id, else its tag, class and connection (`BUTTON.secondary end[id]`), else "BODY" (the focus lost). */
async function focused(page: Page): Promise<string> {
  return page.evaluate(`(() => {
    const e = document.activeElement;
    if (!e || e === document.body) return "BODY";
    const item = e.closest("li[data-connection-id]");
    return e.id || e.tagName + "." + e.className + (item ? "[" + item.dataset.connectionId + "]" : "");
  })()`);
}

async function type(page: Page, text: string): Promise<void> {
  await page.fill("#people-message", text);
  await page.press("#people-message", "Enter");
}

/**
 * The People panel behind a network that cuts an answer once it began (`CuttingProxy`): the
 * server sent the message and answered 201, the browser got the status line and part of the body.
 */
describeWithChromium("the People panel, when a send's answer is cut on the way back", () => {
  let harness: Harness;
  let proxy: CuttingProxy;
  let browser: LaunchedBrowser;

  beforeAll(async () => {
    harness = await startHarness({ store: "memory" });
    proxy = await CuttingProxy.start(harness.api.baseUrl);
    browser = await launchChromium({ width: 390, height: 844 });
  }, 60_000);
  afterAll(async () => {
    await browser.close();
    await proxy.stop();
    await harness.close();
  });

  it("gives a message whose 201 arrived without its whole body back, saying it may have been sent", async () => {
    const ann = new ApiUser(`ann-${String(Date.now())}`, harness.api, HOSTING_ROUTES);
    const ben = new ApiUser(`ben-${String(Date.now())}`, harness.api, HOSTING_ROUTES);
    const id = await ann.connectWith(ben);
    const page = await browser.context.newPage();
    await page.goto(`${proxy.origin}/`);
    await page.waitForSelector("body[data-ready=true]");
    await page.fill("#user", ann.id);
    await page.click("#people summary");
    await page.waitForSelector("#people[open]");
    await page.click("#connections-refresh");
    await page.click("#connections li[data-status=accepted] button.open");
    await page.waitForSelector("#conversation:not([hidden])");

    proxy.cutNext("POST", /\/connections\/[^/]+\/messages$/, firstHalf);
    await type(page, "Hello Ben");
    await page.waitForSelector("#people-error:not([hidden])");
    expect(proxy.cutDone.at(-1)).toMatch(/ 201$/);
    // Sent: Ben has it.
    expect(((await ben.read(id)).body.messages as { content: string }[]).map((message) => message.content)).toEqual(["Hello Ben"]);
    expect(await page.inputValue("#people-message")).toBe("Hello Ben");
    expect(await page.textContent("#people-error")).toContain("may have been sent all the same: sending it again unchanged is safe");
    await page.close();
  }, 60_000);

  it("reads the list one request at a time while a read goes unanswered: over a dead link its reads do not pile up", async () => {
    const ann = new ApiUser(`ann-${String(Date.now())}`, harness.api, HOSTING_ROUTES);
    const page = await browser.context.newPage();
    await page.clock.install();
    await page.goto(`${proxy.origin}/`);
    await page.waitForSelector("body[data-ready=true]");
    await page.fill("#user", ann.id);
    // From now on the list's reads get no answer, not even a head: a link gone dead without a reset.
    await page.route(
      (url) => url.pathname.endsWith("/connections"),
      (route) => {
        if (route.request().method() !== "GET") void route.continue();
      },
    );
    await page.click("#people summary");
    await page.waitForSelector("#people[open]");
    // Seven of the panel's 4 s turns, within the 90 s a read waits for its answer's head. The
    // reads under way are the panel's own count (data-pending), set as each starts: the requests
    // themselves may reach this process's route after the clock has run.
    await page.clock.runFor(30_000);
    expect(await page.getAttribute("#people", "data-pending")).toBe("1");
    await page.close();
  }, 60_000);
});

/**
 * Two people, each in a browser context of their own, on the chat page served by the local server
 * with the database stand-in (rtdb-wire, its security rules loaded from database.rules.json) and
 * ID tokens from the Auth emulator: one asks, the other accepts, and they exchange messages that
 * each sees arrive live through the Realtime Database SDK (the page polls nothing then), under
 * the rules that let the two of them, and only them, read the connection. A WebSocket attempt that
 * fails does not send the SDK to long polling, which the page's policy refuses
 * (docs/web-page-security.md): the page calls forceWebSockets().
 */
describeWithChromium("two users chatting live on the chat page", () => {
  describeWithRtdb("in Chromium, on the database stand-in with its rules, signed in on the Auth emulator", () => {
    let emulator: EmulatorProject;
    let harness: Harness;
    let browser: Awaited<ReturnType<typeof launchChromiumContexts>>;
    const previousHost = process.env.FIREBASE_AUTH_EMULATOR_HOST;

    beforeAll(async () => {
      emulator = await startEmulatorProject({ projectId: "demo-chatify", only: ["auth"], env: {}, secrets: {} });
      // firebase-admin reads this when an app's Auth is first used: before the harness starts.
      process.env.FIREBASE_AUTH_EMULATOR_HOST = emulator.authHost;
      harness = await startHarness({ store: "rtdb", env: { REQUIRE_AUTH: "true" } });
      // The project's rules, loaded into the harness's database: the pages read under them (the functions, as admin, are not held to them).
      const rules = await fetch(`http://${process.env.FIREBASE_DATABASE_EMULATOR_HOST ?? ""}/.settings/rules.json?ns=${harness.namespace ?? ""}`, {
        method: "PUT",
        headers: { Authorization: "Bearer owner" },
        body: readFileSync(join(PROJECT_ROOT, "database.rules.json"), "utf8"),
      });
      expect(rules.status).toBe(200);
      // Two people per test, each with a browser (and a signed-in user) of their own.
      browser = await launchChromiumContexts(4, { width: 390, height: 844 });
      for (const context of browser.contexts) await recordCspViolations(context);
    }, 120_000);
    afterAll(async () => {
      if (previousHost === undefined) delete process.env.FIREBASE_AUTH_EMULATOR_HOST;
      else process.env.FIREBASE_AUTH_EMULATOR_HOST = previousHost;
      await browser.close();
      await harness.close();
      await emulator.stop();
    }, 30_000);

    it("asks, accepts, and exchanges messages that arrive live on the other page, in one order", async () => {
      const [ann, ben] = await Promise.all(browser.contexts.slice(0, 2).map((context) => context.newPage()));
      const annId = await openPeople(ann!, harness.api.baseUrl);
      const benId = await openPeople(ben!, harness.api.baseUrl);
      expect(annId).not.toBe(benId);

      await ann!.fill("#connect-user", benId);
      await ann!.click("#connect-button");
      await ann!.waitForSelector("#connections li[data-status=pending]");
      await ben!.click("#connections-refresh");
      await ben!.click("#connections li[data-status=pending] button.accept");
      await ben!.waitForSelector("#connections li[data-status=accepted]");
      await ben!.click("#connections li[data-status=accepted] button.open");
      await ann!.click("#connections-refresh");
      await ann!.click("#connections li[data-status=accepted] button.open");
      // Both follow the conversation through the database, not the API.
      await Promise.all([ann!.waitForSelector("#people[data-live=true]"), ben!.waitForSelector("#people[data-live=true]")]);

      await type(ann!, "Hello Ben");
      await ben!.waitForSelector("#people-log li[data-id=m000000001] .text:text-is('Hello Ben')");
      await type(ben!, "Hi Ann!");
      await ann!.waitForSelector("#people-log li[data-id=m000000002] .text:text-is('Hi Ann!')");
      for (const text of ["one", "two", "three"]) await type(ann!, text);
      await ben!.waitForSelector("#people-log li[data-id=m000000005]");

      const seenByBen = await shown(ben!);
      expect(seenByBen.slice(0, 2)).toEqual([`m000000001 ${annId}: Hello Ben`, "m000000002 You: Hi Ann!"]);
      // Sent one after another without waiting: the keys are in the order the database committed them.
      expect(seenByBen.slice(2).map((line) => line.slice(11)).sort()).toEqual([`${annId}: one`, `${annId}: three`, `${annId}: two`]);
      await ann!.waitForSelector("#people-log li[data-id=m000000005]");
      expect((await shown(ann!)).map((line) => line.replace(`${benId}:`, "them:").replace("You:", "me:"))).toEqual(seenByBen.map((line) => line.replace(`${annId}:`, "me:").replace("You:", "them:")));

      const screenshot = join(tmpdir(), `chatify-people-${Date.now()}.png`);
      await ben!.screenshot({ path: screenshot, fullPage: true });
      console.log(`people panel screenshot: ${screenshot}`);
      // The database's WebSocket, the SDK's scripts and the emulators ran under the page's policy.
      for (const page of [ann!, ben!]) expect(await page.evaluate("window.cspViolations")).toEqual([]);
    }, 90_000);

    it("still shows the other user's messages live, under the page's policy, when its first WebSocket attempt to the database is cut", async () => {
      const [annContext, benContext] = browser.contexts.slice(2);
      // Ben's first WebSocket to the database is cut as it opens (a network blip); every later one goes through.
      let attempts = 0;
      await benContext!.routeWebSocket(/\/\.ws\?/, (ws) => {
        attempts++;
        if (attempts === 1) {
          void ws.close();
          return;
        }
        ws.connectToServer();
      });
      const [ann, ben] = await Promise.all([annContext!.newPage(), benContext!.newPage()]);
      // The policy's refusals in the frames the SDK's long polling makes are said on the console (their own documents' events are not the page's).
      const refused: string[] = [];
      ben.on("console", (message) => {
        if (message.text().includes("Content Security Policy")) refused.push(message.text());
      });
      await openPeople(ann, harness.api.baseUrl);
      const benId = await openPeople(ben, harness.api.baseUrl);

      await ann.fill("#connect-user", benId);
      await ann.click("#connect-button");
      await ann.waitForSelector("#connections li[data-status=pending]");
      await ben.click("#connections-refresh");
      await ben.click("#connections li[data-status=pending] button.accept");
      await ben.waitForSelector("#connections li[data-status=accepted]");
      await ben.click("#connections li[data-status=accepted] button.open");
      await ann.click("#connections-refresh");
      await ann.click("#connections li[data-status=accepted] button.open");
      await Promise.all([ann.waitForSelector("#people[data-live=true]"), ben.waitForSelector("#people[data-live=true]")]);

      await type(ann, "Hello Ben");
      const hello = "#people-log li[data-id=m000000001] .text:text-is('Hello Ben')";
      const arrives = async (): Promise<boolean> =>
        ben.waitForSelector(hello, { timeout: 15_000 }).then(
          () => true,
          () => false,
        );
      const live = await arrives();
      // Reloaded, with no network trouble since: the SDK (without forceWebSockets) remembers the failed attempt in localStorage, and polls again.
      await ben.reload();
      await ben.waitForSelector("body[data-ready=true]");
      await ben.waitForSelector("#identity:has-text('signed in anonymously')", { state: "attached", timeout: 30_000 });
      await ben.click("#people summary");
      await ben.click("#connections-refresh");
      await ben.click("#connections li[data-status=accepted] button.open");
      await ben.waitForSelector("#people[data-live=true]");
      const afterReload = await arrives();
      expect({ cut: attempts >= 1, live, afterReload, refused: refused.slice(0, 1) }).toEqual({ cut: true, live: true, afterReload: true, refused: [] });
      expect(await ben.evaluate("window.cspViolations")).toEqual([]);
    }, 90_000);
  });
});

/**
 * The People panel polling through the API (embedded store, no sign-in): a message whose answer
 * is lost on its way back (the connection reset after the server stored it) is given back, and
 * sent again with the key it was first sent with, so the server answers with the message it
 * stored (docs/connections.md, Retries) instead of storing and notifying it twice. Its one message
 * box, shared by every conversation it opens: the text stays with the conversation it was typed in
 * or given back to, so a message meant for one person is never sent to another; and what the panel
 * said of a failure stays until the visitor acts, whatever the background reads (the list every
 * 4 s, a polled conversation every 2 s) meet meanwhile. An action runs once however often its
 * button is clicked, and a background read answered late never undoes it. The list and a
 * conversation are shown whole, page by page (Show older connections, Show earlier messages). A
 * conversation erased (by "Erase my data", of either user) is closed once the panel learns it.
 */
describeWithChromium("the People panel, polled through the API", () => {
  let harness: Harness;
  let browser: LaunchedBrowser;
  let page: Page;

  beforeAll(async () => {
    harness = await startHarness({ store: "memory", env: { CONNECTION_REQUESTS_PER_HOUR: "1000", CONNECTION_MESSAGES_PER_MINUTE: "1000" } });
    browser = await launchChromium({ width: 1000, height: 900 });
  }, 60_000);
  afterAll(async () => {
    await browser.close();
    await harness.close();
  });
  beforeEach(async () => {
    page = await browser.context.newPage();
  });
  afterEach(async () => {
    await page.close();
  });

  it("sends a message given back after its answer was lost again with its key: stored and shown once", async () => {
    const [ann, ben] = namedUsers(harness, "ann", "ben");
    const id = await ann.connectWith(ben);

    await openPanelAs(ann);
    await page.click("#connections li[data-status=accepted] button.open");
    await page.waitForSelector("#conversation:not([hidden])");

    // The first send reaches the server, which stores it; its answer is lost on the way back.
    const keys = await loseFirstPostAnswer(page, "**/connections/*/messages");
    await type(page, "Hello Ben");
    await page.waitForSelector("#people-error:not([hidden])");
    // The text is given back to send again, though the server stored it; the panel says it may be.
    expect(await page.inputValue("#people-message")).toBe("Hello Ben");
    expect(await page.textContent("#people-error")).toContain("may have been sent all the same: sending it again unchanged is safe");
    expect((await ben.read(id)).body.messages).toHaveLength(1);

    // Sent again as it was given back: the same key, so the server answers with the stored message.
    const answer = page.waitForResponse((response) => response.request().method() === "POST" && new URL(response.url()).pathname.endsWith("/messages"));
    await page.press("#people-message", "Enter");
    expect({ status: (await answer).status(), replayed: (await answer).headers()["idempotent-replayed"] }).toEqual({ status: 201, replayed: "true" });
    await page.waitForSelector("#people-error", { state: "hidden" });
    await page.waitForSelector("#people-log li[data-id=m000000001]");
    expect(await page.inputValue("#people-message")).toBe("");

    const stored = (await ben.read(id)).body.messages as { content: string }[];
    expect(stored.map((message) => message.content)).toEqual(["Hello Ben"]);
    expect(keys).toHaveLength(2);
    expect(keys[0]).toMatch(/^[0-9a-f]{32}$/);
    expect(keys[1]).toBe(keys[0]);
    expect((await shown(page)).map((line) => line.slice(11))).toEqual(["You: Hello Ben"]);

    // Another text is another message, with a key of its own.
    await type(page, "And again");
    await page.waitForSelector("#people-log li[data-id=m000000002]");
    expect(keys).toHaveLength(3);
    expect(keys[2]).not.toBe(keys[0]);
    expect(((await ben.read(id)).body.messages as { content: string }[]).map((message) => message.content)).toEqual(["Hello Ben", "And again"]);

    // A refusal is an answer that nothing was stored: the text is given back, with no such doubt.
    expect((await ben.block(id)).status).toBe(200);
    await type(page, "Still there?");
    await page.waitForSelector("#people-error:not([hidden])");
    expect(await page.inputValue("#people-message")).toBe("Still there?");
    expect(await page.textContent("#people-error")).not.toContain("may have been sent");
  }, 60_000);

  /** Ann and Ben, connected, Ann's panel open on their conversation. */
  async function annWithBen(): Promise<{ readonly ann: ApiUser; readonly ben: ApiUser; readonly id: string }> {
    const [ann, ben] = namedUsers(harness, "ann", "ben");
    const id = await ann.connectWith(ben);
    await openAs(ann, id);
    return { ann, ben, id };
  }

  /** Opens the People panel as `user` (named, not signed in) and its conversation `id`. */
  async function openAs(user: ApiUser, id: string): Promise<void> {
    await openPanelAs(user);
    await openConversation(id);
  }

  async function openConversation(id: string): Promise<void> {
    await page.click(`#connections li[data-connection-id="${id}"] button.open`);
    await page.waitForSelector(`#conversation[data-connection-id="${id}"]`);
  }

  const contents = async (reader: ApiUser, id: string) => ((await reader.read(id)).body.messages as { content: string }[]).map((message) => message.content);

  it("never puts a message meant for one person into another person's conversation", async () => {
    const [ann, ben, cat] = namedUsers(harness, "ann", "ben", "cat");
    const withBen = await ann.connectWith(ben);
    const withCat = await ann.connectWith(cat);
    await openAs(ann, withBen);

    // The message to Ben is on a slow link, and its connection drops before it reaches the server;
    // a later send goes through.
    let release = (): void => undefined;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const keys: (string | undefined)[] = [];
    await page.route(`**/connections/${withBen}/messages`, async (route) => {
      if (route.request().method() !== "POST") return route.continue();
      keys.push(route.request().headers()["idempotency-key"]);
      if (keys.length > 1) return route.continue();
      await held;
      return route.abort("connectionreset");
    });
    const forBen = "For Ben only: my new address is 12 Hidden Lane";
    await type(page, forBen);
    // Meanwhile Ann opens her conversation with Cat; then the send to Ben fails.
    await openConversation(withCat);
    release();
    await page.waitForSelector("#people-error:not([hidden])");
    // Not given back into Cat's box: the panel says where it is.
    expect(await page.inputValue("#people-message")).toBe("");
    const said = (await page.textContent("#people-error")) ?? "";
    expect(said).toContain(`To ${ben.id}:`);
    expect(said).toContain("may have been sent all the same");
    expect(said).toContain(`It is back in your conversation with ${ben.id}.`);

    // What Ann sends to Cat is what she typed for Cat, and what she types without sending stays Cat's.
    await type(page, "Hi Cat");
    await page.waitForSelector("#people-log li[data-id=m000000001] .text:text-is('Hi Cat')");
    await page.fill("#people-message", "A draft for Cat");

    // Ben's conversation, opened again, has the message back in its box, with what was said of it.
    await openConversation(withBen);
    expect(await page.inputValue("#people-message")).toBe(forBen);
    expect(await page.textContent("#people-error")).toContain("may have been sent all the same: sending it again unchanged is safe");
    await page.press("#people-message", "Enter");
    await page.waitForSelector(`#people-log li[data-id=m000000001] .text:text-is('${forBen}')`);
    await page.waitForSelector("#people-error", { state: "hidden" });
    expect(keys).toHaveLength(2);
    expect(keys[1]).toBe(keys[0]);

    // Cat's draft is back in Cat's box.
    await openConversation(withCat);
    expect(await page.inputValue("#people-message")).toBe("A draft for Cat");
    expect({ ben: await contents(ben, withBen), cat: await contents(cat, withCat) }).toEqual({ ben: [forBen], cat: ["Hi Cat"] });
  }, 60_000);

  it("keeps saying a message may have been sent while background reads succeed, until the visitor acts", async () => {
    const { ben, id } = await annWithBen();

    await loseFirstPostAnswer(page, "**/connections/*/messages");
    await type(page, "Hello Ben");
    await page.waitForSelector("#people-error:not([hidden])");

    // Ben answers: both background reads succeed and show it, the conversation's poll and the list's.
    expect((await ben.send(id, "Are you there?")).status).toBe(201);
    await page.waitForSelector("#people-log li[data-id=m000000002] .text:text-is('Are you there?')");
    await page.waitForSelector(`#connections li[data-connection-id="${id}"] .note:has-text("2 messages")`);
    expect({ box: await page.inputValue("#people-message"), said: await page.textContent("#people-error"), hidden: await page.getAttribute("#people-error", "hidden") }).toEqual({
      box: "Hello Ben",
      said: expect.stringContaining("may have been sent all the same") as unknown,
      hidden: null,
    });

    // Ann sends it again: the sentence goes, and the message is there once.
    await page.press("#people-message", "Enter");
    await page.waitForSelector("#people-error", { state: "hidden" });
    await page.waitForSelector("#people-log li[data-id=m000000001] .text:text-is('Hello Ben')");
    expect(await contents(ben, id)).toEqual(["Hello Ben", "Are you there?"]);
  }, 60_000);
  const openPanelAs = (user: ApiUser) => openPanelOf(page, harness, user);

  it("ends a connection once on a double click on End, saying no failure", async () => {
    const [ann, ben] = namedUsers(harness, "ann", "ben");
    const id = await ann.connectWith(ben);
    await openPanelAs(ann);
    await page.waitForSelector(`#connections li[data-connection-id="${id}"][data-status=accepted] button.end`);

    let sent = 0;
    const ends: number[] = [];
    page.on("request", (request) => {
      if (request.method() === "DELETE" && request.url().includes(`/connections/${id}`)) sent++;
    });
    page.on("response", (response) => {
      if (response.request().method() === "DELETE" && response.url().includes(`/connections/${id}`)) ends.push(response.status());
    });
    await page.dblclick(`#connections li[data-connection-id="${id}"] button.end`);
    await page.waitForSelector(`#connections li[data-connection-id="${id}"][data-status=ended]`);
    // Every end the double click sent has been answered, and the panel has acted on the answers (the list read again after each).
    await until(() => ends.length >= sent, `${String(sent)} ends sent, ${String(ends.length)} answered`);
    await settled(page);
    expect((await ben.get(id)).body.connection).toMatchObject({ status: "ended" });
    expect({ ends, error: await page.textContent("#people-error"), shown: await page.isVisible("#people-error") }).toEqual({ ends: [200], error: "", shown: false });
  }, 60_000);

  it("keeps a connection the visitor ended ended, its message box disabled, when an older background read answers late", async () => {
    const { ben, id } = await annWithBen();
    await page.waitForSelector(`#conversation[data-connection-id="${id}"][data-status=accepted]`);

    // The next background read of the list reaches the server at once, and its answer is slow to come back.
    let holding = true;
    let held: { fulfil: () => Promise<void> } | undefined;
    await page.route("**/api/v1/connections?*", async (route) => {
      if (route.request().method() !== "GET" || !holding) return route.continue();
      holding = false;
      const response = await route.fetch();
      await new Promise<void>((resolve) => {
        held = {
          fulfil: async () => {
            await route.fulfill({ response });
            resolve();
          },
        };
      });
    });
    await until(() => held !== undefined, "a background read of the list (every 4 s)");

    // Ann ends the connection: the panel reads the list again and says it ended.
    await page.click(`#connections li[data-connection-id="${id}"] button.end`);
    await page.waitForSelector(`#conversation[data-connection-id="${id}"][data-status=ended]`);
    expect(await page.isDisabled("#people-message")).toBe(true);

    // The older read's answer arrives.
    const late = page.waitForEvent("requestfinished", { predicate: (request) => request.url().includes("/api/v1/connections?") });
    await held!.fulfil();
    await late;
    await settled(page);
    expect((await ben.get(id)).body.connection).toMatchObject({ status: "ended" });
    expect({
      conversation: await page.getAttribute("#conversation", "data-status"),
      listed: await page.getAttribute(`#connections li[data-connection-id="${id}"]`, "data-status"),
      boxDisabled: await page.isDisabled("#people-message"),
    }).toEqual({ conversation: "ended", listed: "ended", boxDisabled: true });
  }, 60_000);

  it("shows the older connections on Show older connections: one blocked long ago can be unblocked, and stays while the list is read again", async () => {
    const [ann, ben, ...friends] = namedUsers(harness, "ann", "ben", ...Array.from({ length: 20 }, (_, i) => `friend${String(i)}`));
    // Ann blocked Ben once; since then she has talked with 20 other people.
    const withBen = await ann.connectWith(ben);
    expect((await ann.block(withBen)).status).toBe(200);
    for (const friend of friends) await ann.connectWith(friend);
    expect((await ann.list("&limit=100")).body.connections).toHaveLength(21);
    // Asking Ben again is refused while her block holds: unblocking is the only way back.
    expect((await ann.ask(ben.id)).status).toBe(403);

    await openPanelAs(ann);
    await page.waitForSelector("#connections li:nth-child(20)");
    expect(await page.locator(`#connections li[data-connection-id="${withBen}"]`).count()).toBe(0);
    await page.click("#connections-more");
    await page.waitForSelector(`#connections li[data-connection-id="${withBen}"] button.unblock`);
    await page.waitForSelector("#connections-more", { state: "hidden" });
    // A background read of the first page (every 4 s) keeps the older one on view.
    const reread = page.waitForResponse((response) => response.url().includes("/api/v1/connections?") && !response.url().includes("cursor="));
    await reread;
    await settled(page);
    expect(await page.locator("#connections li").count()).toBe(21);

    await page.click(`#connections li[data-connection-id="${withBen}"] button.unblock`);
    await page.waitForSelector(`#connections li[data-connection-id="${withBen}"] button.block`);
    expect((await ann.get(withBen)).body.connection).toMatchObject({ blocked_by_you: false });
    expect(await page.locator("#connections li").count()).toBe(21);
  }, 90_000);

  it("shows the earliest messages of a conversation read through the API on Show earlier messages, every message once and in order", async () => {
    const [ann, ben] = namedUsers(harness, "ann", "ben");
    const id = await ann.connectWith(ben);
    for (let i = 1; i <= 105; i++) expect((await (i % 2 ? ben : ann).send(id, `message ${String(i)}`)).status).toBe(201);

    await openAs(ann, id);
    await page.waitForSelector("#people-log li[data-id=m000000105]");
    expect(await page.locator("#people-log li").count()).toBe(100);
    await page.click("#people-earlier");
    await page.waitForSelector("#people-log li[data-id=m000000001]");
    await page.waitForSelector("#people-earlier", { state: "hidden" });
    const texts = await page.locator("#people-log li .text").allTextContents();
    expect(texts).toEqual(Array.from({ length: 105 }, (_, index) => `message ${String(index + 1)}`));
  }, 90_000);

  /** `user`'s data erased elsewhere (another tab or device): every connection they are part of goes, with its messages. */
  async function eraseElsewhere(user: ApiUser): Promise<void> {
    expect((await harness.api.call("DELETE", `${ROUTES.erase}?user_id=${encodeURIComponent(user.id)}`)).status).toBe(200);
  }

  /** The panel's reads (GETs) of `pattern` get no answer (the network drops them); its other requests go through. */
  async function unanswered(pattern: string): Promise<void> {
    await page.route(pattern, (route) => (route.request().method() === "GET" ? route.abort() : route.continue()));
  }

  /** What the panel shows of a conversation: its messages, whether it is on view, whether its message box is offered. */
  async function conversationShown(): Promise<{ messages: number; onView: boolean; boxOffered: boolean }> {
    return {
      messages: await page.locator("#people-log li").count(),
      onView: await page.isVisible("#conversation"),
      boxOffered: (await page.isVisible("#people-message")) && (await page.isEnabled("#people-message")),
    };
  }
  const closed = { messages: 0, onView: false, boxOffered: false };

  /** Ann and Ben, connected, Ben's message stored, `reader`'s panel open on their conversation with it shown. */
  async function conversationWithMessage(reader: "ann" | "ben"): Promise<{ readonly ann: ApiUser; readonly ben: ApiUser; readonly id: string }> {
    const [ann, ben] = namedUsers(harness, "ann", "ben");
    const id = await ann.connectWith(ben);
    expect((await ben.send(id, "My secret: the door code is 4711")).status).toBe(201);
    await openAs(reader === "ann" ? ann : ben, id);
    await page.waitForSelector("#people-log li[data-id=m000000001] .text:text-is('My secret: the door code is 4711')");
    return { ann, ben, id };
  }

  it("lets go of every conversation at once when the visitor erases their data: no erased message on view, no box offered, none back on the next list read", async () => {
    const { ann, ben, id } = await conversationWithMessage("ann");

    await page.click(".settings summary");
    await page.click("#erase-data");
    await page.click("#erase-yes");
    await page.waitForSelector("#status:has-text('Your data was erased')");
    expect({ ...(await conversationShown()), listed: await page.locator("#connections li").count() }).toEqual({ ...closed, listed: 0 });
    expect((await ben.read(id)).status).toBe(404);
    expect((await ann.list()).body.connections).toEqual([]);

    // The list read again holds nothing either.
    await page.click("#connections-refresh");
    await settled(page);
    expect({ ...(await conversationShown()), listed: await page.locator("#connections li").count() }).toEqual({ ...closed, listed: 0 });
  }, 60_000);

  it("closes a conversation the other user's erasure removed once the list, read again whole, no longer holds it", async () => {
    const { ann, id } = await conversationWithMessage("ben");
    // Only the list can tell: the conversation's own reads get no answer.
    await unanswered(`**/connections/${id}/messages?*`);
    await eraseElsewhere(ann);

    await page.click("#connections-refresh");
    await page.waitForSelector("#connections li", { state: "detached" });
    await settled(page);
    expect(await conversationShown()).toEqual(closed);
  }, 60_000);

  it("closes a conversation the other user's erasure removed when its read answers 404 CONNECTION_NOT_FOUND, saying so", async () => {
    const { ann } = await conversationWithMessage("ben");
    // Only the conversation's read (every 2 s) can tell: the list's reads get no answer.
    await unanswered("**/api/v1/connections?*");
    await eraseElsewhere(ann);

    await page.waitForSelector("#people-error:has-text('CONNECTION_NOT_FOUND')", { timeout: 10_000 });
    await settled(page);
    expect(await conversationShown()).toEqual(closed);
  }, 60_000);

  it("closes a conversation the other user's erasure removed when a message sent there answers 404 CONNECTION_NOT_FOUND, saying so", async () => {
    const { ann, id } = await conversationWithMessage("ben");
    // Only the send can tell: the panel's reads get no answer.
    await unanswered("**/api/v1/connections?*");
    await unanswered(`**/connections/${id}/messages?*`);
    await eraseElsewhere(ann);

    await type(page, "Are you still there?");
    await page.waitForSelector("#people-error:has-text('CONNECTION_NOT_FOUND')", { timeout: 10_000 });
    await settled(page);
    // Not given back: there is no one to send it to.
    expect({ ...(await conversationShown()), box: await page.inputValue("#people-message") }).toEqual({ ...closed, box: "" });
  }, 60_000);

  /** The visitor names themselves `user` in the user id field (no sign-in), and reads the list again. */
  async function becomes(user: ApiUser): Promise<void> {
    await page.fill("#user", user.id);
    await page.click("#connections-refresh");
    await settled(page);
  }

  it("lets go of the open conversation when the user id changes to the other user of its connection, who then opens it as theirs", async () => {
    const { ann, ben, id } = await conversationWithMessage("ann");

    // Ben's list holds the same connection id: the conversation is Ann's all the same, and goes.
    await becomes(ben);
    expect(await page.textContent("#people-you")).toBe(ben.id);
    expect(await conversationShown()).toEqual(closed);
    // Ann writes meanwhile: nothing of hers is drawn (a poll is every 2 s).
    expect((await ann.send(id, "from ann")).status).toBe(201);
    await page.waitForTimeout(2_500);
    expect(await conversationShown()).toEqual(closed);

    // Opened by Ben, it is his: with Ann, his message his own, hers under her id.
    await openConversation(id);
    await page.waitForSelector("#people-log li[data-id=m000000002]");
    expect({ with: await page.textContent("#conversation-with"), log: (await shown(page)).map((line) => line.slice(11)) }).toEqual({
      with: ann.id,
      log: ["You: My secret: the door code is 4711", `${ann.id}: from ann`],
    });
  }, 60_000);

  it("never sends a message given back to one user as another: the user id changed, Enter sends nothing, and the text waits for its user", async () => {
    const { ann, ben, id } = await annWithBen();
    await settled(page);
    const keys = await loseFirstPostAnswer(page, "**/connections/*/messages");
    await type(page, "Ann's private words");
    await page.waitForSelector("#people-error:not([hidden])");
    await settled(page);
    expect(await page.inputValue("#people-message")).toBe("Ann's private words");

    // Named Ben before any redraw, Enter: the box is Ann's, so nothing is sent, and it is let go of.
    await page.fill("#user", ben.id);
    await page.press("#people-message", "Enter");
    await settled(page);
    expect(keys).toHaveLength(1);
    expect({ ...(await conversationShown()), error: await page.isVisible("#people-error") }).toEqual({ ...closed, error: false });
    expect(await contents(ann, id)).toEqual(["Ann's private words"]);

    // Ann again: her text is back in her conversation's box, with its key (sent again, not stored twice).
    await becomes(ann);
    await openConversation(id);
    expect(await page.inputValue("#people-message")).toBe("Ann's private words");
    await page.press("#people-message", "Enter");
    await page.waitForSelector("#people-log li[data-id=m000000001]");
    expect(keys).toEqual([keys[0], keys[0]]);
    expect(((await ann.read(id)).body.messages as { sender_id: string }[]).map((message) => message.sender_id)).toEqual([ann.id]);
  }, 60_000);

  /**
   * docs/chat-page.md: "the focus never falls back to the top of the page when the control that
   * held it goes". Each control is used with the keyboard (focused, Enter).
   */
  describe("with a keyboard alone", () => {
    const button = (id: string, action: string) => `#connections li[data-connection-id="${id}"] button.${action}`;

    it("moves the focus to the connection's Open button when Accept, used with the keyboard, goes with the request accepted", async () => {
      const [ann, ben] = namedUsers(harness, "ann", "ben");
      const id = ((await ann.ask(ben.id)).body.connection as { connection_id: string }).connection_id;
      await openPanelAs(ben);
      await settled(page);
      await page.focus(button(id, "accept"));
      await page.keyboard.press("Enter");
      await page.waitForSelector(`#connections li[data-connection-id="${id}"][data-status=accepted]`);
      await settled(page);
      expect(await focused(page)).toBe(`BUTTON.secondary open[${id}]`);
    }, 60_000);

    it("keeps the focus on the connection's Open button when End, used with the keyboard, ends it", async () => {
      const [ann, ben] = namedUsers(harness, "ann", "ben");
      const id = await ann.connectWith(ben);
      await openPanelAs(ann);
      await settled(page);
      await page.focus(button(id, "end"));
      await page.keyboard.press("Enter");
      await page.waitForSelector(`#connections li[data-connection-id="${id}"][data-status=ended]`);
      await settled(page);
      expect(await focused(page)).toBe(`BUTTON.secondary open[${id}]`);
    }, 60_000);

    it("gives the focus back to Block when a block made with the keyboard fails, its buttons enabled again", async () => {
      const [ann, ben] = namedUsers(harness, "ann", "ben");
      const id = await ann.connectWith(ben);
      await openPanelAs(ann);
      await settled(page);
      await page.route(`**/connections/${id}/block`, (route) => (route.request().method() === "POST" ? route.abort("connectionreset") : route.continue()));
      await page.focus(button(id, "block"));
      await page.keyboard.press("Enter");
      await page.waitForSelector("#people-error:not([hidden])");
      await settled(page);
      expect(await page.getAttribute(`#connections li[data-connection-id="${id}"]`, "data-status")).toBe("accepted");
      expect(await focused(page)).toBe(`BUTTON.secondary block[${id}]`);
    }, 60_000);

    it("keeps the focus on a connection's Open button when a background read draws the list again under it", async () => {
      const [ann, ben] = namedUsers(harness, "ann", "ben");
      const id = await ann.connectWith(ben);
      await openPanelAs(ann);
      await settled(page);
      await page.focus(button(id, "open"));
      // Ben writes: the panel's next background read (every 4 s) shows the new count, drawing the list again.
      expect((await ben.send(id, "hello Ann")).status).toBe(201);
      await page.waitForSelector(`#connections li[data-connection-id="${id}"] .note:has-text("1 message")`, { timeout: 15_000 });
      expect(await focused(page)).toBe(`BUTTON.secondary open[${id}]`);
    }, 60_000);

    it("gives the focus to the first connection Show older connections added when it goes, having shown the last page", async () => {
      const [ann, ...others] = namedUsers(harness, "ann", ...Array.from({ length: 21 }, (_, i) => `other${String(i)}`));
      for (const other of others) expect((await ann.ask(other.id)).status).toBe(201);
      await openPanelAs(ann);
      await page.waitForSelector("#connections-more:not([hidden])");
      await page.focus("#connections-more");
      await page.keyboard.press("Enter");
      await page.waitForSelector("#connections-more[hidden]", { state: "attached" });
      await settled(page);
      const added = await page.getAttribute("#connections li:nth-child(21)", "data-connection-id");
      // Asked by Ann, still pending: Withdraw (class end) is its first button.
      expect(await focused(page)).toBe(`BUTTON.secondary end[${added ?? ""}]`);
    }, 60_000);

    it("gives the focus to the messages' log when Show earlier messages goes, having shown the first message", async () => {
      const [ann, ben] = namedUsers(harness, "ann", "ben");
      const id = await ann.connectWith(ben);
      for (let i = 1; i <= 101; i++) expect((await ben.send(id, `m ${String(i)}`)).status).toBe(201);
      await openPanelAs(ann);
      await page.focus(button(id, "open"));
      await page.keyboard.press("Enter");
      await page.waitForSelector("#people-earlier:not([hidden])");
      await page.focus("#people-earlier");
      await page.keyboard.press("Enter");
      await page.waitForSelector("#people-log li .text:text-is('m 1')");
      await page.waitForSelector("#people-earlier[hidden]", { state: "attached" });
      await settled(page);
      expect(await focused(page)).toBe("people-log");
    }, 60_000);

    it("gives the focus to the messages' log when the other user ends the conversation while its message box has it", async () => {
      const [ann, ben] = namedUsers(harness, "ann", "ben");
      const id = await ann.connectWith(ben);
      await openPanelAs(ann);
      await page.focus(button(id, "open"));
      await page.keyboard.press("Enter");
      await page.waitForSelector(`#conversation[data-connection-id="${id}"][data-status=accepted]`);
      await page.focus("#people-message");
      await page.keyboard.type("half a thought");
      expect((await ben.end(id)).status).toBe(200);
      // The panel's next background read of the list (every 4 s) learns it ended: the box is disabled.
      await page.waitForSelector("#people-message:disabled", { timeout: 15_000 });
      expect(await focused(page)).toBe("people-log");
    }, 60_000);
  });
});

/**
 * The People panel on the Realtime Database, where the deployment's cursor secret can be deleted
 * (docs/conversations.md, Cursors): every cursor the panel holds is refused from then on.
 */
describeWithChromium("the People panel once the cursor secret is deleted", () => {
  describeWithRtdb("on the Realtime Database", () => {
    let harness: Harness;
    let browser: LaunchedBrowser;

    beforeAll(async () => {
      harness = await startHarness({ store: "rtdb", env: { CONNECTION_REQUESTS_PER_HOUR: "1000" } });
      browser = await launchChromium({ width: 1000, height: 900 });
    }, 60_000);
    afterAll(async () => {
      await browser.close();
      await harness.close();
    });

    it("starts the list again from its first page when a cursor is refused (400 INVALID_CURSOR), saying nothing, and the next click shows the older connections", async () => {
      const [ann, ...friends] = namedUsers(harness, "ann", ...Array.from({ length: 21 }, (_, i) => `friend${String(i)}`));
      for (const friend of friends) await ann.connectWith(friend);
      const page = await browser.context.newPage();
      try {
        await openPanelOf(page, harness, ann);
        await page.waitForSelector("#connections li:nth-child(20)");
        await page.waitForSelector("#connections-more:not([hidden])");
        await settled(page);
        const older = olderPageReads(page, "/api/v1/connections");

        await deleteCursorSecret(harness);

        await page.click("#connections-more");
        await settled(page);
        expect({ listed: await page.locator("#connections li").count(), more: await page.isVisible("#connections-more"), error: await page.isVisible("#people-error") }).toEqual({
          listed: 20,
          more: true,
          error: false,
        });
        await page.click("#connections-more");
        await page.waitForSelector("#connections li:nth-child(21)");
        await settled(page);

        const listed = (await ann.list("&limit=100")).body.connections as { connection_id: string }[];
        const shown = await Promise.all((await page.$$("#connections li")).map((item) => item.getAttribute("data-connection-id")));
        expect({ shown, more: await page.isVisible("#connections-more"), error: await page.isVisible("#people-error") }).toEqual({
          shown: listed.map((connection) => connection.connection_id),
          more: false,
          error: false,
        });
        // The refused cursor was asked once; the older page followed the fresh first page's cursor.
        expect({ statuses: older.map((read) => read.status), distinct: new Set(older.map((read) => read.cursor)).size }).toEqual({ statuses: [400, 200], distinct: 2 });
      } finally {
        await page.close();
      }
    }, 90_000);
  });
});
