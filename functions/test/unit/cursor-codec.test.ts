import { z } from "zod";
import { CursorCodec } from "../../src/http/cursor-codec";
import { HttpError } from "../../src/http/http-error";

const position = z.object({ a: z.number(), s: z.string() });
const codec = new CursorCodec(async () => "a-secret-of-the-deployment-32-characters");

async function refusal(work: Promise<unknown>): Promise<string | undefined> {
  try {
    await work;
    return undefined;
  } catch (error) {
    return error instanceof HttpError ? `${error.status} ${error.code}` : String(error);
  }
}

describe("cursors", () => {
  it("give back what they sealed, for the kind and scope they were sealed for", async () => {
    const cursor = await codec.seal("list", "alice", { a: 5, s: "x" });
    expect(cursor).toMatch(/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
    await expect(codec.open("list", "alice", cursor, position)).resolves.toEqual({ a: 5, s: "x" });
  });

  it("are refused with 400 INVALID_CURSOR when changed, cut, made up, or used for another kind, scope or deployment", async () => {
    const cursor = await codec.seal("list", "alice", { a: 5, s: "x" });
    const [body = "", mac = ""] = cursor.split(".");
    const forgedBody = Buffer.from(JSON.stringify({ a: 6, s: "x" })).toString("base64url");
    const cases = [
      `${forgedBody}.${mac}`,
      `${body}.${mac.slice(0, -2)}`,
      `${body}.`,
      `.${mac}`,
      `${body}.${mac}.extra`,
      "",
      "not a cursor at all",
      `${Buffer.from("{not json").toString("base64url")}.${mac}`,
    ];
    for (const bad of cases) expect(await refusal(codec.open("list", "alice", bad, position))).toBe("400 INVALID_CURSOR");
    expect(await refusal(codec.open("export", "alice", cursor, position))).toBe("400 INVALID_CURSOR");
    expect(await refusal(codec.open("connections", "alice", cursor, position))).toBe("400 INVALID_CURSOR");
    expect(await refusal(codec.open("list", "bob", cursor, position))).toBe("400 INVALID_CURSOR");
    expect(await refusal(new CursorCodec(async () => "another-deployment-s-secret-of-32-chars").open("list", "alice", cursor, position))).toBe("400 INVALID_CURSOR");
  });

  it("are refused when their signature is written otherwise than issued, though it decodes to the same bytes", async () => {
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const cursor = await codec.seal("list", "alice", { a: 5, s: "x" });
    const [body = "", mac = ""] = cursor.split(".");
    // 16 bytes in 22 characters: the last one's low 4 bits carry nothing, and Node's base64url
    // decoding skips characters outside its alphabet and padding.
    const last = alphabet.indexOf(mac.at(-1) ?? "A");
    const sibling = alphabet[(last & ~0x0f) | ((last + 1) & 0x0f)] ?? "";
    const rewritten = [`${mac.slice(0, -1)}${sibling}`, `${mac}~`, `${mac}!!`, `${mac}==`, `${mac} `, `${mac}\u0000`, ` ${mac}`];
    for (const written of rewritten) expect(Buffer.from(written, "base64url")).toEqual(Buffer.from(mac, "base64url"));
    for (const written of rewritten) expect(await refusal(codec.open("list", "alice", `${body}.${written}`, position))).toBe("400 INVALID_CURSOR");
  });

  it("are refused when their signed payload is not what the route expects (an older format)", async () => {
    const cursor = await codec.seal("list", "alice", { a: "five" });
    expect(await refusal(codec.open("list", "alice", cursor, position))).toBe("400 INVALID_CURSOR");
  });
});
