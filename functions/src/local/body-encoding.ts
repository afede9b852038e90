import type { IncomingMessage } from "node:http";
import type { Transform } from "node:stream";
import { createBrotliDecompress, createGunzip, createInflate, createZstdDecompress } from "node:zlib";

/**
 * How `npm start`'s server decodes a request body: as the deployed platform does. There an HTTPS
 * function is served by the Functions Framework's express 5 app (firebase-functions 7.4 is built
 * for express 5) with body-parser 2.x (2.4.0 here): its json, text, urlencoded and raw (any type)
 * parsers. A parser decodes the body only when its type matches the request's Content-Type
 * (type-is 2.1.0); the body of a request with no Content-Type, or one type-is cannot read,
 * reaches the function as sent, whatever Content-Encoding it names. body-parser 1.20.9 (the
 * Functions emulator of firebase-tools 15.34) differs: it decodes neither br nor zstd (415), and
 * its media-typer 0.3.0 reads no Content-Type whose parameters do not parse.
 *
 * "identity": the body is passed on as sent; a function: the decoder it is read through;
 * undefined: an encoding the platform refuses with 415 before the function runs.
 */
export function bodyDecoder(request: IncomingMessage): "identity" | (() => Transform) | undefined {
  if (!hasBody(request) || !parserTakes(request.headers["content-type"])) return "identity";
  // body-parser 2.4.0 lowercases the header and knows these four names only: `x-gzip`, or a list
  // (`gzip, br`), is refused 415 "unsupported content encoding". zstd needs Node 22.15 or later.
  // Lowercased only, as there: Node 24's parser has dropped the spaces and tabs around the value
  // already, and String#trim would drop more (a trailing U+00A0, a 0xA0 byte the parser keeps),
  // decoding locally what body-parser refuses.
  const encoding = (request.headers["content-encoding"] ?? "identity").toLowerCase();
  if (encoding === "identity" || encoding === "") return "identity";
  if (encoding === "gzip") return createGunzip;
  if (encoding === "deflate") return createInflate;
  if (encoding === "br") return createBrotliDecompress;
  if (encoding === "zstd") return createZstdDecompress;
  return undefined;
}

/** The encodings bodyDecoder decodes, for the 415 that refuses another. */
export const DECODED_ENCODINGS = "gzip, deflate, br, zstd or none";

/**
 * Whether the request has a body to decode: chunks, or a length over 0. type-is 2.1.0's hasBody,
 * which body-parser 2.4.0 asks, counts `Content-Length: 0` too, and a parser that takes its
 * Content-Type then fails to inflate nothing (400) or refuses its encoding (415); here an empty
 * body is left as it is, so a request naming a Content-Type the platform reads and a
 * Content-Encoding for no body is answered by the function, not refused.
 */
function hasBody(request: IncomingMessage): boolean {
  return request.headers["transfer-encoding"] !== undefined || Number(request.headers["content-length"]) > 0;
}

// media-typer 1.1.1's `type/subtype[+suffix]`, which type-is 2.1.0 tests the Content-Type against.
const MEDIA_TYPE = /^ *[A-Za-z0-9][A-Za-z0-9!#$&^_-]{0,126}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126} *$/;

/**
 * Whether one of the platform's parsers takes a body of this Content-Type: the raw parser takes
 * any type, so any header type-is 2.1.0 reads. It reads the part before the first `;` (content-type
 * 2.1.0's parse, parameters skipped: `application/json; charset` is read, as
 * `application/json`), spaces and tabs around it dropped; no header, or `json`, is read as none.
 */
function parserTakes(contentType: string | undefined): boolean {
  if (contentType === undefined) return false;
  const end = contentType.indexOf(";");
  return MEDIA_TYPE.test((end < 0 ? contentType : contentType.slice(0, end)).replace(/^[ \t]+|[ \t]+$/g, ""));
}
