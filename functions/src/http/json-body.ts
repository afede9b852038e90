import { HttpError } from "./http-error";
import type { HttpRequest } from "./http-types";
import { parseMediaType } from "./media-type";

const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * The request body as a JSON object. An empty body counts as `{}` so that the schema can
 * name each missing field; anything that is not a JSON object is refused here.
 *
 * Refused 415 is every body the deployed function would not be given as sent, so that `npm
 * start` and the platform answer alike (this runs on both). There, body-parser 1.20.9
 * (firebase-tools 15.34's Functions runtime; the Functions Framework sets up the same parsers)
 * reads a body only under a Content-Type it can parse (media-type.ts), leaving `rawBody` unset
 * under none, and its JSON parser refuses 415 a charset not starting with "utf-" (`utf8`,
 * `iso-8859-1`) before the function runs, and decodes utf-16 or utf-7 as such.
 */
export function readJsonObject(request: HttpRequest): Record<string, unknown> {
  const contentType = request.headers["content-type"];
  if (contentType === undefined ? sentBody(request) : !isJson(contentType)) {
    throw new HttpError("UNSUPPORTED_MEDIA_TYPE", "Request body must be JSON in UTF-8 (Content-Type: application/json, with no charset or charset=utf-8)");
  }
  if (request.body.length === 0) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(decoder.decode(request.body));
  } catch {
    throw new HttpError("INVALID_JSON", "Request body is not valid JSON");
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new HttpError("INVALID_REQUEST", "Request body must be a JSON object", {}, [
      { field: "(body)", message: "must be a JSON object" },
    ]);
  }
  return parsed as Record<string, unknown>;
}

/**
 * Whether the client sent a body, read or not: on the platform, one under no Content-Type never
 * reaches `rawBody`, and only its headers tell it was there. `Content-Length: 0` is no body
 * (fetch sends it on a POST without one).
 */
export function sentBody(request: HttpRequest): boolean {
  return request.body.length > 0 || request.headers["transfer-encoding"] !== undefined || Number(request.headers["content-length"]) > 0;
}

/**
 * JSON (`application/json` or `application/*+json`) in UTF-8 (no charset, or `utf-8`): the one
 * charset that body-parser's JSON parser and the UTF-8 decoder here read alike.
 */
function isJson(contentType: string): boolean {
  const type = parseMediaType(contentType);
  if (type === undefined) return false;
  const json = type.suffix === undefined ? type.essence === "application/json" : type.suffix === "json" && type.essence.startsWith("application/");
  const charset = type.parameters.get("charset");
  return json && (charset === undefined || charset.toLowerCase() === "utf-8");
}
