import { SUMMARY_CLOSING, SUMMARY_HEADING, SUMMARY_INSTRUCTIONS } from "../../src/session/prompt/rolling-summary";
import type { RecordedRequest } from "./fake-openai-server";

/** The rolling summary a prompt carries (the text its summary message quotes), or "" for none. */
export function summaryIn(prompt: readonly { readonly role: string; readonly content: string }[]): string {
  const message = prompt.find((entry) => entry.role === "user" && entry.content.startsWith(SUMMARY_HEADING) && entry.content.endsWith(SUMMARY_CLOSING));
  return message ? message.content.slice(SUMMARY_HEADING.length, -SUMMARY_CLOSING.length) : "";
}

/** Whether a recorded model request is a summary call: its system prompt is the summariser's instructions. */
export const isSummary = (request: RecordedRequest): boolean => request.body.messages[0]?.content === SUMMARY_INSTRUCTIONS;
