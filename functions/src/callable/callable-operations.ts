import type { FunctionRole } from "../function-options";
import type { EndpointName } from "../http/endpoints";

/**
 * A callable function (`onCall`) that stands for one endpoint of the HTTP API: the same
 * validation, rules, limits and answers, reached through the Functions client SDK. What HTTP
 * carries in the path and in headers travels in the call's data: the path's fields by name, and
 * the `Idempotency-Key` as `idempotency_key`; every other field of the data is the endpoint's body.
 */
export interface CallableOperation {
  readonly endpoint: EndpointName;
  readonly method: "POST" | "DELETE" | "GET";
  /** The data's fields the path is made of: each required, a non-empty string. */
  readonly pathFields: readonly string[];
  /** The endpoint's path as a function URL names it (the function's name stripped), made of those fields (URI-encoded). */
  readonly path: (fields: Readonly<Record<string, string>>) => string;
  /**
   * `message`: the callable that calls the model (the OpenAI key, warm instances, replay
   * protection); `moderated`: one that moderates a user's text without a model call (the key).
   */
  readonly role: FunctionRole;
  /** Where the data's other fields go: the JSON body, or the query string of a GET or DELETE route. */
  readonly rest: "body" | "query";
}

/** A connection's function URL path: its id (each connection function serves `/{id}`). */
function connectionPath(fields: Readonly<Record<string, string>>): string {
  return `/${fields.connection_id ?? ""}`;
}

/**
 * The callables, by the name they take in the `chat` group of index.ts (deployed as
 * `chat-createSession`...). A new operation of the HTTP API becomes a callable with one entry
 * here and one line in index.ts.
 */
export const CALLABLES = {
  createSession: { endpoint: "createSession", method: "POST", pathFields: [], path: () => "/", role: "session", rest: "body" },
  sendMessage: { endpoint: "sendMessage", method: "POST", pathFields: ["session_id"], path: (fields) => `/${fields.session_id ?? ""}`, role: "message", rest: "body" },
  endSession: { endpoint: "endSession", method: "DELETE", pathFields: ["session_id"], path: (fields) => `/${fields.session_id ?? ""}`, role: "session", rest: "body" },
  // A user's conversations and data (issue 16): the query parameters of their routes as data fields.
  listSessions: { endpoint: "listSessions", method: "GET", pathFields: [], path: () => "/", role: "session", rest: "query" },
  getSession: { endpoint: "getSession", method: "GET", pathFields: ["session_id"], path: (fields) => `/${fields.session_id ?? ""}`, role: "session", rest: "query" },
  exportUserData: { endpoint: "exportUserData", method: "GET", pathFields: [], path: () => "/", role: "session", rest: "query" },
  eraseUserData: { endpoint: "eraseUserData", method: "DELETE", pathFields: [], path: () => "/", role: "session", rest: "query" },
  // Connections between users and devices (issue 17): one callable per method of each function, named for the operation.
  requestConnection: { endpoint: "connections", method: "POST", pathFields: [], path: () => "/", role: "session", rest: "body" },
  listConnections: { endpoint: "connections", method: "GET", pathFields: [], path: () => "/", role: "session", rest: "query" },
  getConnection: { endpoint: "connection", method: "GET", pathFields: ["connection_id"], path: connectionPath, role: "session", rest: "query" },
  endConnection: { endpoint: "connection", method: "DELETE", pathFields: ["connection_id"], path: connectionPath, role: "session", rest: "body" },
  acceptConnection: { endpoint: "acceptConnection", method: "POST", pathFields: ["connection_id"], path: connectionPath, role: "session", rest: "body" },
  declineConnection: { endpoint: "declineConnection", method: "POST", pathFields: ["connection_id"], path: connectionPath, role: "session", rest: "body" },
  blockConnection: { endpoint: "blockConnection", method: "POST", pathFields: ["connection_id"], path: connectionPath, role: "session", rest: "body" },
  unblockConnection: { endpoint: "blockConnection", method: "DELETE", pathFields: ["connection_id"], path: connectionPath, role: "session", rest: "body" },
  sendConnectionMessage: { endpoint: "connectionMessages", method: "POST", pathFields: ["connection_id"], path: connectionPath, role: "moderated", rest: "body" },
  listConnectionMessages: { endpoint: "connectionMessages", method: "GET", pathFields: ["connection_id"], path: connectionPath, role: "session", rest: "query" },
  registerDevice: { endpoint: "devices", method: "POST", pathFields: [], path: () => "/", role: "session", rest: "body" },
  unregisterDevice: { endpoint: "devices", method: "DELETE", pathFields: [], path: () => "/", role: "session", rest: "body" },
} as const satisfies Readonly<Record<string, CallableOperation>>;

export type CallableName = keyof typeof CALLABLES;

/** The group the callables are exported in (index.ts): their deployed names are `chat-<name>`. */
export const CALLABLE_GROUP = "chat";
