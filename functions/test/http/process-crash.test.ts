import { randomUUID } from "node:crypto";
import { connect, createServer, type AddressInfo, type Server, type Socket } from "node:net";
import type { Database, Reference } from "firebase-admin/database";
import { z } from "zod";
import { ApiUser, HOSTING_ROUTES, type ApiCaller } from "../support/connection-api";
import { lastUser } from "../support/fake-openai-server";
import { call, ROUTES, startHarness, type Answer, type Harness } from "../support/http-harness";
import { startLocalProcess, type LocalProcess } from "../support/local-process";
import { describeWithRtdb, RtdbInstances, valueWhere } from "../support/rtdb";
import { serviceEnv } from "../support/service-env";
import { parseHost } from "../support/tcp-proxy";

/**
 * A lease that real time can outlast: the functions' timeout, which is a message's lease, at 3 s,
 * the least the time budget accepts (1 s margin + a model deadline of 400 ms + 4 database deadlines
 * of 400 ms; a message between users: 3 of them + an 800 ms notification deadline + the margin)
 * with a database deadline that a process started alone on a loaded machine meets while it seeds
 * the templates at start-up (200 ms was missed there). Only the victim whose lease must lapse runs
 * with it; every other process has the default timeouts.
 */
const SHORT_LEASE = { TIMEOUT_SECONDS: "3", OPENAI_TIMEOUT_MS: "400", DB_TIMEOUT_MS: "400", NOTIFICATION_DEADLINE_MS: "800" };
/** The longest wait for a write to be sent or land, or for a copy sent off the answer's path to settle. */
const SETTLE_MS = 5_000;

/**
 * The built local server (`npm start`'s) in an OS process of its own on the Realtime Database,
 * killed (SIGKILL) at one named point of a request; then another process on the same database
 * checks what the docs promise. The point is a write: the victim's database link lets that write
 * through and nothing after it, in either direction (SeverableLink), and the victim is killed once
 * the write is seen in the database. So each test stops its victim exactly there, however fast
 * or slow the machine, and the assertions never depend on where a timer landed. Nothing here is
 * the stand-in's own (no latency, which is server-wide): it runs on the database the run shares.
 */
describeWithRtdb("a function instance killed at a named point of a request", () => {
  let harness: Harness;
  let instances: RtdbInstances;
  let raw: Database;
  const processes: LocalProcess[] = [];
  /** Every start, settled or not: one that fails must not leave the others running past the test. */
  const starting: Promise<unknown>[] = [];
  const links: SeverableLink[] = [];

  // A database namespace per test: a sweep's figures count only that test's sessions.
  beforeEach(async () => {
    harness = await startHarness({ store: "rtdb" });
    instances = new RtdbInstances(harness.namespace!);
    raw = instances.database();
  });
  afterEach(async () => {
    await Promise.allSettled(starting.splice(0));
    await Promise.all(processes.splice(0).map(kill));
    await Promise.all(links.splice(0).map((link) => link.close()));
    await instances.close();
    await harness.close();
  });

  interface Victim {
    readonly process: LocalProcess;
    readonly link: SeverableLink;
  }

  /** The built local server (`env` adds params), stopped after the test. */
  function start(env: Record<string, string>): Promise<LocalProcess> {
    const started = startLocalProcess({ ...serviceEnv(harness.fake.baseUrl), GCLOUD_PROJECT: harness.namespace!, ...env }).then((running) => {
      processes.push(running);
      return running;
    });
    starting.push(started);
    return started;
  }

  /** A process on the test's database, never killed: it checks what a victim left. */
  function survivor(env: Record<string, string> = {}): Promise<LocalProcess> {
    return start(env);
  }

  /** A process reaching the database through a link of its own, which `killedAfter` severs. */
  async function victim(env: Record<string, string> = {}): Promise<Victim> {
    const link = await SeverableLink.start(process.env.FIREBASE_DATABASE_EMULATOR_HOST ?? "");
    links.push(link);
    return { process: await start({ ...env, FIREBASE_DATABASE_EMULATOR_HOST: link.address }), link };
  }

  /**
   * Runs `request` on `dead` and kills it right after the first write `point` takes: that write
   * lands, which `landed` (its node's value) confirms before the kill, and nothing the victim sends
   * after it does. Returns the write and the request's answer (undefined when it got none).
   */
  async function killedAfter(
    dead: Victim,
    point: { readonly name: string; readonly write: (write: SentWrite) => boolean; readonly landed: (value: unknown) => boolean },
    request: (url: string) => Promise<Answer>,
    answered: "await the answer" | "no wait" = "no wait",
  ): Promise<{ write: SentWrite; answer: Answer | undefined }> {
    const severed = dead.link.severAfter(point.write, point.name);
    const answer = request(dead.process.url).catch(() => undefined);
    const write = await severed;
    await valueWhere(raw.ref(write.path), point.landed, `${point.name}: in the database`, SETTLE_MS);
    if (answered === "await the answer") await answer;
    await kill(dead.process);
    return { write, answer: await answer };
  }

  async function newSession(): Promise<{ sessionId: string; userId: string }> {
    const userId = `u-${randomUUID()}`;
    const created = await harness.api.call("POST", ROUTES.create, { user_id: userId, template_id: "friendly-assistant" });
    expect(created.status).toBe(201);
    return { sessionId: created.body.session_id as string, userId };
  }

  const message = (sessionId: string, text: string, key?: string) => (url: string) =>
    call(url, "POST", ROUTES.message(sessionId), { message: text }, key === undefined ? {} : { "Idempotency-Key": key });

  /** The session as stored: its state, its messages (the journal's merged with the history's, as readers merge them), its partial replies. */
  async function stored(sessionId: string) {
    const node = (await raw.ref(`userSessions/${sessionId}`).once("value")).val() as StoredSession | null;
    const state = node?.state ?? {};
    const messages: Record<string, { role: string; content: string }> = { ...node?.messages };
    for (const [key, entry] of Object.entries(state.pending ?? {})) {
      const seq = Number(key.slice(1));
      messages[positionKey(2 * seq - 1)] = { ...entry.user, role: "user" };
      messages[positionKey(2 * seq)] = { ...entry.assistant, role: "assistant" };
    }
    return {
      state,
      messages,
      userTexts: Object.values(messages).filter((entry) => entry.role === "user").map((entry) => entry.content),
      partials: node?.partials ?? null,
    };
  }

  /** The value at `ref` once `accept` takes it, else the last one after SETTLE_MS: an assertion on it then shows what was left. */
  async function settled(ref: Reference, accept: (value: unknown) => boolean, what: string): Promise<unknown> {
    await valueWhere(ref, accept, what, SETTLE_MS).catch(() => undefined);
    return (await ref.once("value")).val();
  }

  /**
   * What a keyed message killed anywhere leaves once its repeat and the next message went through:
   * the message stored once, `message_count` equal to the exchanges stored, no claim running, and,
   * once the copies sent off the answers' path land, no partial reply and an index entry that counts
   * what the session holds.
   */
  async function expectWhole(sessionId: string, userId: string, text: string): Promise<void> {
    const after = await stored(sessionId);
    expect(after.userTexts.filter((content) => content === text)).toHaveLength(1);
    expect(Object.keys(after.messages)).toHaveLength(2 * Number(after.state.message_count));
    expect(runningClaims(after.state)).toEqual({});
    expect(await settled(raw.ref(`userSessions/${sessionId}/partials`), (value) => value === null, "the partial replies removed")).toBeNull();
    const counted = (value: unknown) => isRecord(value) && value.message_count === after.state.message_count;
    expect(await settled(raw.ref(`userConversations/${userId}/${sessionId}`), counted, "the index entry's count")).toMatchObject({ message_count: after.state.message_count });
  }

  describe("a message with an Idempotency-Key", () => {
    const TEXT = "a keyed message";

    it("killed once its partial reply is written: a repeat of the key waits for its lease to end, then runs it once, and the next message leaves no claim or partial of it", async () => {
      const { sessionId, userId } = await newSession();
      // Started alone: a start-up beside others may miss the short database deadline.
      const dead = await victim(SHORT_LEASE);
      const checker = await survivor();
      harness.fake.enqueue({ kind: "stream", chunks: words(20), chunkDelayMs: 20 });
      await killedAfter(dead, partialWritten(sessionId), message(sessionId, TEXT, "key-1"));
      const left = await stored(sessionId);
      const claims = Object.values(runningClaims(left.state));
      expect(claims).toHaveLength(1);
      expect(Object.keys(left.partials ?? {})).toHaveLength(1);
      expect(left.state.message_count).toBe(0);

      // The checker's wait (what its time budget leaves: 24 s) outlasts the dead claim's lease: the
      // repeat waits that out, polling the state, then takes the key over and runs the message.
      const repeat = await message(sessionId, TEXT, "key-1")(checker.url);
      expect(repeat.status).toBe(200);
      expect(Date.now()).toBeGreaterThanOrEqual(claims[0]?.lease_until ?? Number.POSITIVE_INFINITY);
      // The model was asked twice for it: by the dead request, then by the repeat that took its key over.
      expect(harness.fake.requests.map(lastUser)).toEqual([TEXT, TEXT]);
      expect((await message(sessionId, "the next message")(checker.url)).status).toBe(200);
      await expectWhole(sessionId, userId, TEXT);
    }, 30_000);

    it("killed once its exchange is journaled, before the copy: a repeat of the key replays the reply without a model call, and the next message copies it", async () => {
      const { sessionId, userId } = await newSession();
      const [dead, checker] = await Promise.all([victim(), survivor()]);
      harness.fake.enqueue({ kind: "stream", chunks: ["the", " journaled", " reply"] });
      await killedAfter(dead, journaled(sessionId, TEXT), message(sessionId, TEXT, "key-2"));
      expect((await raw.ref(`userSessions/${sessionId}/messages`).once("value")).exists()).toBe(false);

      const repeat = await message(sessionId, TEXT, "key-2")(checker.url);
      expect(repeat.status).toBe(200);
      expect(repeat.body.response).toBe("the journaled reply");
      expect(repeat.headers.get("idempotent-replayed")).toBe("true");
      expect(harness.fake.requests).toHaveLength(1);
      expect((await message(sessionId, "the next message")(checker.url)).status).toBe(200);
      await expectWhole(sessionId, userId, TEXT);
    }, 30_000);

    it("killed once its copy landed and its answer was sent: a repeat of the key replays that answer, and the next message brings the index entry up to date", async () => {
      const { sessionId, userId } = await newSession();
      const [dead, checker] = await Promise.all([victim(), survivor()]);
      const { answer } = await killedAfter(dead, copied(sessionId), message(sessionId, TEXT, "key-3"), "await the answer");
      expect(answer?.status).toBe(200);
      // The entry's update, sent after the copy, was lost with the victim.
      expect((await raw.ref(`userConversations/${userId}/${sessionId}/message_count`).once("value")).val()).toBe(0);

      const repeat = await message(sessionId, TEXT, "key-3")(checker.url);
      expect(repeat.status).toBe(200);
      expect(repeat.body.response).toBe(answer?.body.response);
      expect(harness.fake.requests).toHaveLength(1);
      expect((await message(sessionId, "the next message")(checker.url)).status).toBe(200);
      await expectWhole(sessionId, userId, TEXT);
    }, 30_000);
  });

  it("an end killed once its transaction landed: the session reads ended with its exchange, and a repeated end answers 410, closes the list entry and frees the user's session", async () => {
    const { sessionId, userId } = await newSession();
    expect((await message(sessionId, "before the end")(harness.api.baseUrl)).status).toBe(200);
    await valueWhere(raw.ref(`userConversations/${userId}/${sessionId}/message_count`), (count) => count === 1, "the exchange counted in the index entry");
    // One active session a user: whether the end freed it shows in the next create.
    const oneSession = { USER_MAX_ACTIVE_SESSIONS: "1" };
    const [dead, checker] = await Promise.all([victim(oneSession), survivor(oneSession)]);
    await killedAfter(dead, ended(sessionId), (url) => call(url, "DELETE", ROUTES.end(sessionId)));
    // Lost with the victim: the end's closing copy to the index entry, and its release of the user's session.
    expect((await raw.ref(`userConversations/${userId}/${sessionId}/status`).once("value")).val()).toBe("active");

    const list = await call(checker.url, "GET", `${ROUTES.list}?user_id=${userId}`);
    const get = await call(checker.url, "GET", `${ROUTES.get(sessionId)}?user_id=${userId}`);
    expect(get.body.session).toMatchObject({ status: "ended", message_count: 1 });
    // The entry may read active until the end is repeated (docs/conversations.md, "A closing copy
    // that is lost"), but never with another count.
    expect((list.body.sessions as { message_count: number }[])[0]?.message_count).toBe(1);
    const create = () => call(checker.url, "POST", ROUTES.create, { user_id: userId, template_id: "friendly-assistant" });
    // Until the end is repeated, the ended session still counts (docs/sessions-over-time.md).
    expect((await create()).status).toBe(429);
    expect((await call(checker.url, "DELETE", ROUTES.end(sessionId))).status).toBe(410);
    const relisted = await call(checker.url, "GET", `${ROUTES.list}?user_id=${userId}`);
    expect((relisted.body.sessions as { status: string }[])[0]).toMatchObject({ status: "ended", message_count: 1 });
    expect((await create()).status).toBe(201);
  }, 30_000);

  it("a keyed create killed once its key's claim is written: a repeat of the key creates the session the claim named, listed once, and it takes messages", async () => {
    const userId = `c-${randomUUID()}`;
    const [dead, checker] = await Promise.all([victim(), survivor()]);
    const create = (url: string) => call(url, "POST", ROUTES.create, { user_id: userId, template_id: "friendly-assistant" }, { "Idempotency-Key": "create-key" });
    const { write } = await killedAfter(dead, createKeyClaimed(), create);
    const named = (write.data as { session_id?: unknown }).session_id;
    expect(typeof named).toBe("string");
    expect((await raw.ref(`userSessions/${String(named)}`).once("value")).exists()).toBe(false);

    const repeat = await create(checker.url);
    expect(repeat.status).toBe(201);
    expect(repeat.body.session_id).toBe(named);
    const sessions = (await raw.ref("userSessions").orderByChild("user_id").equalTo(userId).once("value")).val() as Record<string, unknown> | null;
    expect(Object.keys(sessions ?? {})).toEqual([named]);
    const entries = (await raw.ref(`userConversations/${userId}`).once("value")).val() as Record<string, unknown> | null;
    expect(Object.keys(entries ?? {})).toEqual([named]);
    expect((await message(String(named), "does it work?")(checker.url)).status).toBe(200);
  }, 30_000);

  it("a message between users killed once it is journaled: a repeat of its key answers it, stored once, and the conversation goes on", async () => {
    const a = new ApiUser(`ca-${randomUUID()}`, harness.api, HOSTING_ROUTES);
    const b = new ApiUser(`cb-${randomUUID()}`, harness.api, HOSTING_ROUTES);
    const id = await a.connectWith(b);
    expect((await a.send(id, "a first word")).status).toBe(201);
    const [dead, checker] = await Promise.all([victim(), survivor()]);
    const TEXT = "a message between users";
    const send = (url: string) => a.on(at(url)).send(id, TEXT, { "Idempotency-Key": "connection-key" });
    await killedAfter(dead, connectionJournaled(id, TEXT), send);
    expect((await raw.ref(`connections/${id}/messages/${positionKey(2)}`).once("value")).exists()).toBe(false);

    expect((await send(checker.url)).status).toBe(201);
    expect((await b.on(at(checker.url)).send(id, `${TEXT}, answered`)).status).toBe(201);
    const read = await b.on(at(checker.url)).read(id);
    const texts = (read.body.messages as { content: string }[]).map((entry) => entry.content);
    expect(texts.filter((content) => content === TEXT)).toHaveLength(1);
    const node = (await raw.ref(`connections/${id}`).once("value")).val() as { state: { message_count: number; pending?: Record<string, unknown> }; messages?: Record<string, unknown> };
    expect(node.state.message_count).toBe(3);
    expect(new Set([...Object.keys(node.messages ?? {}), ...Object.keys(node.state.pending ?? {})]).size).toBe(3);
  }, 30_000);

  it("a commit killed before its copy, then an end killed after its transaction, then the sweep: the session ends with every exchange copied and listed, no claim or partial left, and the key replays", async () => {
    const { sessionId, userId } = await newSession();
    const [streaming, committing, ending, checker] = await Promise.all([victim(), victim(), victim(), survivor()]);
    // A message dies mid-stream: its claim and partial stay behind.
    harness.fake.enqueue({ kind: "stream", chunks: words(20), chunkDelayMs: 20 }, { kind: "stream", chunks: ["one", " two"] });
    await killedAfter(streaming, partialWritten(sessionId), message(sessionId, "second"));
    const lapse = (await stored(sessionId)).state.claims_lapse_at;
    expect(typeof lapse).toBe("number");
    // A keyed one dies once its commit landed, before its copy.
    await killedAfter(committing, journaled(sessionId, "first"), message(sessionId, "first", "k1"));
    expect((await stored(sessionId)).state.message_count).toBe(1);
    // The end dies once its transaction landed, before its closing copy.
    await killedAfter(ending, ended(sessionId), (url) => call(url, "DELETE", ROUTES.end(sessionId)));
    expect((await raw.ref(`userConversations/${userId}/${sessionId}/status`).once("value")).val()).toBe("active");

    const report = await harness.api.runtime.maintain(Number(lapse) + 1);
    expect(report).toMatchObject({ flushed: 1, lapsedClaims: 1 });
    const list = await call(checker.url, "GET", `${ROUTES.list}?user_id=${userId}`);
    const get = await call(checker.url, "GET", `${ROUTES.get(sessionId)}?user_id=${userId}`);
    const repeat = await message(sessionId, "first", "k1")(checker.url);
    const after = await stored(sessionId);
    expect(after.state.status).toBe("ended");
    expect(after.state.message_count).toBe(1);
    expect(await settled(raw.ref(`userSessions/${sessionId}/partials`), (value) => value === null, "the partial replies removed")).toBeNull();
    expect(after.state.requests).toBeUndefined();
    expect(after.state.pending).toBeUndefined();
    expect(Object.keys((await raw.ref(`userSessions/${sessionId}/messages`).once("value")).val() as object)).toHaveLength(2);
    expect((list.body.sessions as unknown[])[0]).toMatchObject({ status: "ended", message_count: 1 });
    expect(get.body.session).toMatchObject({ status: "ended", message_count: 1 });
    expect(repeat.status).toBe(200);
    expect(repeat.body.response).toBe("one two");
  }, 30_000);

  it("a message without a key killed mid-stream: its claim and partial stay while its lease runs, and the sweep after it removes both", async () => {
    const { sessionId } = await newSession();
    const dead = await victim();
    harness.fake.enqueue({ kind: "stream", chunks: words(20), chunkDelayMs: 20 });
    await killedAfter(dead, partialWritten(sessionId), message(sessionId, "dies"));
    const left = await stored(sessionId);
    expect(left.state.message_count).toBe(0);
    const lapse = Number(left.state.claims_lapse_at);

    expect((await harness.api.runtime.maintain(lapse - 1)).lapsedClaims).toBe(0);
    expect(Object.keys((await stored(sessionId)).partials ?? {})).toHaveLength(1);
    expect((await harness.api.runtime.maintain(lapse + 1)).lapsedClaims).toBe(1);
    expect(await settled(raw.ref(`userSessions/${sessionId}/partials`), (value) => value === null, "the partial reply removed")).toBeNull();
    const after = await stored(sessionId);
    expect(after.state.requests).toBeUndefined();
    expect(after.state.claims_lapse_at).toBeUndefined();
  }, 30_000);
});

/** The named points: the write the victim sends last, and what shows it landed. */

function partialWritten(sessionId: string) {
  return {
    name: "the first partial reply written",
    write: (write: SentWrite) => write.path.startsWith(`userSessions/${sessionId}/partials/`),
    landed: (value: unknown) => value !== null,
  };
}

function journaled(sessionId: string, text: string) {
  return {
    name: `the commit of "${text}" journaled`,
    write: (write: SentWrite) => write.path === `userSessions/${sessionId}/state` && pendingHolds(write.data, (entry) => isRecord(entry.user) && entry.user.content === text),
    landed: (value: unknown) => pendingHolds(value, (entry) => isRecord(entry.user) && entry.user.content === text),
  };
}

function copied(sessionId: string) {
  return {
    name: "the exchange copied to the history",
    write: (write: SentWrite) => write.action === "merge" && write.path === `userSessions/${sessionId}` && isRecord(write.data) && `messages/${positionKey(2)}` in write.data,
    landed: (value: unknown) => isRecord(value) && isRecord(value.messages) && positionKey(2) in value.messages,
  };
}

function ended(sessionId: string) {
  return {
    name: "the end's transaction",
    write: (write: SentWrite) => write.path === `userSessions/${sessionId}/state` && isRecord(write.data) && write.data.status === "ended",
    landed: (value: unknown) => isRecord(value) && value.status === "ended",
  };
}

function createKeyClaimed() {
  return {
    name: "the create's key claimed",
    write: (write: SentWrite) => write.path.startsWith("idempotencyKeys/createSession/") && isRecord(write.data),
    landed: (value: unknown) => value !== null,
  };
}

function connectionJournaled(connectionId: string, text: string) {
  return {
    name: "the message between users journaled",
    write: (write: SentWrite) => write.path === `connections/${connectionId}/state` && pendingHolds(write.data, (entry) => entry.content === text),
    landed: (value: unknown) => pendingHolds(value, (entry) => entry.content === text),
  };
}

interface StoredSession {
  state?: StoredState;
  messages?: Record<string, { role: string; content: string }>;
  partials?: Record<string, unknown>;
}

interface StoredState {
  status?: string;
  message_count?: number;
  claims_lapse_at?: number;
  requests?: Record<string, StoredClaim>;
  pending?: Record<string, { user: { content: string }; assistant: { content: string } }>;
}

interface StoredClaim {
  seq?: number;
  flagged?: boolean;
  lease_until?: number;
}

/** A state's claims of running requests: those without the exchange they produced (or a flag). */
function runningClaims(state: StoredState): Record<string, StoredClaim> {
  return Object.fromEntries(Object.entries(state.requests ?? {}).filter(([, claim]) => claim.seq === undefined && claim.flagged !== true));
}

/** Whether a state node (as written or stored) journals an entry that `holds`. */
function pendingHolds(state: unknown, holds: (entry: Record<string, unknown>) => boolean): boolean {
  return isRecord(state) && isRecord(state.pending) && Object.values(state.pending).some((entry) => isRecord(entry) && holds(entry));
}

/** A message's key in the history: its position, 9 digits. */
function positionKey(position: number): string {
  return `m${String(position).padStart(9, "0")}`;
}

/** The API of the process at `url`, for an ApiUser. */
function at(url: string): ApiCaller {
  return { call: (method, path, body, headers) => call(url, method, path, body, headers) };
}

function words(count: number): string[] {
  return Array.from({ length: count }, (_, i) => ` w${i}`);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null;
}

async function kill(victim: LocalProcess): Promise<void> {
  if (victim.child.exitCode !== null || victim.child.signalCode !== null) return;
  const exited = new Promise<void>((done) => victim.child.once("exit", () => { done(); }));
  victim.child.kill("SIGKILL");
  await exited;
}

/** A write the victim sent over the database's wire protocol: a put (a transaction's too) or a merge (an update). */
interface SentWrite {
  readonly action: "put" | "merge";
  /** Without its leading slash, as a Reference takes it. */
  readonly path: string;
  readonly data: unknown;
}

const wireWrite = z.object({ t: z.literal("d"), d: z.object({ a: z.enum(["p", "m"]), b: z.object({ p: z.string(), d: z.unknown() }) }) });

/**
 * A victim's link to the database: a TCP proxy that reads the WebSocket messages the victim sends
 * (the client's frames, masked; neither the stand-in nor the emulator compresses them).
 * `severAfter(match)`: the first write `match` takes goes on to the database, then the link is dead
 * both ways (nothing is forwarded or closed): nothing the victim sends after it lands, and no
 * answer reaches it, as if it had died right there, however soon it would have sent its next write.
 */
class SeverableLink {
  private severed = false;
  private watch: { readonly match: (write: SentWrite) => boolean; readonly found: (write: SentWrite) => void } | undefined;
  private readonly sockets = new Set<Socket>();

  private constructor(private readonly server: Server) {}

  static async start(databaseHost: string): Promise<SeverableLink> {
    const target = parseHost(databaseHost);
    const link = new SeverableLink(createServer((client) => { link.carry(client, connect(target.port, target.host)); }));
    await new Promise<void>((resolve) => link.server.listen(0, "127.0.0.1", resolve));
    return link;
  }

  /** host:port, as FIREBASE_DATABASE_EMULATOR_HOST takes it. */
  get address(): string {
    return `127.0.0.1:${String((this.server.address() as AddressInfo).port)}`;
  }

  /** Resolves with the first write `match` takes once it is passed on; rejects, naming `what`, when none is sent within SETTLE_MS. */
  severAfter(match: (write: SentWrite) => boolean, what: string): Promise<SentWrite> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.watch = undefined;
        reject(new Error(`not sent within ${String(SETTLE_MS)} ms: ${what}`));
      }, SETTLE_MS);
      timer.unref();
      this.watch = {
        match,
        found: (write) => {
          clearTimeout(timer);
          resolve(write);
        },
      };
    });
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => { resolve(); }));
  }

  private carry(client: Socket, upstream: Socket): void {
    for (const socket of [client, upstream]) {
      socket.setNoDelay(true);
      this.sockets.add(socket);
      socket.on("error", () => socket.destroy());
    }
    const frames = new ClientFrames();
    client.on("data", (chunk: Buffer) => {
      if (this.severed) return;
      for (const piece of frames.push(chunk)) {
        upstream.write(piece.bytes);
        const parsed = piece.message === undefined ? undefined : wireWrite.safeParse(JSON.parse(piece.message));
        if (!parsed?.success) continue;
        const { a, b } = parsed.data.d;
        const write: SentWrite = { action: a === "p" ? "put" : "merge", path: b.p.replace(/^\//, ""), data: b.d };
        if (this.watch?.match(write) !== true) continue;
        this.severed = true;
        this.watch.found(write);
        this.watch = undefined;
        return;
      }
    });
    upstream.on("data", (chunk: Buffer) => {
      if (!this.severed) client.write(chunk);
    });
    // The victim gone, what was forwarded is flushed before the database's side closes.
    client.on("close", () => upstream.end());
    upstream.on("close", () => client.destroy());
  }
}

/**
 * The bytes a WebSocket client sends, cut into its HTTP handshake and then whole frames, each with
 * the Firebase message it carries (a message longer than 16,384 characters comes as its frame count,
 * then the frames of its parts).
 */
class ClientFrames {
  private buffer = Buffer.alloc(0);
  private handshaken = false;
  private parts: { expected: number; texts: string[] } | undefined;

  push(chunk: Buffer): { bytes: Buffer; message?: string }[] {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    const pieces: { bytes: Buffer; message?: string }[] = [];
    if (!this.handshaken) {
      const end = this.buffer.indexOf("\r\n\r\n");
      if (end < 0) return pieces;
      this.handshaken = true;
      pieces.push({ bytes: this.take(end + 4) });
    }
    for (;;) {
      const frame = frameAt(this.buffer);
      if (frame === undefined) return pieces;
      const bytes = this.take(frame.size);
      const text = frame.opcode === 1 ? frame.payload.toString("utf8") : undefined;
      const message = text === undefined ? undefined : this.message(text);
      pieces.push(message === undefined ? { bytes } : { bytes, message });
    }
  }

  private message(text: string): string | undefined {
    if (this.parts === undefined && /^\d+$/.test(text)) {
      this.parts = { expected: Number(text), texts: [] };
      return undefined;
    }
    if (this.parts === undefined) return text;
    this.parts.texts.push(text);
    if (this.parts.texts.length < this.parts.expected) return undefined;
    const whole = this.parts.texts.join("");
    this.parts = undefined;
    return whole;
  }

  private take(size: number): Buffer {
    const taken = this.buffer.subarray(0, size);
    this.buffer = this.buffer.subarray(size);
    return taken;
  }
}

/** The whole frame at the start of `buffer` (its size, opcode and payload, unmasked), or undefined until more bytes come. */
function frameAt(buffer: Buffer): { size: number; opcode: number; payload: Buffer } | undefined {
  if (buffer.length < 2) return undefined;
  const masked = (buffer.readUInt8(1) & 0x80) !== 0;
  let length = buffer.readUInt8(1) & 0x7f;
  let offset = 2;
  if (length === 126) {
    if (buffer.length < 4) return undefined;
    length = buffer.readUInt16BE(2);
    offset = 4;
  } else if (length === 127) {
    if (buffer.length < 10) return undefined;
    length = Number(buffer.readBigUInt64BE(2));
    offset = 10;
  }
  const mask = masked ? buffer.subarray(offset, offset + 4) : undefined;
  if (mask) offset += 4;
  if (buffer.length < offset + length) return undefined;
  const payload = Buffer.from(buffer.subarray(offset, offset + length));
  if (mask) for (let i = 0; i < payload.length; i += 1) payload.writeUInt8(payload.readUInt8(i) ^ mask.readUInt8(i % 4), i);
  return { size: offset + length, opcode: buffer.readUInt8(0) & 0x0f, payload };
}
