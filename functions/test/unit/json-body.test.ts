import { HttpError } from "../../src/http/http-error";
import type { HttpRequest } from "../../src/http/http-types";
import { readJsonObject } from "../../src/http/json-body";

/** A POST with `body`; a `contentType` of null sends no Content-Type header. */
function request(body: string | Uint8Array, contentType: string | null = "application/json", headers: Record<string, string> = {}): HttpRequest {
  return {
    method: "POST",
    path: "/",
    headers: { ...headers, ...(contentType === null ? {} : { "content-type": contentType }) },
    body: Buffer.from(body),
  };
}

/** The HttpError `readJsonObject` throws, failing the test when it returns. */
function refusal(req: HttpRequest): HttpError {
  try {
    readJsonObject(req);
  } catch (error) {
    if (error instanceof HttpError) return error;
    throw error;
  }
  throw new Error("the body was accepted");
}

describe("readJsonObject", () => {
  it("parses a JSON object", () => {
    expect(readJsonObject(request('{"user_id":"u","n":1,"nested":{"a":[1,2]}}'))).toEqual({ user_id: "u", n: 1, nested: { a: [1, 2] } });
  });

  it("reads an empty body as {}", () => {
    expect(readJsonObject(request(""))).toEqual({});
    expect(readJsonObject(request("", null))).toEqual({});
  });

  it("decodes UTF-8 text", () => {
    expect(readJsonObject(request('{"message":"héllo ☃ 😀"}'))).toEqual({ message: "héllo ☃ 😀" });
  });

  it.each([
    "application/json",
    "application/json; charset=utf-8",
    "Application/JSON;charset=UTF-8",
    "  application/json  ",
    "application/vnd.api+json",
    "application/merge-patch+json; charset=utf-8",
    'application/json; charset="UTF-8"',
    "application/json ; charset=utf-8",
    "application/json; foo=bar",
  ])("accepts the content type %p", (contentType) => {
    expect(readJsonObject(request('{"a":1}', contentType))).toEqual({ a: 1 });
  });

  it("answers 415 to a body sent without a content type, which the platform leaves unread", () => {
    expect(refusal(request('{"a":1}', null)).code).toBe("UNSUPPORTED_MEDIA_TYPE");
    // Deployed, such a body never reaches rawBody: its headers alone say it was sent.
    expect(refusal(request("", null, { "content-length": "7" })).code).toBe("UNSUPPORTED_MEDIA_TYPE");
    expect(refusal(request("", null, { "transfer-encoding": "chunked" })).code).toBe("UNSUPPORTED_MEDIA_TYPE");
  });

  it("reads no body as {} without a content type, Content-Length: 0 included", () => {
    expect(readJsonObject(request("", null, { "content-length": "0" }))).toEqual({});
  });

  it.each(["utf8", "iso-8859-1", "latin1", "windows-1252", "utf-16", "utf-7", "no-such-charset", ""])("answers 415 to a JSON body in the charset %p", (charset) => {
    expect(refusal(request('{"a":1}', `application/json; charset=${charset}`)).code).toBe("UNSUPPORTED_MEDIA_TYPE");
  });

  it.each(["application/json;", "application/json; charset", "application/json; foo", 'application/json; foo="bar', "application/json;;", "application/+json", "application/a+b+json", ""])(
    "answers 415 to the content type %p, which the platform's parsers cannot read",
    (contentType) => {
      expect(refusal(request('{"a":1}', contentType)).code).toBe("UNSUPPORTED_MEDIA_TYPE");
    },
  );

  it.each(["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonp", "text/json", "application/xml"])(
    "answers 415 to the content type %p",
    (contentType) => {
      const error = refusal(request('{"a":1}', contentType));
      expect(error.status).toBe(415);
      expect(error.code).toBe("UNSUPPORTED_MEDIA_TYPE");
    },
  );

  it("answers 415 before looking at an empty body", () => {
    expect(refusal(request("", "text/plain")).status).toBe(415);
  });

  it.each([
    ["truncated JSON", '{"user_id": "u",'],
    ["single quotes", "{'a': 1}"],
    ["trailing comma", '{"a":1,}'],
    ["bare word", "hello"],
  ])("answers 400 INVALID_JSON to %s", (_name, body) => {
    const error = refusal(request(body));
    expect(error.status).toBe(400);
    expect(error.code).toBe("INVALID_JSON");
  });

  it.each([
    ["a lone 0xff byte", new Uint8Array([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d])],
    ["a truncated multi-byte sequence", new Uint8Array([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xe2, 0x98, 0x22, 0x7d])],
    ["an overlong encoding", new Uint8Array([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xc0, 0xaf, 0x22, 0x7d])],
  ])("answers 400 INVALID_JSON to invalid UTF-8 (%s) instead of replacing it", (_name, bytes) => {
    const error = refusal(request(bytes));
    expect(error.status).toBe(400);
    expect(error.code).toBe("INVALID_JSON");
  });

  it.each([["[]"], ["[1,2]"], ["null"], ["42"], ['"text"'], ["true"]])("answers 400 INVALID_REQUEST to the non-object %s", (body) => {
    const error = refusal(request(body));
    expect(error.status).toBe(400);
    expect(error.code).toBe("INVALID_REQUEST");
    expect(error.details).toEqual([{ field: "(body)", message: "must be a JSON object" }]);
  });

  it("never echoes the body in its message", () => {
    expect(refusal(request('{"secret":"sk-secret"')).message).not.toContain("sk-secret");
  });
});
