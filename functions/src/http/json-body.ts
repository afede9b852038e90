import { HttpError } from "./http-error";
import type { HttpRequest } from "./http-types";

const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * The request body as a JSON object. An empty body counts as `{}` so that the schema can
 * name each missing field; anything that is not a JSON object is refused here.
 */
export function readJsonObject(request: HttpRequest): Record<string, unknown> {
  const contentType = request.headers["content-type"];
  if (contentType !== undefined && !isJson(contentType)) {
    throw new HttpError("UNSUPPORTED_MEDIA_TYPE", "Request body must be JSON (Content-Type: application/json)");
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

function isJson(contentType: string): boolean {
  const mediaType = contentType.split(";")[0]?.trim().toLowerCase() ?? "";
  return mediaType === "application/json" || /^application\/[\w.+-]+\+json$/.test(mediaType);
}
