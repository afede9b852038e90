import { randomUUID } from "node:crypto";
import { userKey } from "../../src/session/ledger/limits";
import type { Exchange } from "../../src/store/records";
import { ApiUser, HOSTING_ROUTES } from "../support/connection-api";
import { newSession, appendAt } from "../support/fixtures";
import { call, ROUTES, startHarness, type Harness } from "../support/http-harness";
import { startLocalProcess, type LocalProcess } from "../support/local-process";
import { describeWithRtdb, valueWhere } from "../support/rtdb";
import { standInSkipReason, startStandIn, type StandIn } from "../support/stand-in";
import { describeUnless } from "../support/visible-skip";
import { WholeStore } from "../support/whole-store";

/** Sessions of the user: enough that the first pass takes many batches at the stand-in's latency. */
const SESSIONS = 300;
/** Every round trip waits this long: the first pass then lasts long enough to be killed in the middle. */
const LATENCY_MS = 20;
const MINUTE = 60_000;

/**
 * An erasure whose instance is killed (SIGKILL, no chance to clean up) in the middle of its first
 * pass: the user is left half-erased, refused new sessions, until the sweep, run by another
 * instance, finishes both passes; then nothing anywhere holds the user's id or words. The
 * instance is the built local server in an OS process of its own, on a stand-in database with
 * latency (a suite's own: latency is server-wide).
 */
describeWithRtdb("erasure interrupted by a crash", () => {
  describeUnless(standInSkipReason, "kill -9 in the middle of the first pass, then the sweep", () => {
    let standIn: StandIn;
    let harness: Harness;
    let victim: LocalProcess | undefined;

    beforeAll(async () => {
      standIn = await startStandIn(LATENCY_MS);
      harness = await startHarness({ store: "rtdb", databaseHost: standIn.host });
    }, 60_000);
    afterAll(async () => {
      victim?.child.kill("SIGKILL");
      await harness.close();
      standIn.process.kill();
    });

    it("leaves the user half-erased and refused, then the sweep finishes: no node holds their id or words", async () => {
      const userId = `user-${randomUUID()}`;
      const word = `secret${randomUUID().replaceAll("-", "")}`;
      const store = harness.api.store;
      const ids: string[] = [];
      for (let start = 0; start < SESSIONS; start += 50) {
        await Promise.all(
          Array.from({ length: Math.min(50, SESSIONS - start) }, async (_, i) => {
            const session = newSession({ user_id: userId, created_at: Date.now() - MINUTE });
            ids.push(session.id);
            await store.createSession(session);
            const at = Date.now() - MINUTE + 1;
            const exchange: Exchange = {
              user: { role: "user", content: `${word} ${start + i}`, timestamp: at },
              assistant: { role: "assistant", content: `about ${word}`, timestamp: at },
              head: { title: `${word} ${start + i}`, template_id: session.meta.template_id, template_name: session.meta.template_name, created_at: session.meta.created_at },
            };
            await store.appendExchange(session.id, exchange, appendAt(at));
          }),
        );
      }
      // Connections with other users, a message each way, a device: erased after the sessions, so by the sweep here.
      const user = new ApiUser(userId, harness.api, HOSTING_ROUTES);
      for (const peer of [`peer-${randomUUID()}`, `peer-${randomUUID()}`].map((id) => new ApiUser(id, harness.api, HOSTING_ROUTES))) {
        const connection = await user.connectWith(peer);
        expect((await user.send(connection, `${word} to a peer`)).status).toBe(201);
        expect((await peer.send(connection, `${word} back`)).status).toBe(201);
      }
      expect((await user.register(`token-${word}`)).status).toBe(200);
      const whole = new WholeStore([store, harness.api.connectionStore], harness.namespace, standIn.host);
      try {
        expect(await whole.holding([userId, word])).toEqual([userId, word]);
        victim = await startLocalProcess({ GCLOUD_PROJECT: harness.namespace!, FIREBASE_DATABASE_EMULATOR_HOST: standIn.host });
        const erasing = call(victim.url, "DELETE", `${ROUTES.erase}?user_id=${userId}`).catch((error: unknown) => error);
        // Killed once its first batch is deleted, with most of the user's data left.
        const index = whole.raw!.ref(`userConversations/${userId}`);
        await valueWhere(index, (entries) => Object.keys(entries ?? {}).length < SESSIONS, "the first batch of the user's index deleted");
        victim.child.kill("SIGKILL");
        await erasing;
        victim = undefined;

        const left = (await whole.raw!.ref(`userConversations/${userId}`).once("value")).numChildren();
        expect(left).toBeGreaterThan(0);
        expect(left).toBeLessThan(SESSIONS);
        expect((await whole.raw!.ref(`erasures/${userKey(userId)}/phase`).once("value")).val()).toBe("erasing");
        // Half-erased, the user is refused, not half-served.
        const refused = await harness.api.call("POST", ROUTES.create, { user_id: userId, template_id: "friendly-assistant" });
        expect(refused.body.error?.code).toBe("ERASURE_IN_PROGRESS");

        // The sweep, on another instance: once the dead request's time is up it takes the first pass over; later the second.
        expect((await harness.api.runtime.maintain(Date.now() + 2 * MINUTE)).erasuresFinished).toBe(0);
        expect((await whole.raw!.ref(`userConversations/${userId}`).once("value")).exists()).toBe(false);
        expect((await harness.api.runtime.maintain(Date.now() + 10 * MINUTE)).erasuresFinished).toBe(1);
        expect(await whole.holding([userId, word, ...ids])).toEqual([]);
        expect(await whole.holdingBesideUsage([userKey(userId)])).toEqual([]);
        expect((await harness.api.call("POST", ROUTES.create, { user_id: userId, template_id: "friendly-assistant" })).status).toBe(201);
      } finally {
        await whole.close();
      }
    }, 120_000);
  });
});
