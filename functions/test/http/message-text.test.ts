import { ConfigError } from "../../src/config";
import { largestMessageBodyBytes } from "../../src/http/message-body";
import { HOSTING_ROUTES } from "../support/connection-api";
import { createSession, describeEachStore, ROUTES, startHarness, type Harness } from "../support/http-harness";
import { isRecord, messageKey, StoredView } from "../support/stored-view";

/**
 * A message's text, and a model's reply, reach the database exactly as sent, and go to the model
 * unchanged from a cold instance; or they are refused. Checked at the HTTP level and on what the
 * database holds, read through a firebase-admin app of the test's own (a fresh connection and
 * cache, so nothing the instances cached hides what the server stores).
 */

/**
 * The Firebase client (firebase-admin's database SDK) sends every message longer than this many
 * UTF-16 units of JSON in frames of this size, each encoded as UTF-8 on its own: a surrogate pair
 * cut by a frame boundary arrives as two U+FFFD. (WEBSOCKET_MAX_FRAME_SIZE in @firebase/database.)
 */
const FRAME_UNITS = 16_384;

/**
 * UTF-16 units of JSON the client writes before a text in the same wire message (the envelope
 * `{"t":"d","d":{"r":N,"a":...,"b":{"p":"/userSessions/<id>/messages","d":{...` with the keys and
 * fields before it). At least the session's path; at most this, generously: a short message
 * before a reply, a few fields and timestamps, a journal key.
 */
const ENVELOPE_UNITS = { min: "/userSessions//state".length + 36, max: 400 };

/** Control characters that JSON writes as `\u00XX`: six units each. */
const CONTROLS = Array.from({ length: 32 }, (_, code) => String.fromCharCode(code)).filter((char) => JSON.stringify(char).length === 8);
/** Characters outside the BMP: each a surrogate pair, two units, written as they are in JSON. */
const EMOJI = ["😀", "🎉", "🚀", "🧪", "🦊", "🌍"];

function jsonOf(text: string): string {
  return JSON.stringify(text).slice(1, -1);
}

/**
 * A text of `units` UTF-16 units at most: `shift` letters, then control characters up to just
 * before the first frame boundary whatever the envelope, then emoji to the end. Its JSON exceeds a
 * frame, and the emoji run covers the first boundary (and, when long enough, the next ones) for
 * any envelope in ENVELOPE_UNITS: a boundary then cuts a pair exactly when the emoji run starts
 * an odd number of units before it, which `shift` decides (see `pairCutAt`).
 */
function straddling(units: number, shift: number): string {
  const controls = Math.floor((FRAME_UNITS - ENVELOPE_UNITS.max - shift) / 6);
  const emoji = Math.floor((units - shift - controls) / 2);
  const text =
    "x".repeat(shift) +
    Array.from({ length: controls }, (_, i) => CONTROLS[i % CONTROLS.length]!).join("") +
    Array.from({ length: emoji }, (_, i) => EMOJI[i % EMOJI.length]!).join("");
  if (ENVELOPE_UNITS.min + jsonOf(text).length <= FRAME_UNITS) throw new Error(`${units} units are too few to straddle a frame boundary`);
  return text;
}

/** Whether a frame boundary cuts a surrogate pair of a text whose JSON is `json` and starts `envelope` units into the wire message. */
function pairCutAt(json: string, envelope: number): boolean {
  for (let boundary = FRAME_UNITS; boundary < envelope + json.length; boundary += FRAME_UNITS) {
    const at = boundary - envelope;
    if (at > 0 && /[\uD800-\uDBFF]/.test(json[at - 1]!) && /[\uDC00-\uDFFF]/.test(json[at]!)) return true;
  }
  return false;
}

/**
 * Four texts of at most `units` units that differ by one leading letter each, sent one after
 * another. Their wire messages differ only in the request number, whose digit count grows at
 * most once over a few messages: each text's envelope is one common length, or that length plus
 * one from some text on. Checked here for every such case with every envelope in ENVELOPE_UNITS,
 * not assumed: a frame boundary then cuts a surrogate pair of at least one of the four texts.
 */
function straddlingSet(units: number): string[] {
  const texts = [0, 1, 2, 3].map((shift) => straddling(units, shift));
  const jsons = texts.map(jsonOf);
  for (const text of texts) expect(text.length).toBeLessThanOrEqual(units);
  for (const json of jsons) expect(json.length).toBeGreaterThan(FRAME_UNITS);
  const uncovered: string[] = [];
  for (let envelope = ENVELOPE_UNITS.min; envelope <= ENVELOPE_UNITS.max; envelope += 1) {
    for (let longerFrom = 0; longerFrom <= jsons.length; longerFrom += 1) {
      const cut = jsons.filter((json, i) => pairCutAt(json, envelope + (i >= longerFrom ? 1 : 0)));
      if (cut.length === 0) uncovered.push(`envelope ${envelope}, one longer from text ${longerFrom}`);
    }
  }
  expect(uncovered).toEqual([]);
  return texts;
}

/** The history a model request carried: everything between the system prompt and the new message. */
function historySent(harness: Harness): { role: string; content: string }[] {
  const request = harness.fake.requests.at(-1);
  if (!request) throw new Error("no model request was made");
  return request.body.messages.slice(1, -1).map(({ role, content }) => ({ role, content }));
}

/** Describes what differs between stored and expected texts, so a failure names the damage. */
function damage(stored: Record<string, unknown>, expected: readonly { role: string; content: string }[]): string[] {
  return expected.flatMap((message, i) => {
    const key = messageKey(i + 1);
    const value = stored[key];
    const content = isRecord(value) && typeof value.content === "string" ? value.content : undefined;
    if (content === message.content) return [];
    if (content === undefined) return [`${key}: missing`];
    const replaced = content.match(/\uFFFD/g)?.length ?? 0;
    return [`${key} (${message.role}): ${content.length} units stored for ${message.content.length} sent, ${replaced} U+FFFD`];
  });
}

/**
 * The session's `messages` read back from the database hold exactly `expected`, and a cold
 * instance (no cache: it reads the history from the database) sends exactly `expected` to the model.
 */
async function expectStoredAndSentUnchanged(harness: Harness, view: StoredView, sessionId: string, expected: readonly { role: string; content: string }[]) {
  const stored = await view.messages(sessionId, expected.length);
  const cold = await harness.instance();
  harness.fake.reset();
  expect((await cold.call("POST", ROUTES.message(sessionId), { message: "and now?" })).status).toBe(200);
  const sent = Object.fromEntries(historySent(harness).map((message, i) => [messageKey(i + 1), message]));
  expect({ stored: damage(stored, expected), sentByColdInstance: damage(sent, expected) }).toEqual({ stored: [], sentByColdInstance: [] });
  expect(historySent(harness)).toEqual(expected);
}

describeEachStore("texts whose writes are split into frames on the wire", (kind) => {
  const configurations: [string, Record<string, string>][] = [
    ["at the default MAX_MESSAGE_CHARS", {}],
    // Room for the body: control characters take six bytes in the request's JSON, emoji four. No
    // daily token limit: the fake reports a quarter token a character, under the floor a true count
    // of such text keeps (docs/tokens.md), so each call is charged its estimate, which 200,000 a
    // day does not hold for prompts of 20,000-character messages.
    ["at MAX_MESSAGE_CHARS 20000", { MAX_MESSAGE_CHARS: "20000", MAX_BODY_BYTES: "131072", USER_TOKENS_PER_DAY: "0" }],
  ];
  describe.each(configurations)("%s", (_name, env) => {
    let harness: Harness;
    let view: StoredView;

    beforeAll(async () => {
      harness = await startHarness({ store: kind, env });
      view = new StoredView(harness);
    });
    afterAll(async () => {
      await view.close();
      await harness.close();
    });

    it("stores user messages of control characters and emoji byte-identical, and a cold instance sends them to the model unchanged", async () => {
      const limit = harness.api.runtime.config.maxMessageChars;
      const texts = straddlingSet(limit);
      const id = await createSession(harness.api);
      const expected: { role: string; content: string }[] = [];
      for (const [i, text] of texts.entries()) {
        harness.fake.enqueue({ kind: "reply", text: `ok ${i + 1}` });
        const answer = await harness.api.call("POST", ROUTES.message(id), { message: text });
        expect(answer.status).toBe(200);
        expect(answer.body).toMatchObject({ success: true, response: `ok ${i + 1}`, message_count: i + 1 });
        expected.push({ role: "user", content: text }, { role: "assistant", content: `ok ${i + 1}` });
      }

      await expectStoredAndSentUnchanged(harness, view, id, expected);
    });

    it("stores long model replies of control characters and emoji byte-identical, and a cold instance sends them to the model unchanged", async () => {
      // A template that allows long replies; the fake model writes them.
      await harness.api.store.seedTemplates({
        "long-replies": { name: "Long Replies", personalityPrompt: "You answer at length.", max_tokens: 16_000, context_window: 10 },
      });
      const replies = straddlingSet(Math.max(8_000, harness.api.runtime.config.maxMessageChars));
      const id = await createSession(harness.api, "long-replies");
      const expected: { role: string; content: string }[] = [];
      for (const [i, reply] of replies.entries()) {
        harness.fake.enqueue({ kind: "reply", text: reply });
        const answer = await harness.api.call("POST", ROUTES.message(id), { message: `tell me more ${i + 1}` });
        expect(answer.status).toBe(200);
        expect(answer.body.response).toBe(reply);
        expected.push({ role: "user", content: `tell me more ${i + 1}` }, { role: "assistant", content: reply });
      }

      await expectStoredAndSentUnchanged(harness, view, id, expected);
    });
  });
});

/**
 * Found by fuzzing: a message holding a lone surrogate (a valid JSON escape such as "\ud800",
 * but not Unicode text) used to be stored. firebase-admin hashes such a string wrongly when it
 * transacts on the node that holds it, so on the Realtime Database the damage outlived the
 * request. Now it is refused with 400. Each case gets an instance of its own.
 */
describeEachStore("a message with a lone surrogate", (kind) => {
  let harness: Harness;
  beforeEach(async () => {
    // A short database deadline: the failing calls wait it out.
    harness = await startHarness({ store: kind, env: { DB_TIMEOUT_MS: "1000" } });
  });
  afterEach(async () => harness.close());

  const sendJson = (id: string, json: string) => harness.api.call("POST", ROUTES.message(id), json, { "content-type": "application/json" });

  // Was (RTDB): after {"message":"\ud800x"} every transaction on the session's state failed (maxretry): 503 for good.
  it("refuses it and leaves the session usable", async () => {
    const id = await createSession(harness.api);
    const refused = await sendJson(id, '{"message":"\\ud800x"}');
    expect(refused.status).toBe(400);
    expect(refused.body.error?.details).toEqual([{ field: "message", message: "must be valid Unicode text (no lone surrogates)" }]);
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "after" })).status).toBe(200);
    expect((await harness.api.call("DELETE", ROUTES.end(id))).status).toBe(200);
  });

  // Was (RTDB): after {"message":"x\ud800"} firebase-admin asserted "Surrogate pair missing trail surrogate" in the instance's transactions: 500s.
  it("refuses it and leaves the instance usable", async () => {
    const id = await createSession(harness.api);
    expect((await sendJson(id, '{"message":"x\\ud800"}')).status).toBe(400);
    expect((await harness.api.call("POST", ROUTES.create, { user_id: "u", template_id: "friendly-assistant" })).status).toBe(201);
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "after" })).status).toBe(200);
  });
});

/**
 * MAX_MESSAGE_CHARS is carried by MAX_BODY_BYTES or refused at start: a message the config accepts
 * is never answered 413 PAYLOAD_TOO_LARGE for its size (the bodies it can travel in are counted in
 * test/unit/config.test.ts).
 */
describe("a message of MAX_MESSAGE_CHARS against MAX_BODY_BYTES", () => {
  it("refuses to start with MAX_MESSAGE_CHARS raised alone past what the default MAX_BODY_BYTES carries, naming both and the bytes it needs", async () => {
    const started = startHarness({ store: "memory", env: { MAX_MESSAGE_CHARS: "40000", USER_TOKENS_PER_DAY: "0" } });
    await expect(started).rejects.toThrow(ConfigError);
    await expect(started).rejects.toThrow(/^MAX_BODY_BYTES \(32768\) is too small for MAX_MESSAGE_CHARS \(40000\).*raise MAX_BODY_BYTES to at least 242158/);
  });

  it("accepts a message of MAX_MESSAGE_CHARS control characters, six bytes each in its JSON, at the least MAX_BODY_BYTES it starts with", async () => {
    const chars = 40_000;
    const harness = await startHarness({ store: "memory", env: { MAX_MESSAGE_CHARS: String(chars), MAX_BODY_BYTES: String(largestMessageBodyBytes(chars)), USER_TOKENS_PER_DAY: "0" } });
    try {
      const id = await createSession(harness.api);
      const message = "\u0001".repeat(chars);
      expect(JSON.stringify({ message }).length).toBeGreaterThan(6 * chars);
      harness.fake.enqueue({ kind: "reply", text: "ok" });
      const answer = await harness.api.call("POST", ROUTES.message(id), { message });
      expect({ status: answer.status, code: answer.body.error?.code }).toEqual({ status: 200, code: undefined });
      const tooLong = await harness.api.call("POST", ROUTES.message(id), { message: "a".repeat(chars + 1) });
      expect({ status: tooLong.status, code: tooLong.body.error?.code }).toEqual({ status: 400, code: "INVALID_REQUEST" });
    } finally {
      await harness.close();
    }
  });

  it("accepts a user-to-user message of MAX_MESSAGE_CHARS units from a user whose id is 128 emoji, every unit escaped, at the least MAX_BODY_BYTES it starts with", async () => {
    // Long enough that the message, not a device registration (LARGEST_DEVICE_BODY_BYTES), sets the least MAX_BODY_BYTES.
    const chars = 2000;
    const harness = await startHarness({ store: "memory", env: { MAX_MESSAGE_CHARS: String(chars), MAX_BODY_BYTES: String(largestMessageBodyBytes(chars)) } });
    try {
      // 128 characters as zod counts them (code points), 256 UTF-16 units.
      const sender = "\u{1F600}".repeat(128);
      const asked = await harness.api.call("POST", HOSTING_ROUTES.connections, { user_id: sender, other_user_id: "ben" });
      expect(asked.status).toBe(201);
      const id = (asked.body.connection as { connection_id: string }).connection_id;
      expect((await harness.api.call("POST", HOSTING_ROUTES.accept(id), { user_id: "ben" })).status).toBe(200);
      // As an ASCII-only encoder writes it (Python's json.dumps by default): every non-ASCII UTF-16 unit as \uXXXX.
      const body = JSON.stringify({ user_id: sender, message: "\u00e9".repeat(chars) }).replace(/[\u0080-\uffff]/g, (unit) => `\\u${unit.charCodeAt(0).toString(16).padStart(4, "0")}`);
      const sent = await harness.api.call("POST", HOSTING_ROUTES.messages(id), body, { "content-type": "application/json" });
      expect({ status: sent.status, code: sent.body.error?.code }).toEqual({ status: 201, code: undefined });
    } finally {
      await harness.close();
    }
  });
});
