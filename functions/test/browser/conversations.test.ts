import { readFileSync } from "node:fs";
import { randomUUID } from "node:crypto";
import { deleteApp } from "firebase/app";
import type { Page, Route } from "playwright-core";
import { describeWithChromium, launchChromium, loseFirstPostAnswer, type LaunchedBrowser } from "../support/chromium";
import { lastUser } from "../support/fake-openai-server";
import { createSession, describeEachStore, ROUTES, startHarness, type Answer, type Harness, type HarnessOptions } from "../support/http-harness";
import { describeWithRtdb } from "../support/rtdb";
import { deleteCursorSecret, olderPageReads } from "../support/refused-cursors";
import { SessionWatcher, webClient } from "../support/session-watcher";
import { startSession, typeAndSend } from "../support/chat-page-steps";
import { ApiUser, HOSTING_ROUTES } from "../support/connection-api";

/** Violations of the page's Content-Security-Policy, collected from before its scripts run. */
async function recordCspViolations(browser: LaunchedBrowser): Promise<void> {
  await browser.context.addInitScript(`
    window.cspViolations = [];
    document.addEventListener("securitypolicyviolation", (event) => window.cspViolations.push(event.effectiveDirective + " " + event.blockedURI));
  `);
}

/** A harness started with `options`, and Chromium at `viewport` recording the page's policy violations. */
async function startWithChromium(options: HarnessOptions, viewport: { readonly width: number; readonly height: number }): Promise<{ harness: Harness; browser: LaunchedBrowser }> {
  const harness = await startHarness(options);
  const browser = await launchChromium(viewport);
  await recordCspViolations(browser);
  return { harness, browser };
}

async function closeWithChromium(harness: Harness, browser: LaunchedBrowser): Promise<void> {
  await harness.close();
  await browser.close();
}

async function open(page: Page, harness: Harness): Promise<void> {
  await page.goto(`${harness.api.baseUrl}/`);
  await page.waitForSelector("body[data-ready=true]");
}

/** Sends `text` and waits for its reply to be written whole. */
async function send(page: Page, text: string): Promise<void> {
  await typeAndSend(page, text);
  await page.waitForSelector("body[data-state=active] #log .assistant:last-child:not(.streaming)");
}

/** The titles of the conversations listed, once there are `count`. */
/**
 * The titles the list shows once it shows `expected`, each at its place: the list is read again
 * after each start and reply, and the read after a reply may answer after the reply is shown (a
 * list that never shows them fails on the wait).
 */
async function listedTitles(page: Page, expected: readonly string[]): Promise<string[]> {
  for (const [index, title] of expected.entries()) await page.waitForSelector(`#conversation-list li:nth-child(${String(index + 1)}) .title:text-is(${JSON.stringify(title)})`);
  return page.locator("#conversation-list .title").allTextContents();
}

const logTexts = (page: Page) => page.locator("#log li .text").allTextContents();

/** Waits until the page has acted on every answer of the list it asked for (`data-list-reads`, counted by app.js). */
const listSettled = async (page: Page) => page.waitForSelector("body[data-list-reads='0']", { state: "attached" });

/** The page's erasure reaches the server, which erases; its answer is lost on the way back. */
async function loseErasureAnswer(page: Page): Promise<void> {
  await page.route("**/chatbot/me?*", async (route) => {
    if (route.request().method() !== "DELETE") return route.continue();
    await route.fetch();
    await route.abort("connectionreset");
  });
}

/** What has the keyboard focus: an element's id, else its tag and conversation (`BUTTON[id]`), else "BODY" (the focus lost). */
const focused = (page: Page): Promise<string> =>
  page.evaluate(`(() => {
    const e = document.activeElement;
    if (!e || e === document.body) return "BODY";
    return e.id || e.tagName + (e.dataset.sessionId ? "[" + e.dataset.sessionId + "]" : "");
  })()`);

/** A reply the fake model writes slowly (about 3.6 s at 300 ms a chunk): a reload lands while it is written. */
const SLOW_REPLY = ["A", " reply", " that", " takes", " its", " time", " to", " be", " written,", " word", " by", " word."];

describeWithChromium("your conversations and data on the chat page, in Chromium", () => {
  describeEachStore("list, resume, download, erase", (kind) => {
    let harness: Harness;
    let browser: LaunchedBrowser;

    beforeAll(async () => {
      // Small export parts: the download gathers several, one connection split across two.
      ({ harness, browser } = await startWithChromium({ store: kind, env: { USER_MAX_ACTIVE_SESSIONS: "10" }, userDataLimits: { exportPartBytes: 2_048 } }, { width: 390, height: 844 }));
    }, 60_000);
    afterAll(async () => closeWithChromium(harness, browser));

    it("lists the visitor's conversations, resumes one with its history, downloads the data, and erases it after a confirmation", async () => {
      const userId = `user_${randomUUID().slice(0, 8)}`;
      const page = await browser.context.newPage();
      await open(page, harness);
      expect((await page.textContent("#anonymous-note"))?.replace(/\s+/g, " ")).toContain("tied to this browser");

      await startSession(page, userId);
      await send(page, "Plan a trip to Lisbon");
      expect(await listedTitles(page, ["Plan a trip to Lisbon"])).toEqual(["Plan a trip to Lisbon"]);
      await page.click("#end-button");
      await page.waitForSelector("body[data-state=ended]");
      await startSession(page, userId, "socratic-tutor");
      await send(page, "Why is the sky blue?");
      expect(await listedTitles(page, ["Why is the sky blue?", "Plan a trip to Lisbon"])).toEqual(["Why is the sky blue?", "Plan a trip to Lisbon"]);

      // A reload: the list is read again for the remembered user id; the ended conversation reads as it was.
      await page.reload();
      await page.waitForSelector("body[data-ready=true]");
      expect(await listedTitles(page, ["Why is the sky blue?", "Plan a trip to Lisbon"])).toEqual(["Why is the sky blue?", "Plan a trip to Lisbon"]);
      await page.click("#conversation-list li:nth-child(2) button");
      await page.waitForSelector("body[data-state=ended]");
      expect(await logTexts(page)).toEqual(["Plan a trip to Lisbon", "reply #1 to: Plan a trip to Lisbon"]);
      expect(await page.textContent("#status")).toMatch(/has ended/);
      // The active one resumes: its history, then the talk goes on where it was.
      await page.click("#conversation-list li:nth-child(1) button");
      await page.waitForSelector("body[data-state=active]");
      expect(await page.textContent("#template-name")).toBe("Socratic Tutor");
      expect(await logTexts(page)).toEqual(["Why is the sky blue?", "reply #2 to: Why is the sky blue?"]);
      await send(page, "Tell me more");
      expect(await page.textContent("#count")).toBe("2");

      // Another user connects and writes to this one: the download carries the connection whole.
      const other = new ApiUser(`ben_${randomUUID().slice(0, 8)}`, harness.api, HOSTING_ROUTES);
      const connectionId = await other.connectWith(new ApiUser(userId, harness.api, HOSTING_ROUTES));
      const notes = Array.from({ length: 6 }, (_, index) => `note ${index} ${"x".repeat(600)}`);
      for (const note of notes) expect((await other.send(connectionId, note)).status).toBe(201);

      await page.click(".settings summary");
      const [download] = await Promise.all([page.waitForEvent("download"), page.click("#download-data")]);
      expect(download.suggestedFilename()).toBe(`chatify-export-${userId}.json`);
      const exported = JSON.parse(readFileSync(await download.path(), "utf8")) as {
        format: string;
        user_id: string;
        sessions: { messages: { content: string }[] }[];
        connections: { connection_id: string; continued?: boolean; messages: { position: number; content: string }[] }[];
      };
      expect(exported).toMatchObject({ format: "chatify-export", user_id: userId });
      expect(exported.connections).toHaveLength(1);
      expect(exported.connections[0]).toMatchObject({ connection_id: connectionId });
      expect(exported.connections[0]).not.toHaveProperty("continued");
      expect(exported.connections[0]?.messages.map((message) => [message.position, message.content])).toEqual(notes.map((note, index) => [index + 1, note]));
      expect(await page.textContent("#status")).toMatch(/1 connection\b/);
      expect(exported.sessions.flatMap((session) => session.messages.map((message) => message.content)).sort()).toEqual(
        ["Plan a trip to Lisbon", "reply #1 to: Plan a trip to Lisbon", "Why is the sky blue?", "reply #2 to: Why is the sky blue?", "Tell me more", "reply #3 to: Tell me more"].sort(),
      );

      // Erasing asks first; cancelled, nothing goes.
      await page.click("#erase-data");
      expect(await page.isVisible("#erase-confirm")).toBe(true);
      await page.click("#erase-no");
      expect(await page.isVisible("#erase-confirm")).toBe(false);
      expect(((await harness.api.call("GET", `${ROUTES.list}?user_id=${userId}`)).body.sessions as unknown[]).length).toBe(2);
      await page.click("#erase-data");
      await page.click("#erase-yes");
      await page.waitForSelector("#status:has-text('Your data was erased')");
      await page.waitForSelector("#no-conversations:not([hidden])");
      expect(await page.$$("#conversation-list li")).toHaveLength(0);
      expect(await page.getAttribute("body", "data-state")).toBe("idle");
      expect((await harness.api.call("GET", `${ROUTES.list}?user_id=${userId}`)).body.sessions).toEqual([]);
      expect(await page.evaluate("window.cspViolations")).toEqual([]);
      await page.close();
    }, 90_000);

    it("says an erasure whose answer was lost may have run, and reads the list again", async () => {
      const userId = `user_${randomUUID().slice(0, 8)}`;
      const page = await browser.context.newPage();
      await open(page, harness);
      await startSession(page, userId);
      await send(page, "Something private");
      expect(await listedTitles(page, ["Something private"])).toEqual(["Something private"]);

      await loseErasureAnswer(page);
      await page.click(".settings summary");
      await page.click("#erase-data");
      await page.click("#erase-yes");
      await page.waitForSelector("#status:not(:text-is('Erasing your data ...'))");
      expect((await harness.api.call("GET", `${ROUTES.list}?user_id=${userId}`)).body.sessions).toEqual([]);
      expect({ status: await page.textContent("#status"), error: await page.textContent("#error") }).toEqual({
        status: "The erasure's outcome is unknown: the list shows what is left.",
        error: expect.stringMatching(/ Your data may have been erased all the same: erasing again is safe, it erases whatever is left\.$/),
      });
      // The list, read again, shows what is left: nothing.
      await page.waitForSelector("#no-conversations:not([hidden])");
      expect(await page.$$("#conversation-list li")).toHaveLength(0);
      expect(await page.evaluate("window.cspViolations")).toEqual([]);
      await page.close();
    }, 60_000);

    it("keeps saying an erasure whose answer was lost may have run when the list read after it fails too", async () => {
      const userId = `user_${randomUUID().slice(0, 8)}`;
      const page = await browser.context.newPage();
      await open(page, harness);
      await startSession(page, userId);
      await send(page, "Something private");
      await page.waitForSelector("body[data-list-reads='0']", { state: "attached" });

      // The phone loses its network: the erasure reaches the server (which erases), its answer is
      // lost on the way back, and the list read the page makes after it cannot reach the API either.
      let lost = false;
      await page.route("**/chatbot/me?*", async (route) => {
        if (route.request().method() !== "DELETE") return route.continue();
        await route.fetch();
        lost = true;
        await route.abort("connectionreset");
      });
      await page.route("**/chatbot/sessions?*", async (route) => {
        if (!lost) return route.continue();
        await route.abort("internetdisconnected");
      });
      await page.click(".settings summary");
      await page.click("#erase-data");
      await page.click("#erase-yes");
      await page.waitForSelector("#status:text-is(\"The erasure's outcome is unknown: the list shows what is left.\")");
      // Every list read asked for has been acted on.
      await page.waitForSelector("body[data-list-reads='0']", { state: "attached" });
      expect((await harness.api.call("GET", `${ROUTES.list}?user_id=${userId}`)).body.sessions).toEqual([]);
      // What the visitor acts on stays; the list's own failure is said beside it.
      expect({ status: await page.textContent("#status"), error: await page.textContent("#error") }).toEqual({
        status: "The erasure's outcome is unknown: the list shows what is left.",
        error: expect.stringMatching(/ Your data may have been erased all the same: erasing again is safe, it erases whatever is left\. Could not reach the API: .+$/),
      });
      expect(await page.evaluate("window.cspViolations")).toEqual([]);
      await page.close();
    }, 60_000);
  });

  describe("pages of the list and of a conversation, answered late, on the embedded store", () => {
    let harness: Harness;
    let browser: LaunchedBrowser;

    beforeAll(async () => {
      ({ harness, browser } = await startWithChromium({ store: "memory", env: { USER_MESSAGES_PER_MINUTE: "1000", USER_MAX_ACTIVE_SESSIONS: "100", ADDRESS_SESSIONS_PER_HOUR: "1000" } }, { width: 1000, height: 900 }));
    }, 60_000);
    afterAll(async () => closeWithChromium(harness, browser));

    it("drops earlier messages that arrive after another conversation was opened: the one on view shows only its own", async () => {
      const userId = `user_${randomUUID().slice(0, 8)}`;
      // A long conversation (52 messages: two pages), then a short one, the newest.
      const long = await createSession(harness.api, "friendly-assistant", userId);
      for (let i = 1; i <= 26; i++) expect((await harness.api.call("POST", ROUTES.message(long), { message: `long ${String(i)}` })).status).toBe(200);
      const short = await createSession(harness.api, "socratic-tutor", userId);
      expect((await harness.api.call("POST", ROUTES.message(short), { message: "short one" })).status).toBe(200);

      const page = await browser.context.newPage();
      await page.addInitScript(`localStorage.setItem("chatify.user_id", ${JSON.stringify(userId)})`);
      await open(page, harness);
      await page.waitForSelector("#conversation-list li:nth-child(2) button");
      await page.click(`#conversation-list button[data-session-id="${long}"]`);
      await page.waitForSelector("body[data-state=active]");
      await page.waitForSelector("#earlier:not([hidden])");

      // The earlier page takes a moment to come (a slow network); meanwhile the visitor picks the short one.
      let release = (): void => undefined;
      const held = new Promise<void>((resolve) => {
        release = resolve;
      });
      await page.route("**/chatbot/session/*?*before=*", async (route) => {
        await held;
        await route.continue();
      });
      await page.click("#earlier");
      await page.click(`#conversation-list button[data-session-id="${short}"]`);
      await page.waitForSelector("#template-name:text-is('Socratic Tutor')");
      expect(await logTexts(page)).toEqual(["short one", "reply #27 to: short one"]);
      // The late answer, then a message sent and answered: the page has handled the answer by then.
      const earlierAnswer = page.waitForResponse((response) => response.url().includes("before="));
      release();
      await earlierAnswer;
      await send(page, "and another");
      expect({ session: await page.getAttribute("#session", "data-session-id"), log: await logTexts(page), earlier: await page.isVisible("#earlier") }).toEqual({
        session: short,
        log: ["short one", "reply #27 to: short one", "and another", "reply #28 to: and another"],
        earlier: false,
      });
      expect(await page.evaluate("window.cspViolations")).toEqual([]);
      await page.close();
    }, 90_000);
    /** A user with `count` conversations (the first made first), and a page open on their list, its first page of 20 shown. */
    async function openOnConversations(count: number): Promise<{ readonly userId: string; readonly created: string[]; readonly page: Page }> {
      const userId = `user_${randomUUID().slice(0, 8)}`;
      const created: string[] = [];
      for (let i = 0; i < count; i++) created.push(await createSession(harness.api, "friendly-assistant", userId));
      const page = await browser.context.newPage();
      await page.addInitScript(`localStorage.setItem("chatify.user_id", ${JSON.stringify(userId)})`);
      await open(page, harness);
      await page.waitForSelector("#conversation-list li:nth-child(20) button");
      return { userId, created, page };
    }
    const listedIds = async (page: Page) => Promise.all((await page.$$("#conversation-list button")).map((button) => button.getAttribute("data-session-id")));

    it("lists each conversation once when Show older conversations is clicked again while the older page is on its way", async () => {
      const { userId, page } = await openOnConversations(23);
      await page.waitForSelector("#more-conversations:not([hidden])");

      // The older page is held on its way (a slow network) until the visitor has clicked again.
      let asked = 0;
      let release = (): void => undefined;
      const gate = new Promise<void>((resolve) => {
        release = resolve;
      });
      await page.route("**/chatbot/sessions?*cursor=*", async (route) => {
        asked++;
        await gate;
        await route.continue();
      });
      await page.click("#more-conversations");
      await page.click("#more-conversations");
      release();
      await page.waitForSelector("#conversation-list li:nth-child(23) button");
      // Every older page asked for (one, or one per click) has been answered and acted on.
      await listSettled(page);

      const ids = await listedIds(page);
      expect({ asked, count: ids.length, distinct: new Set(ids).size }).toEqual({ asked: 1, count: 23, distinct: 23 });
      const listed = (await harness.api.call("GET", `${ROUTES.list}?user_id=${userId}&limit=100`)).body.sessions as { session_id: string }[];
      expect(ids).toEqual(listed.map((session) => session.session_id));
      await page.close();
    }, 90_000);

    it("keeps the older conversations on view when the list is read again after a reply: each listed once, the one answered first", async () => {
      const { userId, created, page } = await openOnConversations(23);
      await page.click("#more-conversations");
      await page.waitForSelector("#conversation-list li:nth-child(23) button");

      // The oldest conversation, on the older page, is resumed and answered: the list is read again from its first page.
      const oldest = created[0]!;
      await page.click(`#conversation-list button[data-session-id="${oldest}"]`);
      await page.waitForSelector(`body[data-state=active] #session[data-session-id="${oldest}"]`);
      await send(page, "back to the first one");
      await page.waitForSelector(`#conversation-list li:nth-child(1) button[data-session-id="${oldest}"]`);
      await listSettled(page);

      const listed = (await harness.api.call("GET", `${ROUTES.list}?user_id=${userId}&limit=100`)).body.sessions as { session_id: string }[];
      expect(listed.map((session) => session.session_id)[0]).toBe(oldest);
      expect({ shown: await listedIds(page), more: await page.isVisible("#more-conversations") }).toEqual({
        shown: listed.map((session) => session.session_id),
        more: false,
      });
      await page.close();
    }, 90_000);

    it("never lists the conversations of the user id the field held before: a late answer for it is dropped", async () => {
      const ann = `ann_${randomUUID().slice(0, 8)}`;
      const ben = `ben_${randomUUID().slice(0, 8)}`;
      for (const template of ["friendly-assistant", "socratic-tutor"]) await createSession(harness.api, template, ann);
      const benSession = await createSession(harness.api, "sarcastic-critic", ben);

      const page = await browser.context.newPage();
      await page.addInitScript(`localStorage.setItem("chatify.user_id", ${JSON.stringify(ann)})`);
      // Ann's list, read as the page opens, is slow to come (a slow network) ...
      let release = (): void => undefined;
      const gate = new Promise<void>((resolve) => {
        release = resolve;
      });
      let held = 0;
      await page.route("**/chatbot/sessions?*", async (route) => {
        if (new URL(route.request().url()).searchParams.get("user_id") !== ann) return route.continue();
        held++;
        await gate;
        await route.continue();
      });
      const annAnswered = page.waitForEvent("requestfinished", { predicate: (request) => request.url().includes(`user_id=${ann}`), timeout: 20_000 });
      await open(page, harness);
      // ... meanwhile the visitor puts Ben's id in the field: Ben's list is read and shown.
      await page.fill("#user", ben);
      await page.dispatchEvent("#user", "change");
      await page.waitForSelector(`#conversation-list button[data-session-id="${benSession}"]`);
      expect(held).toBe(1);
      // Ann's answer comes at last, and the page acts on it.
      release();
      await annAnswered;
      await listSettled(page);
      expect({ field: await page.inputValue("#user"), listed: await listedIds(page) }).toEqual({ field: ben, listed: [benSession] });
      await page.close();
    }, 60_000);

    it("keeps the list empty after Erase my data: an older page read before the erasure and answered after it is dropped", async () => {
      const { userId: ann, page } = await openOnConversations(22);

      // The older page reaches the server at once; its answer is slow to come back (a slow network).
      let holding: (answer: () => Promise<void>) => void = () => undefined;
      const held = new Promise<() => Promise<void>>((resolve) => {
        holding = resolve;
      });
      await page.route("**/chatbot/sessions?*cursor=*", async (route) => {
        const response = await route.fetch();
        await new Promise<void>((resolve) => {
          holding(async () => {
            await route.fulfill({ response });
            resolve();
          });
        });
      });
      await page.click("#more-conversations");
      const answer = await held;
      // Meanwhile the visitor erases their data: the list is emptied.
      await page.click(".settings summary");
      await page.click("#erase-data");
      await page.click("#erase-yes");
      await page.waitForSelector("#status:has-text('Your data was erased')");
      await page.waitForSelector("#no-conversations:not([hidden])");
      const late = page.waitForEvent("requestfinished", { predicate: (request) => request.url().includes("cursor=") });
      await answer();
      await late;
      await listSettled(page);
      expect((await harness.api.call("GET", `${ROUTES.list}?user_id=${ann}`)).body.sessions).toEqual([]);
      expect({ listed: (await listedIds(page)).length, none: await page.isVisible("#no-conversations") }).toEqual({ listed: 0, none: true });
      await page.close();
    }, 60_000);

    it("shows what is left (nothing) after an erasure whose answer was lost, not the erased conversations of the older pages shown", async () => {
      const { userId, page } = await openOnConversations(22);
      // The visitor shows the older conversations: all 22 are listed.
      await page.click("#more-conversations");
      await page.waitForSelector("#conversation-list li:nth-child(22) button");

      await loseErasureAnswer(page);
      await page.click(".settings summary");
      await page.click("#erase-data");
      const reread = page.waitForResponse((response) => response.url().includes("/chatbot/sessions?") && !response.url().includes("cursor="));
      await page.click("#erase-yes");
      await page.waitForSelector("#status:text-is(\"The erasure's outcome is unknown: the list shows what is left.\")");
      // The list is read again (nothing is left), and the page has acted on that answer.
      expect(((await (await reread).json()) as { sessions: unknown[] }).sessions).toEqual([]);
      await listSettled(page);
      expect((await harness.api.call("GET", `${ROUTES.list}?user_id=${userId}`)).body.sessions).toEqual([]);
      expect({ listed: (await listedIds(page)).length, none: await page.isVisible("#no-conversations") }).toEqual({ listed: 0, none: true });
      expect(await page.evaluate("window.cspViolations")).toEqual([]);
      await page.close();
    }, 90_000);

    it("takes nothing from the visitor while Erase my data runs (message box, Send, End, Start and the list disabled), then offers the start form", async () => {
      const userId = `user_${randomUUID().slice(0, 8)}`;
      const older = await createSession(harness.api, "socratic-tutor", userId);
      const page = await browser.context.newPage();
      await page.addInitScript(`localStorage.setItem("chatify.user_id", ${JSON.stringify(userId)})`);
      await open(page, harness);
      await startSession(page, userId);
      await send(page, "hello");
      await page.waitForSelector(`#conversation-list button[data-session-id="${older}"]`);
      await listSettled(page);

      // The erasure's request is held on its way out (a slow uplink) until the controls were looked at.
      let release = (): void => undefined;
      const held = new Promise<void>((resolve) => {
        release = resolve;
      });
      await page.route("**/chatbot/me?*", async (route) => {
        if (route.request().method() !== "DELETE") return route.continue();
        await held;
        await route.continue();
      });
      await page.click(".settings summary");
      await page.click("#erase-data");
      await page.click("#erase-yes");
      await page.waitForSelector("#status:text-is('Erasing your data ...')");
      // Whatever the visitor did now would answer about the data being erased, after the erasure.
      const enabled = async (selector: string) => (await Promise.all((await page.$$(selector)).map((control) => control.isEnabled()))).filter(Boolean).length;
      expect({
        state: await page.getAttribute("body", "data-state"),
        enabled: { message: await enabled("#message"), send: await enabled("#send-button"), end: await enabled("#end-button"), start: await enabled("#start-button"), list: await enabled("#conversation-list button") },
        listed: (await listedIds(page)).length,
      }).toEqual({ state: "active", enabled: { message: 0, send: 0, end: 0, start: 0, list: 0 }, listed: 2 });

      release();
      await page.waitForSelector("#status:has-text('Your data was erased')");
      expect({
        state: await page.getAttribute("body", "data-state"),
        startForm: await page.isVisible("#start"),
        start: await page.isEnabled("#start-button"),
        session: await page.isVisible("#session"),
      }).toEqual({ state: "idle", startForm: true, start: true, session: false });
      expect(await page.evaluate("window.cspViolations")).toEqual([]);
      await page.close();
    }, 90_000);

    it("stops offering a listed conversation once opening it answers 404 SESSION_NOT_FOUND (erased from another tab): the list is read again", async () => {
      const gone = "This session no longer exists (its data was erased, or it was deleted after its retention period). Start a new one to keep chatting.";
      // Opened from the start form.
      const userId = `user_${randomUUID().slice(0, 8)}`;
      const erased = await createSession(harness.api, "friendly-assistant", userId);
      expect((await harness.api.call("POST", ROUTES.message(erased), { message: "soon erased" })).status).toBe(200);
      const page = await browser.context.newPage();
      await page.addInitScript(`localStorage.setItem("chatify.user_id", ${JSON.stringify(userId)})`);
      await open(page, harness);
      await page.waitForSelector(`#conversation-list button[data-session-id="${erased}"]`);
      // Another tab (or device) erases the user's data.
      expect((await harness.api.call("DELETE", `${ROUTES.erase}?user_id=${userId}`)).status).toBe(200);
      await page.focus(`#conversation-list button[data-session-id="${erased}"]`);
      await page.keyboard.press("Enter");
      await page.waitForSelector("#error:not([hidden])");
      await listSettled(page);
      // Told the conversation is gone, the page offers it no more; its button gone, the focus is on Start session.
      expect({ error: await page.textContent("#error"), listed: await listedIds(page), none: await page.isVisible("#no-conversations"), focus: await focused(page) }).toEqual({
        error: gone,
        listed: [],
        none: true,
        focus: "start-button",
      });

      // The conversation on view, opened again from the list: closed, the start form back.
      const other = `user_${randomUUID().slice(0, 8)}`;
      const onView = await createSession(harness.api, "socratic-tutor", other);
      await page.fill("#user", other);
      await page.dispatchEvent("#user", "change");
      await page.click(`#conversation-list button[data-session-id="${onView}"]`);
      await page.waitForSelector(`body[data-state=active] #session[data-session-id="${onView}"]`);
      expect((await harness.api.call("DELETE", `${ROUTES.erase}?user_id=${other}`)).status).toBe(200);
      await page.click(`#conversation-list button[data-session-id="${onView}"]`);
      await page.waitForSelector("body[data-state=ended]");
      await listSettled(page);
      expect({
        error: await page.textContent("#error"),
        status: await page.textContent("#status"),
        startForm: await page.isVisible("#start"),
        message: await page.isEnabled("#message"),
        listed: await listedIds(page),
      }).toEqual({ error: gone, status: "The session no longer exists.", startForm: true, message: false, listed: [] });
      expect(await page.evaluate("window.cspViolations")).toEqual([]);
      await page.close();
    }, 60_000);

    it("keeps none of the erased conversation's words on the page after Erase my data: a message given back is not in the next session's box", async () => {
      const userId = `user_${randomUUID().slice(0, 8)}`;
      const page = await browser.context.newPage();
      await open(page, harness);
      await startSession(page, userId);
      await send(page, "hello");
      // The next message's answer is lost on the way back: its text goes back into the box, with its key, to send again.
      await loseFirstPostAnswer(page, "**/chatbot/session/*/message");
      await typeAndSend(page, "My bank PIN is 4711, remember it");
      await page.waitForSelector("body[data-state=active] #error:not([hidden])");
      expect(await page.inputValue("#message")).toBe("My bank PIN is 4711, remember it");

      await page.click(".settings summary");
      await page.click("#erase-data");
      await page.click("#erase-yes");
      await page.waitForSelector("#status:has-text('Your data was erased')");
      // A new session: nothing of the erased one is on view, its box included.
      await page.click("#start-button");
      await page.waitForSelector("body[data-state=active]");
      expect({ log: await logTexts(page), box: await page.inputValue("#message") }).toEqual({ log: [], box: "" });
      expect(await page.evaluate("window.cspViolations")).toEqual([]);
      await page.close();
    }, 60_000);

    it("shows stored HTML, a very long word, bidi overrides and zero-width characters as text, wrapped on a phone, every control in reach", async () => {
      const userId = `user_${randomUUID().slice(0, 8)}`;
      const html = `<img src=x onerror="document.title='owned'"><b>bold</b>`;
      const id = await createSession(harness.api, "friendly-assistant", userId);
      for (const message of [`\u202Eevil reversed text ${html}`, "W".repeat(3000), "\u200B\u200B\u200B\u2060\uFEFF"]) {
        expect((await harness.api.call("POST", ROUTES.message(id), { message })).status).toBe(200);
      }
      const page = await browser.context.newPage();
      await page.setViewportSize({ width: 390, height: 844 });
      await page.addInitScript(`localStorage.setItem("chatify.user_id", ${JSON.stringify(userId)})`);
      await open(page, harness);
      await page.click(`#conversation-list button[data-session-id="${id}"]`);
      await page.waitForSelector("body[data-state=active]");
      const layout = await page.evaluate<Record<string, unknown>>(`(() => {
        const inView = (selector) => document.querySelector(selector).getBoundingClientRect().right <= innerWidth;
        return {
          overflowX: document.documentElement.scrollWidth > document.documentElement.clientWidth,
          elements: document.querySelectorAll("main img, main b").length,
          title: document.title,
          end: inView("#end-button"),
          send: inView("#send-button"),
          listButton: inView("#conversation-list button"),
          widestLogItem: Math.max(...[...document.querySelectorAll("#log li")].map((li) => li.scrollWidth - li.clientWidth)),
        };
      })()`);
      expect(layout).toEqual({ overflowX: false, elements: 0, title: "Chatify", end: true, send: true, listButton: true, widestLogItem: 0 });
      expect(await page.textContent("#conversation-list .title")).toContain("<img");
      expect(await page.evaluate("window.cspViolations")).toEqual([]);
      await page.close();
    }, 60_000);
  });

  describe("with the keyboard alone, on the embedded store", () => {
    let harness: Harness;
    let browser: LaunchedBrowser;

    beforeAll(async () => {
      ({ harness, browser } = await startWithChromium({ store: "memory", env: { USER_MESSAGES_PER_MINUTE: "1000", USER_MAX_ACTIVE_SESSIONS: "100", ADDRESS_SESSIONS_PER_HOUR: "1000" } }, { width: 390, height: 844 }));
    }, 60_000);
    afterAll(async () => closeWithChromium(harness, browser));

    async function openAs(userId: string): Promise<Page> {
      const page = await browser.context.newPage();
      await page.addInitScript(`localStorage.setItem("chatify.user_id", ${JSON.stringify(userId)})`);
      await open(page, harness);
      return page;
    }

    // Each focus lost below would leave it on <body>, where the next Tab starts over at the top of the page.

    it("gives the focus back to a conversation's list button once it is opened, ended, with Enter", async () => {
      const userId = `user_${randomUUID().slice(0, 8)}`;
      const ended = await createSession(harness.api, "friendly-assistant", userId);
      expect((await harness.api.call("POST", ROUTES.message(ended), { message: "hello there" })).status).toBe(200);
      expect((await harness.api.call("DELETE", ROUTES.end(ended))).status).toBe(200);
      const page = await openAs(userId);
      await page.focus(`#conversation-list button[data-session-id="${ended}"]`);
      await page.keyboard.press("Enter");
      await page.waitForSelector("body[data-state=ended] #log li");
      expect({ focus: await focused(page), current: await page.getAttribute(`#conversation-list button[data-session-id="${ended}"]`, "aria-current") }).toEqual({
        focus: `BUTTON[${ended}]`,
        current: "true",
      });
      expect(await page.evaluate("window.cspViolations")).toEqual([]);
      await page.close();
    }, 60_000);

    it("keeps the focus on a listed conversation's button when the list is drawn again under it", async () => {
      const userId = `user_${randomUUID().slice(0, 8)}`;
      const older = await createSession(harness.api, "socratic-tutor", userId);
      const page = await openAs(userId);
      await startSession(page, userId);
      await page.waitForSelector("#conversation-list li:nth-child(2) button");
      await listSettled(page);
      // The read of the list after the next reply is slow to come (a slow network) ...
      let release = (): void => undefined;
      const gate = new Promise<void>((resolve) => {
        release = resolve;
      });
      await page.route("**/chatbot/sessions?*", async (route) => {
        await gate;
        await route.continue();
      });
      await send(page, "hello");
      // ... meanwhile the visitor tabs to the older conversation; then the list comes, and is drawn again.
      await page.focus(`#conversation-list button[data-session-id="${older}"]`);
      release();
      await page.waitForSelector("#conversation-list li:nth-child(1) .title:text-is('hello')");
      await listSettled(page);
      expect(await focused(page)).toBe(`BUTTON[${older}]`);
      await page.close();
    }, 60_000);

    it("puts the focus on the log once Show earlier messages has shown the first message, and goes", async () => {
      const userId = `user_${randomUUID().slice(0, 8)}`;
      const long = await createSession(harness.api, "friendly-assistant", userId);
      for (let i = 1; i <= 26; i++) expect((await harness.api.call("POST", ROUTES.message(long), { message: `long ${String(i)}` })).status).toBe(200);
      const page = await openAs(userId);
      await page.focus(`#conversation-list button[data-session-id="${long}"]`);
      await page.keyboard.press("Enter");
      await page.waitForSelector("body[data-state=active] #earlier:not([hidden])");
      await page.focus("#earlier");
      await page.keyboard.press("Enter");
      await page.waitForSelector("#earlier[hidden]", { state: "attached" });
      await page.waitForSelector("#log li .text:text-is('long 1')");
      expect(await focused(page)).toBe("log");
      await page.close();
    }, 60_000);

    it("gives the focus back to Erase my data when an erasure confirmed with the keyboard is refused (409 ERASURE_IN_PROGRESS)", async () => {
      const userId = `user_${randomUUID().slice(0, 8)}`;
      await createSession(harness.api, "friendly-assistant", userId);
      const page = await openAs(userId);
      await page.waitForSelector("#conversation-list li button");
      await page.route("**/chatbot/me?*", async (route) => {
        if (route.request().method() !== "DELETE") return route.continue();
        await route.fulfill({
          status: 409,
          headers: { "Content-Type": "application/json", "Retry-After": "5" },
          body: JSON.stringify({ success: false, error: { code: "ERASURE_IN_PROGRESS", message: "Your data is being erased" } }),
        });
      });
      await page.focus(".settings summary");
      await page.keyboard.press("Enter");
      await page.focus("#erase-data");
      await page.keyboard.press("Enter");
      expect(await focused(page)).toBe("erase-no");
      await page.keyboard.press("Shift+Tab");
      expect(await focused(page)).toBe("erase-yes");
      // Yes goes with the confirmation it is in, hidden as the erasure begins.
      await page.keyboard.press("Enter");
      await page.waitForSelector("#status:text-is('Your data was not erased.')");
      expect(await focused(page)).toBe("erase-data");
      await page.close();
    }, 60_000);

    it("gives the focus back to Download my data once a download made with the keyboard is done", async () => {
      const userId = `user_${randomUUID().slice(0, 8)}`;
      await createSession(harness.api, "friendly-assistant", userId);
      const page = await openAs(userId);
      await page.focus(".settings summary");
      await page.keyboard.press("Enter");
      await page.focus("#download-data");
      const download = page.waitForEvent("download");
      // Disabled while the parts are gathered.
      await page.keyboard.press("Enter");
      await download;
      await page.waitForSelector("#status:text-is('Downloaded your data: 1 conversation, 0 connections.')");
      expect(await focused(page)).toBe("download-data");
      await page.close();
    }, 60_000);

    it("puts the focus on the first conversation Show older conversations added once it showed the last page, and goes", async () => {
      const userId = `user_${randomUUID().slice(0, 8)}`;
      for (let i = 0; i < 21; i++) await createSession(harness.api, "friendly-assistant", userId);
      const page = await openAs(userId);
      await page.waitForSelector("#more-conversations:not([hidden])");
      await page.focus("#more-conversations");
      await page.keyboard.press("Enter");
      await page.waitForSelector("#conversation-list li:nth-child(21) button");
      await page.waitForSelector("#more-conversations[hidden]", { state: "attached" });
      const listed = (await harness.api.call("GET", `${ROUTES.list}?user_id=${userId}&limit=100`)).body.sessions as { session_id: string }[];
      expect(await focused(page)).toBe(`BUTTON[${listed[20]!.session_id}]`);
      await page.close();
    }, 60_000);
  });

  describeWithRtdb("Show older conversations once the cursor secret is deleted, on the Realtime Database", () => {
    let harness: Harness;
    let browser: LaunchedBrowser;

    beforeAll(async () => {
      ({ harness, browser } = await startWithChromium({ store: "rtdb", env: { USER_MAX_ACTIVE_SESSIONS: "50" } }, { width: 1000, height: 900 }));
    }, 60_000);
    afterAll(async () => closeWithChromium(harness, browser));

    const listedIds = async (page: Page) => Promise.all((await page.$$("#conversation-list button")).map((button) => button.getAttribute("data-session-id")));

    it("starts again from the first page when a cursor is refused (400 INVALID_CURSOR), saying nothing, and the next click reaches every older conversation", async () => {
      const userId = `user_${randomUUID().slice(0, 8)}`;
      // Three pages of 20: two are on view when the secret goes.
      for (let i = 0; i < 45; i++) await createSession(harness.api, "friendly-assistant", userId);
      const page = await browser.context.newPage();
      await page.addInitScript(`localStorage.setItem("chatify.user_id", ${JSON.stringify(userId)})`);
      await open(page, harness);
      await page.waitForSelector("#conversation-list li:nth-child(20) button");
      await page.click("#more-conversations");
      await page.waitForSelector("#conversation-list li:nth-child(40) button");
      await listSettled(page);
      const older = olderPageReads(page, "/chatbot/sessions");

      // The operator deletes the cursor secret (docs/conversations.md, Cursors): the cursor the page holds is refused from now on.
      await deleteCursorSecret(harness);

      await page.click("#more-conversations");
      await listSettled(page);
      expect({ listed: (await listedIds(page)).length, more: await page.isVisible("#more-conversations"), error: await page.isVisible("#error") }).toEqual({ listed: 20, more: true, error: false });

      await page.click("#more-conversations");
      await page.waitForSelector("#conversation-list li:nth-child(40) button");
      await listSettled(page);
      await page.click("#more-conversations");
      await page.waitForSelector("#conversation-list li:nth-child(45) button");
      await listSettled(page);

      const listed = (await harness.api.call("GET", `${ROUTES.list}?user_id=${userId}&limit=100`)).body.sessions as { session_id: string }[];
      expect({ shown: await listedIds(page), more: await page.isVisible("#more-conversations"), error: await page.isVisible("#error") }).toEqual({
        shown: listed.map((session) => session.session_id),
        more: false,
        error: false,
      });
      // The refused cursor was asked once; the pages after it followed the fresh first page's cursors.
      expect({ statuses: older.map((read) => read.status), distinct: new Set(older.map((read) => read.cursor)).size }).toEqual({ statuses: [400, 200, 200], distinct: 3 });
      expect(await page.evaluate("window.cspViolations")).toEqual([]);
      await page.close();
    }, 90_000);
  });

  describeWithRtdb("a reply still being written when the page is reloaded", () => {
    let harness: Harness;
    let browser: LaunchedBrowser;

    beforeAll(async () => {
      // The model's whole reply takes longer than the suites' usual 3 s model timeout.
      ({ harness, browser } = await startWithChromium({ store: "rtdb", env: { OPENAI_TIMEOUT_MS: "10000" } }, { width: 1024, height: 768 }));
    }, 60_000);
    afterAll(async () => closeWithChromium(harness, browser));

    /**
     * A session whose reply another tab is writing slowly (its first partial written), and a page
     * that opened the conversation and follows that reply: phase `watching`.
     */
    async function followingSlowReply(): Promise<{ userId: string; sessionId: string; slow: Promise<Answer>; page: Page }> {
      harness.fake.reset();
      const userId = `user_${randomUUID().slice(0, 8)}`;
      const sessionId = await createSession(harness.api, "friendly-assistant", userId);
      harness.fake.enqueue({ kind: "stream", chunks: SLOW_REPLY, chunkDelayMs: 300 });
      const { app, database } = webClient(harness.namespace ?? "");
      const watcher = new SessionWatcher(database, sessionId);
      const slow = harness.api.call("POST", ROUTES.message(sessionId), { user_id: userId, message: "Take your time" });
      try {
        await watcher.until((seen) => seen.partials.length === 1);
      } finally {
        watcher.close();
        await deleteApp(app);
      }
      const page = await browser.context.newPage();
      try {
        await open(page, harness);
        await page.fill("#user", userId);
        await page.dispatchEvent("#user", "change");
        await page.click(`#conversation-list li button[data-session-id="${sessionId}"]`);
        await page.waitForSelector("body[data-state=watching]");
      } catch (error) {
        await page.close();
        await slow;
        throw error;
      }
      return { userId, sessionId, slow, page };
    }

    it("is picked up from its live partial when the conversation is resumed, the focus on the log meanwhile, and shown whole once stored", async () => {
      const userId = `user_${randomUUID().slice(0, 8)}`;
      const chunks = ["A", " reply", " that", " takes", " its", " time", " to", " be", " written,", " word", " by", " word."];
      const page = await browser.context.newPage();
      await open(page, harness);
      await startSession(page, userId);
      harness.fake.enqueue({ kind: "stream", chunks, chunkDelayMs: 300 });
      await page.fill("#message", "Take your time");
      await page.press("#message", "Enter");
      await page.waitForSelector("#log .assistant.streaming .text:not(:text-is(''))");

      // Reloaded mid-reply: the request goes on at the server, the page starts over.
      await page.reload();
      await page.waitForSelector("body[data-ready=true]");
      await page.waitForSelector("#conversation-list li button");
      await page.click("#conversation-list li:nth-child(1) button");
      await page.waitForSelector("body[data-state=watching]");
      const partial = (await page.textContent("#log .assistant.streaming .text")) ?? "";
      // The list's buttons and the message box are disabled while the reply is followed: the focus is on what is written.
      const watchingFocus = await focused(page);
      await page.waitForSelector("body[data-state=active]", { timeout: 20_000 });
      const final = await logTexts(page);
      expect(final).toEqual(["Take your time", chunks.join("")]);
      expect({ watching: watchingFocus, done: await focused(page) }).toEqual({ watching: "log", done: "message" });
      // What was picked up was the reply as far as it was written: a part of it, before it was whole.
      expect(partial.length).toBeGreaterThan(0);
      expect(partial.length).toBeLessThan(chunks.join("").length);
      expect(chunks.join("").startsWith(partial)).toBe(true);
      expect(await page.textContent("#count")).toBe("1");
      expect(await page.evaluate("window.cspViolations")).toEqual([]);
      await page.close();
    }, 90_000);

    /** Starts a session whose reply is written slowly, reloads mid-reply, and routes the watch's reads (limit=2) through `answer`. */
    async function reloadMidReply(page: Page, userId: string, answer: (route: Route) => Promise<void>): Promise<string> {
      await open(page, harness);
      await startSession(page, userId);
      harness.fake.enqueue({ kind: "stream", chunks: SLOW_REPLY, chunkDelayMs: 300 });
      await page.fill("#message", "Take your time");
      await page.press("#message", "Enter");
      await page.waitForSelector("#log .assistant.streaming .text:not(:text-is(''))");
      await page.reload();
      await page.waitForSelector("body[data-ready=true]");
      await page.waitForSelector("#conversation-list li button");
      await page.route("**/chatbot/session/*?*limit=2*", answer);
      await page.click("#conversation-list li:nth-child(1) button");
      await page.waitForSelector("body[data-state=watching]");
      return (await page.getAttribute("#session", "data-session-id")) ?? "";
    }

    /** The database's 503 for a read it did not answer in time, with its Retry-After. */
    const unavailable = (retryAfter: string) => ({
      status: 503,
      headers: { "Content-Type": "application/json", "Retry-After": retryAfter },
      body: JSON.stringify({ success: false, error: { code: "DATABASE_UNAVAILABLE", message: "The database did not answer in time" } }),
    });

    it("keeps following the reply it picked up when a read fails for a moment (503 with Retry-After), and shows it whole once stored", async () => {
      harness.fake.reset();
      const page = await browser.context.newPage();
      let failed = 0;
      await reloadMidReply(page, `user_${randomUUID().slice(0, 8)}`, async (route) => {
        if (failed > 0) return route.continue();
        failed++;
        await route.fulfill(unavailable("1"));
      });
      await page.waitForSelector("body[data-state=active]", { timeout: 20_000 });
      expect({ failed, shown: await logTexts(page), streaming: await page.locator("#log .streaming").count(), notes: await page.locator("#log .note").count() }).toEqual({
        failed: 1,
        shown: ["Take your time", SLOW_REPLY.join("")],
        streaming: 0,
        notes: 0,
      });
      expect(await page.textContent("#count")).toBe("1");
      expect(await page.evaluate("window.cspViolations")).toEqual([]);
      await page.close();
    }, 90_000);

    it("marks the reply it picked up as incomplete when it gives up following it (a wait longer than it waits out)", async () => {
      harness.fake.reset();
      const page = await browser.context.newPage();
      let failed = 0;
      await reloadMidReply(page, `user_${randomUUID().slice(0, 8)}`, async (route) => {
        failed++;
        await route.fulfill(unavailable("60"));
      });
      await page.waitForSelector("body[data-state=active]", { timeout: 20_000 });
      expect({
        failed,
        notes: await page.locator("#log .assistant .note").allTextContents(),
        failedReply: await page.locator("#log .assistant.failed").count(),
        status: await page.textContent("#status"),
        error: await page.textContent("#error"),
      }).toEqual({
        failed: 1,
        notes: ["(incomplete: the rest could not be read; open the conversation again to see the reply as stored)"],
        failedReply: 1,
        status: "The reply could not be followed to its end.",
        error: "The database did not answer. Try again in 60 s.",
      });
      // What is shown is a part of the reply, as far as it was read.
      const partial = (await page.textContent("#log .assistant .text")) ?? "";
      expect(partial.length).toBeLessThan(SLOW_REPLY.join("").length);
      expect(SLOW_REPLY.join("").startsWith(partial)).toBe(true);
      await page.close();
    }, 90_000);

    it("goes back to the start form when the session of the reply it picked up no longer exists (erased from another tab: 404 SESSION_NOT_FOUND)", async () => {
      const { userId, sessionId, slow, page } = await followingSlowReply();
      try {
        // The other tab erases the user's data meanwhile: the page's next read is answered 404.
        expect((await harness.api.call("DELETE", `${ROUTES.erase}?user_id=${userId}`)).status).toBe(200);
        await page.waitForSelector("#error:not([hidden])", { timeout: 20_000 });
        expect((await harness.api.call("GET", `${ROUTES.get(sessionId)}?user_id=${userId}`)).status).toBe(404);
        // As after a message or an end that meets SESSION_NOT_FOUND: the session is over, the start form back.
        expect({
          state: await page.getAttribute("body", "data-state"),
          error: await page.textContent("#error"),
          status: await page.textContent("#status"),
          notes: await page.locator("#log .assistant.failed .note").allTextContents(),
          startFormVisible: await page.isVisible("#start"),
          composerEnabled: await page.isEnabled("#message"),
        }).toEqual({
          state: "ended",
          error: "This session no longer exists (its data was erased, or it was deleted after its retention period). Start a new one to keep chatting.",
          status: "The session no longer exists.",
          notes: ["(incomplete: the session is over)"],
          startFormVisible: true,
          composerEnabled: false,
        });
        expect(await page.evaluate("window.cspViolations")).toEqual([]);
      } finally {
        await page.close();
        // The other tab's request ends before the harness closes.
        await slow;
      }
    }, 90_000);

    it("says the conversation has ended, and asks for nothing to be sent again in it, when its session is ended while the page follows its reply", async () => {
      const { userId, sessionId, slow, page } = await followingSlowReply();
      try {
        // The session is ended elsewhere: the message being answered stops, stores nothing, answers 410.
        expect((await harness.api.call("DELETE", `${ROUTES.end(sessionId)}?user_id=${userId}`)).status).toBe(200);
        expect((await slow).status).toBe(410);
        await page.waitForSelector("body[data-state=ended]", { timeout: 20_000 });
        await page.waitForSelector("body[data-list-reads='0']", { state: "attached" });
        expect({
          state: await page.getAttribute("body", "data-state"),
          startForm: await page.isVisible("#start"),
          composerEnabled: await page.isEnabled("#message"),
          status: await page.textContent("#status"),
        }).toEqual({
          state: "ended",
          startForm: true,
          composerEnabled: false,
          // What the page says of an ended conversation, not an instruction that cannot be followed.
          status: "This conversation has ended: 0 messages. Start a new one to keep chatting.",
        });
        expect(await page.evaluate("window.cspViolations")).toEqual([]);
      } finally {
        await page.close();
        await slow;
      }
    }, 90_000);

    it("follows the reply it picked up, by its key, while another message's exchange lands first, until its own is stored", async () => {
      const userId = `user_${randomUUID().slice(0, 8)}`;
      // About 7.5 s, within the suite's 10 s model timeout: partial writes 2 s apart at most, several after the quick one lands.
      const slowChunks = Array.from({ length: 26 }, (_, i) => (i === 0 ? "Slow" : ` word${i}`));
      const page = await browser.context.newPage();
      await open(page, harness);
      await startSession(page, userId);
      const listed = await harness.api.call("GET", `${ROUTES.list}?user_id=${userId}`);
      const id = String((listed.body.sessions as { session_id: string }[])[0]?.session_id);
      harness.fake.chaos = (request) =>
        lastUser(request) === "quick" ? { kind: "stream", chunks: ["Quick", " answer."], chunkDelayMs: 20 } : { kind: "stream", chunks: slowChunks, chunkDelayMs: 300 };
      // Two messages of the session at once, sent by another tab: the slow one first.
      const { app, database } = webClient(harness.namespace ?? "");
      const watcher = new SessionWatcher(database, id);
      const slow = harness.api.call("POST", ROUTES.message(id), { message: "slow" });
      try {
        await watcher.until((seen) => seen.partials.length === 1);
      } finally {
        watcher.close();
        await deleteApp(app);
      }
      await page.reload();
      await page.waitForSelector("body[data-ready=true]");
      await page.waitForSelector("#conversation-list li button");
      await page.click("#conversation-list li:nth-child(1) button");
      await page.waitForSelector("body[data-state=watching]");
      // The quick one is sent, answered and stored while the page watches the slow one.
      expect((await harness.api.call("POST", ROUTES.message(id), { message: "quick" })).status).toBe(200);
      const before = (await page.textContent("#log .assistant.streaming .text")) ?? "";
      // Still watching, and the slow reply still grows on the page (selectors: the page's policy refuses waitForFunction's eval).
      await page.waitForSelector(`body[data-state=watching] #log .assistant.streaming .text:not(:text-is(${JSON.stringify(before)}))`, { timeout: 5_000 });
      expect(slowChunks.join("").startsWith((await page.textContent("#log .assistant.streaming .text")) ?? "-")).toBe(true);
      expect((await slow).status).toBe(200);
      await page.waitForSelector("body[data-state=active]", { timeout: 20_000 });
      // The quick exchange landed first: it is exchange 1.
      expect(await logTexts(page)).toEqual(["quick", "Quick answer.", "slow", slowChunks.join("")]);
      expect(await page.evaluate("window.cspViolations")).toEqual([]);
      await page.close();
    }, 90_000);
  });

  describeWithRtdb("a reply still being written when the page is reloaded, on two database instances (namespaces)", () => {
    let harness: Harness;
    let browser: LaunchedBrowser;

    beforeAll(async () => {
      ({ harness, browser } = await startWithChromium({ store: "rtdb-2-namespaces", env: { OPENAI_TIMEOUT_MS: "10000", USER_MAX_ACTIVE_SESSIONS: "10" } }, { width: 1024, height: 768 }));
    }, 60_000);
    afterAll(async () => closeWithChromium(harness, browser));

    it("follows the live partial of a reply on either instance, then shows a conversation of the other instance as stored there", async () => {
      const userId = `user_${randomUUID().slice(0, 8)}`;
      const page = await browser.context.newPage();
      await open(page, harness);
      const seen: { instance: number; partial: string; final: string[] }[] = [];
      const sessions: string[] = [];
      // A function instance places its new sessions round robin over the database instances (docs/sharding.md): two in a row land one on each.
      for (let round = 0; round < 2; round++) {
        if (round > 0) {
          await page.click("#end-button");
          await page.waitForSelector("body[data-state=ended]");
        }
        await startSession(page, userId);
        const sessionId = (await page.getAttribute("#session", "data-session-id")) ?? "";
        sessions.push(sessionId);
        harness.fake.enqueue({ kind: "stream", chunks: SLOW_REPLY, chunkDelayMs: 300 });
        await typeAndSend(page, `Take your time ${String(round)}`);
        await page.waitForSelector("#log .assistant.streaming .text:not(:text-is(''))");
        await page.reload();
        await page.waitForSelector("body[data-ready=true]");
        await page.click(`#conversation-list li button[data-session-id="${sessionId}"]`);
        await page.waitForSelector("body[data-state=watching]", { timeout: 10_000 });
        const partial = (await page.textContent("#log .assistant.streaming .text")) ?? "";
        await page.waitForSelector("body[data-state=active]", { timeout: 20_000 });
        seen.push({
          instance: harness.shards!.instanceOf(sessionId),
          partial: partial.length > 0 && SLOW_REPLY.join("").startsWith(partial) ? "a part" : partial,
          final: await logTexts(page),
        });
      }
      expect(seen).toEqual([
        { instance: harness.shards!.instanceOf(sessions[0]!), partial: "a part", final: ["Take your time 0", SLOW_REPLY.join("")] },
        { instance: harness.shards!.instanceOf(sessions[1]!), partial: "a part", final: ["Take your time 1", SLOW_REPLY.join("")] },
      ]);
      expect(new Set(seen.map((entry) => entry.instance))).toEqual(new Set([0, 1]));
      // Back to the first conversation, on the other instance: its history as stored there.
      await page.click(`#conversation-list li button[data-session-id="${sessions[0]!}"]`);
      await page.waitForSelector(`body[data-state=ended] #session[data-session-id="${sessions[0]!}"]`);
      expect(await logTexts(page)).toEqual(["Take your time 0", SLOW_REPLY.join("")]);
      expect(await page.evaluate("window.cspViolations")).toEqual([]);
      await page.close();
    }, 120_000);
  });
});
