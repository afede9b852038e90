import { claimSlot } from "../../src/session/message/slot-claim";
import type { RequestClaim } from "../../src/session/session-rules";
import { MemoryStore } from "../../src/store/memory-store";
import type { RequestEntry, SessionMeta, SessionState } from "../../src/store/records";
import { POLICY } from "../support/fixtures";

const T = Date.parse("2031-06-01T10:00:00Z");
const WAIT_MS = 2_000;
const LEASE_MS = 24_000;
const SESSION = "s-slot";
const FIRST = { owner: "first-request", fingerprint: "fp", lease_until: T + LEASE_MS } as const;
const META: SessionMeta = { user_id: "u", template_id: "t", template_name: "T", system_prompt: "", settings: { model: "m", temperature: 0, max_tokens: 1, presence_penalty: 0, frequency_penalty: 0, context_window: 1 }, created_at: T };

/**
 * A repeat's wait: the first request holds the key, and `atLastPoll` changes its entry when the
 * repeat's poll comes past the wait (the clock moved on), as another instance would meanwhile.
 */
async function repeatWaiting(atLastPoll: (entry: RequestEntry) => RequestEntry | undefined) {
  let now = T;
  const store = new MemoryStore();
  const state: SessionState = { status: "active", message_count: 0, last_activity: T, idle_since: T, requests: { h: FIRST } };
  await store.createSession({ id: SESSION, meta: META, state });
  const read = store.readSessionState.bind(store);
  store.readSessionState = async (id) => {
    now += WAIT_MS + 500;
    await store.updateState(id, (current) => {
      const { h, ...others } = current.requests ?? {};
      const next = h === undefined ? undefined : atLastPoll(h);
      return { outcome: undefined, next: { ...current, requests: next === undefined ? others : { ...others, h: next } } };
    });
    return read(id);
  };
  const repeat: RequestClaim = { hash: "h", fingerprint: "fp", owner: "repeat", remember: true };
  const context = { store, clock: () => now, policy: POLICY, keyLeaseMs: LEASE_MS, keyWaitMs: WAIT_MS, claimWaitMs: WAIT_MS, keyPollMs: 1 };
  const outcome = await claimSlot(context, SESSION, META.created_at, repeat, T);
  return { outcome, entry: (await read(SESSION))?.requests?.h, now };
}

describe("claimSlot at the end of a repeat's wait", () => {
  it("replays the first request's exchange stored at the last poll", async () => {
    const { outcome } = await repeatWaiting((entry) => ({ ...entry, seq: 1 }));
    expect(outcome).toEqual({ kind: "done", seq: 1 });
  });

  it("answers in progress with 1 s when the key was freed at the last poll, and claims nothing past the wait", async () => {
    const { outcome, entry } = await repeatWaiting(() => undefined);
    expect(outcome).toEqual({ kind: "in-progress", retryAfterMs: 1_000 });
    expect(entry).toBeUndefined();
  });

  it("answers in progress with the lease left as the last poll found it", async () => {
    const renewed = T + 10_000;
    const { outcome, now } = await repeatWaiting((entry) => ({ ...entry, lease_until: renewed }));
    expect(outcome).toEqual({ kind: "in-progress", retryAfterMs: renewed - now });
  });
});

/**
 * A new message at a session of two exchanges that holds one, beside a claim of another request
 * still running (`RUNNING`): each poll of the wait moves the clock on by `POLL_STEP_MS`, and
 * `atPoll` changes the state as another instance would meanwhile (its n-th poll, from 1).
 */
describe("claimSlot while running claims alone fill the session's last exchanges", () => {
  const POLL_STEP_MS = 300;
  const CLAIM_WAIT_MS = 1_000;
  const TTL_MS = 3_600_000;
  const RUNNING_UNTIL = T + LEASE_MS;
  const RUNNING: RequestEntry = { fingerprint: "", owner: "other-request", lease_until: RUNNING_UNTIL };

  async function newMessage(atPoll: (poll: number, state: SessionState) => SessionState | undefined, stored = 1) {
    let now = T;
    let polls = 0;
    const store = new MemoryStore();
    await store.createSession({ id: SESSION, meta: META, state: { status: "active", message_count: stored, last_activity: T, idle_since: T, requests: { "r-other": RUNNING } } });
    const read = store.readSessionState.bind(store);
    store.readSessionState = async (id) => {
      polls += 1;
      now += POLL_STEP_MS;
      const poll = polls;
      await store.updateState(id, (current) => ({ outcome: undefined, next: atPoll(poll, current) ?? current }));
      return read(id);
    };
    const claim: RequestClaim = { hash: "r-new", fingerprint: "", owner: "new", remember: false };
    const context = { store, clock: () => now, policy: { idleTtlMs: TTL_MS, maxExchanges: 2 }, keyLeaseMs: LEASE_MS, keyWaitMs: WAIT_MS, claimWaitMs: CLAIM_WAIT_MS, keyPollMs: 1 };
    const outcome = await claimSlot(context, SESSION, META.created_at, claim, T);
    return { outcome, polls, now, state: await read(SESSION) };
  }

  it("claims the slot once the running claim is given back during the wait (a replay's, a failed message's)", async () => {
    const { outcome, polls, state } = await newMessage((poll, current) => (poll === 2 ? { ...current, requests: {} } : undefined));
    expect(outcome).toEqual({ kind: "claimed", exchangeCount: 1, alone: true });
    expect(polls).toBe(2);
    expect(Object.keys(state?.requests ?? {})).toEqual(["r-new"]);
  });

  it("refuses as soon as the running claim's exchange is stored: the session is full, until it expires", async () => {
    const { outcome, polls, now } = await newMessage((poll, current) => (poll === 1 ? { ...current, message_count: 2, last_activity: T + 100, requests: {} } : undefined));
    expect(outcome).toEqual({ kind: "limit", retryAfterMs: T + 100 + TTL_MS + 1 - now });
    expect(polls).toBe(1);
  });

  it("refuses once the wait's bound passes with the running claim still held, with Retry-After as of then", async () => {
    const { outcome, polls, now, state } = await newMessage(() => undefined);
    // Polls at +300, +600, +900, +1,200 ms: the last one past the 1 s bound.
    expect(polls).toBe(4);
    expect(outcome).toEqual({ kind: "limit", retryAfterMs: RUNNING_UNTIL + TTL_MS + 1 - now, running: true });
    expect(Object.keys(state?.requests ?? {})).toEqual(["r-other"]);
  });

  it("waits for nothing when the session's stored exchanges reach the limit", async () => {
    const { outcome, polls } = await newMessage(() => undefined, 2);
    expect(outcome).toEqual({ kind: "limit", retryAfterMs: RUNNING_UNTIL + TTL_MS + 1 - T });
    expect(polls).toBe(0);
  });
});

/**
 * A session created again under its id (an erased id, by a keyed create's retry: its state carries
 * the new `created_at`): a claim made for the earlier creation, from fields an instance remembered,
 * takes nothing of it, whatever its exchange count.
 */
describe("claimSlot for a creation of the session other than the one stored under its id", () => {
  async function claimOn(state: SessionState, createdAt: number) {
    const store = new MemoryStore();
    await store.createSession({ id: SESSION, meta: { ...META, created_at: state.created_at ?? T }, state });
    const context = { store, clock: () => T, policy: POLICY, keyLeaseMs: LEASE_MS, keyWaitMs: WAIT_MS, claimWaitMs: WAIT_MS, keyPollMs: 1 };
    const claim: RequestClaim = { hash: "h", fingerprint: "fp", owner: "new", remember: true };
    return { outcome: await claimSlot(context, SESSION, createdAt, claim, T), state: await store.readSessionState(SESSION) };
  }

  it("claims nothing and answers renewed, even where the key is done in the stored session", async () => {
    const stored: SessionState = { status: "active", message_count: 1, last_activity: T, idle_since: T, created_at: T + 5, requests: { h: { fingerprint: "fp", seq: 1 } } };
    const { outcome, state } = await claimOn(stored, T);
    expect(outcome).toEqual({ kind: "renewed" });
    expect(state).toEqual(stored);
  });

  it("claims as before on its own creation, and on a state an older version wrote (no created_at: cannot be told)", async () => {
    const own = await claimOn({ status: "active", message_count: 1, last_activity: T, idle_since: T, created_at: T }, T);
    const older = await claimOn({ status: "active", message_count: 1, last_activity: T, idle_since: T }, T - 5);
    expect([own.outcome, older.outcome]).toEqual([{ kind: "claimed", exchangeCount: 1, alone: true }, { kind: "claimed", exchangeCount: 1, alone: true }]);
  });
});
