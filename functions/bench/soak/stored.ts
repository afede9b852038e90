import type { ChatMessage, ReplyUsage, SessionState } from "../../src/store/records";
import type { SessionStore } from "../../src/store/session-store";
import type { Plan } from "./plan";

/** Far more messages than a soak session can hold: "read the whole history". */
const ALL = 1_000_000;

/** One session as the database holds it. */
export interface StoredSession {
  readonly index: number;
  readonly id: string;
  readonly state: SessionState | null;
  /** The whole history, oldest first. */
  readonly messages: readonly ChatMessage[];
}

/** Where a user message was stored: its exchange number and the reply stored with it. */
export interface Located {
  readonly session: number;
  readonly seq: number;
  readonly reply: string;
  /** What the reply's model call used, as stored with it. */
  readonly usage: ReplyUsage | undefined;
}

export interface StoredView {
  readonly sessions: readonly StoredSession[];
  /** Each stored user message text, with every place it was stored (more than one is a duplicate). */
  readonly byText: ReadonlyMap<string, readonly Located[]>;
  readonly exchanges: number;
}

const REPLY = /^reply #(\d+) to: ([\s\S]*)$/;

/**
 * Reads every session the run created, through the store, and checks each on its own:
 * `message_count` equals the exchanges stored, roles alternate, `readExchange` agrees with the
 * history, each reply answers the user message before it, no model reply is stored twice, and
 * every stored user message is one the run sent to that session.
 */
export async function readStored(store: SessionStore, plan: Plan, sessionIds: readonly (string | undefined)[], problem: (text: string) => void): Promise<StoredView> {
  const planned = new Map(plan.messages.map((message) => [message.text, message]));
  const byText = new Map<string, Located[]>();
  const replyNumbers = new Map<string, string>();
  const sessions: StoredSession[] = [];
  let exchanges = 0;

  for (const [index, id] of sessionIds.entries()) {
    if (id === undefined) continue;
    const where = `session s${index} (${id})`;
    const [state, messages] = await Promise.all([store.readSessionState(id), store.readWindow(id, ALL).then((window) => window.messages)]);
    sessions.push({ index, id, state, messages });
    if (!state) {
      problem(`${where}: created, but no state is stored`);
      continue;
    }
    const count = state.message_count;
    if (messages.length !== 2 * count) problem(`${where}: message_count ${count} but ${messages.length} messages stored`);
    const seqs = Array.from({ length: Math.max(count, Math.ceil(messages.length / 2)) + 1 }, (_, i) => i + 1);
    const read = await Promise.all(seqs.map((seq) => store.readExchange(id, seq)));
    for (const [i, exchange] of read.entries()) {
      const seq = i + 1;
      const [user, assistant] = [messages[2 * seq - 2], messages[2 * seq - 1]];
      if (seq > count) {
        if (exchange) problem(`${where}: readExchange(${seq}) returns an exchange beyond message_count ${count}`);
        continue;
      }
      if (!user || !assistant) continue;
      if (user.role !== "user" || assistant.role !== "assistant") problem(`${where}: exchange ${seq} has roles ${user.role}/${assistant.role}, not user/assistant`);
      if (exchange?.user.content !== user.content || exchange.assistant.content !== assistant.content) {
        problem(`${where}: readExchange(${seq}) does not return the history's messages ${2 * seq - 1} and ${2 * seq}`);
      }
      const reply = REPLY.exec(assistant.content);
      if (reply?.[2] !== user.content) problem(`${where}: the reply of exchange ${seq} does not answer its user message: ${JSON.stringify(assistant.content)} after ${JSON.stringify(user.content)}`);
      const earlier = reply?.[1] === undefined ? undefined : replyNumbers.get(reply[1]);
      if (earlier !== undefined) problem(`${where}: model reply #${reply?.[1] ?? ""} is stored twice (also at ${earlier})`);
      if (reply?.[1] !== undefined) replyNumbers.set(reply[1], `${where} exchange ${seq}`);
      if (planned.get(user.content)?.session !== index) problem(`${where}: exchange ${seq} holds ${JSON.stringify(user.content)}, which the run never sent to this session`);
      const located = byText.get(user.content) ?? [];
      located.push({ session: index, seq, reply: assistant.content, usage: assistant.usage });
      byText.set(user.content, located);
      exchanges += 1;
    }
  }
  for (const [text, places] of byText) {
    if (places.length > 1) problem(`message ${JSON.stringify(text)} is stored ${places.length} times: ${places.map((p) => `s${p.session}#${p.seq}`).join(", ")}`);
  }
  return { sessions, byText, exchanges };
}
