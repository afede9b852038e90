import { createHmac, timingSafeEqual } from "node:crypto";
import type { z } from "zod";
import { HttpError } from "./http-error";

/** What a cursor continues: a listing of conversations, a conversation's messages, an export, a listing of connections. */
export type CursorKind = "list" | "messages" | "export" | "connections";

/** Bytes of the signature kept: 128 bits, far past guessing. */
const MAC_BYTES = 16;
/** Longer than any cursor this service issues. */
export const MAX_CURSOR_CHARS = 512;

/**
 * Cursors as clients hold them: opaque (base64url of a small JSON payload) and tamper-evident
 * (an HMAC-SHA256 of the payload, its kind and its scope, under a secret of the deployment's
 * that no client can read: `serviceSecrets/cursor`, made on first use). `scope` binds a cursor
 * to what it was issued for (the user of a listing or export, the session of a page of
 * messages): changed, truncated, made up, or replayed elsewhere, it is a 400 `INVALID_CURSOR`,
 * never a 500. What it positions is always read within the caller's own data: even a forged
 * payload could not reach another user's.
 */
export class CursorCodec {
  constructor(private readonly secret: () => Promise<string>) {}

  async seal(kind: CursorKind, scope: string, payload: unknown): Promise<string> {
    const body = Buffer.from(JSON.stringify(payload), "utf8").toString("base64url");
    return `${body}.${(await this.mac(kind, scope, body)).toString("base64url")}`;
  }

  /** The payload of `token`, checked against its signature then `schema`; INVALID_CURSOR otherwise. */
  async open<S extends z.ZodType>(kind: CursorKind, scope: string, token: string, schema: S): Promise<z.infer<S>> {
    const [body = "", mac = "", ...rest] = token.split(".");
    // Compared as written, not decoded: Node's base64url decoding skips characters outside its
    // alphabet and ignores the last character's unused bits, so other texts decode to the same
    // signature, and a cursor this service did not issue would continue.
    const given = Buffer.from(mac, "utf8");
    const expected = Buffer.from((await this.mac(kind, scope, body)).toString("base64url"), "utf8");
    if (rest.length > 0 || body === "" || given.length !== expected.length || !timingSafeEqual(given, expected)) throw invalid();
    let payload: unknown;
    try {
      payload = JSON.parse(Buffer.from(body, "base64url").toString("utf8"));
    } catch {
      throw invalid();
    }
    const parsed = schema.safeParse(payload);
    if (!parsed.success) throw invalid();
    return parsed.data;
  }

  private async mac(kind: CursorKind, scope: string, body: string): Promise<Buffer> {
    return createHmac("sha256", await this.secret()).update(`${kind}\u0000${scope}\u0000${body}`, "utf8").digest().subarray(0, MAC_BYTES);
  }
}

function invalid(): HttpError {
  return new HttpError("INVALID_CURSOR", "The cursor is not one this service issued for this request; start again without it");
}
