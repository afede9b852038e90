import { roundUsd } from "../../src/llm/model-table";
import { utcDay } from "../../src/session/ledger/limits";
import { fromJsonLeaf, toJsonLeaf } from "../../src/store/rtdb/json-leaf";
import { TEMPLATE_ID } from "../shared/http-client";

/**
 * What the floor (floor-server.ts) writes per message: the same operations either way, with one of
 * two kinds of records. MINIMAL: the least each operation needs (a count, a claim, a reservation),
 * the floor the goal is measured against. SERVICE_SHAPED: records of the service's shapes and sizes (the
 * session's state with its owner's index key, activity and token totals, the journal entry with the
 * reply's usage, the user's usage record with its session, context bound and day, as one JSON
 * string, the index entry in the copy), so that the service's CPU can be told apart into what its records cost
 * @firebase/database (which hashes, sends and receives every transacted node whole, leaf by leaf)
 * and what its own code costs.
 */
export interface FloorRecords {
  /** A new session: one multi-path update from the root. */
  session(id: string, userId: string, now: number): Record<string, unknown>;
  /** The exchange a reply makes, as it is journaled and copied. */
  exchange(message: string, reply: string, now: number): Exchange;
  claim(state: Node | null, owner: string, text: string, now: number): Node;
  admit(usage: Stored | null, sessionId: string, now: number): Stored;
  commit(state: Node | null, owner: string, exchange: Exchange, tokens: number): { next: Node; seq: number };
  settle(usage: Stored | null, sessionId: string, tokens: number, seq: number): Stored;
  /** The copy, from the state as committed, with the session's index entry (paths from the root; the floor sends one update per record). */
  copy(sessionId: string, userId: string, seq: number, exchange: Exchange, owner: string, state: Node | null): Record<string, unknown>;
}

type Node = Record<string, unknown>;
/** A usage record as the service stores it: one JSON string leaf (src/store/rtdb/json-leaf.ts). */
type Stored = Node | string;
interface Message {
  readonly role: string;
  readonly content: string;
  readonly timestamp: number;
  readonly usage?: Node;
}
export interface Exchange {
  readonly user: Message;
  readonly assistant: Message;
}

const RESERVED = 500;
const num = (node: Node | null | undefined, field: string): number => (typeof node?.[field] === "number" ? node[field] : 0);
const record = (value: unknown): Node => (typeof value === "object" && value !== null ? (value as Node) : {});

export const MINIMAL: FloorRecords = {
  session: (id, userId) => ({ [`userSessions/${id}`]: { user_id: userId, template_id: TEMPLATE_ID, state: { message_count: 0 } } }),
  exchange: (message, reply, now) => ({ user: { role: "user", content: message, timestamp: now }, assistant: { role: "assistant", content: reply, timestamp: now } }),
  claim: (state, owner, _text, now) => ({ ...(state ?? { message_count: 0 }), pending: {}, requests: { ...record(state?.requests), [owner]: { lease_until: now + 60_000 } } }),
  admit: (usage) => ({ tokens: num(record(usage), "tokens"), reserved: num(record(usage), "reserved") + RESERVED }),
  commit(state, owner, exchange) {
    const requests = Object.fromEntries(Object.entries(record(state?.requests)).filter(([key]) => key !== owner));
    const seq = num(state, "message_count") + 1;
    return { seq, next: { message_count: seq, requests, pending: { [`e${seq}`]: { ...exchange, partial: owner } } } };
  },
  settle: (usage, _sessionId, tokens) => ({ tokens: num(record(usage), "tokens") + tokens, reserved: Math.max(0, num(record(usage), "reserved") - RESERVED) }),
  copy: (sessionId, userId, seq, exchange, owner) => ({
    [`userSessions/${sessionId}/messages/u${seq}`]: exchange.user,
    [`userSessions/${sessionId}/messages/a${seq}`]: exchange.assistant,
    [`userSessions/${sessionId}/partials/${owner}`]: null,
    // The index entry's least: its count (the service's own write since its copy left the root).
    [`userConversations/${userId}/${sessionId}/message_count`]: seq,
  }),
};

export const SERVICE_SHAPED: FloorRecords = {
  session: (id, userId, now) => ({
    [`userSessions/${id}`]: {
      // The fields fixed at creation beside the state, as the service stores them (SESSION_FIELDS).
      user_id: userId,
      template_id: TEMPLATE_ID,
      template_name: "Friendly Assistant",
      system_prompt: "A friendly assistant.",
      created_at: now,
      settings: { model: "gpt-4o-mini", temperature: 0.9, max_tokens: 50, presence_penalty: 0.6, frequency_penalty: 0.6, context_window: 10 },
      state: { status: "active", message_count: 0, last_activity: now, idle_since: now, conversation: userId },
    },
    [`userConversations/${userId}/${id}`]: { template_id: TEMPLATE_ID, template_name: "Friendly Assistant", created_at: now, last_activity: now, message_count: 0, status: "active" },
  }),
  exchange: (message, reply, now) => ({
    user: { role: "user", content: message, timestamp: now },
    assistant: { role: "assistant", content: reply, timestamp: now, usage: { prompt_tokens: 202, completion_tokens: 13, total_tokens: 215, prompt_estimate: 235, cost_usd: 0.000038 } },
  }),
  claim(state, owner, _text, now) {
    // A message without an Idempotency-Key, as the bench sends them: its claim is keyed by its owner.
    const lease = now + 60_000;
    // The journal's last exchange is copied by now: the claim drops it, as the service's does.
    const { pending: _copied, ...rest } = state ?? {};
    return { ...rest, requests: { ...record(state?.requests), [`r-${owner}`]: { fingerprint: "", owner, lease_until: lease } }, claims_lapse_at: lease };
  },
  admit(stored, sessionId, now) {
    const usage = record(fromJsonLeaf(stored));
    const daily = record(usage.daily);
    const context = record(record(usage.contexts)[sessionId]);
    return toJsonLeaf({
      tokens: 99_999,
      refilled_at: now,
      sessions: { [sessionId]: now },
      daily: { day: utcDay(now), tokens: num(daily, "tokens") + RESERVED, cost_usd: num(daily, "cost_usd") },
      contexts: { [sessionId]: { tokens: RESERVED, open: num(context, "open") + 1, landed: num(context, "landed"), at: now } },
    });
  },
  commit(state, owner, exchange, tokens) {
    const { requests: _requests, claims_lapse_at: _lapse, pending: _pending, ...rest } = state ?? {};
    const seq = num(state, "message_count") + 1;
    const totals = record(state?.usage);
    const now = exchange.assistant.timestamp;
    return {
      seq,
      next: {
        ...rest,
        message_count: seq,
        last_activity: now,
        idle_since: now,
        usage: { prompt_tokens: num(totals, "prompt_tokens") + tokens - 13, completion_tokens: num(totals, "completion_tokens") + 13, total_tokens: num(totals, "total_tokens") + tokens, cost_usd: roundUsd(num(totals, "cost_usd") + 0.000038) },
        pending: { [`e${String(seq).padStart(9, "0")}`]: { ...exchange, partial: owner } },
      },
    };
  },
  settle(stored, sessionId, tokens, seq) {
    const usage = record(fromJsonLeaf(stored));
    const daily = record(usage.daily);
    const context = record(record(usage.contexts)[sessionId]);
    return toJsonLeaf({
      ...usage,
      daily: { ...daily, tokens: Math.max(0, num(daily, "tokens") + tokens - RESERVED), cost_usd: roundUsd(num(daily, "cost_usd") + 0.000038) },
      contexts: { [sessionId]: { ...context, open: Math.max(0, num(context, "open") - 1), tokens, landed: seq } },
    });
  },
  copy(sessionId, _userId, seq, exchange, owner, state) {
    // The owner's index key rides in the state, as the service's does.
    const at = (field: string) => `userConversations/${String(state?.conversation)}/${sessionId}/${field}`;
    return {
      [`userSessions/${sessionId}/messages/u${String(seq).padStart(9, "0")}`]: exchange.user,
      [`userSessions/${sessionId}/messages/a${String(seq).padStart(9, "0")}`]: exchange.assistant,
      [`userSessions/${sessionId}/partials/${owner}`]: null,
      [at("last_activity")]: state?.last_activity ?? null,
      [at("message_count")]: seq,
      [at("status")]: "active",
    };
  },
};

