import { HttpError, type FieldIssue } from "../../src/http/http-error";
import { createSessionBody, parseBody, sendMessageBody } from "../../src/http/request-schemas";

/** The HttpError `parseBody` throws, failing the test when it accepts the body. */
function refusal(run: () => unknown): HttpError {
  try {
    run();
  } catch (error) {
    if (error instanceof HttpError) return error;
    throw error;
  }
  throw new Error("the body was accepted");
}

function issues(run: () => unknown): readonly FieldIssue[] {
  return refusal(run).details ?? [];
}

const createBody = (body: unknown) => parseBody(createSessionBody(true), body);
const sendBody = (max: number, body: unknown) => parseBody(sendMessageBody(max), body);

describe("parseBody(createSessionBody)", () => {
  it("returns the two fields, with user_id trimmed", () => {
    expect(createBody({ user_id: "  user_1 \t", template_id: "friendly-assistant" })).toEqual({ user_id: "user_1", template_id: "friendly-assistant" });
  });

  it("drops unknown fields", () => {
    const parsed = createBody({ user_id: "u", template_id: "t", role: "system", system_prompt: "obey", settings: { model: "x" } });
    expect(parsed).toEqual({ user_id: "u", template_id: "t" });
    expect(Object.keys(parsed).sort()).toEqual(["template_id", "user_id"]);
  });

  it("answers 400 INVALID_REQUEST naming each missing field", () => {
    const error = refusal(() => createBody({}));
    expect(error.status).toBe(400);
    expect(error.code).toBe("INVALID_REQUEST");
    expect(error.details).toEqual([
      { field: "user_id", message: "is required" },
      { field: "template_id", message: "is required" },
    ]);
    expect(error.message).toBe("Invalid request body: user_id is required; template_id is required");
  });

  it.each([
    [42, "must be a string, got a number"],
    [true, "must be a string, got a boolean"],
    [null, "must be a string, got null"],
    [["u"], "must be a string, got an array"],
    [{ ".sv": "timestamp" }, "must be a string, got an object"],
  ])("describes the wrong type of user_id %p", (value, message) => {
    expect(issues(() => createBody({ user_id: value, template_id: "t" }))).toEqual([{ field: "user_id", message }]);
  });

  it.each(["", "   ", "\t\n"])("refuses the blank user_id %p", (value) => {
    expect(issues(() => createBody({ user_id: value, template_id: "t" }))).toEqual([{ field: "user_id", message: "must not be empty" }]);
  });

  it("limits user_id to 128 characters after trimming", () => {
    expect(createBody({ user_id: ` ${"u".repeat(128)} `, template_id: "t" }).user_id).toHaveLength(128);
    expect(issues(() => createBody({ user_id: "u".repeat(129), template_id: "t" }))).toEqual([
      { field: "user_id", message: "must be at most 128 characters" },
    ]);
  });

  it.each(["a\u0000b", "a\u001bb", "a\u007fb"])("refuses control characters inside user_id (%j)", (value) => {
    expect(issues(() => createBody({ user_id: value, template_id: "t" }))).toEqual([
      { field: "user_id", message: "must not contain control characters" },
    ]);
  });

  it.each(["../userSessions", "a/b", "a.b", "", " t", "x".repeat(65), "$t", "t#", "[t]"])("refuses the template_id %p", (value) => {
    expect(issues(() => createBody({ user_id: "u", template_id: value }))).toEqual([
      { field: "template_id", message: "must be 1 to 64 letters, digits, '-' or '_'" },
    ]);
  });

  it.each(["friendly-assistant", "socratic_tutor", "A1", "x".repeat(64)])("accepts the template_id %p", (value) => {
    expect(createBody({ user_id: "u", template_id: value }).template_id).toBe(value);
  });

  it.each([[null], [[]], ["text"], [42]])("refuses the body %p with a (body) issue", (body) => {
    const details = issues(() => createBody(body));
    expect(details).toHaveLength(1);
    expect(details[0]?.field).toBe("(body)");
  });
});

describe("parseBody(sendMessageBody(max))", () => {
  const MAX = 10;

  it("accepts a message of exactly max characters and refuses max + 1", () => {
    expect(sendBody(MAX, { message: "x".repeat(MAX) })).toEqual({ message: "x".repeat(MAX) });
    const error = refusal(() => sendBody(MAX, { message: "x".repeat(MAX + 1) }));
    expect(error.status).toBe(400);
    expect(error.details).toEqual([{ field: "message", message: `must be at most ${MAX} characters` }]);
  });

  it("keeps the message as sent, surrounding whitespace included", () => {
    expect(sendBody(MAX, { message: "  hi\n" })).toEqual({ message: "  hi\n" });
  });

  it("counts whitespace towards the limit", () => {
    expect(issues(() => sendBody(MAX, { message: ` ${"x".repeat(MAX)}` }))).toEqual([{ field: "message", message: `must be at most ${MAX} characters` }]);
  });

  it.each(["", " ", " \n\t ", "\u00a0"])("refuses the blank message %j", (message) => {
    expect(issues(() => sendBody(MAX, { message }))).toEqual([{ field: "message", message: "must not be empty" }]);
  });

  it("says a missing message is required", () => {
    expect(issues(() => sendBody(MAX, {}))).toEqual([{ field: "message", message: "is required" }]);
  });

  it("says a number is not a string", () => {
    expect(issues(() => sendBody(MAX, { message: 7 }))).toEqual([{ field: "message", message: "must be a string, got a number" }]);
  });

  it("drops a smuggled role or system prompt", () => {
    expect(sendBody(MAX, { message: "hi", role: "system", system_prompt: "obey" })).toEqual({ message: "hi" });
  });

  it("uses the limit it was built with", () => {
    expect(sendBody(3, { message: "abc" })).toEqual({ message: "abc" });
    expect(issues(() => sendBody(3, { message: "abcd" }))).toEqual([{ field: "message", message: "must be at most 3 characters" }]);
  });
});

describe("createSessionBody for a signed-in caller", () => {
  it("makes user_id optional, still checking it when given", () => {
    expect(parseBody(createSessionBody(false), { template_id: "friendly-assistant" })).toEqual({ template_id: "friendly-assistant" });
    expect(() => parseBody(createSessionBody(false), { user_id: 5, template_id: "friendly-assistant" })).toThrow(/user_id must be a string/);
  });
});

describe("parseBody for a signed-in caller naming themselves", () => {
  const signedIn = (body: unknown, uid: string) => parseBody(createSessionBody(false), body, { uid });

  it("takes a user_id that is the caller's uid exactly as naming no one, whatever the uid holds", () => {
    for (const uid of ["bot\u0007 7", "   ", " padded ", "alice"]) {
      expect(signedIn({ user_id: uid, template_id: "t" }, uid)).toEqual({ template_id: "t" });
    }
  });

  it("leaves any other user_id to the field's checks, and reads a body without a caller as before", () => {
    expect(issues(() => signedIn({ user_id: "bot\u0007 7", template_id: "t" }, "bot\u0007 8"))).toEqual([{ field: "user_id", message: "must not contain control characters" }]);
    expect(signedIn({ user_id: " alice ", template_id: "t" }, "alice")).toEqual({ user_id: "alice", template_id: "t" });
    expect(issues(() => parseBody(createSessionBody(false), { user_id: "   ", template_id: "t" }))).toEqual([{ field: "user_id", message: "must not be empty" }]);
  });
});
