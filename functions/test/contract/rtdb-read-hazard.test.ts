import { recentMessages } from "../support/recent-messages";
import { randomUUID } from "node:crypto";
import { appendRule, claimRequest, type RequestClaim } from "../../src/session/session-rules";
import type { SessionState } from "../../src/store/records";
import { RtdbStore } from "../../src/store/rtdb/rtdb-store";
import { exchange, newSession, POLICY } from "../support/fixtures";
import { describeWithRtdb, freshNamespace, RtdbInstances } from "../support/rtdb";
import { describeUnless } from "../support/visible-skip";
import { standInSkipReason, startStandIn, type StandIn } from "../support/stand-in";

/**
 * Guards the reason `RtdbStore` reads with `once("value")` and not `get()`. In @firebase/database
 * (1.1.5, firebase-admin 14.5) a `get()` sent while the client holds no complete copy of the node
 * applies its answer in a promise job. When a newer push for a listener on the same node (the
 * store's hold on the session's `state`, or a transaction's) arrives in the same batch of socket
 * data, the push is applied first and the get's older answer then overwrites it. The server takes
 * the client to be up to date and sends nothing more, so a transaction on the node reruns on the
 * stale copy, refused for a hash mismatch each time, until it fails with "maxretry"; reads served
 * from that copy are stale too. `once("value")` is answered through the listen, in order.
 *
 * The workload opens that window as the service can: an instance (A) gets a message for a session
 * it does not listen to yet, and claims a slot beside cold reads of the state and the history,
 * while another instance (B) writes the session once and then stays quiet; then A appends beside
 * more reads, and touches the state while B appends. With `get()` in `readOnce()`
 * (src/store/rtdb/transactions.ts), a good part of the claims fail with "maxretry" in every run
 * (both tests: the database under test, and a stand-in at 5 ms a round trip); with `once()`, none.
 */

/** Sessions per run, and how many at a time: each is one chance for the window. */
const SESSIONS = 40;
const PARALLEL = 8;

const touch = (state: SessionState) => ({ outcome: undefined, next: { ...state, last_activity: state.last_activity + 1 } });

interface Outcome {
  /** Operations that threw (a transaction that gave up with "maxretry" shows here). */
  readonly failures: string[];
  /** Reads older than what A had already committed. */
  readonly violations: string[];
}

async function exercise(a: RtdbStore, b: RtdbStore): Promise<Outcome> {
  const failures: string[] = [];
  const violations: string[] = [];

  async function oneSession(index: number): Promise<void> {
    const session = newSession({ created_at: Date.now() });
    await b.createSession(session);
    const id = session.id;
    // B serves the session already: its copy of the state is the server's, so its next write
    // leaves at once, together with A's first requests (a transaction waits for that copy).
    await b.updateState(id, touch);
    /** What A's own operations have returned so far: the highest message_count, the exchange it appended. */
    const known: { committed: number; appended?: string } = { committed: 0 };

    const attempt = async <T>(what: string, work: () => Promise<T>): Promise<T | undefined> => {
      try {
        return await work();
      } catch (error) {
        const cause = error instanceof Error && error.cause instanceof Error ? ` (${error.cause.message})` : "";
        failures.push(`session ${index}, ${what}: ${error instanceof Error ? error.message : String(error)}${cause}`);
        return undefined;
      }
    };
    const commit = (state: SessionState) => {
      known.committed = Math.max(known.committed, state.message_count);
    };
    const readState = async (when: string) => {
      const floor = known.committed;
      const state = await attempt(`readSessionState ${when}`, () => a.readSessionState(id));
      if (state && state.message_count < floor) violations.push(`session ${index}, readSessionState ${when}: message_count ${state.message_count} after committing ${floor}`);
    };
    const readHistory = async (when: string) => {
      const tag = known.appended;
      const messages = await attempt(`readWindow ${when}`, () => recentMessages(a, id, 20));
      if (messages && tag !== undefined && !messages.some((message) => message.content === `question ${tag}`)) {
        violations.push(`session ${index}, readWindow ${when}: misses exchange ${tag}, appended before`);
      }
    };

    const tag = `a${index}`;
    const claim: RequestClaim = { hash: randomUUID().replaceAll("-", ""), fingerprint: `f${index}`, owner: tag, remember: true };
    // A's requests go first, in one tick, then B's write: the server answers A's reads, then
    // pushes B's write to A's new listener, and A receives both together.
    const [claimed] = await Promise.all([
      attempt("claim", () => a.updateStateReadingKey(id, claimRequest(claim, Date.now(), 60_000, POLICY), claim.hash)),
      readState("beside the claim"),
      readHistory("beside the claim"),
      attempt("B updateState", () => b.updateState(id, touch)),
    ]);
    if (!claimed?.found) {
      // attempt() recorded a throw; a session it has just created, not found, is a failure too.
      if (claimed) failures.push(`session ${index}, claim: session not found`);
      return;
    }
    if (claimed.outcome.kind !== "claimed") failures.push(`session ${index}, claim: ${claimed.outcome.kind}`);
    commit(claimed.state);

    const now = Date.now();
    const [appended] = await Promise.all([
      attempt("appendExchange", () => a.appendExchange(id, exchange(tag, now), appendRule({ receivedAt: now, answeredAt: now + 1, policy: POLICY, claim }))),
      readState("beside the append"),
      readHistory("beside the append"),
    ]);
    if (!appended?.found) {
      if (appended) failures.push(`session ${index}, appendExchange: session not found`);
      return;
    }
    if (appended.outcome.kind !== "appended") {
      failures.push(`session ${index}, appendExchange: ${appended.outcome.kind}`);
      return;
    }
    commit(appended.state);
    known.appended = tag;

    const later = Date.now();
    await Promise.all([
      readState(`after appending exchange ${appended.state.message_count}`),
      readHistory("after the append"),
      (async () => {
        const ruled = await attempt("updateState", () => a.updateState(id, touch));
        if (ruled?.found) commit(ruled.state);
        await readState("after updateState");
      })(),
      attempt("B appendExchange", () => b.appendExchange(id, exchange(`b${index}`, later), appendRule({ receivedAt: later, answeredAt: later + 1, policy: POLICY }))),
    ]);
    await readState("at the end");
    await readHistory("at the end");
  }

  let next = 0;
  await Promise.all(
    Array.from({ length: PARALLEL }, async () => {
      for (let index = next++; index < SESSIONS; index = next++) await oneSession(index);
    }),
  );
  await Promise.all([a.copiesSettled(), b.copiesSettled()]);
  return { failures, violations };
}

/** Two instances (two firebase-admin apps) on `instances`, the workload, and their outcome. */
async function run(instances: RtdbInstances): Promise<Outcome> {
  const a = new RtdbStore(instances.database(), 10_000);
  const b = new RtdbStore(instances.database(), 10_000);
  try {
    return await exercise(a, b);
  } finally {
    a.close();
    b.close();
    await instances.close();
  }
}

const ok: Outcome = { failures: [], violations: [] };

describeWithRtdb("RtdbStore reads beside transactions on the same node (the get() hazard)", () => {
  it("never reads older than what it committed, and every operation succeeds", async () => {
    expect(await run(new RtdbInstances(freshNamespace("read-hazard")))).toEqual(ok);
  });
});

/**
 * The same at 5 ms a round trip, as on the real service, on a stand-in (rtdb-wire) this suite
 * starts: latency is a server-wide setting, so not the shared one. Elsewhere this part is skipped, saying why.
 */
describeUnless(
  standInSkipReason,
  "RtdbStore reads beside transactions on the same node, at 5 ms a round trip",
  () => {
    let standIn: StandIn | undefined;
    beforeAll(async () => {
      standIn = await startStandIn(5);
    });
    afterAll(() => {
      standIn?.process.kill();
    });

    it("never reads older than what it committed, and every operation succeeds", async () => {
      expect(await run(new RtdbInstances(freshNamespace("read-hazard"), standIn!.host))).toEqual(ok);
    });
  },
);
