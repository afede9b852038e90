import { createServer } from "node:http";
import type { AddressInfo } from "node:net";

/**
 * What a raw provider's body is given: `write` waits for the client to read, answering false once
 * it left; `cut` drops the connection; `gone` settles once the client left (or the server stopped).
 */
export type RawBody = (write: (piece: string) => Promise<boolean>, cut: () => Promise<void>, gone: Promise<void>) => Promise<void>;

/**
 * A provider that answers every request `status` (200 unless told) with `contentType` (a function:
 * asked at each request) and writes `body` (one piece per write, waiting for the client to read
 * each), then ends the body: for bodies the fake OpenAI server does not script (a stream cut
 * mid-event, a body that never ends). `sent` counts the characters it wrote.
 */
export async function rawProvider(body: RawBody, contentType: string | (() => string) = "text/event-stream", status = 200) {
  let sent = 0;
  const server = createServer((request, response) => {
    request.resume();
    request.on("end", () => {
      response.writeHead(status, { "content-type": typeof contentType === "string" ? contentType : contentType() });
      const write = (piece: string) =>
        new Promise<boolean>((resolve) => {
          if (response.destroyed) {
            resolve(false);
            return;
          }
          sent += piece.length;
          if (response.write(piece)) {
            resolve(true);
            return;
          }
          const done = () => { response.off("drain", done); response.off("close", done); resolve(!response.destroyed); };
          response.on("drain", done);
          response.on("close", done);
        });
      const cut = async () => {
        await new Promise((flushed) => response.write("", flushed));
        response.destroy();
      };
      const gone = new Promise<void>((resolve) => response.once("close", resolve));
      void body(write, cut, gone).then(() => { if (!response.destroyed) response.end(); });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`,
    sent: () => sent,
    stop: () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => { resolve(); }); }),
  };
}

/** 64 KiB of text: the piece a flooding provider writes at a time. */
export const FLOOD_PIECE = "x".repeat(65_536);

/**
 * Writes `piece` until 64 MiB went or the client left, then holds the body open until the client
 * leaves: a provider whose body never ends (an endless one goes on until the deadline), or a gzip
 * bomb as fetch inflates it.
 */
export async function flood(write: (piece: string) => Promise<boolean>, gone: Promise<void>, piece = FLOOD_PIECE): Promise<void> {
  for (let sent = 0; sent < 64 * 2 ** 20; sent += piece.length) if (!(await write(piece))) return;
  await gone;
}
