import type { Page } from "playwright-core";

/** What a visitor does on the chat page, as the browser suites drive it: the page's own controls, no script of the test's. */

/** Picks a template, names the user and starts a session; resolves once the page says it is active. */
export async function startSession(page: Page, userId: string, template = "friendly-assistant"): Promise<void> {
  await page.selectOption("#template", template);
  await page.fill("#user", userId);
  await page.click("#start-button");
  await page.waitForSelector("body[data-state=active]");
}

/** Types into the message box and presses Enter, as a keyboard user sends. */
export async function typeAndSend(page: Page, text: string): Promise<void> {
  await page.fill("#message", text);
  await page.press("#message", "Enter");
}
