import { HttpError } from "../../src/http/http-error";
import { getSessionQuery, listSessionsQuery, parseQuery } from "../../src/http/query-schemas";

function issues(work: () => unknown): unknown {
  try {
    work();
    return undefined;
  } catch (error) {
    return error instanceof HttpError ? { code: error.code, details: error.details } : error;
  }
}

describe("query strings", () => {
  it("take defaults, page sizes from 1 to 100, and ignore parameters they do not know", () => {
    expect(parseQuery(listSessionsQuery(true), "user_id=alice&utm_source=x")).toEqual({ user_id: "alice", limit: 20 });
    expect(parseQuery(listSessionsQuery(false), "limit=100")).toEqual({ limit: 100 });
    expect(parseQuery(getSessionQuery, undefined)).toEqual({ limit: 50 });
    expect(parseQuery(getSessionQuery, "limit=1&before=abc.def")).toEqual({ limit: 1, before: "abc.def" });
  });

  it.each([
    ["limit=0", "limit"],
    ["limit=101", "limit"],
    ["limit=", "limit"],
    ["limit=1e2", "limit"],
    ["limit=%201", "limit"],
    ["limit=1&limit=1", "limit"],
    [`before=${"a".repeat(600)}.b`, "before"],
  ])("refuse %s with a 400 naming the field", (query, field) => {
    expect(issues(() => parseQuery(getSessionQuery, query))).toEqual({ code: "INVALID_REQUEST", details: [expect.objectContaining({ field })] });
  });

  it("leave a cursor of an issued cursor's length to the codec, whatever its form (400 INVALID_CURSOR there, not a field's format)", () => {
    expect(parseQuery(getSessionQuery, "before=nodot")).toMatchObject({ before: "nodot" });
    expect(parseQuery(getSessionQuery, "before=")).toMatchObject({ before: "" });
  });

  it("require a user_id without a token, and check it as a body's", () => {
    expect(issues(() => parseQuery(listSessionsQuery(true), ""))).toEqual({ code: "INVALID_REQUEST", details: [{ field: "user_id", message: "is required" }] });
    expect(issues(() => parseQuery(listSessionsQuery(true), "user_id=%01x"))).toEqual({ code: "INVALID_REQUEST", details: [{ field: "user_id", message: "must not contain control characters" }] });
    expect(issues(() => parseQuery(listSessionsQuery(true), `user_id=${"u".repeat(129)}`))).toMatchObject({ details: [{ field: "user_id" }] });
  });
});
