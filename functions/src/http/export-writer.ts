import type { ExportedConnection, ExportedDevices } from "../connections/connection-export";
import { NO_USAGE } from "../session/ledger/token-usage";
import type { StoredConversation } from "../store/conversation-records";
import type { SessionState, UserUsage } from "../store/records";
import { connectionBody, messageBody as connectionMessageBody } from "./connection-endpoints";
import { messageBody } from "./conversation-endpoints";
import { iso, usageBody } from "./endpoint-parts";
import type { BodyWriter } from "./endpoints";
import { toErrorAnswer } from "./error-response";
import type { UserDataLimits } from "./user-data-context";

/** The export format's name and version, first in every part (docs/conversations.md). */
export const EXPORT_FORMAT = "chatify-export";
export const EXPORT_VERSION = 1;

/**
 * Where a part starts: after session `s`; once every session is written, after connection `c`
 * ("" for the first), or when connection `x` (the next after `c`) was split, in it after its
 * message at position `m`. A cursor says it.
 */
export interface ExportPosition {
  readonly s?: string;
  readonly c?: string;
  readonly x?: string;
  readonly m?: number;
}

export interface ExportPart {
  readonly userId: string;
  /** 1 for the first part; each cursor names the next. */
  readonly part: number;
  /** The user's counters (first part only). */
  readonly usage: UserUsage | null;
  /** The user's devices (first part only). */
  readonly devices: ExportedDevices | null;
  /** The user's sessions after `from.s`, in id order (instance by instance when sharded), read a page at a time (not read when `from.c` is set). */
  readonly sessions: AsyncIterable<StoredConversation>;
  /** The user's connections after `from.c` (or in `from.x` after `from.m`), in id order, their messages read as they are written, once the sessions are written. */
  readonly connections: AsyncIterable<ExportedConnection>;
  /** Where this part starts (from its cursor), where a failure before its first item resumes. */
  readonly from: ExportPosition;
  /** A session's state as a request would find it now (expired once idle past the TTL, unswept or not). */
  readonly asNow: (state: SessionState) => SessionState;
  /** The cursor of the part that continues after `position`. */
  readonly cursorAfter: (position: ExportPosition, part: number) => Promise<string>;
  readonly limits: UserDataLimits;
  readonly clock: () => number;
}

/**
 * Writes one part of an export as JSON, each session, then each connection and its messages, as
 * soon as it is read (memory holds one page of sessions or one page of a connection's messages),
 * and ends the part once it has carried `exportPartBytes` or run `exportPartMs`: then `complete`
 * is false and `next_cursor` continues. A connection is checked between its messages too, since
 * the other user decides how many it holds: one that does not fit is split, and the next part
 * carries on with it (`continued`). A failure after the answer began cannot change its status:
 * the part ends properly with `error` and the cursor that resumes from the last session,
 * connection or message written whole.
 */
export async function writeExport(out: BodyWriter, part: ExportPart): Promise<void> {
  const { limits, clock } = part;
  const started = clock();
  let bytes = 0;
  const write = async (text: string) => {
    bytes += Buffer.byteLength(text, "utf8");
    await out.write(text);
  };
  const full = () => bytes >= limits.exportPartBytes || clock() - started >= limits.exportPartMs;
  const head = {
    success: true,
    format: EXPORT_FORMAT,
    version: EXPORT_VERSION,
    user_id: part.userId,
    exported_at: iso(started),
    part: part.part,
    ...(part.part === 1 ? { usage: usageExport(part.usage), devices: devicesExport(part.devices) } : {}),
  };
  await write(`${JSON.stringify(head).slice(0, -1)},"sessions":[`);
  let at: ExportPosition = part.from;
  const counts = { sessions: 0, connections: 0 };
  let inSessions = true;
  let inConnection = false;
  let more = false;
  try {
    if (at.c === undefined) {
      for await (const session of part.sessions) {
        if (counts.sessions > 0 && full()) {
          more = true;
          break;
        }
        await write(`${counts.sessions > 0 ? "," : ""}${JSON.stringify(sessionExport(session, part.asNow))}`);
        at = { s: session.id };
        counts.sessions += 1;
      }
    }
    await write(`],"session_count":${counts.sessions},"connections":[`);
    inSessions = false;
    if (!more) {
      at = { ...at, c: at.c ?? "" };
      const sessionAt = at.s === undefined ? {} : { s: at.s };
      connections: for await (const connection of part.connections) {
        if (counts.sessions + counts.connections > 0 && full()) {
          more = true;
          break;
        }
        const { id } = connection.view;
        const before = at.c ?? "";
        await write(`${counts.connections > 0 ? "," : ""}${connectionHead(connection)}`);
        inConnection = true;
        counts.connections += 1;
        // Its entry is begun: a part that fails before its first message resumes inside it (after
        // message 0, or where an earlier part left it), so the next part's entry is `continued`
        // and joined to this one, never a second entry of the same connection.
        at = { ...sessionAt, c: before, x: id, m: connection.after };
        let written = 0;
        for await (const { position, message } of connection.messages) {
          // One message at least per connection begun, so that every part moves the cursor on.
          if (written > 0 && full()) {
            await write("]}");
            inConnection = false;
            more = true;
            break connections;
          }
          await write(`${written > 0 ? "," : ""}${JSON.stringify(connectionMessageBody(position, message))}`);
          at = { ...sessionAt, c: before, x: id, m: position };
          written += 1;
        }
        await write("]}");
        inConnection = false;
        at = { ...sessionAt, c: id };
      }
    }
    const next = more ? await part.cursorAfter(at, part.part + 1) : null;
    await write(`],"connection_count":${counts.connections},"complete":${String(!more)},"next_cursor":${JSON.stringify(next)}}`);
  } catch (error) {
    const answer = toErrorAnswer(error);
    const next = await resumeCursor(part, at);
    const sessionsEnd = inSessions ? `],"session_count":${counts.sessions},"connections":[` : "";
    const connectionEnd = inConnection ? "]}" : "";
    await write(`${connectionEnd}${sessionsEnd}],"connection_count":${counts.connections},"complete":false,"error":${JSON.stringify({ code: answer.code, message: answer.message })},"next_cursor":${JSON.stringify(next)}}`);
  }
}

/** Where a failed part resumes: after its last whole item, or where it began; null when even that cannot be said (start again). */
async function resumeCursor(part: ExportPart, at: ExportPosition): Promise<string | null> {
  if (at.s === undefined && at.c === undefined) return null;
  try {
    return await part.cursorAfter(at, part.part + 1);
  } catch {
    return null;
  }
}

/** The user's counters: the day's tokens (and their cost where known). */
function usageExport(usage: UserUsage | null): Record<string, unknown> {
  return { daily: usage?.daily ?? null };
}

/** A session as the export gives it: what the user can see of it (not the system prompt, which is the deployment's). */
function sessionExport(session: StoredConversation, asNow: (state: SessionState) => SessionState): Record<string, unknown> {
  const { meta, summary } = session;
  // Status and end from one reading, so that a session called expired has the end its expiry records.
  const state = asNow(session.state);
  return {
    session_id: session.id,
    template_id: meta.template_id,
    template_name: meta.template_name,
    settings: meta.settings,
    status: state.status,
    created_at: iso(meta.created_at),
    last_activity: iso(state.last_activity),
    ended_at: iso(state.ended_at),
    message_count: state.message_count,
    usage: usageBody(state.usage ?? NO_USAGE),
    summary: summary ? { text: summary.text, through: summary.through, updated_at: iso(summary.updated_at) } : null,
    messages: session.messages.map(messageBody),
  };
}

/** The user's devices: when each was registered, and their preview setting; never a token. */
function devicesExport(devices: ExportedDevices | null): Record<string, unknown> {
  return { registered_at: (devices?.registeredAt ?? []).map((at) => iso(at)), previews: devices?.previews ?? null };
}

/**
 * A connection as its user sees it over the API, up to the opening of its messages (both sides'),
 * which follow one at a time; `continued` when an earlier part began it.
 */
function connectionHead({ view, continued }: ExportedConnection): string {
  const json = JSON.stringify({ ...connectionBody(view), ...(continued ? { continued: true } : {}), messages: [] });
  return json.slice(0, -"]}".length);
}

