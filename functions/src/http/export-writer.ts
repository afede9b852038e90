import { NO_USAGE } from "../session/ledger/token-usage";
import type { StoredConversation } from "../store/conversation-records";
import type { SessionState, SessionStatus, UserUsage } from "../store/records";
import { messageBody } from "./conversation-endpoints";
import { iso, usageBody } from "./endpoint-parts";
import type { BodyWriter } from "./endpoints";
import { toErrorAnswer } from "./error-response";
import type { UserDataLimits } from "./user-data-context";

/** The export format's name and version, first in every part (docs/conversations.md). */
export const EXPORT_FORMAT = "chatify-export";
export const EXPORT_VERSION = 1;

export interface ExportPart {
  readonly userId: string;
  /** 1 for the first part; each cursor names the next. */
  readonly part: number;
  /** The user's counters (first part only). */
  readonly usage: UserUsage | null;
  /** The user's sessions from where this part starts, in id order, read a page at a time. */
  readonly sessions: AsyncIterable<StoredConversation>;
  /** The session id this part starts after (from its cursor), where a failure before the first session resumes. */
  readonly after: string | undefined;
  readonly status: (state: SessionState) => SessionStatus;
  /** The cursor of the part that continues after `sessionId`. */
  readonly cursorAfter: (sessionId: string, part: number) => Promise<string>;
  readonly limits: UserDataLimits;
  readonly clock: () => number;
}

/**
 * Writes one part of an export as JSON, each session as soon as it is read (memory holds one page
 * of sessions, whatever the user has), and ends the part once it has carried `exportPartBytes`
 * or run `exportPartMs`: then `complete` is false and `next_cursor` continues. A failure after
 * the answer began cannot change its status: the part ends properly with `error` and the cursor
 * that resumes from the last session written whole.
 */
export async function writeExport(out: BodyWriter, part: ExportPart): Promise<void> {
  const { limits, clock } = part;
  const started = clock();
  let bytes = 0;
  const write = async (text: string) => {
    bytes += Buffer.byteLength(text, "utf8");
    await out.write(text);
  };
  const head = {
    success: true,
    format: EXPORT_FORMAT,
    version: EXPORT_VERSION,
    user_id: part.userId,
    exported_at: iso(started),
    part: part.part,
    ...(part.part === 1 ? { usage: usageExport(part.usage) } : {}),
  };
  await write(`${JSON.stringify(head).slice(0, -1)},"sessions":[`);
  let last = part.after;
  let count = 0;
  let more = false;
  try {
    for await (const session of part.sessions) {
      if (count > 0 && (bytes >= limits.exportPartBytes || clock() - started >= limits.exportPartMs)) {
        more = true;
        break;
      }
      await write(`${count > 0 ? "," : ""}${JSON.stringify(sessionExport(session, part.status))}`);
      last = session.id;
      count += 1;
    }
    const next = more && last !== undefined ? await part.cursorAfter(last, part.part + 1) : null;
    await write(`],"session_count":${count},"complete":${String(!more)},"next_cursor":${JSON.stringify(next)}}`);
  } catch (error) {
    const answer = toErrorAnswer(error);
    const next = await resumeCursor(part, last);
    await write(`],"session_count":${count},"complete":false,"error":${JSON.stringify({ code: answer.code, message: answer.message })},"next_cursor":${JSON.stringify(next)}}`);
  }
}

/** Where a failed part resumes: after its last whole session, or where it began; null when even that cannot be said. */
async function resumeCursor(part: ExportPart, last: string | undefined): Promise<string | null> {
  if (last === undefined) return null;
  try {
    return await part.cursorAfter(last, part.part + 1);
  } catch {
    return null;
  }
}

/** The user's counters: the day's tokens (and their cost where known). */
function usageExport(usage: UserUsage | null): Record<string, unknown> {
  return { daily: usage?.daily ?? null };
}

/** A session as the export gives it: what the user can see of it (not the system prompt, which is the deployment's). */
function sessionExport(session: StoredConversation, status: (state: SessionState) => SessionStatus): Record<string, unknown> {
  const { meta, state, summary } = session;
  return {
    session_id: session.id,
    template_id: meta.template_id,
    template_name: meta.template_name,
    settings: meta.settings,
    status: status(state),
    created_at: iso(meta.created_at),
    last_activity: iso(state.last_activity),
    ended_at: iso(state.ended_at),
    message_count: state.message_count,
    usage: usageBody(state.usage ?? NO_USAGE),
    summary: summary ? { text: summary.text, through: summary.through, updated_at: iso(summary.updated_at) } : null,
    messages: session.messages.map((message, i) => messageBody({ position: i + 1, message })),
  };
}
