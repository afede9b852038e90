import { z } from "zod";
import type { ConversationSummary, LivePartial, PositionedMessage } from "../session/conversations/conversation-service";
import { DATABASE_KEY } from "../store/records";
import { matchGetSession, matchListSessions } from "./conversation-routes";
import { iso, sessionIdOf, usageBody } from "./endpoint-parts";
import type { Endpoint } from "./endpoints";
import { parseQuery } from "./query-schemas";

/** What a listing cursor says: the last conversation given (its activity, its id). */
const listPosition = z.object({ a: z.number().int().min(0), s: z.string().regex(DATABASE_KEY) });
/** What a messages cursor says: the position the next page ends before. */
const messagesPosition = z.object({ b: z.number().int().min(2).max(2_000_000_000) });

/** `GET /api/v1/chatbot/sessions`: the caller's conversations, newest activity first, a page at a time. */
export const listSessions: Endpoint = {
  name: "listSessions",
  methods: ["GET"],
  match: matchListSessions,
  async handle(request, _route, context) {
    const caller = await context.authenticate(request);
    const { conversations, cursors, queries } = context.userData;
    const query = parseQuery(caller ? queries.listSessions.signedIn : queries.listSessions.anonymous, request.query, caller);
    const owner = conversations.owner(caller, query.user_id);
    const after = query.cursor === undefined ? undefined : await cursors.open("list", owner, query.cursor, listPosition);
    const page = await conversations.list(owner, query.limit, after && { lastActivity: after.a, sessionId: after.s });
    const { next } = page;
    return {
      status: 200,
      body: {
        success: true,
        user_id: owner,
        sessions: page.conversations.map(summaryBody),
        next_cursor: next ? await cursors.seal("list", owner, { a: next.lastActivity, s: next.sessionId }) : null,
      },
    };
  },
};

/**
 * `GET /api/v1/chatbot/session/{id}`: one of the caller's conversations, its newest messages (or
 * those before `before`), and the replies being written in it.
 */
export const getSession: Endpoint = {
  name: "getSession",
  methods: ["GET"],
  match: matchGetSession,
  async handle(request, route, context) {
    const caller = await context.authenticate(request);
    const sessionId = sessionIdOf(route);
    const { conversations, cursors, queries } = context.userData;
    const query = parseQuery(queries.getSession, request.query);
    const before = query.before === undefined ? undefined : (await cursors.open("messages", sessionId, query.before, messagesPosition)).b;
    const view = await conversations.read(sessionId, caller, { limit: query.limit, ...(before === undefined ? {} : { before }) });
    return {
      status: 200,
      body: {
        success: true,
        session: { ...summaryBody(view.summary), usage: usageBody(view.usage) },
        messages: view.messages.map(messageBody),
        partials: view.partials.map(partialBody),
        next_before: view.before === undefined ? null : await cursors.seal("messages", sessionId, { b: view.before }),
      },
    };
  },
};

/** A conversation as the list and the read give it. */
export function summaryBody(summary: ConversationSummary): Record<string, unknown> {
  return {
    session_id: summary.sessionId,
    template_id: summary.templateId,
    template_name: summary.templateName,
    status: summary.status,
    created_at: iso(summary.createdAt),
    last_activity: iso(summary.lastActivity),
    message_count: summary.messageCount,
    title: summary.title ?? null,
  };
}

/** A stored message as reads and exports give it: its position, and a reply's usage. */
export function messageBody({ position, message }: PositionedMessage): Record<string, unknown> {
  return {
    position,
    role: message.role,
    content: message.content,
    timestamp: iso(message.timestamp),
    ...(message.truncated ? { truncated: true } : {}),
    ...(message.usage ? { usage: usageBody(message.usage) } : {}),
  };
}

function partialBody(partial: LivePartial): Record<string, unknown> {
  return { key: partial.key, text: partial.text, after_message_count: partial.seq_after, updated_at: iso(partial.updated_at) };
}
