import { createHash } from "node:crypto";

/**
 * Every path the adapter reads or writes, built here and nowhere else: the stored shape, as
 * database.rules.json guards it (see docs/data-model.md).
 *
 * ```
 * templates/{templateId}
 * userSessions/{sessionId}/            user_id, template_id, … (fixed at creation: SESSION_FIELDS)
 *   state                              the only node transacted on per message, with its journal (`pending`)
 *   messages/{m…}                      the history, keyed by message position
 *   keys/{hash}                        records of done Idempotency-Keys
 *   partials/{key}                     replies being written
 *   summary                            the rolling summary
 * idempotencyKeys/createSession/{hash}
 * userUsage/{userKey} · serviceUsage/{shard} · addressUsage/{addressKey}
 * userConversations/{user}/{sessionId}  a user's conversation index (see conversationOwnerKey)
 * erasures/{userKey}                 an erasure under way
 * serviceSecrets/{name}              the deployment's own random secrets
 * ```
 */

export const SESSIONS = "userSessions";
export const CREATE_KEYS = "idempotencyKeys/createSession";
export const SERVICE_USAGE = "serviceUsage";
export const ADDRESS_USAGE = "addressUsage";

/** The session's fields fixed at creation, read one by one (a read of the session node would download its history). */
export const SESSION_FIELDS = ["user_id", "template_id", "template_name", "system_prompt", "settings", "created_at"] as const;

/** A node the SDK opens its connection for on first reference. */
export const CONNECTED = ".info/connected";

export const templatePath = (templateId: string): string => `templates/${templateId}`;
export const sessionPath = (sessionId: string): string => `${SESSIONS}/${sessionId}`;
export const sessionFieldPath = (sessionId: string, field: string): string => `${sessionPath(sessionId)}/${field}`;
export const statePath = (sessionId: string): string => `${sessionPath(sessionId)}/state`;
export const pendingPath = (sessionId: string): string => `${statePath(sessionId)}/pending`;
export const messagesPath = (sessionId: string): string => `${sessionPath(sessionId)}/messages`;
export const messagePath = (sessionId: string, key: string): string => `${messagesPath(sessionId)}/${key}`;
export const summaryPath = (sessionId: string): string => `${sessionPath(sessionId)}/summary`;
export const keyRecordPath = (sessionId: string, hash: string): string => `${sessionPath(sessionId)}/${keyRecordChild(hash)}`;
export const partialPath = (sessionId: string, key: string): string => `${sessionPath(sessionId)}/${partialChild(key)}`;
export const createKeyPath = (hash: string): string => `${CREATE_KEYS}/${hash}`;
export const userUsagePath = (userKey: string): string => `userUsage/${userKey}`;
export const serviceShardPath = (shard: string): string => `${SERVICE_USAGE}/${shard}`;
export const addressPath = (addressKey: string): string => `${ADDRESS_USAGE}/${addressKey}`;

const STATE_PATH = new RegExp(`^${SESSIONS}/([^/]+)/state$`);

/** The session whose `state` is at `path`, or undefined for any other path. */
export function sessionOfStatePath(path: string): string | undefined {
  return STATE_PATH.exec(path)?.[1];
}

/*
 * Children of a session node, for its multi-path update and for the queries over all sessions.
 */
export const PARTIALS = "partials";
export const messageChild = (key: string): string => `messages/${key}`;
export const keyRecordChild = (hash: string): string => `keys/${hash}`;
export const partialChild = (key: string): string => `${PARTIALS}/${key}`;
export const stateField = (field: string): string => `state/${field}`;
/** A session's children beside its `state`, as the shape above lists them (see RtdbStore.deleteSession). */
export const SESSION_CHILDREN = [...SESSION_FIELDS, "messages", "keys", PARTIALS, "summary"] as const;

/*
 * A user's conversations (issue 16): the index, erasures, the deployment's secrets.
 */
export const CONVERSATIONS = "userConversations";
export const ERASURES = "erasures";
const SERVICE_SECRETS = "serviceSecrets";

/** A Firebase Auth uid as the database's rules see it: `auth.uid` matches the key only when it is one as it is. */
const PLAIN_USER_ID = /^[A-Za-z0-9_-]{1,128}$/;

/**
 * The key of a user's index: the user id itself when it is a plain key (every uid Firebase Auth
 * issues is), so that rules can let `auth.uid` read `userConversations/{auth.uid}`; any other id
 * (a `user_id` sent without a token, which may hold `.` or `/`) as `~` and a hash of it, which
 * no plain id can equal.
 */
export function conversationOwnerKey(userId: string): string {
  return PLAIN_USER_ID.test(userId) ? userId : `~${createHash("sha256").update(`owner\u0000${userId}`, "utf8").digest("hex").slice(0, 40)}`;
}

/** A key `conversationOwnerKey` could have made: one path segment, whatever a stored node says. */
export function isOwnerKey(key: string): boolean {
  return /^~?[A-Za-z0-9_-]{1,128}$/.test(key);
}

export const conversationsPath = (ownerKey: string): string => `${CONVERSATIONS}/${ownerKey}`;
export const conversationPath = (ownerKey: string, sessionId: string): string => `${conversationsPath(ownerKey)}/${sessionId}`;
export const erasurePath = (userKey: string): string => `${ERASURES}/${userKey}`;
export const serviceSecretPath = (name: string): string => `${SERVICE_SECRETS}/${name}`;

/**
 * Connections between users, and devices (see docs/connections.md):
 *
 * ```
 * connections/{connectionId}/
 *   meta                               user_a, user_b, requested_by, created_at, pair (fixed at creation)
 *   state                              the only node transacted on, per message and per change, with its journal (`pending`)
 *   messages/{m…}                      sender_id, content, timestamp; keyed by position
 * connectionPairs/{pairKey}            the pair's current connection and its blocks
 * userConnections/{userKey}/{id}       each user's connections: the value is the last activity, the list's order
 * userDevices/{userKey}                tokens/{tokenHash}: token, updated_at; previews; released/{tokenHash}: time; oldest_at
 * deviceTokens/{tokenHash}             user_key, updated_at: which user a token is registered to
 * ```
 */

export const CONNECTIONS = "connections";
export const CONNECTION_PAIRS = "connectionPairs";
export const USER_CONNECTIONS = "userConnections";
export const USER_DEVICES = "userDevices";
export const DEVICE_TOKENS = "deviceTokens";

export const connectionPath = (connectionId: string): string => `${CONNECTIONS}/${connectionId}`;
export const connectionMetaPath = (connectionId: string): string => `${connectionPath(connectionId)}/meta`;
export const connectionStatePath = (connectionId: string): string => `${connectionPath(connectionId)}/state`;
export const connectionPendingPath = (connectionId: string): string => `${connectionStatePath(connectionId)}/pending`;
export const connectionMessagesPath = (connectionId: string): string => `${connectionPath(connectionId)}/messages`;
/** A message's path from its connection's node. */
export const connectionMessageChild = (key: string): string => `messages/${key}`;
export const connectionMessagePath = (connectionId: string, key: string): string => `${connectionPath(connectionId)}/${connectionMessageChild(key)}`;
export const pairPath = (pairKey: string): string => `${CONNECTION_PAIRS}/${pairKey}`;
export const userConnectionsPath = (userKey: string): string => `${USER_CONNECTIONS}/${userKey}`;
/** A connection's place in a user's list, from the lists' node (`userConnections`). */
export const listedConnectionChild = (userKey: string, connectionId: string): string => `${userKey}/${connectionId}`;
export const listedConnectionPath = (userKey: string, connectionId: string): string => `${USER_CONNECTIONS}/${listedConnectionChild(userKey, connectionId)}`;
export const userDevicesPath = (userKey: string): string => `${USER_DEVICES}/${userKey}`;
export const tokenOwnerPath = (tokenHash: string): string => `${DEVICE_TOKENS}/${tokenHash}`;

const CONNECTION_STATE_PATH = new RegExp(`^${CONNECTIONS}/([^/]+)/state$`);

/** The connection whose `state` is at `path`, or undefined for any other path. */
export function connectionOfStatePath(path: string): string | undefined {
  return CONNECTION_STATE_PATH.exec(path)?.[1];
}
