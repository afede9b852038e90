import { matchEndSession, segments, type RouteMatch } from "./routes";

/**
 * The paths of a user's conversations (issue 16), as Hosting rewrites them (the full path kept)
 * and as their function URLs see them (the function name stripped: `/` or `/{id}`). One
 * conversation is `GET /api/v1/chatbot/session/{id}`: Hosting rewrites match paths only and send
 * that path to `endSession`, which answers `GET` as `getSession` (http/shared-paths.ts).
 */
export const LIST_SESSIONS_PATH = "/api/v1/chatbot/sessions";
export const EXPORT_PATH = "/api/v1/chatbot/me/export";
export const ERASE_PATH = "/api/v1/chatbot/me";

/** A route with no parameter: its Hosting path exactly, or the root of its function URL. */
function exactly(path: string): (requested: string) => RouteMatch | undefined {
  const expected = segments(path);
  return (requested) => {
    const parts = segments(requested);
    const same = parts.length === expected.length && parts.every((part, i) => part === expected[i]);
    return parts.length === 0 || same ? {} : undefined;
  };
}

export const matchListSessions = exactly(LIST_SESSIONS_PATH);
export const matchExport = exactly(EXPORT_PATH);
export const matchErase = exactly(ERASE_PATH);
/** The same path as ending a session: `/api/v1/chatbot/session/{id}`, or `/{id}` on its function URL. */
export const matchGetSession = matchEndSession;
