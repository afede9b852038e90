import { randomUUID } from "node:crypto";
import { knownFrom, pairKeyOf, pairOf } from "../../src/connections/known-connections";
import { appendMessage, type ConnectionPolicy } from "../../src/connections/connection-rules";
import type { Participant } from "../../src/store/connection-records";
import type { ConnectionRef, NewConnection } from "../../src/store/connection-store";
import { CREATED_AT } from "./fixtures";

/**
 * How long a registration's add may land after its claim, as an instance with the defaults has it
 * (runtime/instance.ts: a 60 s function timeout and one 5 s database deadline).
 */
export const ADD_LANDS_WITHIN_MS = 65_000;

/** No rate limit within a test's span. */
export const OPEN_POLICY: ConnectionPolicy = { messagesPerMinute: 1_000_000 };

/** A connection between two fresh users, accepted unless `status` says otherwise, as the service writes one. */
export function newConnection(status: "pending" | "accepted" = "accepted", users = { one: `alice-${randomUUID().slice(0, 6)}`, two: `bob-${randomUUID().slice(0, 6)}` }): NewConnection {
  const pair = pairOf(users.one, users.two);
  const id = randomUUID();
  const meta = { user_a: pair.a, user_b: pair.b, requested_by: "a" as const, created_at: CREATED_AT, pair: pairKeyOf(pair) };
  const known = knownFrom(id, meta);
  return {
    ...known.ref,
    meta,
    state: { status, message_count: 0, last_activity: CREATED_AT, ...(status === "accepted" ? { accepted_at: CREATED_AT } : {}) },
  };
}

/** The service's own message rule, by participant, as the store contract applies it (the key's fingerprint: its text's). */
export function sendAs(connection: NewConnection, sender: Participant, text: string, at: number, keyHash?: string) {
  const senderId = sender === "a" ? connection.meta.user_a : connection.meta.user_b;
  return appendMessage({ sender, senderId, text, now: at, policy: OPEN_POLICY, ...(keyHash === undefined ? {} : { key: { hash: keyHash, fingerprint: text } }) });
}

export function refOf(connection: NewConnection): ConnectionRef {
  return { id: connection.id, userKeys: connection.userKeys };
}
