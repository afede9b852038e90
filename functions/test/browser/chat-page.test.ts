import { tmpdir } from "node:os";
import { join } from "node:path";
import type { BrowserContext, Page, Request } from "playwright-core";
import { startEmulatorProject, type EmulatorProject } from "../support/emulator-project";
import { cspViolations, describeWithChromium, launchChromium, loseFirstPostAnswer, recordCspViolations, type LaunchedBrowser } from "../support/chromium";
import { ROUTES, startHarness, type Harness } from "../support/http-harness";
import { fakeUsage } from "../support/fake-openai-server";
import { HostileSite } from "../support/hostile-site";
import { startSession, typeAndSend } from "../support/chat-page-steps";
import { CuttingProxy, firstHalf } from "../support/cutting-proxy";

/** What the page shows of the reply being written. */
interface ReplyView {
  readonly text: string;
  readonly state: string | null;
  readonly inputDisabled: boolean;
}

const LAST_REPLY = "#log .assistant >> nth=-1 >> .text";

/** The texts of the log's entries, in order. */
const logTexts = (page: Page): Promise<string[]> => page.locator("#log li .text").allTextContents();

/**
 * The text first, then the state: a "streaming" state read after the text proves the text was
 * on screen before the reply completed.
 */
async function readReply(page: Page): Promise<ReplyView> {
  const text = (await page.textContent(LAST_REPLY)) ?? "";
  const state = await page.getAttribute("body", "data-state");
  return { text, state, inputDisabled: await page.isDisabled("#message") };
}

/**
 * Waits until the last reply's text is something other than `seen`. Selectors, not
 * waitForFunction: Playwright polls a function with `eval` in the page, which the page's policy
 * refuses (playwright-core 1.65); its selectors run in a world of their own.
 */
const replyOtherThan = (page: Page, seen: string) => page.waitForSelector(`#log .assistant:last-child .text:not(:text-is(${JSON.stringify(seen)}))`);

/**
 * The chat page in a real Chromium, served by the local server (embedded store) and answered by
 * the fake OpenAI server, which streams its chunks with pauses between them.
 */
describeWithChromium("the chat page in Chromium", () => {
  let harness: Harness;
  /** A server at its usage limits: a daily token allowance no message fits, one session per address per hour; its clock stopped at noon UTC. */
  let limited: Harness;
  let browser: LaunchedBrowser;
  let hostile: HostileSite;
  let page: Page;
  let policy: string | undefined;

  beforeAll(async () => {
    harness = await startHarness({ store: "memory", env: { USER_MESSAGES_PER_MINUTE: "1", OPENAI_MAX_RETRIES: "0" } });
    limited = await startHarness({ store: "memory", clock: () => Date.parse("2026-11-26T12:00:00Z"), env: { USER_TOKENS_PER_DAY: "1", ADDRESS_SESSIONS_PER_HOUR: "1" } });
    hostile = await HostileSite.start();
    // A phone's viewport: the page must work there.
    browser = await launchChromium({ width: 390, height: 844 });
    await recordCspViolations(browser);
  }, 60_000);
  afterAll(async () => {
    await harness.close();
    await limited.close();
    await hostile.stop();
    await browser.close();
  });
  beforeEach(async () => {
    harness.fake.reset();
    hostile.reset();
    page = await browser.context.newPage();
    policy = (await page.goto(`${harness.api.baseUrl}/`))?.headers()["content-security-policy"];
    await page.waitForSelector("body[data-ready=true]");
  });
  afterEach(async () => {
    // Whatever a test did, the page ran under its policy without tripping it.
    expect(await cspViolations(page)).toEqual([]);
    await page.close();
  });

  it("starts a session, shows a reply as it streams in, counts it, ends the session", async () => {
    // Served under a strict policy: it connects to its own origin; the one wildcard is the database
    // servers' a WebSocket moves to after its handshake (docs/web-page-security.md).
    expect(policy).toContain("connect-src 'self'");
    expect((policy ?? "").split(/[ ;]+/).filter((source) => source.includes("*"))).toEqual(["wss://*.firebaseio.com"]);
    expect(await page.evaluate("[...document.querySelectorAll('#template option')].map((option) => option.value)")).toEqual([
      "friendly-assistant",
      "sarcastic-critic",
      "socratic-tutor",
    ]);
    expect(await page.inputValue("#user")).toMatch(/^user_[0-9a-f]{12}$/);

    const chunks = ["Once", " upon", " a", " time,", " a", " reply", " was", " streamed."];
    harness.fake.enqueue({ kind: "stream", chunks, chunkDelayMs: 250 });
    await startSession(page, "user_browser", "socratic-tutor");
    expect(await page.textContent("#template-name")).toBe("Socratic Tutor");
    // The message box has the focus: a keyboard user types at once.
    expect(await page.evaluate("document.activeElement?.id")).toBe("message");

    await typeAndSend(page, "Tell me a story");
    await replyOtherThan(page, "");
    const first = await readReply(page);
    await replyOtherThan(page, first.text);
    const second = await readReply(page);
    // Text appeared while the reply was still being written, and grew: the page streams.
    expect(first.state).toBe("streaming");
    expect(first.inputDisabled).toBe(true);
    expect(second.state).toBe("streaming");
    expect(second.text.startsWith(first.text)).toBe(true);
    expect(second.text.length).toBeGreaterThan(first.text.length);
    expect(second.text.length).toBeLessThan(chunks.join("").length);

    await page.waitForSelector("body[data-state=active]");
    const done = await readReply(page);
    expect(done).toEqual({ text: chunks.join(""), state: "active", inputDisabled: false });
    expect(await page.textContent("#count")).toBe("1");
    expect(await page.textContent("#log .user .text")).toBe("Tell me a story");
    expect(harness.fake.requests.at(-1)?.body.messages.at(-1)).toEqual({ role: "user", content: "Tell me a story" });
    // The tokens the provider reported for the reply.
    const usage = fakeUsage(harness.fake.requests.at(-1)!.body, chunks.join(""));
    expect(await page.textContent("#tokens")).toBe(String(usage.prompt_tokens + usage.completion_tokens));

    const screenshot = join(tmpdir(), `chatify-chat-page-${Date.now()}.png`);
    await page.screenshot({ path: screenshot, fullPage: true });
    console.log(`chat page screenshot: ${screenshot}`);

    await page.click("#end-button");
    await page.waitForSelector("body[data-state=ended]");
    expect(await page.textContent("#status")).toMatch(/^Session ended: 1 message in \d+ s\.$/);
    expect(await page.isVisible("#start")).toBe(true);
  }, 60_000);

  it("shows errors plainly: a 429 with its wait, the model unavailable, an ended session", async () => {
    await startSession(page, "user_limited");
    await typeAndSend(page, "one");
    await page.waitForSelector("body[data-state=active] #log .assistant:not(.streaming)");
    await typeAndSend(page, "two");
    await page.waitForSelector("#error:not([hidden])");
    expect(await page.textContent("#error")).toMatch(/^Slow down: .+ Try again in \d+ s\.$/);
    // Nothing was stored: the text is back in the box, the count unchanged.
    expect(await page.inputValue("#message")).toBe("two");
    expect(await page.textContent("#count")).toBe("1");
    await page.click("#end-button");
    await page.waitForSelector("body[data-state=ended]");

    await startSession(page, "user_model");
    harness.fake.enqueue({ kind: "status", status: 429, headers: { "retry-after": "7" } });
    await typeAndSend(page, "anyone there?");
    await page.waitForSelector("#error:has-text('model')");
    expect(await page.textContent("#error")).toBe("The model is unavailable right now. Try again in 7 s.");
    expect(await page.getAttribute("body", "data-state")).toBe("active");

    // Ended elsewhere (another tab): the next message is refused with 410, and the page says so.
    const id = await page.getAttribute("#session", "data-session-id");
    expect((await harness.api.call("DELETE", ROUTES.end(id ?? ""))).status).toBe(200);
    await typeAndSend(page, "still there?");
    await page.waitForSelector("body[data-state=ended]");
    expect(await page.textContent("#error")).toBe("This session has ended. Start a new one to keep chatting.");
    expect(await page.isVisible("#start")).toBe(true);
  }, 60_000);

  it("says the wait a streamed error event gives, as it says a whole answer's Retry-After", async () => {
    await startSession(page, "user_stream_wait");
    const failure = { success: false, error: { code: "MODEL_UNAVAILABLE", message: "Model error: the model's stream broke off", retry_after_seconds: 7 } };
    await page.route("**/message", (route) =>
      route.fulfill({
        status: 200,
        headers: { "Content-Type": "text/event-stream" },
        body: `event: delta\ndata: ${JSON.stringify({ text: "Half a" })}\n\nevent: error\ndata: ${JSON.stringify(failure)}\n\n`,
      }),
    );
    await typeAndSend(page, "anyone there?");
    await page.waitForSelector("#error:not([hidden])");
    expect(await page.textContent("#error")).toBe("The model is unavailable right now. Try again in 7 s.");
    expect(await page.getAttribute("body", "data-state")).toBe("active");
  }, 60_000);

  // Disabled while its call runs, a control loses the focus to <body>, where the next Tab starts over at the top of the page.

  it("keeps the focus on Start session when a start made with the keyboard fails", async () => {
    // The network drops the start (a phone between cells).
    await page.route("**/chatbot/session", (route) => route.abort("connectionreset"));
    await page.focus("#start-button");
    await page.keyboard.press("Enter");
    await page.waitForSelector("#error:not([hidden])");
    expect({ state: await page.getAttribute("body", "data-state"), focus: await page.evaluate("document.activeElement?.id") }).toEqual({ state: "idle", focus: "start-button" });
  }, 60_000);

  it("keeps the focus on End session when an end made with the keyboard fails, the session still active", async () => {
    await startSession(page, `user_end_dropped_${Date.now()}`);
    await page.route("**/chatbot/session/*", (route) => (route.request().method() === "DELETE" ? route.abort("connectionreset") : route.continue()));
    await page.focus("#end-button");
    await page.keyboard.press("Enter");
    await page.waitForSelector("#error:not([hidden])");
    expect({ state: await page.getAttribute("body", "data-state"), focus: await page.evaluate("document.activeElement?.id") }).toEqual({ state: "active", focus: "end-button" });
  }, 60_000);

  it("gives a message's text back, to send in a new session, when its session was ended in another tab (410)", async () => {
    const userId = `user_ended_elsewhere_${Date.now()}`;
    await startSession(page, userId);
    const sessionId = (await page.getAttribute("#session", "data-session-id")) ?? "";

    // The same visitor's other tab opens the conversation and ends it.
    const other = await browser.context.newPage();
    try {
      await other.goto(`${harness.api.baseUrl}/`);
      await other.waitForSelector("body[data-ready=true]");
      await other.click(`#conversation-list button[data-session-id="${sessionId}"]`);
      await other.waitForSelector("body[data-state=active]");
      await other.click("#end-button");
      await other.waitForSelector("body[data-state=ended]");
    } finally {
      await other.close();
    }

    // This tab, still showing the session as active, sends a long message it took a while to type.
    const text = "A long message typed with care, which the server never stored.";
    await typeAndSend(page, text);
    await page.waitForSelector("body[data-state=ended]");
    expect(await page.textContent("#error")).toBe("This session has ended. Start a new one to keep chatting.");
    expect(await page.textContent("#log .assistant .note")).toBe("(not stored)");
    // As after any other failure, the text is back in the box, to send in the new session.
    await page.click("#start-button");
    await page.waitForSelector("body[data-state=active]");
    expect(await page.inputValue("#message")).toBe(text);
  }, 60_000);

  it("gives the start form back when a message or an end meets a session that no longer exists (404 SESSION_NOT_FOUND)", async () => {
    const gone = "This session no longer exists (its data was erased, or it was deleted after its retention period). Start a new one to keep chatting.";
    // A message: the user's data was erased meanwhile, from another tab.
    const messaged = `user_gone_message_${Date.now()}`;
    await startSession(page, messaged);
    expect((await harness.api.call("DELETE", `${ROUTES.erase}?user_id=${messaged}`)).status).toBe(200);
    await typeAndSend(page, "still there?");
    await page.waitForSelector("#error:not([hidden])");
    expect({
      state: await page.getAttribute("body", "data-state"),
      error: await page.textContent("#error"),
      status: await page.textContent("#status"),
      note: await page.textContent("#log .assistant .note"),
      startForm: await page.isVisible("#start"),
    }).toEqual({ state: "ended", error: gone, status: "The session no longer exists.", note: "(not stored)", startForm: true });

    // End session, likewise.
    const ended = `user_gone_end_${Date.now()}`;
    await startSession(page, ended);
    expect((await harness.api.call("DELETE", `${ROUTES.erase}?user_id=${ended}`)).status).toBe(200);
    await page.click("#end-button");
    await page.waitForSelector("body:not([data-state=ending]) #error:not([hidden])");
    expect({
      state: await page.getAttribute("body", "data-state"),
      error: await page.textContent("#error"),
      status: await page.textContent("#status"),
      startForm: await page.isVisible("#start"),
    }).toEqual({
      state: "ended",
      error: gone,
      status: "The session no longer exists.",
      startForm: true,
    });
  }, 60_000);

  it("shows the Retry-After wait of a daily token limit (429 TOKEN_LIMIT) and of a network's session limit (429 ADDRESS_RATE_LIMITED)", async () => {
    await page.goto(`${limited.api.baseUrl}/`);
    await page.waitForSelector("body[data-ready=true]");
    await startSession(page, "user_tokens");
    await typeAndSend(page, "one more?");
    await page.waitForSelector("#error:not([hidden])");
    // Noon UTC: twelve hours to the next UTC day, when the allowance comes back.
    expect(await page.textContent("#error")).toMatch(/^Slow down: .+ Try again in 12 h\.$/);
    expect(limited.fake.requests).toHaveLength(0);
    expect(await page.inputValue("#message")).toBe("one more?");
    expect(await page.getAttribute("body", "data-state")).toBe("active");

    await page.click("#end-button");
    await page.waitForSelector("body[data-state=ended]");
    await page.click("#start-button");
    await page.waitForSelector("#error:has-text('network')");
    // One session per hour from this address, its clock stopped: the bucket refills in an hour
    // (Retry-After 3600, or 3601 where the refill rate's division rounds the wait up).
    expect(await page.textContent("#error")).toMatch(/^Slow down: .+ Try again in 6[01] min\.$/);
    expect(await page.isVisible("#start")).toBe(true);
  }, 60_000);

  it("sends a message given back after its reply stream was cut again with its key: the stored reply comes back, no second model call, no second exchange", async () => {
    const userId = "user_cut_stream";
    await startSession(page, userId);
    const sessionId = (await page.getAttribute("#session", "data-session-id"))!;
    const keys: (string | undefined)[] = [];
    page.on("request", (request) => {
      if (request.method() === "POST" && request.url().endsWith("/message")) keys.push(request.headers()["idempotency-key"]);
    });

    // The first send: the server streams and commits the whole reply, but the browser's stream
    // ends before the `done` event (cut on the way: a phone switching networks, a proxy timing out).
    let cut = 0;
    await page.route("**/chatbot/session/*/message", async (route) => {
      if (cut > 0) return route.continue();
      cut++;
      const response = await route.fetch();
      const text = await response.text();
      const at = text.indexOf("event: done");
      await route.fulfill({ status: response.status(), headers: response.headers(), body: at > 0 ? text.slice(0, at) : text });
    });
    harness.fake.enqueue({ kind: "stream", chunks: ["A reply", " the server", " stored."] });
    await typeAndSend(page, "Tell me a story");
    await page.waitForSelector("#error:not([hidden])");
    // The page says the message may have been stored, and gives the text back to send again.
    expect(await page.textContent("#error")).toBe(
      "The connection closed before the reply was complete. Your message may have been stored all the same: sending it again is safe, it gets the stored reply back rather than a second one.",
    );
    expect(await page.inputValue("#message")).toBe("Tell me a story");
    expect(await page.textContent("#log .assistant >> nth=0 >> .note")).toBe("(the reply may have been stored: send the message again to get it)");
    // It was: the server wrote the reply to its end and committed it.
    const stored = await harness.api.call("GET", `${ROUTES.get(sessionId)}?user_id=${userId}`);
    expect(stored.body.session).toMatchObject({ message_count: 1 });

    // Sent again as it was given back: the same key, so the stored reply is replayed and shown as any reply.
    harness.fake.enqueue({ kind: "stream", chunks: ["A second", " reply."] });
    await page.click("#send-button");
    await page.waitForSelector("body[data-state=active] #log .assistant:not(.streaming) >> nth=1");
    expect(await page.textContent(LAST_REPLY)).toBe("A reply the server stored.");
    expect(await page.textContent("#count")).toBe("1");
    expect(await page.textContent("#status")).toBe("Reply complete: the one stored when you first sent this message. Messages: 1.");
    expect(keys).toHaveLength(2);
    expect(keys[0]).toMatch(/^[0-9a-f]{32}$/);
    expect(keys[1]).toBe(keys[0]);

    const after = await harness.api.call("GET", `${ROUTES.get(sessionId)}?user_id=${userId}`);
    const users = (after.body.messages as { role: string; content: string }[]).filter((message) => message.role === "user").map((message) => message.content);
    expect({ users, modelCalls: harness.fake.requests.length }).toEqual({ users: ["Tell me a story"], modelCalls: 1 });
  }, 60_000);

  it("shows and counts a replayed exchange once when the conversation was opened again from the list before the message was sent again", async () => {
    const userId = `user_replay_reopened_${Date.now()}`;
    await startSession(page, userId);
    const sessionId = (await page.getAttribute("#session", "data-session-id")) ?? "";
    // The reply's stream is cut before its `done` event (the server stores the whole reply all the same).
    let cut = 0;
    await page.route("**/chatbot/session/*/message", async (route) => {
      if (cut > 0) return route.continue();
      cut++;
      const response = await route.fetch();
      const text = await response.text();
      const at = text.indexOf("event: done");
      await route.fulfill({ status: response.status(), headers: response.headers(), body: at > 0 ? text.slice(0, at) : text });
    });
    harness.fake.enqueue({ kind: "stream", chunks: ["A reply", " the server", " stored."] });
    await typeAndSend(page, "Tell me a story");
    await page.waitForSelector("#error:not([hidden])");
    expect(await page.inputValue("#message")).toBe("Tell me a story");
    await page.waitForSelector("body[data-list-reads='0']", { state: "attached" });

    // The visitor checks whether it was stored: opens the conversation again from the list, which shows the stored exchange.
    await page.click(`#conversation-list button[data-session-id="${sessionId}"]`);
    await page.waitForSelector("#status:has-text('Conversation resumed')");
    const stored = await harness.api.call("GET", `${ROUTES.get(sessionId)}?user_id=${userId}`);
    const total = (stored.body.session as { usage: { total_tokens: number } }).usage.total_tokens;
    const storedTexts = (stored.body.messages as { content: string }[]).map((message) => message.content);
    expect(storedTexts).toEqual(["Tell me a story", "A reply the server stored."]);
    expect({ tokens: await page.textContent("#tokens"), log: await logTexts(page) }).toEqual({ tokens: String(total), log: storedTexts });

    // The text still in the box is sent again, with its key: the stored reply comes back (a replay).
    await page.click("#send-button");
    await page.waitForSelector("#status:has-text('the one stored when you first sent this message')");
    // One exchange was stored and paid for once: shown once, and the tokens shown are the session's, not twice its reply's.
    expect({ count: await page.textContent("#count"), tokens: await page.textContent("#tokens"), log: await logTexts(page) }).toEqual({
      count: "1",
      tokens: String(total),
      log: storedTexts,
    });
    expect(harness.fake.requests).toHaveLength(1);
  }, 60_000);

  it("starts again with the key of a start whose answer was lost: the session that start made, not a second one", async () => {
    const userId = "user_lost_start";
    // The first start reaches the server, which makes the session; its answer is lost on the way back.
    const keys = await loseFirstPostAnswer(page, "**/chatbot/session");
    await page.selectOption("#template", "socratic-tutor");
    await page.fill("#user", userId);
    await page.click("#start-button");
    await page.waitForSelector("#error:not([hidden])");
    expect(await page.textContent("#error")).toMatch(/The session may have been made all the same: starting again is safe, it gets that session back\.$/);
    expect(await page.getAttribute("body", "data-state")).toBe("idle");
    // The server made the session all the same.
    const made = ((await harness.api.call("GET", `${ROUTES.list}?user_id=${userId}`)).body.sessions as { session_id: string }[]).map((session) => session.session_id);
    expect(made).toHaveLength(1);
    const madeId = made[0]!;

    // Started again as it was asked: the same key, so the answer is the session already made.
    await page.click("#start-button");
    await page.waitForSelector("body[data-state=active]");
    expect(await page.getAttribute("#session", "data-session-id")).toBe(madeId);
    expect(keys).toHaveLength(2);
    expect(keys[0]).toMatch(/^[0-9a-f]{32}$/);
    expect(keys[1]).toBe(keys[0]);
    const after = await harness.api.call("GET", `${ROUTES.list}?user_id=${userId}`);
    expect((after.body.sessions as { session_id: string }[]).map((session) => session.session_id)).toEqual([madeId]);
  }, 60_000);

  it("talks to function URLs when the API base says so (?api=)", async () => {
    await page.goto(`${harness.api.baseUrl}/?api=${encodeURIComponent(`${harness.api.baseUrl}/demo-chatify/us-central1`)}`);
    await page.waitForSelector("body[data-ready=true]");
    await startSession(page, "user_direct");
    await typeAndSend(page, "direct");
    await page.waitForSelector("body[data-state=active] #log .assistant:not(.streaming)");
    expect(await page.textContent("#log .assistant .text")).toBe("reply #1 to: direct");
    expect(await page.textContent("#count")).toBe("1");
  }, 60_000);

  it("refuses a hostile ?api= base before any request: nothing reaches it, the page says so and uses its own API", async () => {
    const base = `${hostile.origin}/api/v1`;
    await page.goto(`${harness.api.baseUrl}/?api=${encodeURIComponent(base)}`);
    await page.waitForSelector("body[data-ready=true]");
    const refusal = await page.textContent("#error");
    const shownBase = await page.inputValue("#api-base");

    await page.fill("#user", "user_hostile_link");
    await page.click("#start-button");
    await page.waitForSelector("body[data-state=active], #status:text-is('No session.')");
    expect({ visits: hostile.visits, connections: hostile.connections }).toEqual({ visits: [], connections: 0 });
    expect(refusal).toContain(`Refused the API base ${base}`);
    expect(refusal).toContain("Nothing was sent there");
    expect(shownBase).toBe(`${harness.api.baseUrl}/api/v1`);
    await typeAndSend(page, "still mine");
    await page.waitForSelector("body[data-state=active] #log .assistant:not(.streaming)");
    expect(await page.textContent("#log .assistant .text")).toBe("reply #1 to: still mine");
    expect(hostile.connections).toBe(0);
  }, 60_000);

  it("quotes a refused ?api= base as the URL it parses to, cut short: a link puts no words of its own, and no bidi controls, in the page's alert", async () => {
    // A link to the real site whose ?api= is not a base but a message: a URL of another origin
    // (so it is refused and quoted), followed by the attacker's text and a right-to-left override
    // that would turn the page's own sentence after it into mirror text.
    const phish = "https://chatify-support.example/ Your account was suspended. Call +1 555 0100 to restore it. \u202E";
    await page.goto(`${harness.api.baseUrl}/?api=${encodeURIComponent(phish)}`);
    await page.waitForSelector("body[data-ready=true]");
    const error = (await page.textContent("#error")) ?? "";
    // Refused: the page stays on its own API.
    expect(error).toMatch(/^Refused the API base https:\/\/chatify-support\.example\/%20Your%20\S{0,60}…: this page sends/);
    expect(await page.inputValue("#api-base")).toBe(`${harness.api.baseUrl}/api/v1`);
    expect({
      attackerWords: error.includes("Your account was suspended. Call +1 555 0100"),
      bidiControls: /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/u.test(error),
    }).toEqual({ attackerWords: false, bidiControls: false });
  }, 60_000);

  it("refuses a hostile base typed under Settings, before any request: the session goes on with the API it had", async () => {
    await startSession(page, "user_hostile_setting");
    const base = `${hostile.origin}/steal`;
    await page.click(".settings summary");
    await page.fill("#api-base", base);
    await page.click("#settings button[type=submit]");
    // Refused (an error), or taken (the old page said which base it now used).
    await page.waitForSelector("#error:not([hidden]), #status:text-matches('^API base:')");
    const refusal = await page.textContent("#error");

    await typeAndSend(page, "where does this go?");
    await page.waitForSelector("body[data-state=active] #log .assistant:not(.streaming)");
    expect({ visits: hostile.visits, connections: hostile.connections }).toEqual({ visits: [], connections: 0 });
    expect(refusal).toContain(`Refused the API base ${base}`);
    expect(refusal).toContain("Nothing was sent there");
    expect(await page.textContent("#log .assistant .text")).toBe("reply #1 to: where does this go?");
    await page.click("#end-button");
    await page.waitForSelector("body[data-state=ended]");
    expect(hostile.connections).toBe(0);
  }, 60_000);
});

/**
 * The chat page behind a network that cuts an answer once it began (`CuttingProxy`): the server
 * acted and answered whole, the browser got the status line and part of the body, then the
 * connection dropped. Such an answer says nothing of what the server stored, except where its
 * last event arrived whole.
 */
describeWithChromium("the chat page in Chromium, when an answer is cut on the way back", () => {
  let harness: Harness;
  let proxy: CuttingProxy;
  let browser: LaunchedBrowser;
  let page: Page;

  beforeAll(async () => {
    harness = await startHarness({ store: "memory", env: { USER_MAX_ACTIVE_SESSIONS: "10" } });
    proxy = await CuttingProxy.start(harness.api.baseUrl);
    browser = await launchChromium({ width: 390, height: 844 });
    await recordCspViolations(browser);
  }, 60_000);
  afterAll(async () => {
    await browser.close();
    await proxy.stop();
    await harness.close();
  });
  beforeEach(async () => {
    harness.fake.reset();
    page = await browser.context.newPage();
    await page.goto(`${proxy.origin}/`);
    await page.waitForSelector("body[data-ready=true]");
  });
  afterEach(async () => {
    expect(await cspViolations(page)).toEqual([]);
    await page.close();
  });

  it("says the session may have been made when a start's 201 arrives without its whole body", async () => {
    const userId = `user_cut_start_${Date.now()}`;
    proxy.cutNext("POST", /\/chatbot\/session$/, firstHalf);
    await page.fill("#user", userId);
    await page.click("#start-button");
    await page.waitForSelector("#error:not([hidden])");
    expect(proxy.cutDone).toContainEqual(expect.stringMatching(/^POST \/api\/v1\/chatbot\/session 201$/));
    // The server made the session.
    const made = (await harness.api.call("GET", `${ROUTES.list}?user_id=${userId}`)).body.sessions as unknown[];
    expect(made).toHaveLength(1);
    expect(await page.textContent("#error")).toBe(
      "The answer (HTTP 201) did not arrive whole. The session may have been made all the same: starting again is safe, it gets that session back.",
    );
    expect(await page.getAttribute("body", "data-state")).toBe("idle");
  }, 60_000);

  it("says a message may have been stored when the replay of its stored reply (JSON 200) arrives without its whole body", async () => {
    const userId = `user_cut_replay_${Date.now()}`;
    await startSession(page, userId);
    const sessionId = (await page.getAttribute("#session", "data-session-id"))!;
    // First send: the stream is cut before its `done` event.
    proxy.cutNext("POST", /\/message$/, (body) => body.slice(0, Math.max(0, body.indexOf("event: done"))));
    harness.fake.enqueue({ kind: "stream", chunks: ["A reply", " the server", " stored."] });
    await typeAndSend(page, "Tell me a story");
    await page.waitForSelector("#error:not([hidden])");
    expect(await page.textContent("#log .assistant >> nth=0 >> .note")).toBe("(the reply may have been stored: send the message again to get it)");

    // Sent again with its key: the server answers the stored reply as JSON 200 (a replay), and that answer is cut too.
    proxy.cutNext("POST", /\/message$/, firstHalf);
    await page.click("#send-button");
    await page.waitForSelector("body[data-state=active] #log .assistant.failed >> nth=1");
    expect(proxy.cutDone.at(-1)).toMatch(/ 200$/);
    const stored = await harness.api.call("GET", `${ROUTES.get(sessionId)}?user_id=${userId}`);
    expect(stored.body.session).toMatchObject({ message_count: 1 });
    expect({
      note: await page.textContent("#log .assistant >> nth=1 >> .note"),
      error: await page.textContent("#error"),
      box: await page.inputValue("#message"),
    }).toEqual({
      note: "(the reply may have been stored: send the message again to get it)",
      error:
        "The answer (HTTP 200) did not arrive whole. Your message may have been stored all the same: sending it again is safe, it gets the stored reply back rather than a second one.",
      box: "Tell me a story",
    });
  }, 60_000);

  it("shows a streamed reply whose `done` event arrived as complete, though the connection dropped before the stream's end", async () => {
    await startSession(page, `user_cut_after_done_${Date.now()}`);
    // Everything up to and including the last event arrives; then the connection drops before the
    // chunked body's terminator (a phone switching networks a moment too late).
    proxy.cutNext("POST", /\/message$/, (body) => body);
    harness.fake.enqueue({ kind: "stream", chunks: ["Whole", " reply."] });
    await typeAndSend(page, "Hello");
    await page.waitForSelector("body[data-state=active] #log .assistant:not(.streaming)");
    expect(proxy.cutDone.at(-1)).toMatch(/ 200$/);
    expect({
      text: await page.textContent("#log .assistant .text"),
      notes: await page.locator("#log .assistant .note").allTextContents(),
      count: await page.textContent("#count"),
      box: await page.inputValue("#message"),
      status: await page.textContent("#status"),
      error: await page.textContent("#error"),
    }).toEqual({ text: "Whole reply.", notes: [], count: "1", box: "", status: "Reply complete. Messages: 1.", error: "" });
  }, 60_000);
});

/**
 * docs/api.md: "While the model is quiet, a comment line (`: keep-alive`) is sent at least every
 * 15 s, so that proxies and clients do not take the silence for a dead connection." A stream
 * silent for two of those periods (no event, no heartbeat) is a dead connection: the page takes it
 * as a cut (public/app.js STREAM_SILENCE_MS, 30 s, which this test waits out), not something to
 * wait on for ever with its message box, Send and End disabled.
 */
describeWithChromium("the chat page in Chromium, when the link goes dead mid-reply without a reset", () => {
  let harness: Harness;
  let proxy: CuttingProxy;
  let browser: LaunchedBrowser;
  let page: Page | undefined;

  beforeAll(async () => {
    harness = await startHarness({ store: "memory" });
    proxy = await CuttingProxy.start(harness.api.baseUrl);
    browser = await launchChromium({ width: 390, height: 844 });
    await recordCspViolations(browser);
  }, 60_000);
  afterAll(async () => {
    await page?.close();
    await browser.close();
    await proxy.stop();
    await harness.close();
  });

  it("gives the visitor the page back (text in the box, may have been stored) once the stream stays silent for two heartbeat periods", async () => {
    page = await browser.context.newPage();
    await page.goto(`${proxy.origin}/`);
    await page.waitForSelector("body[data-ready=true]");
    const userId = `user_stalled_${Date.now()}`;
    await startSession(page, userId);
    const sessionId = (await page.getAttribute("#session", "data-session-id")) ?? "";

    proxy.stallNext("POST", /\/message$/);
    harness.fake.enqueue({ kind: "stream", chunks: ["The", " reply", " the", " server", " stored."], chunkDelayMs: 100 });
    await typeAndSend(page, "Are you there?");
    await page.waitForSelector("#log .assistant.streaming .text:text-is('The')");
    // The server wrote the whole reply, stored it, and ended its stream: none of it reached the page.
    await proxy.stalledAnswerFinished(15_000);
    const stored = await harness.api.call("GET", `${ROUTES.get(sessionId)}?user_id=${userId}`);
    expect(stored.body.session).toMatchObject({ message_count: 1 });

    // 30 s of silence from the first delta on, where a heartbeat comes at least every 15 s; bounded a little past that.
    let leftStreaming = true;
    try {
      await page.waitForSelector("body:not([data-state=streaming])", { timeout: 40_000 });
    } catch {
      leftStreaming = false;
    }
    expect({
      leftStreaming,
      state: await page.getAttribute("body", "data-state"),
      messageBoxEnabled: await page.isEnabled("#message"),
    }).toEqual({ leftStreaming: true, state: "active", messageBoxEnabled: true });
    // As after any other cut: the text back with its key, and the page saying it may have been stored.
    expect(await page.inputValue("#message")).toBe("Are you there?");
    expect(await page.textContent("#error")).toBe(
      "The connection closed before the reply was complete. Your message may have been stored all the same: sending it again is safe, it gets the stored reply back rather than a second one.",
    );
    // Sent again with its key: the reply stored meanwhile comes back, with no second model call.
    await page.click("#send-button");
    await page.waitForSelector("body[data-state=active] #log .assistant:not(.streaming) >> nth=1");
    expect({ reply: await page.textContent(LAST_REPLY), count: await page.textContent("#count"), modelCalls: harness.fake.requests.length }).toEqual({
      reply: "The reply the server stored.",
      count: "1",
      modelCalls: 1,
    });
    expect(await cspViolations(page)).toEqual([]);
  }, 90_000);
});

/**
 * The same dead link before the answer's first byte: the server writes nothing until the reply's
 * first text, not even a heartbeat (docs/api.md: the stream opens with it, so that a failure
 * before it is answered as JSON with its status), so a link that dies between the send and that
 * text leaves the fetch waiting for a head that never comes; so does any other request's (an
 * end's, a list's read). The page gives a request up once no head came for longer than the
 * function may run (public/app.js ANSWER_HEAD_MS, 90 s, past the function's 60 s timeout), on the
 * page's clock, which the tests move on.
 */
describeWithChromium("the chat page in Chromium, when the link goes dead before the answer's first byte", () => {
  let harness: Harness;
  let proxy: CuttingProxy;
  let browser: LaunchedBrowser;

  beforeAll(async () => {
    harness = await startHarness({ store: "memory" });
    proxy = await CuttingProxy.start(harness.api.baseUrl);
    browser = await launchChromium({ width: 390, height: 844 });
    await recordCspViolations(browser);
    // The pages' clock (Playwright's is the context's), moved on by each test.
    await browser.context.clock.install();
  }, 60_000);
  afterAll(async () => {
    await browser.close();
    await proxy.stop();
    await harness.close();
  });

  /**
   * Moves the page's clock past the function's 60 s timeout (which the platform would have
   * answered), then on to two minutes in all: whether the page was still in the phase `waiting`
   * at each (the second waited for a little, in real time).
   */
  async function twoMinutesOn(page: Page, waiting: string): Promise<{ waitingAtTimeout: boolean; waitingAfter: boolean }> {
    await page.clock.runFor(61_000);
    const waitingAtTimeout = (await page.getAttribute("body", "data-state")) === waiting;
    await page.clock.runFor(59_000);
    let waitingAfter = false;
    try {
      await page.waitForSelector(`body:not([data-state=${waiting}])`, { timeout: 5_000 });
    } catch {
      waitingAfter = true;
    }
    return { waitingAtTimeout, waitingAfter };
  }

  it("gives the visitor the page back (text in the box, may have been stored) once no head of the message's answer came for longer than the function may run", async () => {
    const page = await browser.context.newPage();
    await page.goto(`${proxy.origin}/`);
    await page.waitForSelector("body[data-ready=true]");
    const userId = `user_unanswered_${Date.now()}`;
    await startSession(page, userId);
    const sessionId = (await page.getAttribute("#session", "data-session-id")) ?? "";

    proxy.silenceNext("POST", /\/message$/);
    harness.fake.enqueue({ kind: "stream", chunks: ["The", " reply", " the", " server", " stored."], chunkDelayMs: 50 });
    await typeAndSend(page, "Are you there?");
    await page.waitForSelector("body[data-state=streaming]");
    // The server wrote its whole answer and stored the exchange: none of it reached the page.
    await proxy.stalledAnswerFinished(15_000);
    const stored = await harness.api.call("GET", `${ROUTES.get(sessionId)}?user_id=${userId}`);
    expect(stored.body.session).toMatchObject({ message_count: 1 });

    // At the function's timeout the page still waits; two minutes on, it has given the message up.
    expect({
      ...(await twoMinutesOn(page, "streaming")),
      state: await page.getAttribute("body", "data-state"),
      messageBoxEnabled: await page.isEnabled("#message"),
    }).toEqual({ waitingAtTimeout: true, waitingAfter: false, state: "active", messageBoxEnabled: true });
    // As after a cut: the text back with its key, and the page saying it may have been stored.
    expect({ box: await page.inputValue("#message"), reply: await page.textContent(LAST_REPLY), error: await page.textContent("#error") }).toEqual({
      box: "Are you there?",
      reply: "(no reply)",
      error:
        "The connection closed before the reply was complete. Your message may have been stored all the same: sending it again is safe, it gets the stored reply back rather than a second one.",
    });
    // Sent again with its key: the reply stored meanwhile comes back, with no second model call.
    await page.click("#send-button");
    await page.waitForSelector("body[data-state=active] #log .assistant:not(.streaming) >> nth=1");
    expect({ reply: await page.textContent(LAST_REPLY), count: await page.textContent("#count"), modelCalls: harness.fake.requests.length }).toEqual({
      reply: "The reply the server stored.",
      count: "1",
      modelCalls: 1,
    });
    expect(await cspViolations(page)).toEqual([]);
  }, 90_000);

  it("gives the page back once no head of an end's answer came for as long: the session can be ended again", async () => {
    const page = await browser.context.newPage();
    await page.goto(`${proxy.origin}/`);
    await page.waitForSelector("body[data-ready=true]");
    await startSession(page, `user_unanswered_end_${Date.now()}`);

    proxy.silenceNext("DELETE", /\/session\/[^/?]+$/);
    await page.click("#end-button");
    await page.waitForSelector("body[data-state=ending]");
    await proxy.stalledAnswerFinished(15_000);
    expect({
      ...(await twoMinutesOn(page, "ending")),
      state: await page.getAttribute("body", "data-state"),
      endEnabled: await page.isEnabled("#end-button"),
      error: await page.textContent("#error"),
    }).toEqual({ waitingAtTimeout: true, waitingAfter: false, state: "active", endEnabled: true, error: "Could not reach the API: no answer came within 90 s." });
    // The server ended it meanwhile: ended again, the page finds it over.
    await page.click("#end-button");
    await page.waitForSelector("body[data-state=ended]");
    expect(await page.textContent("#status")).toBe("The session was already over.");
    expect(await cspViolations(page)).toEqual([]);
  }, 90_000);
});

/**
 * Where the server requires an ID token: the page meets the 401, loads the Firebase Auth SDK from
 * the reserved /__/firebase/ URLs, signs in anonymously on the Auth emulator, and sends the token.
 */
describeWithChromium("the chat page in Chromium, signed in on the Auth emulator", () => {
  let emulator: EmulatorProject;
  let harness: Harness;
  let browser: LaunchedBrowser;
  /** Browsers of their own, for the tests whose account is deleted: see ownProfile. */
  const ownBrowsers: LaunchedBrowser[] = [];
  let hostile: HostileSite;
  const previousHost = process.env.FIREBASE_AUTH_EMULATOR_HOST;

  beforeAll(async () => {
    emulator = await startEmulatorProject({ projectId: "demo-chatify", only: ["auth"], env: {}, secrets: {} });
    // firebase-admin reads this when an app's Auth is first used: before the harness starts.
    process.env.FIREBASE_AUTH_EMULATOR_HOST = emulator.authHost;
    harness = await startHarness({ store: "memory", env: { REQUIRE_AUTH: "true" } });
    hostile = await HostileSite.start();
    browser = await launchChromium({ width: 1024, height: 768 });
    await recordCspViolations(browser);
  }, 120_000);
  afterAll(async () => {
    if (previousHost === undefined) delete process.env.FIREBASE_AUTH_EMULATOR_HOST;
    else process.env.FIREBASE_AUTH_EMULATOR_HOST = previousHost;
    await harness.close();
    await hostile.stop();
    await browser.close();
    for (const own of ownBrowsers) await own.close();
    await emulator.stop();
  }, 30_000);

  it("signs in anonymously when the server answers 401, then chats as that user", async () => {
    const page = await browser.context.newPage();
    // The Auth emulator comes from the local server (its init.js), as the page's only source of it.
    await page.goto(`${harness.api.baseUrl}/`);
    await page.waitForSelector("body[data-ready=true]");
    harness.fake.enqueue({ kind: "stream", chunks: ["Signed", " in", " and", " streaming."], chunkDelayMs: 50 });
    const logged: string[] = [];
    page.on("console", (message) => logged.push(message.text()));
    await page.click("#start-button");
    await page.waitForSelector("body[data-state=active], #error:not([hidden])", { timeout: 30_000 });
    // On failure, what the visitor saw and what the page logged (a 401 in the log is expected).
    expect({ error: await page.textContent("#error"), logged }).toMatchObject({ error: "" });

    const uid = await page.inputValue("#user");
    expect(await page.textContent("#identity")).toBe(`Identity: signed in anonymously with Firebase Auth as ${uid} (Auth emulator at ${emulator.authHost}).`);
    const id = (await page.getAttribute("#session", "data-session-id")) ?? "";
    expect(await harness.api.store.readSessionMeta(id)).toMatchObject({ user_id: uid });

    await typeAndSend(page, "who am I?");
    await page.waitForSelector("body[data-state=active] #log .assistant:not(.streaming)");
    expect(await page.textContent("#log .assistant .text")).toBe("Signed in and streaming.");
    expect(await page.textContent("#count")).toBe("1");
    await page.click("#end-button");
    await page.waitForSelector("body[data-state=ended]");
    // Without the token, the same session is not the visitor's to touch.
    expect((await harness.api.call("DELETE", ROUTES.end(id))).status).toBe(401);
    // The SDK's scripts (/__/firebase/...) and its calls to the emulator ran under the policy.
    expect(await cspViolations(page)).toEqual([]);
    await page.close();
  }, 60_000);

  it("loads the SDK again at the next sign-in when one of its scripts failed to load once", async () => {
    const page = await browser.context.newPage();
    // The SDK's first script fails once (a phone between networks, a deploy under way), then is served again.
    let requested = 0;
    await page.route("**/__/firebase/*/firebase-app-compat.js", async (route) => {
      requested++;
      if (requested === 1) await route.abort("connectionreset");
      else await route.continue();
    });
    await page.goto(`${harness.api.baseUrl}/`);
    await page.waitForSelector("body[data-ready=true]");
    // The list read at start meets the 401; its sign-in cannot load the script.
    await page.waitForSelector("#error:not([hidden])", { timeout: 30_000 });
    expect(await page.textContent("#error")).toContain("signing in failed: could not load /__/firebase/12.19.0/firebase-app-compat.js");
    expect(requested).toBe(1);

    // The visitor starts a session: the sign-in loads the script again, and succeeds.
    await page.click("#start-button");
    await page.waitForSelector("body[data-state=active], body[data-state=idle] #error:not([hidden])", { timeout: 30_000 });
    expect({
      state: await page.getAttribute("body", "data-state"),
      error: await page.textContent("#error"),
      requested,
      // The script that failed left no element behind: one, the one that loaded.
      scripts: await page.locator('script[src$="/firebase-app-compat.js"]').count(),
    }).toEqual({ state: "active", error: "", requested: 2, scripts: 1 });
    expect(await page.textContent("#identity")).toContain("signed in anonymously with Firebase Auth");
    expect(await cspViolations(page)).toEqual([]);
    await page.close();
  }, 90_000);

  /**
   * A browser profile of its own. The Auth SDK keeps its signed-in user and ID token in the
   * profile's storage, the token's expiry as the page's clock saw it: a new user signed in two hours
   * on would be the next test's, its token taken for fresh there for two hours more.
   */
  async function ownProfile(): Promise<BrowserContext> {
    const own = await launchChromium({ width: 1024, height: 768 });
    ownBrowsers.push(own);
    await recordCspViolations(own);
    return own.context;
  }

  /**
   * A page signed in (through the 401 of its start) with a session open, then two hours on (the
   * tab left open past its ID token's hour: the browser's clock moved on) after `meanwhile`: the
   * token must be refreshed before the next call. Records the API requests made from then on.
   */
  async function activePastTokenHour(
    meanwhile: (page: Page, uid: string) => Promise<void>,
    context: BrowserContext = browser.context,
  ): Promise<{ page: Page; uid: string; apiCalls: Request[] }> {
    const page = await context.newPage();
    const apiCalls: Request[] = [];
    page.on("request", (request) => {
      if (new URL(request.url()).pathname.startsWith("/api/")) apiCalls.push(request);
    });
    await page.clock.install();
    await page.goto(`${harness.api.baseUrl}/`);
    await page.waitForSelector("body[data-ready=true]");
    await page.click("#start-button");
    await page.waitForSelector("body[data-state=active], #error:not([hidden])", { timeout: 30_000 });
    expect(await page.textContent("#error")).toBe("");
    const uid = await page.inputValue("#user");
    expect(await page.textContent("#identity")).toContain(`signed in anonymously with Firebase Auth as ${uid}`);
    await meanwhile(page, uid);
    await page.clock.setSystemTime(Date.now() + 2 * 3_600_000);
    apiCalls.length = 0;
    return { page, uid, apiCalls };
  }

  /** The token service cannot be reached (a blip, an outage of securetoken.googleapis.com). */
  const tokenServiceDown = async (page: Page): Promise<void> => {
    await page.route("**/securetoken.googleapis.com/**", (route) => route.abort("connectionrefused"));
  };

  it("says a message was not sent, and not stored, when its ID token could not be refreshed: no request left the page", async () => {
    const { page, apiCalls } = await activePastTokenHour(tokenServiceDown);
    await typeAndSend(page, "Sent with a stale token?");
    await page.waitForSelector("body[data-state=active] #error:not([hidden])", { timeout: 30_000 });
    expect({
      requests: apiCalls.map((request) => request.method()),
      error: await page.textContent("#error"),
      note: await page.textContent("#log .assistant .note"),
    }).toEqual({
      requests: [],
      error: expect.stringMatching(/^Your sign-in could not be renewed: Firebase: .*\(auth\/network-request-failed\)\. Nothing was sent; try again in a moment\.$/),
      note: "(not stored)",
    });
    await page.close();
  }, 90_000);

  it("says the data was not erased when the erasure's ID token could not be refreshed: no request left the page, and the list is not read again", async () => {
    const { page, apiCalls } = await activePastTokenHour(tokenServiceDown);
    await page.click(".settings summary");
    await page.click("#erase-data");
    await page.click("#erase-yes");
    await page.waitForSelector("#error:not([hidden])", { timeout: 30_000 });
    expect({ requests: apiCalls.map((request) => request.method()), error: await page.textContent("#error"), status: await page.textContent("#status") }).toEqual({
      requests: [],
      error: expect.stringMatching(/^Your sign-in could not be renewed: .* Nothing was sent; try again in a moment\.$/),
      status: "Your data was not erased.",
    });
    await page.close();
  }, 90_000);

  /** Deletes the account of `uid`, as Auth's clean-up of inactive anonymous users, or an admin, would. */
  async function deleteAccount(uid: string): Promise<void> {
    const deleted = await fetch(`http://${emulator.authHost}/identitytoolkit.googleapis.com/v1/projects/demo-chatify/accounts:delete`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer owner" },
      body: JSON.stringify({ localId: uid }),
    });
    expect(deleted.status).toBe(200);
  }

  /** Waits until the page has acted on every answer of the list it asked for (`data-list-reads`, counted by app.js). */
  const listSettled = (page: Page) => page.waitForSelector("body[data-list-reads='0']", { state: "attached" });

  /**
   * A page past its ID token's hour whose session holds a message and is listed, its account
   * deleted meanwhile; then the visitor presses End: the page signs in anew, as a new user, and
   * sends the end as that user. Resolves once the end and the list's reads are answered.
   */
  async function endedAsNewUser(): Promise<{ page: Page; uid: string; newUid: string; sessionId: string; apiCalls: Request[] }> {
    const { page, uid, apiCalls } = await activePastTokenHour(async (page, uid) => {
      await typeAndSend(page, "My secret plans for the weekend");
      await page.waitForSelector("body[data-state=active] #log .assistant:not(.streaming)");
      await page.waitForSelector(`#conversation-list .title:text-is("My secret plans for the weekend")`);
      await listSettled(page);
      await deleteAccount(uid);
    }, await ownProfile());
    const sessionId = (await page.getAttribute("#session", "data-session-id")) ?? "";
    await page.click("#end-button");
    await page.waitForSelector("body[data-state=ended], body[data-state=active] #error:not([hidden])", { timeout: 30_000 });
    await listSettled(page);
    return { page, uid, newUid: await page.inputValue("#user"), sessionId, apiCalls };
  }

  it("signs in anew, without a reload, when its anonymous account was deleted, and sends the call as the new user", async () => {
    const { page, uid, newUid, sessionId, apiCalls } = await endedAsNewUser();
    expect({
      requests: apiCalls.map((request) => `${request.method()} ${new URL(request.url()).pathname} with token: ${request.headers()["authorization"]?.startsWith("Bearer ") === true}`).sort(),
      signedInAnew: newUid !== "" && newUid !== uid,
      identity: await page.textContent("#identity"),
      error: await page.textContent("#error"),
    }).toEqual({
      // The end, sent once; the list, read for the new user once signed in, and again once the end was answered.
      requests: [`DELETE /api/v1/chatbot/session/${sessionId} with token: true`, "GET /api/v1/chatbot/sessions with token: true", "GET /api/v1/chatbot/sessions with token: true"],
      signedInAnew: true,
      identity: `Identity: signed in anonymously with Firebase Auth as ${newUid} (Auth emulator at ${emulator.authHost}).`,
      // The server answered: the session open is the deleted user's, which the new one cannot reach.
      error: "Not allowed for the signed-in user (FORBIDDEN, HTTP 403).",
    });
    expect(await cspViolations(page)).toEqual([]);
    await page.close();
  }, 90_000);

  it("lists none of the deleted account's conversations once signed in anew: the list is read again, for the new user", async () => {
    const { page } = await endedAsNewUser();
    expect({ titles: await page.locator("#conversation-list .title").allTextContents(), none: await page.isVisible("#no-conversations") }).toEqual({ titles: [], none: true });
    await page.close();
  }, 90_000);

  it("gives the start form back when the session on view, the deleted account's, is refused to the new user (403 FORBIDDEN)", async () => {
    const { page } = await endedAsNewUser();
    // Kept open, End and Send would answer 403 for ever: only a reload would get a session.
    expect({
      state: await page.getAttribute("body", "data-state"),
      status: await page.textContent("#status"),
      startForm: await page.isVisible("#start"),
      start: await page.isEnabled("#start-button"),
      message: await page.isEnabled("#message"),
    }).toEqual({ state: "ended", status: "The session is not the signed-in user's.", startForm: true, start: true, message: false });
    await page.close();
  }, 90_000);

  it("leaves the session on view, the deleted account's, when a call outside it signs in anew: the start form back", async () => {
    const { page } = await activePastTokenHour((_page, uid) => deleteAccount(uid), await ownProfile());
    await page.click(".settings summary");
    const [download] = await Promise.all([page.waitForEvent("download", { timeout: 30_000 }), page.click("#download-data")]);
    await listSettled(page);
    const newUid = await page.inputValue("#user");
    expect({
      file: download.suggestedFilename(),
      state: await page.getAttribute("body", "data-state"),
      startForm: await page.isVisible("#start"),
      message: await page.isEnabled("#message"),
      titles: await page.locator("#conversation-list .title").allTextContents(),
    }).toEqual({ file: `chatify-export-${newUid}.json`, state: "ended", startForm: true, message: false, titles: [] });
    await page.close();
  }, 90_000);

  /** What the page offers the visitor: the phase, the start form, and whether the session on view takes a message or its end. */
  const offered = async (page: Page) => ({
    state: await page.getAttribute("body", "data-state"),
    startForm: await page.isVisible("#start"),
    message: await page.isEnabled("#message"),
    end: await page.isEnabled("#end-button"),
  });
  const readOnly = { state: "ended", startForm: true, message: false, end: false };

  interface HeldStart {
    /** Settles once the page's next start was answered by the API, its answer not yet given to the page. */
    readonly held: Promise<void>;
    /** Lets that answer go on to the page. */
    release(): void;
  }

  /** Holds the answer of the page's next start on its way back: made as the user signed in then, shown when released. */
  function holdStartAnswer(page: Page): HeldStart {
    let go = (): void => undefined;
    const released = new Promise<void>((resolve) => (go = resolve));
    const held = new Promise<void>((answered) => {
      void page.route(
        (url) => url.pathname === ROUTES.create,
        async (route) => {
          const response = await route.fetch();
          answered();
          await released;
          await route.fulfill({ response });
        },
      );
    });
    return { held, release: () => { go(); } };
  }

  /**
   * activePastTokenHour with a start made as the user then signed in: the session on view ended,
   * the next start made with the token still fresh (the Auth emulator refuses a deleted user's
   * token: firebase-admin checks it there as checkRevoked does) and its answer held on the way
   * back, then the account deleted. `first`: the session ended.
   */
  async function startAsDeletedAccount(): Promise<{ page: Page; uid: string; first: string; start: HeldStart }> {
    let held: { first: string; start: HeldStart } | undefined;
    const { page, uid } = await activePastTokenHour(async (page, uid) => {
      const first = (await page.getAttribute("#session", "data-session-id")) ?? "";
      await page.click("#end-button");
      await page.waitForSelector("body[data-state=ended]");
      await listSettled(page);
      const start = holdStartAnswer(page);
      await page.click("#start-button");
      await start.held;
      await deleteAccount(uid);
      held = { first, start };
    }, await ownProfile());
    if (!held) throw new Error("the start was not held");
    return { page, uid, ...held };
  }

  it("leaves the session on view, the deleted account's, when opening another of its conversations signs in anew and is refused: it is not writable again", async () => {
    let first = "";
    const { page, uid } = await activePastTokenHour(async (page, uid) => {
      // The old user's first conversation, one message, ended and listed; then its second, on view and active.
      first = (await page.getAttribute("#session", "data-session-id")) ?? "";
      await typeAndSend(page, "An older conversation");
      await page.waitForSelector("body[data-state=active] #log .assistant:not(.streaming)");
      await page.click("#end-button");
      await page.waitForSelector("body[data-state=ended]");
      await page.click("#start-button");
      await page.waitForSelector("body[data-state=active]");
      await page.waitForSelector(`#conversation-list button[data-session-id="${first}"]`);
      await listSettled(page);
      await deleteAccount(uid);
    }, await ownProfile());
    const second = (await page.getAttribute("#session", "data-session-id")) ?? "";
    // The read of the older conversation finds the account gone, signs in anew, and is refused 403.
    await page.click(`#conversation-list button[data-session-id="${first}"]`);
    await page.waitForSelector("#status:text-is('The conversation could not be opened.'), body[data-state=ended]", { timeout: 30_000 });
    await listSettled(page);
    expect({ newUid: (await page.inputValue("#user")) !== uid, onView: await page.getAttribute("#session", "data-session-id"), ...(await offered(page)) }).toEqual({
      newUid: true,
      onView: second,
      ...readOnly,
    });
    await page.close();
  }, 90_000);

  it("leaves the session on view, the deleted account's, when its reply being written ends after a call beside it signed in anew: it is not writable again", async () => {
    const { page, uid } = await activePastTokenHour(async (page, uid) => {
      await listSettled(page);
      // A reply that takes its time, asked for with a token still fresh; the account deleted while it is written.
      harness.fake.enqueue({ kind: "stream", chunks: Array.from({ length: 16 }, (_, i) => `word${String(i)} `), chunkDelayMs: 250 });
      await typeAndSend(page, "Tell me a long story");
      await page.waitForSelector("body[data-state=streaming] #log .assistant.streaming .text:not(:text-is(''))");
      await deleteAccount(uid);
    }, await ownProfile());
    const session = (await page.getAttribute("#session", "data-session-id")) ?? "";
    // The People panel's read signs in anew while the reply is still being written.
    await page.click("#people summary");
    await page.waitForSelector(`#people-you:not(:text-is(${JSON.stringify(uid)}))`, { timeout: 30_000 });
    expect({ newUid: (await page.inputValue("#user")) !== uid, state: await page.getAttribute("body", "data-state") }).toEqual({ newUid: true, state: "streaming" });
    // The reply, the old user's request authorised before, ends.
    await page.waitForSelector("#log .assistant:not(.streaming)", { timeout: 30_000 });
    await listSettled(page);
    expect({ onView: await page.getAttribute("#session", "data-session-id"), ...(await offered(page)) }).toEqual({ onView: session, ...readOnly });
    await page.close();
  }, 90_000);

  it("shows a session started as the deleted account read-only when its answer lands while the new sign-in is under way", async () => {
    const { page, uid, first, start } = await startAsDeletedAccount();
    // The new sign-in's account creation, held until the start's answer has been shown.
    let releaseSignUp = (): void => undefined;
    const signUpHeld = new Promise<void>((reached) => {
      void page.route("**/accounts:signUp**", async (route) => {
        reached();
        await new Promise<void>((go) => (releaseSignUp = go));
        await route.continue();
      });
    });
    // The People panel's read finds the account gone and signs in anew.
    await page.click("#people summary");
    await signUpHeld;
    start.release();
    await page.waitForSelector("body:not([data-state=starting])", { timeout: 30_000 });
    releaseSignUp();
    await page.waitForSelector(`#people-you:not(:text-is(${JSON.stringify(uid)}))`, { timeout: 30_000 });
    await listSettled(page);
    const started = (await page.getAttribute("#session", "data-session-id")) ?? "";
    expect({ made: started !== first, owner: (await harness.api.store.readSessionMeta(started))?.user_id, newUid: (await page.inputValue("#user")) !== uid }).toEqual({
      made: true,
      owner: uid,
      newUid: true,
    });
    // The session is the old user's: the docs say the page never lets it take a message or an end.
    expect(await offered(page)).toEqual(readOnly);
    await page.close();
  }, 90_000);

  it("shows a session started as the deleted account, answered after a call beside it signed in anew, read-only: the start form back", async () => {
    const { page, uid, first, start } = await startAsDeletedAccount();
    // The People panel's read signs in anew while the start's answer is on its way.
    await page.click("#people summary");
    await page.waitForSelector(`#people-you:not(:text-is(${JSON.stringify(uid)}))`, { timeout: 30_000 });
    expect(await page.getAttribute("body", "data-state")).toBe("starting");
    start.release();
    await page.waitForSelector("body:not([data-state=starting])", { timeout: 30_000 });
    await listSettled(page);
    const started = (await page.getAttribute("#session", "data-session-id")) ?? "";
    // The server made it for the user the token named: the old one, whom the new one cannot write as.
    expect({ made: started !== first, owner: (await harness.api.store.readSessionMeta(started))?.user_id, error: await page.textContent("#error") }).toEqual({ made: true, owner: uid, error: "" });
    expect(await offered(page)).toEqual(readOnly);
    await page.close();
  }, 90_000);

  it("takes no Auth emulator from the page's address: a hostile ?authEmulator= gets nothing", async () => {
    hostile.reset();
    const page = await browser.context.newPage();
    const logged: string[] = [];
    page.on("console", (message) => logged.push(message.text()));
    await page.goto(`${harness.api.baseUrl}/?authEmulator=${hostile.host}`);
    await page.waitForSelector("body[data-ready=true]");
    await page.click("#start-button");
    await page.waitForSelector("body[data-state=active], #error:not([hidden])", { timeout: 30_000 });
    expect({ visits: hostile.visits, connections: hostile.connections }).toEqual({ visits: [], connections: 0 });
    // On failure, what the visitor saw and what the page logged (seen once in CI: a 401 after the sign-in).
    expect({ error: await page.textContent("#error"), logged }).toMatchObject({ error: "" });
    const uid = await page.inputValue("#user");
    // Signed in on the emulator the server named, not on the address's.
    expect(await page.textContent("#identity")).toBe(`Identity: signed in anonymously with Firebase Auth as ${uid} (Auth emulator at ${emulator.authHost}).`);
    await page.close();
  }, 60_000);
});
