import { randomUUID } from "node:crypto";
import { claimRequest, type RequestClaim } from "../../src/session/session-rules";
import { MemoryStore } from "../../src/store/memory-store";
import { RtdbStore } from "../../src/store/rtdb/rtdb-store";
import type { PartialReply } from "../../src/store/records";
import { POLICY } from "../support/fixtures";
import { createSession, describeEachStore, ROUTES, startHarness, type Harness } from "../support/http-harness";
import { RtdbInstances } from "../support/rtdb";

const T = Date.parse("2026-12-01T12:00:00Z");

/**
 * A request that dies mid-reply (kill -9, a crashed instance) leaves its claim in the session's
 * state and its partial reply beside it. Whoever commits next in that session, or the sweep,
 * removes the partial once the claim's lease has lapsed: a client resuming the conversation must
 * not show a reply that never finishes.
 */
describeEachStore("partial replies left by requests that died", (kind) => {
  let harness: Harness;
  let now = T;
  let reader: RtdbInstances | undefined;

  beforeAll(async () => {
    harness = await startHarness({ store: kind, clock: () => now });
    if (harness.namespace) reader = new RtdbInstances(harness.namespace);
  });
  afterAll(async () => {
    await reader?.close();
    await harness.close();
  });
  beforeEach(() => {
    harness.fake.reset();
    now = T;
  });

  /** The database side of a commit is sent just after it answers: wait for what this instance sent to land. */
  async function copiesLanded(): Promise<void> {
    const { store } = harness.api;
    if (store instanceof RtdbStore) await store.copiesSettled();
  }

  async function partials(sessionId: string): Promise<Record<string, PartialReply>> {
    const { store } = harness.api;
    if (store instanceof MemoryStore) return store.readPartials(sessionId);
    const snapshot = await reader!.database().ref(`userSessions/${sessionId}/partials`).once("value");
    return (snapshot.val() ?? {}) as Record<string, PartialReply>;
  }

  /** What a request that died after its first delta leaves: its claim (unkeyed or keyed) and its partial. */
  async function deadRequest(sessionId: string, idempotencyKey?: string): Promise<{ owner: string; leaseUntil: number }> {
    const owner = randomUUID();
    const claim: RequestClaim = idempotencyKey === undefined
      ? { hash: `r-${owner}`, fingerprint: "", owner, remember: false }
      : { hash: `k-${idempotencyKey}`, fingerprint: "f", owner, remember: true };
    const { leaseMs } = harness.api.runtime.budget;
    const claimed = await harness.api.store.updateStateReadingKey(sessionId, claimRequest(claim, now, leaseMs, POLICY), undefined);
    expect(claimed).toMatchObject({ found: true, outcome: { kind: "claimed" } });
    await harness.api.store.writePartial(sessionId, owner, { text: "Once upon a", seq_after: 0, updated_at: now });
    return { owner, leaseUntil: now + leaseMs };
  }

  it("is removed by the session's next commit once the dead request's lease has lapsed, and not before", async () => {
    const id = await createSession(harness.api, "friendly-assistant", `user-${randomUUID()}`);
    const dead = await deadRequest(id);
    // Within the lease, the request may still be alive: its partial stays.
    now = dead.leaseUntil - 1;
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "first" })).status).toBe(200);
    expect(Object.keys(await partials(id))).toEqual([dead.owner]);
    now = dead.leaseUntil + 1;
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "second" })).status).toBe(200);
    await copiesLanded();
    expect(await partials(id)).toEqual({});
  });

  it("is removed by the sweep when no message follows", async () => {
    const id = await createSession(harness.api, "friendly-assistant", `user-${randomUUID()}`);
    const dead = await deadRequest(id);
    const early = await harness.api.runtime.maintain(dead.leaseUntil - 1);
    expect(early.lapsedClaims).toBe(0);
    expect(Object.keys(await partials(id))).toEqual([dead.owner]);
    const report = await harness.api.runtime.maintain(dead.leaseUntil + 1);
    expect(report.lapsedClaims).toBe(1);
    expect(await partials(id)).toEqual({});
    // The session itself is untouched: still active, nothing stored, the slot free again.
    now = dead.leaseUntil + 2;
    const answer = await harness.api.call("POST", ROUTES.message(id), { message: "after the sweep" });
    expect(answer.body.message_count).toBe(1);
  });

  it("is removed when a retry with the same Idempotency-Key takes the dead request's claim over", async () => {
    const id = await createSession(harness.api, "friendly-assistant", `user-${randomUUID()}`);
    const dead = await deadRequest(id, "retry-me");
    now = dead.leaseUntil + 1;
    // The retry's claim replaces the lapsed one (same key hash): the dead owner's partial goes.
    const claim: RequestClaim = { hash: "k-retry-me", fingerprint: "f", owner: randomUUID(), remember: true };
    await harness.api.store.updateStateReadingKey(id, claimRequest(claim, now, harness.api.runtime.budget.leaseMs, POLICY), undefined);
    await copiesLanded();
    expect(await partials(id)).toEqual({});
  });
});
