import { randomUUID } from "node:crypto";
import { placedSessionId } from "../../src/sharding/session-ids";
import { isSessionId, matchCreateSession, matchEndSession, matchSendMessage, ROUTE_PREFIX } from "../../src/http/routes";

const ID = "0f8fad5b-d9cb-469f-a165-70867728950e";

describe("matchCreateSession", () => {
  it.each(["/", "", "//", ROUTE_PREFIX, `${ROUTE_PREFIX}/`, "//api//v1/chatbot//session//"])("matches %p", (path) => {
    expect(matchCreateSession(path)).toEqual({});
  });

  it.each([`/${ID}`, `${ROUTE_PREFIX}/${ID}`, "/api/v1/chatbot", "/api/v1/chatbot/sessions", "/api/v2/chatbot/session", "/extra"])("does not match %p", (path) => {
    expect(matchCreateSession(path)).toBeUndefined();
  });
});

describe("matchSendMessage", () => {
  it.each([
    `/${ID}`,
    `/${ID}/`,
    `/${ID}/message`,
    `/${ID}/message/`,
    `${ROUTE_PREFIX}/${ID}/message`,
    `${ROUTE_PREFIX}/${ID}/message/`,
    `${ROUTE_PREFIX}/${ID}`,
    `//api//v1//chatbot//session//${ID}//message//`,
  ])("matches %p with the session id", (path) => {
    expect(matchSendMessage(path)).toEqual({ sessionId: ID });
  });

  it.each([
    "/",
    ROUTE_PREFIX,
    `/${ID}/messages`,
    `/${ID}/Message`,
    `/${ID}/message/extra`,
    `/${ID}/other`,
    `${ROUTE_PREFIX}/${ID}/message/extra`,
    `/api/v1/chatbot/${ID}/message`,
  ])("does not match %p", (path) => {
    expect(matchSendMessage(path)).toBeUndefined();
  });
});

describe("matchEndSession", () => {
  it.each([`/${ID}`, `/${ID}/`, `//${ID}`, `${ROUTE_PREFIX}/${ID}`, `${ROUTE_PREFIX}/${ID}/`, `/api//v1/chatbot/session//${ID}`])("matches %p with the session id", (path) => {
    expect(matchEndSession(path)).toEqual({ sessionId: ID });
  });

  it.each(["/", ROUTE_PREFIX, `/${ID}/message`, `${ROUTE_PREFIX}/${ID}/message`, `/${ID}/extra`, `/api/v1/chatbot/${ID}`])("does not match %p", (path) => {
    expect(matchEndSession(path)).toBeUndefined();
  });
});

describe("session id segments", () => {
  it("decodes percent-escapes in the id", () => {
    expect(matchEndSession("/%61bc")).toEqual({ sessionId: "abc" });
    expect(matchSendMessage(`/${ID.replace("0f", "%30f")}/message`)).toEqual({ sessionId: ID });
  });

  it.each(["/%E0%A4%A", "/%", "/%zz", "/abc%"])("turns the malformed escape %p into an empty id that no session has", (path) => {
    expect(matchEndSession(path)).toEqual({ sessionId: "" });
    expect(matchSendMessage(`${path}/message`)).toEqual({ sessionId: "" });
    expect(isSessionId("")).toBe(false);
  });

  it("keeps an escaped slash inside one segment, where it cannot pass as an id", () => {
    const match = matchEndSession(`/${ID}%2Fmessage`);
    expect(match).toEqual({ sessionId: `${ID}/message` });
    expect(isSessionId(match!.sessionId!)).toBe(false);
  });
});

describe("isSessionId", () => {
  it("accepts every id crypto.randomUUID() issues", () => {
    for (let i = 0; i < 200; i += 1) {
      const id = randomUUID();
      expect(isSessionId(id)).toBe(true);
    }
  });

  it("accepts the v8 ids issued for a session on any instance of a sharded deployment", () => {
    for (const position of [0, 1, 7, 255]) expect(isSessionId(placedSessionId(position, 256))).toBe(true);
  });

  it.each([
    ["upper case", ID.toUpperCase()],
    ["mixed case", ID.replace("f", "F")],
    ["UUID v1", "0f8fad5b-d9cb-169f-a165-70867728950e"],
    ["UUID v7", "0f8fad5b-d9cb-769f-a165-70867728950e"],
    ["UUID v8 of the wrong variant", "0f8fad5b-d9cb-869f-c165-70867728950e"],
    ["wrong variant", "0f8fad5b-d9cb-469f-c165-70867728950e"],
    ["nil UUID", "00000000-0000-0000-0000-000000000000"],
    ["no dashes", ID.replaceAll("-", "")],
    ["braces", `{${ID}}`],
    ["surrounding space", ` ${ID}`],
    ["trailing newline", `${ID}\n`],
    ["one character short", ID.slice(1)],
    ["non-hex digit", ID.replace("a", "g")],
    ["empty", ""],
    ["database path", "../templates"],
  ])("refuses %s", (_name, value) => {
    expect(isSessionId(value)).toBe(false);
  });
});
