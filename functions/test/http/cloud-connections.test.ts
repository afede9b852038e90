import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { randomUUID } from "node:crypto";
import express from "express";
import { cloudHandler } from "../../src/http/cloud-adapter";
import { call, startHarness, type Harness } from "../support/http-harness";

/**
 * The connection functions through the Cloud Functions handler on express, as the Functions
 * framework serves them (the function's name stripped from the path, the body in `rawBody`): the
 * query string of a GET or DELETE names who acts and the page wanted.
 */
describe("connection functions through the Cloud Functions handler (express)", () => {
  let harness: Harness;
  let server: Server;
  let baseUrl: string;

  beforeAll(async () => {
    harness = await startHarness({ store: "memory" });
    const app = express();
    for (const name of ["connections", "connectionMessages", "connection"] as const) {
      const handler = cloudHandler(name, () => Promise.resolve(harness.api.runtime.api));
      app.use(`/${name}`, express.raw({ type: () => true }), (request, response) => {
        void handler(Object.assign(request, { rawBody: Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0) }), response);
      });
    }
    server = app.listen(0, "127.0.0.1");
    await new Promise((resolve) => server.once("listening", resolve));
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    await harness.close();
  });

  it("reads who acts and the page asked for from the query string, whatever else it holds", async () => {
    const [ann, ben] = [`ann-${randomUUID()}`, `ben-${randomUUID()}`];
    const asked = await call(baseUrl, "POST", "/connections", { user_id: ann, other_user_id: ben });
    expect(asked.status).toBe(201);
    const id = (asked.body.connection as { connection_id: string }).connection_id;
    const listed = await call(baseUrl, "GET", `/connections?limit=1&user_id=${encodeURIComponent(ben)}&unused=a%3Fb`);
    expect(listed.body.connections).toEqual([expect.objectContaining({ connection_id: id, requested_by_you: false })]);
    const read = await call(baseUrl, "GET", `/connectionMessages/${id}?user_id=${encodeURIComponent(ann)}&limit=5`);
    expect(read.body).toMatchObject({ success: true, messages: [], next_before: null });
    const ended = await call(baseUrl, "DELETE", `/connection/${id}?user_id=${encodeURIComponent(ben)}`);
    expect(ended.body).toMatchObject({ connection: { status: "ended" } });
    const unnamed = await call(baseUrl, "GET", "/connections");
    expect([unnamed.status, unnamed.body.error?.code]).toEqual([400, "INVALID_REQUEST"]);
  });
});
