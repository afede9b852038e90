import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import express from "express";
import { cloudHandler } from "../../src/http/cloud-adapter";
import { streamCall } from "../support/event-stream-client";
import { createSession, startHarness, type Harness } from "../support/http-harness";
import { anyUsage } from "../support/any-usage";

/**
 * The deployed path: the `onRequest` handler on an express app, as the Functions framework
 * serves it (the body already read into `rawBody`, the function's name stripped from the path).
 */
describe("streamed replies through the Cloud Functions handler (express)", () => {
  let harness: Harness;
  let server: Server;
  let baseUrl: string;

  beforeAll(async () => {
    harness = await startHarness({ store: "memory", heartbeatMs: 30 });
    const handler = cloudHandler("sendMessage", () => Promise.resolve(harness.api.runtime.api));
    const app = express();
    // Mounted at the function's name, which express strips from the path, as the platform does.
    app.use("/sendMessage", express.raw({ type: () => true }), (request, response) => {
      const withRawBody = Object.assign(request, { rawBody: Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0) });
      void handler(withRawBody, response);
    });
    server = app.listen(0, "127.0.0.1");
    await new Promise((resolve) => server.once("listening", resolve));
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/sendMessage`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    await harness.close();
  });

  it("streams deltas, heartbeats and done on the express response", async () => {
    const id = await createSession(harness.api);
    harness.fake.enqueue({ kind: "stream", chunks: ["Over", " express", "."], chunkDelayMs: 80 });
    const answer = await streamCall(baseUrl, `/${id}`, { message: "hi" });
    expect(answer.status).toBe(200);
    expect(answer.headers.get("content-type")).toMatch(/^text\/event-stream/);
    expect(answer.headers.get("cache-control")).toBe("no-cache");
    expect(answer.headers.get("x-accel-buffering")).toBe("no");
    expect(answer.events.map((event) => event.event)).toEqual(["delta", "delta", "delta", "done"]);
    expect(answer.events.at(-1)?.data).toEqual({ success: true, response: "Over express.", session_id: id, message_count: 1, truncated: false, usage: anyUsage() });
    expect(answer.events[2]!.at - answer.events[0]!.at).toBeGreaterThanOrEqual(120);
    expect(answer.comments.length).toBeGreaterThanOrEqual(2);
  });

  it("answers JSON before the first delta, and an error event after it", async () => {
    const id = await createSession(harness.api);
    harness.fake.enqueue({ kind: "status", status: 503 });
    const refused = await streamCall(baseUrl, `/${id}`, { message: "hi" });
    expect(refused.status).toBe(503);
    expect(refused.json).toMatchObject({ success: false, error: { code: "MODEL_UNAVAILABLE" } });

    harness.fake.enqueue({ kind: "stream", chunks: ["cut", " here"], cutAfter: 1 });
    const cut = await streamCall(baseUrl, `/${id}`, { message: "hi" });
    expect(cut.events.map((event) => event.event)).toEqual(["delta", "error"]);
    expect(cut.events.at(-1)?.data).toMatchObject({ success: false, error: { code: "MODEL_UNAVAILABLE" } });
    expect(await harness.api.store.readSessionState(id)).toMatchObject({ message_count: 0 });
  });
});
