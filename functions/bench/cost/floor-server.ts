import { randomUUID } from "node:crypto";
import { initializeApp } from "firebase-admin/app";
import { getDatabase, type Reference } from "firebase-admin/database";
import OpenAI from "openai";
import { serverSentEvents } from "../../src/llm/server-sent-events";
import { PartialWriter } from "../../src/session/message/partial-writer";
import { client, completionParams, serveBaseline } from "./baseline-server";
import { MINIMAL, SERVICE_SHAPED } from "./floor-records";

/**
 * The floor of database mode (issue 18), in a child process: the plain server's two routes, with
 * the database operations the service sends per message and nothing else: the session's state and
 * the user's usage record listened to, the claim and the usage admission (two transactions sent
 * together), the model streamed through the same `openai` SDK (its body read as the service reads
 * it, src/llm/server-sent-events.ts) with the partial written at the service's cadence, the
 * commit (the exchange into the state's journal) and the settlement (two transactions together),
 * then the copy to `messages` that removes the partial (one update from the session, not awaited;
 * the next commit drops the journal; and one more from the index entry, as the service sends them).
 * No validation, identity, limits or idempotency: what the database alone costs a message's CPU
 * in firebase-admin. With FLOOR_RECORDS=service, the same operations write records of the
 * service's shapes (floor-records.ts).
 */
const namespace = process.env.BENCH_PROJECT_ID ?? "demo-chatify";
const db = getDatabase(initializeApp({ projectId: "demo-chatify", databaseURL: `https://${namespace}.firebaseio.com` }));

/** Which records the floor writes: FLOOR_RECORDS=service for records of the service's shapes (floor-records.ts). */
const records = process.env.FLOOR_RECORDS === "service" ? SERVICE_SHAPED : MINIMAL;
type Node = Record<string, unknown>;
/**
 * The copy is sent as the service sends it: one update per record it touches (the session, its
 * index entry), each from that record. FLOOR_COPY_AT=root: as one update from the root, as the
 * service did before; section f compares the two (the SDK's acknowledgement of an update sent from
 * the root visits every node the instance listens to).
 */
const copyFromRoot = process.env.FLOOR_COPY_AT === "root";

/** A multi-path update from the root, sent as one update per record (the first two path segments, three for an index entry). */
function fromEachRecord(update: Record<string, unknown>): Promise<unknown> {
  const byRecord = new Map<string, Record<string, unknown>>();
  for (const [path, value] of Object.entries(update)) {
    const parts = path.split("/");
    const depth = parts[0] === "userConversations" ? 3 : 2;
    const record = parts.slice(0, depth).join("/");
    byRecord.set(record, { ...byRecord.get(record), [parts.slice(depth).join("/")]: value });
  }
  return Promise.all([...byRecord].map(([record, values]) => db.ref(record).update(values)));
}

/** Each session's user, for its index entry. */
const users = new Map<string, string>();
/** The sessions whose state and usage record this server listens to. */
const held = new Set<string>();

/** A transaction that applies `change` to the node's value, from the listener's copy. */
function transact<T>(ref: Reference, change: (value: T | null) => T): Promise<unknown> {
  return ref.transaction((value: T | null) => change(value));
}

serveBaseline({
  async create(id, userId) {
    users.set(id, String(userId));
    await db.ref().update(records.session(id, String(userId), Date.now()));
  },
  async message(sessionId, message, history) {
    const session = db.ref(`userSessions/${sessionId}`);
    const state = session.child("state");
    const usage = db.ref(`userUsage/${sessionId}`);
    // Held once per session, as the service's listener holds are: each transaction starts from the
    // server's value. (A listener added per message would fire once more at every change.)
    if (!held.has(sessionId)) {
      held.add(sessionId);
      state.on("value", () => undefined);
      usage.on("value", () => undefined);
    }
    const owner = randomUUID().replaceAll("-", "");
    const claimedAt = Date.now();
    await Promise.all([
      transact<Node>(state, (value) => records.claim(value, owner, message, claimedAt)),
      transact<Node | string>(usage, (value) => records.admit(value, sessionId, claimedAt)),
    ]);
    const partial = new PartialWriter((value) => void session.child(`partials/${owner}`).set(value).catch(() => undefined), history.length / 2, Date.now);
    const stream = await client.chat.completions.create({ ...completionParams(history, message), stream: true, stream_options: { include_usage: true } }).asResponse();
    let text = "";
    let tokens = 0;
    if (!stream.body) throw new Error("the model answered without a body");
    for await (const sse of serverSentEvents(stream.body)) {
      if (sse.data === "[DONE]") break;
      const chunk = JSON.parse(sse.data) as OpenAI.ChatCompletionChunk;
      const piece = chunk.choices[0]?.delta.content ?? "";
      if (piece !== "") {
        text += piece;
        partial.write(piece);
      }
      tokens = chunk.usage?.total_tokens ?? tokens;
    }
    partial.stop();
    const exchange = records.exchange(message, text, Date.now());
    let seq = 0;
    let committed: Node | null = null;
    await Promise.all([
      transact<Node>(state, (value) => {
        const commit = records.commit(value, owner, exchange, tokens);
        seq = commit.seq;
        committed = commit.next;
        return commit.next;
      }),
      transact<Node | string>(usage, (value) => records.settle(value, sessionId, tokens, seq)),
    ]);
    const copy = records.copy(sessionId, users.get(sessionId) ?? sessionId, seq, exchange, owner, committed);
    void (copyFromRoot ? db.ref().update(copy) : fromEachRecord(copy)).catch(() => undefined);
    return { text, messageCount: seq, truncated: false };
  },
});
