import {
  appendRule,
  claimRequest,
  endRule,
  expireRule,
  releaseClaim,
  expiredIfIdle,
  retentionRule,
  sweepLapsedClaims,
  type AppendOutcome,
  type ClaimOutcome,
  type EndOutcome,
  type RequestClaim,
  type SessionPolicy,
} from "../../src/session/session-rules";
import type { RequestEntry, SessionState } from "../../src/store/records";
import type { StateRule } from "../../src/store/session-store";

/** Last activity of the sessions below; the TTL is short so that times read easily. */
const T = 1_000_000;
const TTL = 1_000;
const LEASE = 500;
const POLICY: SessionPolicy = { idleTtlMs: TTL, maxExchanges: 1_000_000 };

const CLAIM: RequestClaim = { hash: "h1", fingerprint: "fp1", owner: "me", remember: true };
const OTHER_KEY: RequestEntry = { fingerprint: "fp9", seq: 1 };

function active(overrides: Partial<SessionState> = {}): SessionState {
  return { status: "active", message_count: 2, last_activity: T, idle_since: T, ...overrides };
}

function ended(overrides: Partial<SessionState> = {}): SessionState {
  return { status: "ended", message_count: 2, last_activity: T, ended_at: T, ...overrides };
}

/** The state an idle session settles to at `recordedAt`: expired when its TTL ran out, no longer indexed as idle. */
function expiredByIdle(state: SessionState, recordedAt: number): SessionState {
  const next: SessionState = { ...state, status: "expired", ended_at: state.last_activity + TTL, closed_at: recordedAt };
  delete next.idle_since;
  return next;
}

/** `{ outcome }` when the rule must write nothing, `{ outcome, next }` when it must write `next` (and the partials it names stray). */
function result<O>(outcome: O, next?: SessionState, strayPartials?: readonly string[]): { outcome: O; next?: SessionState; strayPartials?: readonly string[] } {
  if (next === undefined) return { outcome };
  return strayPartials === undefined ? { outcome, next } : { outcome, next, strayPartials };
}

interface Row<O> {
  readonly name: string;
  readonly state: SessionState;
  readonly rule: StateRule<O>;
  readonly outcome: O;
  /** What the rule writes; absent when it must write nothing. */
  readonly next?: SessionState;
  /** The partial replies of dead requests the rule names for removal with `next`. */
  readonly strayPartials?: readonly string[];
}

/** Runs each row's rule on a frozen copy of its state: rules must not mutate what they read. */
function ruleTable<O>(rows: readonly Row<O>[]): void {
  it.each(rows)("$name", ({ state, rule, outcome, next, strayPartials }) => {
    // A JSON copy, not structuredClone: that one builds objects of another realm, which toStrictEqual tells apart.
    const input = deepFreeze(JSON.parse(JSON.stringify(state)) as SessionState);
    expect(rule(input)).toStrictEqual(result(outcome, next, strayPartials));
    expect(input).toStrictEqual(state);
  });
}

function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null) {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}

describe("expiredIfIdle", () => {
  it("keeps a session idle exactly the TTL active, returning the same state", () => {
    const state = active();
    expect(expiredIfIdle(state, T + TTL, POLICY)).toBe(state);
  });

  it("keeps a session active when the clock is behind its last activity", () => {
    const state = active();
    expect(expiredIfIdle(state, T - 5_000, POLICY)).toBe(state);
  });

  it("expires a session idle one millisecond past the TTL, at the moment its TTL ran out, recorded now", () => {
    const state = active({ message_count: 4, requests: { h9: OTHER_KEY } });
    const settled = expiredIfIdle(state, T + TTL + 1, POLICY);
    expect(settled).toStrictEqual({ status: "expired", message_count: 4, last_activity: T, ended_at: T + TTL, closed_at: T + TTL + 1, requests: { h9: OTHER_KEY } });
    expect(settled).not.toHaveProperty("idle_since");
    expect(state).toStrictEqual(active({ message_count: 4, requests: { h9: OTHER_KEY } }));
  });

  it("keeps a session idle past the TTL active while a message of it runs (a claim within its lease), and expires it once the claim lapsed", () => {
    const running = active({ requests: { h1: { fingerprint: "fp1", owner: "someone", lease_until: T + TTL + LEASE } } });
    expect(expiredIfIdle(running, T + TTL + 1, POLICY)).toBe(running);
    expect(expiredIfIdle(running, T + TTL + LEASE, POLICY)).toMatchObject({ status: "expired", ended_at: T + TTL });
    // A done key is no message running.
    expect(expiredIfIdle(active({ requests: { h9: OTHER_KEY } }), T + TTL + 1, POLICY)).toMatchObject({ status: "expired" });
  });

  it.each([ended(), { ...ended(), status: "expired" as const }])("leaves a $status session as it is, however late", (state) => {
    expect(expiredIfIdle(state, T + 100 * TTL, POLICY)).toBe(state);
  });
});

describe("claimRequest", () => {
  const now = T + 100;
  const claim = (at = now) => claimRequest(CLAIM, at, LEASE, POLICY);
  const mine = (entry: RequestEntry) => ({ requests: { [CLAIM.hash]: entry, h9: OTHER_KEY } });
  const claimedAt = (at: number): RequestEntry => ({ fingerprint: CLAIM.fingerprint, owner: CLAIM.owner, lease_until: at + LEASE });

  ruleTable<ClaimOutcome>([
    {
      name: "claims an unknown key on an active session, for the lease",
      state: active(),
      rule: claim(),
      outcome: { kind: "claimed", alone: true },
      next: active({ requests: { h1: claimedAt(now) } }),
    },
    {
      name: "claims a key next to the others, keeping them",
      state: active({ requests: { h9: OTHER_KEY } }),
      rule: claim(),
      outcome: { kind: "claimed", alone: true },
      next: active(mine(claimedAt(now))),
    },
    {
      name: "claims beside another message's live claim, saying it is not alone",
      state: active({ requests: { h7: { fingerprint: "", owner: "other", lease_until: now + 1 } } }),
      rule: claim(),
      outcome: { kind: "claimed", alone: false },
      next: active({ requests: { h7: { fingerprint: "", owner: "other", lease_until: now + 1 }, h1: claimedAt(now) } }),
    },
    {
      name: "answers done with the exchange of a key that produced one",
      state: active(mine({ fingerprint: "fp1", seq: 2 })),
      rule: claim(),
      outcome: { kind: "done", seq: 2 },
    },
    {
      name: "answers busy while another owner's lease is live",
      state: active(mine({ fingerprint: "fp1", owner: "other", lease_until: now + 1 })),
      rule: claim(),
      outcome: { kind: "busy", leaseUntil: now + 1 },
    },
    {
      name: "takes over another owner's lease that ran out, naming its partial stray",
      state: active(mine({ fingerprint: "fp1", owner: "other", lease_until: now - 1 })),
      rule: claim(),
      outcome: { kind: "claimed", alone: true },
      next: active(mine(claimedAt(now))),
      strayPartials: ["other"],
    },
    {
      name: "takes over a lease that runs out at this very moment",
      state: active(mine({ fingerprint: "fp1", owner: "other", lease_until: now })),
      rule: claim(),
      outcome: { kind: "claimed", alone: true },
      next: active(mine(claimedAt(now))),
      strayPartials: ["other"],
    },
    {
      name: "lets the same owner claim again, renewing its lease",
      state: active(mine({ fingerprint: "fp1", owner: "me", lease_until: now + 50 })),
      rule: claim(),
      outcome: { kind: "claimed", alone: true },
      next: active(mine(claimedAt(now))),
    },
    {
      name: "answers reused for a key claimed with another fingerprint",
      state: active(mine({ fingerprint: "fp2", owner: "other", lease_until: now + 100 })),
      rule: claim(),
      outcome: { kind: "reused" },
    },
    {
      name: "answers reused for a key done with another fingerprint",
      state: active(mine({ fingerprint: "fp2", seq: 1 })),
      rule: claim(),
      outcome: { kind: "reused" },
    },
    {
      name: "refuses on an ended session, writing nothing",
      state: ended(),
      rule: claim(),
      outcome: { kind: "closed", status: "ended" },
    },
    {
      name: "refuses on a session idle past its TTL, recording the expiry",
      state: active(),
      rule: claim(T + TTL + 1),
      outcome: { kind: "closed", status: "expired" },
      next: expiredByIdle(active(), T + TTL + 1),
    },
    {
      name: "still replays a done key on an ended session",
      state: ended(mine({ fingerprint: "fp1", seq: 2 })),
      rule: claim(),
      outcome: { kind: "done", seq: 2 },
    },
    {
      name: "still replays a done key on a session idle past its TTL",
      state: active(mine({ fingerprint: "fp1", seq: 2 })),
      rule: claim(T + 10 * TTL),
      outcome: { kind: "done", seq: 2 },
    },
    {
      name: "still refuses a reused key on an ended session",
      state: ended(mine({ fingerprint: "fp2", seq: 2 })),
      rule: claim(),
      outcome: { kind: "reused" },
    },
  ]);

  describe("at the exchange limit (3 exchanges)", () => {
    const limited = (at = now) => claimRequest(CLAIM, at, LEASE, { ...POLICY, maxExchanges: 3 });
    const running: RequestEntry = { fingerprint: "", owner: "other", lease_until: now + 200 };

    ruleTable<ClaimOutcome>([
      {
        name: "refuses with the limit's exchanges stored, until the session expires a TTL after its last activity",
        state: active({ message_count: 3 }),
        rule: limited(),
        outcome: { kind: "limit", retryAfterMs: T + TTL + 1 - now },
      },
      {
        name: "refuses with the limit's exchanges stored, whatever claims run beside them",
        state: active({ message_count: 3, requests: { h7: running } }),
        rule: limited(),
        outcome: { kind: "limit", retryAfterMs: now + 200 + TTL + 1 - now },
      },
      {
        name: "refuses, saying so (running), when live claims alone fill the exchanges left: they may yet give their slots back",
        state: active({ requests: { h7: running } }),
        rule: limited(),
        outcome: { kind: "limit", retryAfterMs: now + 200 + TTL + 1 - now, running: true },
      },
      {
        name: "claims the last exchange beside done keys and a lapsed claim, which hold no slot (the next commit drops the lapsed one)",
        state: active({ requests: { h9: OTHER_KEY, h7: { ...running, lease_until: now } } }),
        rule: limited(),
        outcome: { kind: "claimed", alone: true },
        next: active({ requests: { h9: OTHER_KEY, h7: { ...running, lease_until: now }, h1: claimedAt(now) } }),
      },
    ]);
  });
});

describe("releaseClaim", () => {
  const withKey = (entry: RequestEntry) => active({ requests: { [CLAIM.hash]: entry, h9: OTHER_KEY } });

  ruleTable<undefined>([
    {
      name: "drops its own unfinished claim, keeping the other keys",
      state: withKey({ fingerprint: "fp1", owner: "me", lease_until: T + LEASE }),
      rule: releaseClaim(CLAIM),
      outcome: undefined,
      next: active({ requests: { h9: OTHER_KEY } }),
    },
    {
      name: "names its partial reply for removal, when it may have written one: its own removal may be lost",
      state: withKey({ fingerprint: "fp1", owner: "me", lease_until: T + LEASE }),
      rule: releaseClaim(CLAIM, true),
      outcome: undefined,
      next: active({ requests: { h9: OTHER_KEY } }),
      strayPartials: ["me"],
    },
    {
      name: "drops its own claim even once the lease ran out",
      state: withKey({ fingerprint: "fp1", owner: "me", lease_until: 0 }),
      rule: releaseClaim(CLAIM),
      outcome: undefined,
      next: active({ requests: { h9: OTHER_KEY } }),
    },
    {
      name: "leaves another owner's claim, and its partial",
      state: withKey({ fingerprint: "fp1", owner: "other", lease_until: T + LEASE }),
      rule: releaseClaim(CLAIM, true),
      outcome: undefined,
    },
    {
      name: "leaves a key that produced an exchange (its commit removed the partial)",
      state: withKey({ fingerprint: "fp1", seq: 2 }),
      rule: releaseClaim(CLAIM, true),
      outcome: undefined,
    },
    {
      name: "leaves a key that produced an exchange, whoever claimed it",
      state: withKey({ fingerprint: "fp1", seq: 2, owner: "me", lease_until: T + LEASE }),
      rule: releaseClaim(CLAIM),
      outcome: undefined,
    },
    { name: "writes nothing when the key is not there", state: active({ requests: { h9: OTHER_KEY } }), rule: releaseClaim(CLAIM), outcome: undefined },
    { name: "writes nothing when the session has no keys", state: active(), rule: releaseClaim(CLAIM), outcome: undefined },
  ]);
});

describe("appendRule", () => {
  const append = (options: { receivedAt?: number; answeredAt?: number; claim?: RequestClaim } = {}) =>
    appendRule({ receivedAt: options.receivedAt ?? T + 100, answeredAt: options.answeredAt ?? T + 200, policy: POLICY, ...(options.claim ? { claim: options.claim } : {}) });

  ruleTable<AppendOutcome>([
    {
      name: "appends exchange count + 1, moving last activity and the idle index to the answer",
      state: active(),
      rule: append(),
      outcome: { kind: "appended", seq: 3 },
      next: active({ message_count: 3, last_activity: T + 200, idle_since: T + 200 }),
    },
    {
      name: "never moves last activity back when a later exchange landed first",
      state: active({ last_activity: T + 900, idle_since: T + 900 }),
      rule: append(),
      outcome: { kind: "appended", seq: 3 },
      next: active({ message_count: 3, last_activity: T + 900, idle_since: T + 900 }),
    },
    {
      name: "records the key's exchange and drops its owner and lease",
      state: active({ requests: { h1: { fingerprint: "fp1", owner: "me", lease_until: T + LEASE } } }),
      rule: append({ claim: CLAIM }),
      outcome: { kind: "appended", seq: 3 },
      next: active({ message_count: 3, last_activity: T + 200, idle_since: T + 200, requests: { h1: { fingerprint: "fp1", seq: 3 } } }),
    },
    {
      name: "refuses a keyed exchange whose claim a repeat holds now (taken over, or passing through to a replay): lost",
      state: active({ requests: { h1: { fingerprint: "fp1", owner: "other", lease_until: T + LEASE } } }),
      rule: append({ claim: CLAIM }),
      outcome: { kind: "lost" },
    },
    {
      name: "answers duplicate when the key already produced an exchange",
      state: active({ requests: { h1: { fingerprint: "fp1", seq: 1 } } }),
      rule: append({ claim: CLAIM }),
      outcome: { kind: "duplicate", seq: 1 },
    },
    {
      name: "answers duplicate for a done key even on an ended session",
      state: ended({ requests: { h1: { fingerprint: "fp1", seq: 1 } } }),
      rule: append({ claim: CLAIM }),
      outcome: { kind: "duplicate", seq: 1 },
    },
    {
      name: "answers reused when the key's fingerprint differs",
      state: active({ requests: { h1: { fingerprint: "fp2", owner: "me", lease_until: T + LEASE } } }),
      rule: append({ claim: CLAIM }),
      outcome: { kind: "reused" },
    },
    {
      name: "refuses an ended session, writing nothing",
      state: ended(),
      rule: append(),
      outcome: { kind: "closed", status: "ended" },
    },
    {
      name: "refuses a message that arrived after the TTL ran out, recording the expiry",
      state: active(),
      rule: append({ receivedAt: T + TTL + 1, answeredAt: T + TTL + 2 }),
      outcome: { kind: "closed", status: "expired" },
      next: expiredByIdle(active(), T + TTL + 1),
    },
    {
      name: "takes a message that arrived in time though its answer came after the TTL",
      state: active(),
      rule: append({ receivedAt: T + TTL, answeredAt: T + TTL + 500 }),
      outcome: { kind: "appended", seq: 3 },
      next: active({ message_count: 3, last_activity: T + TTL + 500, idle_since: T + TTL + 500 }),
    },
  ]);

  describe("keeps done keys for the store to move to their records, and drops lapsed claims", () => {
    const answeredAt = T + 200;
    const done = (seq: number): RequestEntry => ({ fingerprint: `fp-${seq}`, seq });
    const claimUntil = (leaseUntil: number): RequestEntry => ({ fingerprint: "fp-claim", owner: "someone", lease_until: leaseUntil });
    const state = active({
      message_count: 5,
      requests: {
        k4: done(4),
        k5: done(5),
        h1: { fingerprint: "fp1", owner: "me", lease_until: T + LEASE },
        live: claimUntil(answeredAt + 1),
        lapsed: claimUntil(answeredAt),
        lapsedLongAgo: claimUntil(T - 1),
        leaseless: { fingerprint: "fp-x", owner: "someone" },
      },
    });

    it("with a keyed append: the done keys, this one (6), and the live claim; the lapsed claims' partials are stray", () => {
      const { outcome, next, strayPartials } = appendRule({ receivedAt: T + 100, answeredAt, policy: POLICY, claim: CLAIM })(state);
      expect(outcome).toEqual({ kind: "appended", seq: 6 });
      // The two lapsed claims and the one without a lease (all of the owner "someone").
      expect(strayPartials).toEqual(["someone", "someone", "someone"]);
      expect(next?.requests).toStrictEqual({ k4: done(4), k5: done(5), h1: { fingerprint: "fp1", seq: 6 }, live: claimUntil(answeredAt + 1) });
    });

    it("with an unkeyed append: the done keys and the live claims", () => {
      const { outcome, next } = appendRule({ receivedAt: T + 100, answeredAt, policy: POLICY })(state);
      expect(outcome).toEqual({ kind: "appended", seq: 6 });
      expect(next?.requests).toStrictEqual({ k4: done(4), k5: done(5), h1: { fingerprint: "fp1", owner: "me", lease_until: T + LEASE }, live: claimUntil(answeredAt + 1) });
    });

    it("refuses a keyed append whose claim is gone (it lapsed and was dropped): the key may be done and moved", () => {
      const { [CLAIM.hash]: mine, ...others } = state.requests ?? {};
      expect(mine).toBeDefined();
      expect(appendRule({ receivedAt: T + 100, answeredAt, policy: POLICY, claim: CLAIM })({ ...state, requests: others })).toEqual({ outcome: { kind: "lost" } });
    });

    it("adds no key map to a session that has none", () => {
      const { next } = appendRule({ receivedAt: T + 100, answeredAt, policy: POLICY })(active());
      expect(next).not.toHaveProperty("requests");
    });
  });

  describe("of the session created at createdAt", () => {
    const rule = (claim?: RequestClaim) => appendRule({ receivedAt: T + 100, answeredAt: T + 200, policy: POLICY, createdAt: T - 10, ...(claim ? { claim } : {}) });
    const claimed = { requests: { h1: { fingerprint: "fp1", owner: "me", lease_until: T + LEASE } } };

    it.each([
      ["keyed", CLAIM],
      ["unkeyed", undefined],
    ])("refuses a %s exchange on a state of another creation under the id (the claimed session erased, its id created again): gone, nothing written", (_, claim) => {
      expect(rule(claim)(active({ ...claimed, created_at: T - 5 }))).toEqual({ outcome: { kind: "gone" } });
    });

    it("appends on its own creation's state, and on one that carries no creation (an older version's)", () => {
      expect(rule(CLAIM)(active({ ...claimed, created_at: T - 10 })).outcome).toEqual({ kind: "appended", seq: 3 });
      expect(rule(CLAIM)(active(claimed)).outcome).toEqual({ kind: "appended", seq: 3 });
    });
  });
});

describe("endRule", () => {
  ruleTable<EndOutcome>([
    {
      name: "ends an active session now, dropping it from the idle index",
      state: active(),
      rule: endRule(T + 300, POLICY),
      outcome: { kind: "ended" },
      next: { status: "ended", message_count: 2, last_activity: T + 300, ended_at: T + 300 },
    },
    {
      name: "ends a session idle exactly the TTL",
      state: active(),
      rule: endRule(T + TTL, POLICY),
      outcome: { kind: "ended" },
      next: { status: "ended", message_count: 2, last_activity: T + TTL, ended_at: T + TTL },
    },
    {
      name: "never moves last activity back when the clock is behind it",
      state: active({ last_activity: T + 900, idle_since: T + 900 }),
      rule: endRule(T + 300, POLICY),
      outcome: { kind: "ended" },
      next: { status: "ended", message_count: 2, last_activity: T + 900, ended_at: T + 300 },
    },
    {
      name: "keeps the session's keys, so replays still work",
      state: active({ requests: { h9: OTHER_KEY } }),
      rule: endRule(T + 300, POLICY),
      outcome: { kind: "ended" },
      next: { status: "ended", message_count: 2, last_activity: T + 300, ended_at: T + 300, requests: { h9: OTHER_KEY } },
    },
    {
      name: "refuses an ended session, writing it back as it is (the store sends its closing copy again)",
      state: ended(),
      rule: endRule(T + 300, POLICY),
      outcome: { kind: "closed", status: "ended" },
      next: ended(),
    },
    {
      name: "refuses an expired session, writing it back as it is",
      state: ended({ status: "expired" }),
      rule: endRule(T + 300, POLICY),
      outcome: { kind: "closed", status: "expired" },
      next: ended({ status: "expired" }),
    },
    {
      name: "refuses a session idle past its TTL, recording the expiry",
      state: active(),
      rule: endRule(T + TTL + 1, POLICY),
      outcome: { kind: "closed", status: "expired" },
      next: expiredByIdle(active(), T + TTL + 1),
    },
  ]);
});

describe("expireRule", () => {
  const policy: SessionPolicy = { idleTtlMs: 1_000, maxExchanges: 1_000_000 };

  ruleTable<boolean>([
    {
      name: "expires an active session idle past the TTL, as of the moment it expired, recorded now",
      state: active(),
      rule: expireRule(T + 5_000, policy),
      outcome: true,
      next: { status: "expired", message_count: 2, last_activity: T, ended_at: T + 1_000, closed_at: T + 5_000 },
    },
    { name: "leaves a session idle exactly the TTL", state: active(), rule: expireRule(T + 1_000, policy), outcome: false },
    { name: "leaves a session active since", state: active({ last_activity: T + 2, idle_since: T + 2 }), rule: expireRule(T + 1_001, policy), outcome: false },
    { name: "leaves an ended session", state: ended(), rule: expireRule(T + 5_000, policy), outcome: false },
    {
      name: "leaves a session whose message, received in time, is still running",
      state: active({ requests: { h1: { fingerprint: "fp1", owner: "someone", lease_until: T + 1_500 } } }),
      rule: expireRule(T + 1_001, policy),
      outcome: false,
    },
    { name: "leaves an expired session (so it is counted once)", state: ended({ status: "expired" }), rule: expireRule(T + 5_000, policy), outcome: false },
  ]);
});

describe("retentionRule", () => {
  // Deleted when it ended at or before T and its close was recorded at or before T + 100.
  const deletable = retentionRule(T, T + 100);

  it.each([
    ["an end at the cutoff", ended({ ended_at: T }), true],
    ["an end after the cutoff", ended({ ended_at: T + 1 }), false],
    ["an expiry recorded by the time its copies land", ended({ status: "expired", ended_at: T - 5_000, closed_at: T + 100 }), true],
    ["an expiry ended long before the cutoff, recorded since", ended({ status: "expired", ended_at: T - 5_000, closed_at: T + 101 }), false],
    ["an expiry after the cutoff, recorded long before (a clock behind)", ended({ status: "expired", ended_at: T + 1, closed_at: T - 5_000 }), false],
    ["an expiry an older version recorded (no closed_at), by its end alone", ended({ status: "expired", ended_at: T }), true],
    ["an active session", active({ last_activity: T - 5_000, idle_since: T - 5_000 }), false],
    ["a closed session without an end", { status: "ended", message_count: 2, last_activity: T - 5_000 } satisfies SessionState, false],
  ] as const)("%s", (_name, state, expected) => {
    expect(deletable(state)).toBe(expected);
  });
});

describe("sweepLapsedClaims", () => {
  const now = T + 1_000;
  ruleTable<number>([
    {
      name: "drops claims whose lease lapsed, naming their partials stray, keeping live claims and done keys",
      state: active({ requests: { dead: { fingerprint: "", owner: "o1", lease_until: now }, live: { fingerprint: "", owner: "o2", lease_until: now + 1 }, done: { fingerprint: "f", seq: 1 } } }),
      rule: sweepLapsedClaims(now),
      outcome: 1,
      next: active({ requests: { live: { fingerprint: "", owner: "o2", lease_until: now + 1 }, done: { fingerprint: "f", seq: 1 } } }),
      strayPartials: ["o1"],
    },
    {
      name: "writes nothing when every claim is live",
      state: active({ requests: { live: { fingerprint: "", owner: "o2", lease_until: now + 1 } } }),
      rule: sweepLapsedClaims(now),
      outcome: 0,
    },
  ]);
});
