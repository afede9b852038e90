import { recentMessages } from "../support/recent-messages";
import type { Log, LogFields } from "../../src/log/log";
import { scheduledMaintenance } from "../../src/runtime/scheduled-maintenance";
import { FaultyStore } from "../support/faulty-store";
import { createSession, describeEachStore, ROUTES, startHarness, type Harness } from "../support/http-harness";

const MINUTE = 60_000;
const DAY = 86_400_000;

describeEachStore("expiry and retention", (kind) => {
  let harness: Harness;
  let now = Date.parse("2026-01-01T00:00:00Z");
  const logged: { message: string; fields?: LogFields }[] = [];
  const log: Log = { info: (message, fields) => logged.push({ message, fields }), warn: () => undefined, error: () => undefined };

  beforeAll(async () => {
    harness = await startHarness({
      store: kind,
      clock: () => now,
      log,
      env: { SESSION_IDLE_TTL_MINUTES: "30", SESSION_RETENTION_DAYS: "7" },
    });
  });
  afterAll(async () => harness.close());

  const state = (id: string) => harness.api.store.readSessionState(id);

  it("refuses a message to a session idle past the TTL with 410, and records the expiry", async () => {
    const id = await createSession(harness.api);
    const created = now;
    await harness.api.call("POST", ROUTES.message(id), { message: "hello" });
    now += 30 * MINUTE;
    expect((await harness.api.call("POST", ROUTES.message(id), { message: "just in time" })).status).toBe(200);
    now += 30 * MINUTE + 1;
    harness.fake.reset();
    const late = await harness.api.call("POST", ROUTES.message(id), { message: "too late" });
    expect(late.status).toBe(410);
    expect(late.body.error?.code).toBe("SESSION_EXPIRED");
    expect(harness.fake.requests).toHaveLength(0);
    expect(await state(id)).toMatchObject({ status: "expired", message_count: 2, ended_at: created + 60 * MINUTE });
    expect((await state(id))?.idle_since).toBeUndefined();
    expect((await harness.api.call("DELETE", ROUTES.end(id))).body.error?.code).toBe("SESSION_EXPIRED");
    // Expired sessions keep their history.
    expect(await recentMessages(harness.api.store, id, 10)).toHaveLength(4);
  });

  it("expires idle sessions in the scheduled clean-up, leaving active and ended ones", async () => {
    const idleSince = now;
    const idle = [await createSession(harness.api), await createSession(harness.api), await createSession(harness.api)];
    const ended = await createSession(harness.api);
    await harness.api.call("DELETE", ROUTES.end(ended));
    now += 20 * MINUTE;
    const active = await createSession(harness.api);
    now += 15 * MINUTE;

    // Two runs at once, as overlapping schedules would: each session is expired exactly once.
    const reports = await Promise.all([harness.api.runtime.maintain(now), (await harness.instance()).runtime.maintain(now)]);
    expect(reports[0].expired + reports[1].expired).toBe(idle.length);
    // Expired as of the moment their TTL ran out, as a request finding them would record it.
    for (const id of idle) expect(await state(id)).toMatchObject({ status: "expired", ended_at: idleSince + 30 * MINUTE });
    expect(await state(active)).toMatchObject({ status: "active" });
    expect(await state(ended)).toMatchObject({ status: "ended" });
    const again = await harness.api.runtime.maintain(now);
    expect(again.expired).toBe(0);
    expect((await harness.api.call("POST", ROUTES.message(idle[0]!), { message: "hi" })).status).toBe(410);
    expect((await harness.api.call("POST", ROUTES.message(active), { message: "hi" })).status).toBe(200);
  });

  it("expires no session under a message it received in time: neither the sweep nor another message during the model call", async () => {
    const id = await createSession(harness.api);
    harness.fake.reset();
    // The message arrives a second before the TTL runs out; its model call takes longer.
    now += 30 * MINUTE - 1_000;
    const release = harness.fake.holdAnswers();
    const sending = harness.api.call("POST", ROUTES.message(id), { message: "just in time" });
    await harness.fake.awaitRequests(1);
    now += 5_000;
    await harness.api.runtime.maintain(now);
    expect(await state(id)).toMatchObject({ status: "active" });
    // Another message now: taken beside it, the session being in use.
    const second = harness.api.call("POST", ROUTES.message(id), { message: "and another" });
    await harness.fake.awaitRequests(2);
    release();
    expect((await sending).body).toMatchObject({ success: true, message_count: 1 });
    expect((await second).body).toMatchObject({ success: true, message_count: 2 });
    // Stored, they count as activity: the session lives on a TTL from their answers.
    now += 30 * MINUTE - 1_000;
    await harness.api.runtime.maintain(now);
    expect(await state(id)).toMatchObject({ status: "active", message_count: 2 });
  });

  it("deletes closed sessions after the retention period, and only those", async () => {
    const old = await createSession(harness.api);
    await harness.api.call("DELETE", ROUTES.end(old));
    now += 6 * DAY;
    const recent = await createSession(harness.api);
    await harness.api.call("DELETE", ROUTES.end(recent));
    now += DAY + 1;
    const open = await createSession(harness.api);
    await harness.api.call("POST", ROUTES.message(open), { message: "keep me" });

    const report = await harness.api.runtime.maintain(now);
    expect(report.deleted).toBeGreaterThanOrEqual(1);
    expect(await state(old)).toBeNull();
    expect(await recentMessages(harness.api.store, old, 10)).toEqual([]);
    expect(await state(recent)).toMatchObject({ status: "ended" });
    expect(await state(open)).toMatchObject({ status: "active" });
    expect((await harness.api.call("POST", ROUTES.message(old), { message: "gone" })).status).toBe(404);
  });

  it("runs as the scheduled function and logs its figures", async () => {
    await createSession(harness.api);
    now += 31 * MINUTE;
    logged.length = 0;
    await scheduledMaintenance(harness.api.runtime);
    const entry = logged.find((line) => line.message === "maintenance");
    expect(entry?.fields).toMatchObject({ expired: expect.any(Number), deleted: expect.any(Number), keysForgotten: expect.any(Number) });
    expect(entry?.fields?.expired).toBeGreaterThanOrEqual(1);
  });
}, { sharded: true });

describeEachStore("retention with a failing delete", (kind) => {
  let harness: Harness;
  let faulty: FaultyStore | undefined;
  let now = Date.parse("2026-01-01T00:00:00Z");
  beforeAll(async () => {
    harness = await startHarness({
      store: kind,
      clock: () => now,
      env: { SESSION_RETENTION_DAYS: "1" },
      wrapStore: (store) => (faulty ??= new FaultyStore(store)).store,
    });
  });
  afterAll(async () => harness.close());

  it("goes on with the rest of the run when one old session's delete fails, and deletes it on the next", async () => {
    const old = [await createSession(harness.api, "friendly-assistant", "keep_user"), await createSession(harness.api, "friendly-assistant", "keep_user")];
    for (const id of old) await harness.api.call("DELETE", ROUTES.end(id));
    // A user erases their data: the second pass comes with the next run.
    const gone = await createSession(harness.api, "friendly-assistant", "gone_user");
    await harness.api.call("POST", ROUTES.message(gone), { message: "secret words" });
    expect((await harness.api.call("DELETE", `${ROUTES.erase}?user_id=gone_user`)).status).toBe(200);
    now += 2 * DAY;
    // One delete fails (a database deadline, say): the other session, the erasure and the rest still run.
    faulty?.arm("deleteSession", "before");
    expect(await harness.api.runtime.maintain(now)).toMatchObject({ deleted: 1, erasuresFinished: 1 });
    const left = await Promise.all(old.map((id) => harness.api.store.readSessionState(id)));
    expect(left.filter((state) => state !== null)).toHaveLength(1);
    expect(await harness.api.runtime.maintain(now)).toMatchObject({ deleted: 1 });
    expect(await Promise.all(old.map((id) => harness.api.store.readSessionState(id)))).toEqual([null, null]);
  });
});
