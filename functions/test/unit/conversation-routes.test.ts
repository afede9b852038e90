import { matchErase, matchExport, matchGetSession, matchListSessions } from "../../src/http/conversation-routes";
import { servedBy } from "../../src/http/shared-paths";

describe("the routes of a user's conversations", () => {
  it.each([
    [matchListSessions, "/api/v1/chatbot/sessions", {}],
    [matchListSessions, "/", {}],
    [matchListSessions, "/api/v1/chatbot/sessions/x", undefined],
    [matchListSessions, "/api/v1/chatbot/session", undefined],
    [matchExport, "/api/v1/chatbot/me/export", {}],
    [matchExport, "/api/v1/chatbot/me", undefined],
    [matchErase, "/api/v1/chatbot/me", {}],
    [matchErase, "//api/v1/chatbot/me/", {}],
    [matchErase, "/api/v1/chatbot/me/export", undefined],
    [matchGetSession, "/api/v1/chatbot/session/abc", { sessionId: "abc" }],
    [matchGetSession, "/abc", { sessionId: "abc" }],
  ])("%p matches %s as %p", (match, path, expected) => {
    expect(match(path)).toEqual(expected);
  });

  it("has endSession answer GET on its path as getSession, Hosting's rewrites matching paths only", () => {
    expect(servedBy("endSession").map((endpoint) => [endpoint.name, endpoint.methods])).toEqual([
      ["endSession", ["DELETE"]],
      ["getSession", ["GET"]],
    ]);
    expect(servedBy("getSession").map((endpoint) => endpoint.name)).toEqual(["getSession"]);
  });
});
