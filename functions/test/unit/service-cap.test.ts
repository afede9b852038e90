import { randomUUID } from "node:crypto";
import { utcDay } from "../../src/session/ledger/limits";
import { reserveServiceTokens, SERVICE_SHARD_KEYS, ServiceLedger, splitSpent, type ServiceAdmission, type ServiceReservation } from "../../src/session/ledger/service-cap";
import { InFlightMessage } from "../../src/session/message/in-flight-message";
import type { MessageContext } from "../../src/session/message/message-context";
import type { KnownSession } from "../../src/session/known-sessions";
import type { RequestClaim } from "../../src/session/session-rules";
import { seconds } from "../../src/session/message/refusals";
import { MemoryStore } from "../../src/store/memory-store";
import type { ServiceUsage } from "../../src/store/records";
import type { LedgerRule, SessionStore } from "../../src/store/session-store";
import { POLICY as SESSION_POLICY } from "../support/fixtures";
import { tokenSuite } from "../support/token-service";

const NOON = Date.parse("2026-12-06T12:00:00Z");
const MIDNIGHT = Date.parse("2026-12-07T00:00:00Z");
const DAY = utcDay(NOON);
/** A cap whose shares are 1,000 tokens each. */
const CAP = 8_000;
const SHARE = CAP / SERVICE_SHARD_KEYS.length;

type ServicePort = Pick<SessionStore, "prepareServiceUsage" | "updateServiceUsage" | "readServiceUsage">;

/** The store's service usage port, counting its calls, with a hook run after each read (another instance acting meanwhile). */
class CountingStore implements ServicePort {
  updates: string[] = [];
  reads = 0;
  prepared: (readonly string[])[] = [];
  afterRead: () => Promise<void> = async () => undefined;

  constructor(readonly store: MemoryStore = new MemoryStore()) {}

  prepareServiceUsage(shards: readonly string[]): void {
    this.prepared.push(shards);
    this.store.prepareServiceUsage();
  }

  updateServiceUsage<O>(shard: string, rule: LedgerRule<ServiceUsage, O>): Promise<O> {
    this.updates.push(shard);
    return this.store.updateServiceUsage(shard, rule);
  }

  async readServiceUsage(): Promise<Readonly<Record<string, ServiceUsage>>> {
    this.reads += 1;
    const shards = await this.store.readServiceUsage();
    await this.afterRead();
    return shards;
  }
}

/** A ledger whose first shard is always `shard` (its random draw fixed). */
function ledgerOn(store: ServicePort, shard: string, cap = CAP): ServiceLedger {
  return new ServiceLedger(store, cap, () => SERVICE_SHARD_KEYS.indexOf(shard) / SERVICE_SHARD_KEYS.length);
}

function refusedAfter(admission: ServiceAdmission | undefined): number {
  if (admission === undefined || admission.admitted) throw new Error(`expected a refusal, got ${JSON.stringify(admission)}`);
  return admission.retryAfterMs;
}

function reservationOf(admission: ServiceAdmission | undefined): ServiceReservation {
  if (!admission?.admitted) throw new Error(`refused: ${JSON.stringify(admission)}`);
  return admission.reservation;
}

/** Each shard's tokens today (0 for one never written). */
async function shardTokens(store: MemoryStore): Promise<Record<string, number>> {
  const shards = await store.readServiceUsage();
  return Object.fromEntries(SERVICE_SHARD_KEYS.map((key) => [key, shards[key]?.day === DAY ? shards[key].tokens : 0]));
}

async function total(store: MemoryStore): Promise<number> {
  return Object.values(await shardTokens(store)).reduce((sum, tokens) => sum + tokens, 0);
}

/** Fills shards to the given counts, each with a reservation of its own, spent in full (settled: nothing of it open). */
async function fill(store: MemoryStore, counts: Readonly<Record<string, number>>): Promise<void> {
  for (const [shard, tokens] of Object.entries(counts)) {
    const ledger = ledgerOn(store, shard);
    await ledger.settle(reservationOf(await ledger.reserve(() => tokens, NOON)), { tokens });
  }
}

/** A deterministic draw in [0, 1), for tests that need many different but repeatable values. */
function seeded(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state * 1_103_515_245 + 12_345) % 2_147_483_648;
    return state / 2_147_483_648;
  };
}

describe("the deployment cap's shards", () => {
  it("reserves on the random shard alone, in one transaction and no read, when that shard holds the reservation", async () => {
    const store = new CountingStore();
    const reservation = reservationOf(await ledgerOn(store, "s3").reserve(() => 600, NOON));
    expect(reservation).toEqual({ day: DAY, parts: [{ shard: "s3", tokens: 600 }] });
    expect(store.updates).toEqual(["s3"]);
    expect(store.reads).toBe(0);
    expect(await shardTokens(store.store)).toMatchObject({ s3: 600, s0: 0 });
  });

  it("asks the store to hold every shard at each reservation, not only the first: a store drops a listener left unused", async () => {
    const store = new CountingStore();
    const ledger = ledgerOn(store, "s3");
    for (let i = 0; i < 3; i += 1) reservationOf(await ledger.reserve(() => 10, NOON + i * 6 * 60_000));
    expect(store.prepared).toEqual([SERVICE_SHARD_KEYS, SERVICE_SHARD_KEYS, SERVICE_SHARD_KEYS]);
  });

  it("admits a reservation larger than one shard's share, spread over the shards with room, emptiest first", async () => {
    const store = new CountingStore();
    await fill(store.store, { s0: 900, s1: 200, s2: 50 });
    store.updates = [];
    const reservation = reservationOf(await ledgerOn(store, "s0").reserve(() => 2_500, NOON));
    // s0 refuses it whole; then the empty shards, in their order, then s2 (950 left), s1 (800), s0 (100).
    expect(reservation).toEqual({ day: DAY, parts: [{ shard: "s3", tokens: 1_000 }, { shard: "s4", tokens: 1_000 }, { shard: "s5", tokens: 500 }] });
    expect(store.updates).toEqual(["s0", "s3", "s4", "s5"]);
    expect(store.reads).toBe(1);
    expect(await shardTokens(store.store)).toEqual({ s0: 900, s1: 200, s2: 50, s3: 1_000, s4: 1_000, s5: 500, s6: 0, s7: 0 });
  });

  it("admits a reservation no single shard has room for, while the shards together have it, up to the whole cap", async () => {
    const store = new MemoryStore();
    await fill(store, { s0: 700, s1: 700, s2: 700, s3: 700, s4: 700, s5: 700, s6: 700, s7: 700 });
    const reservation = reservationOf(await ledgerOn(store, "s6").reserve(() => CAP - 8 * 700, NOON));
    expect(reservation.parts.map((part) => part.tokens)).toEqual([300, 300, 300, 300, 300, 300, 300, 300]);
    expect(await total(store)).toBe(CAP);
    // Full while that reservation is open: the next token is refused until it settles, or lapses at the latest.
    expect(await ledgerOn(store, "s1").reserve(() => 1, NOON + 1_000)).toEqual({ admitted: false, retryAfterMs: 119_000 });
    // Spent in full: refused until midnight.
    await ledgerOn(store, "s6").settle(reservation, { tokens: CAP - 8 * 700 });
    expect(await ledgerOn(store, "s1").reserve(() => 1, NOON)).toEqual({ admitted: false, retryAfterMs: MIDNIGHT - NOON });
  });

  it("refuses until midnight, writing nothing more, when the shards read together lack room", async () => {
    const store = new CountingStore();
    await fill(store.store, { s0: 1_000, s1: 1_000, s2: 1_000, s3: 1_000, s4: 1_000, s5: 1_000, s6: 600 });
    store.updates = [];
    const before = await shardTokens(store.store);
    expect(await ledgerOn(store, "s7").reserve(() => 1_500, NOON)).toEqual({ admitted: false, retryAfterMs: MIDNIGHT - NOON });
    expect(store.updates).toEqual(["s7"]);
    expect(await shardTokens(store.store)).toEqual(before);
  });

  it("treats a shard's open reservations as spent once the last has lapsed, and a shard an older version wrote as holding none", async () => {
    const store = new MemoryStore();
    for (const shard of SERVICE_SHARD_KEYS) reservationOf(await ledgerOn(store, shard).reserve(() => SHARE, NOON));
    expect(await ledgerOn(store, "s0").reserve(() => 1, NOON + 60_000)).toEqual({ admitted: false, retryAfterMs: 60_000 });
    expect(await ledgerOn(store, "s0").reserve(() => 1, NOON + 121_000)).toEqual({ admitted: false, retryAfterMs: MIDNIGHT - NOON - 121_000 });
    const older = new MemoryStore();
    for (const shard of SERVICE_SHARD_KEYS) await older.updateServiceUsage(shard, () => ({ outcome: undefined, next: { day: DAY, tokens: SHARE } }));
    expect(await ledgerOn(older, "s0").reserve(() => 1, NOON)).toEqual({ admitted: false, retryAfterMs: MIDNIGHT - NOON });
  });

  it("holds a reservation open as long as a request may run, when the function's timeout is longer than the default", async () => {
    const store = new MemoryStore();
    for (const shard of SERVICE_SHARD_KEYS) reservationOf(await ledgerOn(store, shard).reserve(() => SHARE, NOON, { requestTimeoutMs: 540_000 }));
    expect(await ledgerOn(store, "s0").reserve(() => 1, NOON + 300_000)).toEqual({ admitted: false, retryAfterMs: 240_000 });
  });

  it("answers a retry made when a short Retry-After said, the reservations' settlements lost, with the day's refusal until midnight", async () => {
    const store = new MemoryStore();
    // Every shard full with a reservation whose settlement never comes.
    for (const shard of SERVICE_SHARD_KEYS) reservationOf(await ledgerOn(store, shard).reserve(() => SHARE, NOON));
    const firstAt = NOON + 60_000;
    const wait = seconds(refusedAfter(await ledgerOn(store, "s0").reserve(() => 1, firstAt)));
    expect(wait).toBeLessThanOrEqual(120);
    // Retried as Retry-After's whole seconds say.
    const retryAt = firstAt + wait * 1000;
    expect(seconds(refusedAfter(await ledgerOn(store, "s0").reserve(() => 1, retryAt)))).toBe(Math.ceil((MIDNIGHT - retryAt) / 1000));
  });

  it("gives back the parts it took, and refuses, when another instance fills a shard between the read and the parts", async () => {
    const store = new CountingStore();
    await fill(store.store, { s0: 1_000, s1: 1_000, s2: 1_000, s3: 1_000, s4: 1_000, s5: 1_000 });
    // The read shows 2,000 left (s6 and s7); another message then takes 500 of s7.
    store.afterRead = async () => {
      reservationOf(await ledgerOn(store.store, "s7").reserve(() => 500, NOON));
    };
    // What keeps it out is the other message's open reservation (the shards would hold 1,800 with
    // it given back): retry once it has settled, or lapsed (2 minutes) at the latest, not at midnight.
    expect(await ledgerOn(store, "s0").reserve(() => 1_800, NOON)).toEqual({ admitted: false, retryAfterMs: 120_000 });
    // s6 took 1,000 and s7 500 (what it had left): 300 short, both given back.
    expect(store.updates).toEqual(["s0", "s6", "s7", "s6", "s7"]);
    expect(await shardTokens(store.store)).toEqual({ s0: 1_000, s1: 1_000, s2: 1_000, s3: 1_000, s4: 1_000, s5: 1_000, s6: 0, s7: 500 });
  });

  it("says to retry once another instance's open reservation, taken between the read and the parts, has settled or lapsed, not at midnight", async () => {
    const store = new CountingStore();
    await fill(store.store, { s0: 1_000, s1: 1_000, s2: 1_000, s3: 1_000, s4: 1_000, s5: 1_000 });
    // Another instance's message reserves 500 on s7 after this one read the shards: still running.
    let other: ServiceReservation | undefined;
    store.afterRead = async () => {
      store.afterRead = async () => undefined;
      other = reservationOf(await ledgerOn(store.store, "s7").reserve(() => 500, NOON));
    };
    // The read showed 2,000 left; the parts found 1,500: what the parts' transactions found says when to retry.
    expect(await ledgerOn(store, "s0").reserve(() => 1_800, NOON)).toEqual({ admitted: false, retryAfterMs: 120_000 });
    // That message settles having spent 100, and the same reservation fits, well before midnight.
    await ledgerOn(store.store, "s7").settle(other, { tokens: 100 });
    expect((await ledgerOn(store, "s0").reserve(() => 1_800, NOON + 1_000))?.admitted).toBe(true);
  });

  it("gives back the parts it took when the database fails on a later part, and fails", async () => {
    const store = new CountingStore();
    await fill(store.store, { s0: 1_000, s1: 1_000, s2: 1_000, s3: 1_000, s4: 1_000, s5: 1_000 });
    // The read shows s6 and s7 empty; s6's part lands, s7's fails.
    const failing: ServicePort = {
      prepareServiceUsage: () => undefined,
      readServiceUsage: () => store.readServiceUsage(),
      updateServiceUsage: (shard, rule) => (shard === "s7" ? Promise.reject(new Error("database down")) : store.updateServiceUsage(shard, rule)),
    };
    await expect(ledgerOn(failing, "s0").reserve(() => 1_500, NOON)).rejects.toThrow("database down");
    expect(store.updates).toEqual(["s0", "s6", "s6"]);
    expect(await shardTokens(store.store)).toMatchObject({ s6: 0, s7: 0 });
    expect(await total(store.store)).toBe(6_000);
  });

  it("never lets concurrent reservations, spread or not, carry the shards past the cap in sum", async () => {
    const store = new MemoryStore();
    const draw = seeded(7);
    // Forty messages at once on several instances, from 100 to 2,500 tokens each: 52,000 asked of 8,000.
    const ledgers = Array.from({ length: 4 }, (_, index) => new ServiceLedger(store, CAP, seeded(index + 1)));
    const sizes = Array.from({ length: 40 }, () => 100 + Math.floor(draw() * 2_400));
    const admissions = await Promise.all(sizes.map((tokens, index) => ledgers[index % ledgers.length]!.reserve(() => tokens, NOON)));
    const admitted = admissions.flatMap((admission, index) => (admission?.admitted ? [{ reservation: admission.reservation, tokens: sizes[index]! }] : []));
    expect(admitted.length).toBeGreaterThan(0);
    expect(admitted.length).toBeLessThan(sizes.length);
    // Some were spread over several shards, and each holds exactly what it asked for.
    expect(admitted.some(({ reservation }) => reservation.parts.length > 1)).toBe(true);
    for (const { reservation, tokens } of admitted) expect(reservation.parts.reduce((sum, part) => sum + part.tokens, 0)).toBe(tokens);
    // The shards count the admitted reservations and nothing else (refused parts went back), within the cap and each share.
    const counts = await shardTokens(store);
    expect(await total(store)).toBe(admitted.reduce((sum, { tokens }) => sum + tokens, 0));
    expect(await total(store)).toBeLessThanOrEqual(CAP);
    for (const tokens of Object.values(counts)) expect(tokens).toBeLessThanOrEqual(SHARE);
    // What is left of the cap is still there to take, whole, however it is spread over the shards.
    const left = CAP - (await total(store));
    expect(left).toBeGreaterThan(0);
    reservationOf(await ledgers[0]!.reserve(() => left, NOON));
    expect(await total(store)).toBe(CAP);
  });
});

describe("the deployment cap's settlement", () => {
  it("splits what was spent over a reservation's parts in order, each up to what it reserved, the cost on the first, nothing past the whole reservation", () => {
    const parts = [{ shard: "s3", tokens: 1_000 }, { shard: "s4", tokens: 1_000 }, { shard: "s5", tokens: 500 }];
    expect(splitSpent(parts, { tokens: 1_200, costUsd: 0.25 })).toEqual([{ tokens: 1_000, costUsd: 0.25 }, { tokens: 200 }, { tokens: 0 }]);
    expect(splitSpent(parts, { tokens: 0 })).toEqual([{ tokens: 0 }, { tokens: 0 }, { tokens: 0 }]);
    expect(splitSpent(parts, { tokens: 3_000, costUsd: 0.5 })).toEqual([{ tokens: 1_000, costUsd: 0.5 }, { tokens: 1_000 }, { tokens: 500 }]);
    expect(splitSpent([{ shard: "s1", tokens: 800 }], { tokens: 300, costUsd: 0.1 })).toEqual([{ tokens: 300, costUsd: 0.1 }]);
  });

  it("leaves the shards' sum equal to what was spent once a multi-part reservation is settled, and its cost once", async () => {
    const store = new MemoryStore();
    await fill(store, { s0: 900, s1: 200 });
    const ledger = ledgerOn(store, "s0");
    const reservation = reservationOf(await ledger.reserve(() => 2_500, NOON));
    expect(reservation.parts.length).toBe(3);
    await ledger.settle(reservation, { tokens: 1_200, costUsd: 0.25 });
    expect(await total(store)).toBe(900 + 200 + 1_200);
    const shards = await store.readServiceUsage();
    expect(Object.values(shards).reduce((sum, shard) => sum + (shard.cost_usd ?? 0), 0)).toBe(0.25);
    for (const shard of Object.values(shards)) {
      expect(shard.tokens).toBeGreaterThanOrEqual(0);
      expect(shard.tokens).toBeLessThanOrEqual(SHARE);
    }
  });

  it("counts a settlement past the whole reservation at the reservation, and its cost in full", async () => {
    const store = new MemoryStore();
    const ledger = ledgerOn(store, "s0");
    await ledger.settle(reservationOf(await ledger.reserve(() => 500, NOON)), { tokens: 800, costUsd: 0.1 });
    expect(await total(store)).toBe(500);
    expect((await store.readServiceUsage()).s0?.cost_usd).toBe(0.1);
  });

  it("gives a refunded multi-part reservation back whole, every shard as before it", async () => {
    const store = new MemoryStore();
    await fill(store, { s0: 900, s1: 200 });
    const before = await shardTokens(store);
    const ledger = ledgerOn(store, "s0");
    await ledger.settle(reservationOf(await ledger.reserve(() => 2_500, NOON)), { tokens: 0 });
    expect(await shardTokens(store)).toEqual(before);
  });

  it("leaves a part counted as reserved when its settlement is lost: the sum never falls below what was spent", async () => {
    const store = new MemoryStore();
    const ledger = ledgerOn(store, "s0");
    const reservation = reservationOf(await ledger.reserve(() => 2_500, NOON));
    const lost = reservation.parts[1]!.shard;
    const lossy = new ServiceLedger(
      {
        prepareServiceUsage: () => undefined,
        readServiceUsage: () => store.readServiceUsage(),
        updateServiceUsage: (shard, rule) => (shard === lost ? Promise.reject(new Error("connection lost")) : store.updateServiceUsage(shard, rule)),
      },
      CAP,
    );
    await lossy.settle(reservation, { tokens: 1_200 });
    // The first part settled to 1,000, the lost one still holds its 1,000, the third went back.
    expect(await total(store)).toBe(2_000);
  });
});

/**
 * Through the session service: a cold instance reserves the count window at its longest
 * (context_window up to 200 messages of MAX_MESSAGE_CHARS each), 200 x 12,005 tokens = 2.4M, more
 * than one shard's eighth of a 10M cap.
 */
describe("the deployment cap's top-up before the model call", () => {
  /** A message holding `service` from its admission; holdServiceTokens reads only the context's ledger and usage policy. */
  function messageHolding(serviceLedger: ServiceLedger, service: ServiceReservation): InFlightMessage {
    const context: Pick<MessageContext, "serviceLedger" | "usage"> = { serviceLedger, usage: { messagesPerMinute: 20, maxActiveSessions: 5, idleTtlMs: 3_600_000, tokensPerDay: 0 } };
    return new InFlightMessage(context as MessageContext, {} as KnownSession, {} as RequestClaim, { service });
  }

  it("says to retry at midnight when only the message's own admission reservation is in flight: that one is given back with the refusal, not settled later", async () => {
    const store = new MemoryStore();
    // Seven shards spent in full (settled, nothing open): 1,000 tokens of the day left, all on s7.
    await fill(store, { s0: 1_000, s1: 1_000, s2: 1_000, s3: 1_000, s4: 1_000, s5: 1_000, s6: 1_000 });
    // The admission reserved 600 from a warm window behind the session; the planned calls need
    // 1,400: 800 more, which the 400 left cannot hold.
    const serviceLedger = ledgerOn(store, "s7");
    const admitted = reservationOf(await serviceLedger.reserve(() => 600, NOON));
    const refusedAt = NOON + 1_000;
    expect(await messageHolding(serviceLedger, admitted).holdServiceTokens(1_400, refusedAt)).toBe(MIDNIGHT - refusedAt);
    // Refused, the message gives its 600 back (reply-generation ends it refused); nothing else is
    // open, and once its reservation would have lapsed the same 1,400 is still refused: only the
    // day's end lets it in.
    await serviceLedger.settle(admitted, { tokens: 0 });
    expect((await ledgerOn(store, "s7").reserve(() => 1_400, NOON + 121_000))?.admitted).toBe(false);
  });

  it("says to retry once another message's open reservation has settled, when the room with it given back holds the message's whole need", async () => {
    const store = new MemoryStore();
    await fill(store, { s0: 1_000, s1: 1_000, s2: 1_000, s3: 1_000, s4: 1_000, s5: 1_000 });
    // Another message holds 700 of s6 (running); this one's admission holds 600 of s7.
    const other = reservationOf(await ledgerOn(store, "s6").reserve(() => 700, NOON));
    const serviceLedger = ledgerOn(store, "s7");
    const admitted = reservationOf(await serviceLedger.reserve(() => 600, NOON + 1_000));
    // It needs 1,400 in all: 800 more, refused (700 free); with the other's 700 and its own 600 back, 2,000.
    expect(await messageHolding(serviceLedger, admitted).holdServiceTokens(1_400, NOON + 2_000)).toBe(120_000 - 2_000);
    await serviceLedger.settle(admitted, { tokens: 0 });
    await ledgerOn(store, "s6").settle(other, { tokens: 200 });
    expect((await ledgerOn(store, "s7").reserve(() => 1_400, NOON + 3_000))?.admitted).toBe(true);
  });
});

describe("the deployment cap through the session service", () => {
  const suite = tokenSuite();

  it("answers a cold instance's messages whose reservation is larger than one shard's share, and counts what they spent", async () => {
    const store = new MemoryStore();
    await store.seedTemplates({ long: { name: "Long memory", personalityPrompt: "You remember.", context_window: 200 } });
    const usage = { messagesPerMinute: 1_000, maxActiveSessions: 100, idleTtlMs: SESSION_POLICY.idleTtlMs, tokensPerDay: 0, serviceTokensPerDay: 10_000_000 };
    const first = suite.service(store, usage);
    const { sessionId } = await first.create({ userId: `user-${randomUUID()}`, templateId: "long" });
    // Another instance (or this one after its warm cache let the session go) takes the message.
    const cold = suite.service(store, usage);
    let spent = 0;
    for (const message of ["hello", "hello again"]) {
      const reply = await cold.send({ sessionId, message });
      spent += reply.usage?.total_tokens ?? Number.NaN;
    }
    expect(spent).toBeGreaterThan(0);
    const shards = await store.readServiceUsage();
    expect(Object.values(shards).reduce((sum, shard) => sum + shard.tokens, 0)).toBe(spent);
  });
});

describe("a shard's count across midnight, a reservation received before it landing after one of the new day", () => {
  const MIDNIGHT = Date.parse("2026-12-07T00:00:00Z");
  const CAP = 8_000; // a share of 1,000 a shard

  it("counts the late reservation into the new day, never starting its count over", () => {
    const first = reserveServiceTokens("s0", MIDNIGHT + 100, 900, CAP)(null);
    expect(first.outcome.admitted).toBe(true);
    const late = reserveServiceTokens("s0", MIDNIGHT - 100, 50, CAP)(first.next as ServiceUsage);
    expect(late.outcome).toMatchObject({ admitted: true, reservation: { day: utcDay(MIDNIGHT + 100) } });
    expect(late.next).toMatchObject({ day: utcDay(MIDNIGHT + 100), tokens: 950 });
    expect(reserveServiceTokens("s0", MIDNIGHT + 200, 900, CAP)(late.next as ServiceUsage).outcome.admitted).toBe(false);
  });
});
