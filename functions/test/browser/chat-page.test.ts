import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Page } from "playwright-core";
import { startEmulatorProject, type EmulatorProject } from "../e2e/emulator-project";
import { describeWithChromium, launchChromium, type LaunchedBrowser } from "../support/chromium";
import { ROUTES, startHarness, type Harness } from "../support/http-harness";
import { fakeUsage } from "../support/fake-openai-server";

/** What the page shows of the reply being written. */
interface ReplyView {
  readonly text: string;
  readonly state: string | null;
  readonly inputDisabled: boolean;
}

const LAST_REPLY = "#log .assistant >> nth=-1 >> .text";

/**
 * The text first, then the state: a "streaming" state read after the text proves the text was
 * on screen before the reply completed.
 */
async function readReply(page: Page): Promise<ReplyView> {
  const text = (await page.textContent(LAST_REPLY)) ?? "";
  const state = await page.getAttribute("body", "data-state");
  return { text, state, inputDisabled: await page.isDisabled("#message") };
}

/** Waits until the last reply's text is something other than `seen`. (A page-side expression: the tests' types have no DOM.) */
const replyOtherThan = (page: Page, seen: string) =>
  page.waitForFunction(`(document.querySelector("#log .assistant:last-child .text")?.textContent ?? "") !== ${JSON.stringify(seen)}`);

async function startSession(page: Page, userId: string, template = "friendly-assistant"): Promise<void> {
  await page.selectOption("#template", template);
  await page.fill("#user", userId);
  await page.click("#start-button");
  await page.waitForSelector("body[data-state=active]");
}

/** Types into the message box and presses Enter, as a keyboard user sends. */
async function send(page: Page, text: string): Promise<void> {
  await page.fill("#message", text);
  await page.press("#message", "Enter");
}

/**
 * The chat page in a real Chromium, served by the local server (embedded store) and answered by
 * the fake OpenAI server, which streams its chunks with pauses between them.
 */
describeWithChromium("the chat page in Chromium", () => {
  let harness: Harness;
  let browser: LaunchedBrowser;
  let page: Page;

  beforeAll(async () => {
    harness = await startHarness({ store: "memory", env: { USER_MESSAGES_PER_MINUTE: "1", OPENAI_MAX_RETRIES: "0" } });
    // A phone's viewport: the page must work there.
    browser = await launchChromium({ width: 390, height: 844 });
  }, 60_000);
  afterAll(async () => {
    await harness.close();
    await browser.close();
  });
  beforeEach(async () => {
    harness.fake.reset();
    page = await browser.context.newPage();
    await page.goto(`${harness.api.baseUrl}/`);
    await page.waitForSelector("body[data-ready=true]");
  });
  afterEach(async () => page.close());

  it("starts a session, shows a reply as it streams in, counts it, ends the session", async () => {
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

    await send(page, "Tell me a story");
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
    await send(page, "one");
    await page.waitForSelector("body[data-state=active] #log .assistant:not(.streaming)");
    await send(page, "two");
    await page.waitForSelector("#error:not([hidden])");
    expect(await page.textContent("#error")).toMatch(/^Slow down: .+ Try again in \d+ s\.$/);
    // Nothing was stored: the text is back in the box, the count unchanged.
    expect(await page.inputValue("#message")).toBe("two");
    expect(await page.textContent("#count")).toBe("1");
    await page.click("#end-button");
    await page.waitForSelector("body[data-state=ended]");

    await startSession(page, "user_model");
    harness.fake.enqueue({ kind: "status", status: 429, headers: { "retry-after": "7" } });
    await send(page, "anyone there?");
    await page.waitForFunction(`document.querySelector("#error")?.textContent.includes("model")`);
    expect(await page.textContent("#error")).toBe("The model is unavailable right now. Try again in 7 s.");
    expect(await page.getAttribute("body", "data-state")).toBe("active");

    // Ended elsewhere (another tab): the next message is refused with 410, and the page says so.
    const id = await page.getAttribute("#session", "data-session-id");
    expect((await harness.api.call("DELETE", ROUTES.end(id ?? ""))).status).toBe(200);
    await send(page, "still there?");
    await page.waitForSelector("body[data-state=ended]");
    expect(await page.textContent("#error")).toBe("This session has ended. Start a new one to keep chatting.");
    expect(await page.isVisible("#start")).toBe(true);
  }, 60_000);

  it("talks to function URLs when the API base says so (?api=)", async () => {
    await page.goto(`${harness.api.baseUrl}/?api=${encodeURIComponent(`${harness.api.baseUrl}/demo-chatify/us-central1`)}`);
    await page.waitForSelector("body[data-ready=true]");
    await startSession(page, "user_direct");
    await send(page, "direct");
    await page.waitForSelector("body[data-state=active] #log .assistant:not(.streaming)");
    expect(await page.textContent("#log .assistant .text")).toBe("reply #1 to: direct");
    expect(await page.textContent("#count")).toBe("1");
  }, 60_000);
});

/**
 * Where the server requires an ID token: the page meets the 401, loads the Firebase Auth SDK from
 * the reserved /__/firebase/ URLs, signs in anonymously on the Auth emulator, and sends the token.
 */
describeWithChromium("the chat page in Chromium, signed in on the Auth emulator", () => {
  let emulator: EmulatorProject;
  let harness: Harness;
  let browser: LaunchedBrowser;
  const previousHost = process.env.FIREBASE_AUTH_EMULATOR_HOST;

  beforeAll(async () => {
    emulator = await startEmulatorProject({ projectId: "demo-chatify", only: ["auth"], env: {}, secrets: {} });
    // firebase-admin reads this when an app's Auth is first used: before the harness starts.
    process.env.FIREBASE_AUTH_EMULATOR_HOST = emulator.authHost;
    harness = await startHarness({ store: "memory", env: { REQUIRE_AUTH: "true" } });
    browser = await launchChromium({ width: 1024, height: 768 });
  }, 120_000);
  afterAll(async () => {
    if (previousHost === undefined) delete process.env.FIREBASE_AUTH_EMULATOR_HOST;
    else process.env.FIREBASE_AUTH_EMULATOR_HOST = previousHost;
    await harness.close();
    await browser.close();
    await emulator.stop();
  }, 30_000);

  it("signs in anonymously when the server answers 401, then chats as that user", async () => {
    const page = await browser.context.newPage();
    await page.goto(`${harness.api.baseUrl}/?authEmulator=${emulator.authHost}`);
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

    await send(page, "who am I?");
    await page.waitForSelector("body[data-state=active] #log .assistant:not(.streaming)");
    expect(await page.textContent("#log .assistant .text")).toBe("Signed in and streaming.");
    expect(await page.textContent("#count")).toBe("1");
    await page.click("#end-button");
    await page.waitForSelector("body[data-state=ended]");
    // Without the token, the same session is not the visitor's to touch.
    expect((await harness.api.call("DELETE", ROUTES.end(id))).status).toBe(401);
    await page.close();
  }, 60_000);
});
