import { claimSlot } from "../../src/session/message/slot-claim";
import type { RequestClaim } from "../../src/session/session-rules";
import { MemoryStore } from "../../src/store/memory-store";
import type { RequestEntry, SessionState } from "../../src/store/records";
import { POLICY } from "../support/fixtures";

const T = Date.parse("2031-06-01T10:00:00Z");
const WAIT_MS = 2_000;
const LEASE_MS = 24_000;
const SESSION = "s-slot";
const FIRST = { owner: "first-request", fingerprint: "fp", lease_until: T + LEASE_MS } as const;

/**
 * A repeat's wait: the first request holds the key, and `atLastPoll` changes its entry when the
 * repeat's poll comes past the wait (the clock moved on), as another instance would meanwhile.
 */
async function repeatWaiting(atLastPoll: (entry: RequestEntry) => RequestEntry | undefined) {
  let now = T;
  const store = new MemoryStore();
  const state: SessionState = { status: "active", message_count: 0, last_activity: T, idle_since: T, requests: { h: FIRST } };
  await store.createSession({ id: SESSION, meta: { user_id: "u", template_id: "t", template_name: "T", system_prompt: "", settings: { model: "m", temperature: 0, max_tokens: 1, presence_penalty: 0, frequency_penalty: 0, context_window: 1 }, created_at: T }, state });
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
  const context = { store, clock: () => now, policy: POLICY, keyLeaseMs: LEASE_MS, keyWaitMs: WAIT_MS, keyPollMs: 1 };
  const outcome = await claimSlot(context, SESSION, repeat, T);
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
