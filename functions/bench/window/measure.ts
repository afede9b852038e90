import { performance } from "node:perf_hooks";
import { appendRule } from "../../src/session/session-rules";
import type { Exchange } from "../../src/store/records";
import { countsSince, totalCalls, type StoreCall } from "./counting-store";
import { BENCH_TEMPLATE_ID, type CacheMode, type Rig } from "./rig";

/** What one measured message cost. */
export interface Sample {
  readonly ms: number;
  /** CPU time of this process (service, SDKs, fake model server, proxy) during the message. */
  readonly cpuMs: number;
  /** History messages the store handed back (see CountingStore). */
  readonly messagesRead: number;
  readonly calls: Readonly<Partial<Record<StoreCall, number>>>;
  /** Time spent in store calls, per kind. */
  readonly callMs: Readonly<Partial<Record<StoreCall, number>>>;
  readonly totalCalls: number;
  /** Messages in the prompt the model got (system + history + the new one). */
  readonly promptMessages: number;
  /** Bytes on the database connection; undefined with the embedded store. */
  readonly bytesReceived: number | undefined;
  readonly bytesSent: number | undefined;
}

/**
 * A session of `history` exchanges, created through the service and filled straight through the
 * store, one exchange after another: concurrent appends to one session contend on its `state`
 * (each retry reruns), which is slower, not faster.
 */
export async function sessionWithHistory(rig: Rig, userId: string, history: number): Promise<string> {
  const { sessionId } = await rig.setup.sessions.create({ userId, templateId: BENCH_TEMPLATE_ID });
  for (let n = 1; n <= history; n += 1) await appendOne(rig, sessionId, n);
  const state = await rig.setupStore.readSessionState(sessionId);
  if (state?.message_count !== history) throw new Error(`pre-fill stored ${state?.message_count ?? "no"} exchanges, not ${history}`);
  return sessionId;
}

async function appendOne(rig: Rig, sessionId: string, n: number): Promise<void> {
  const at = Date.now();
  const result = await rig.setupStore.appendExchange(sessionId, filler(n, at), appendRule({ receivedAt: at, answeredAt: at, policy: rig.policy }));
  if (!result.found || result.outcome.kind !== "appended") throw new Error(`pre-fill append ${n} refused: ${JSON.stringify(result)}`);
}

/** An exchange of typical size (about 80 and 200 characters). */
function filler(n: number, at: number): Exchange {
  const user = `Earlier question number ${n}: could you tell me a little more about that last point, please?`;
  const assistant = `Earlier answer number ${n}. ${"Here is a little more detail about that point, as asked. ".repeat(3)}`;
  return { user: { role: "user", content: user, timestamp: at }, assistant: { role: "assistant", content: assistant, timestamp: at } };
}

/**
 * Sends one message through the runtime's session module and measures it: wall time, this
 * process's CPU time, what the store was asked and the bytes on the database connection.
 * `expectedCount`: the exchange number the message must be stored as.
 */
export async function sendMeasured(rig: Rig, mode: CacheMode, sessionId: string, expectedCount: number): Promise<Sample> {
  rig.fake.reset();
  const before = { store: rig.measured.counts(), bytes: rig.bytes() };
  const cpu = process.cpuUsage();
  const started = performance.now();
  const reply = await rig.runtime(mode).sessions.send({ sessionId, message: `Measured message number ${expectedCount}: what do you think of that?` });
  const ms = performance.now() - started;
  const cpuUsed = process.cpuUsage(cpu);
  const after = { store: rig.measured.counts(), bytes: rig.bytes() };
  if (reply.exchangeCount !== expectedCount) throw new Error(`a message was stored as exchange ${reply.exchangeCount}, expected ${expectedCount}`);
  const [prompt, ...more] = rig.fake.requests;
  if (!prompt || more.length > 0) throw new Error(`expected one model call per message, saw ${rig.fake.requests.length}`);
  const store = countsSince(before.store, after.store);
  return {
    ms,
    cpuMs: (cpuUsed.user + cpuUsed.system) / 1000,
    messagesRead: store.messagesRead,
    calls: store.calls,
    callMs: store.ms,
    totalCalls: totalCalls(store),
    promptMessages: prompt.body.messages.length,
    bytesReceived: before.bytes && after.bytes ? after.bytes.received - before.bytes.received : undefined,
    bytesSent: before.bytes && after.bytes ? after.bytes.sent - before.bytes.sent : undefined,
  };
}
