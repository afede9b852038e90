import { SUMMARY_CLOSING, SUMMARY_HEADING } from "../../src/session/prompt/rolling-summary";

/** The rolling summary a prompt carries (the text its summary message quotes), or "" for none. */
export function summaryIn(prompt: readonly { readonly role: string; readonly content: string }[]): string {
  const message = prompt.find((entry) => entry.role === "user" && entry.content.startsWith(SUMMARY_HEADING) && entry.content.endsWith(SUMMARY_CLOSING));
  return message ? message.content.slice(SUMMARY_HEADING.length, -SUMMARY_CLOSING.length) : "";
}
