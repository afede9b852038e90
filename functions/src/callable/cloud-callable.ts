import { HttpsError, type CallableRequest, type CallableResponse } from "firebase-functions/v2/https";
import { identityOf } from "../auth/firebase-identity";
import { clientAddress } from "../http/cloud-adapter";
import { toErrorAnswer } from "../http/error-response";
import type { CallableApi } from "./callable-api";
import { CallableFailure, callableFailure } from "./callable-errors";
import type { CallableName } from "./callable-operations";

/**
 * The HttpsError class of the `onCall` wrapper that runs the handler. firebase-functions 7.4
 * answers an error as itself only when it is `instanceof` that class, and anything else as
 * `internal`: the triggers' bundle (index.ts) and the app's bundle each hold their own copy of
 * firebase-functions, so the trigger hands its class over.
 */
export type HttpsErrorClass = new (code: CallableFailure["code"], message: string, details?: unknown) => Error;

/** What firebase-functions' `onCall` runs: a handler returning the result, or throwing the platform's HttpsError. */
export type CallableHandler = (request: CallableRequest<unknown>, response: CallableResponse | undefined, platformError?: HttpsErrorClass) => Promise<Record<string, unknown>>;

/**
 * An `onCall` handler serving `name` of the instance's callables. The platform has verified the
 * tokens (an ID token or App Check token that fails is `unauthenticated` before this runs). A
 * client that goes away mid-stream is handled as on the SSE route: `sendChunk` then does
 * nothing, and the message runs on to its end (stored, partial removed), its result unsent.
 */
export function callableHandler(name: CallableName, callables: () => Promise<CallableApi>): CallableHandler {
  return async (request, response, platformError = HttpsError) => {
    if (request.acceptsStreaming) escapeLineSeparators(request.rawRequest.res);
    try {
      // An instance that could not start (a bad param) fails here: the same error on every call.
      const api = await callables().catch((error: unknown) => { throw callableFailure(toErrorAnswer(error)); });
      return await api(name, callOf(request), request.acceptsStreaming && response ? chunksOf(response) : undefined);
    } catch (error) {
      if (error instanceof CallableFailure) throw new platformError(error.code, error.message, error.details);
      throw error;
    }
  };
}

function callOf(request: CallableRequest<unknown>): Parameters<CallableApi>[1] {
  const { rawRequest } = request;
  const forwarded = rawRequest.headers["x-forwarded-for"];
  const address = clientAddress(Array.isArray(forwarded) ? forwarded.join(", ") : forwarded, rawRequest.socket.remoteAddress);
  return {
    data: request.data,
    ...(request.auth ? { caller: identityOf(request.auth.token) } : {}),
    ...(request.app ? { app: { ...(request.app.alreadyConsumed === undefined ? {} : { alreadyConsumed: request.app.alreadyConsumed }) } } : {}),
    ...(address === undefined ? {} : { clientAddress: address }),
    bodyBytes: Buffer.isBuffer(rawRequest.rawBody) ? rawRequest.rawBody.length : 0,
  };
}

/** The platform's `sendChunk`, which resolves false (does nothing) once the client is gone; a write error is the client's loss only. */
function chunksOf(response: CallableResponse): { send(chunk: { readonly text: string }): void } {
  return { send: (chunk) => void response.sendChunk(chunk).catch(() => false) };
}

type RawResponse = NonNullable<CallableRequest["rawRequest"]["res"]>;

/**
 * Writes U+2028 and U+2029 to a streamed call's response as the JSON escapes `\u2028` and
 * `\u2029`. firebase-functions 7.4's `onCall` writes each event (the chunks, then the result or
 * error) as `data: ${JSON.stringify(value)}` (encodeSSE), which leaves both characters raw; the
 * `firebase/functions` client (firebase 12.19, @firebase/functions 0.14) reads each event with
 * /^data: (.*?)(?:\n|$)/, whose `.` stops at them, and drops the line: the chunk is lost, and a
 * result so dropped never settles `data`. In JSON they can stand only inside a string, where the
 * escape is the same value. The plain call's one JSON body is read with JSON.parse: left as it is.
 */
function escapeLineSeparators(response: RawResponse | undefined): void {
  if (!response) return;
  const write = response.write.bind(response) as (chunk: unknown, ...rest: unknown[]) => boolean;
  const escaped = (chunk: unknown, ...rest: unknown[]) => write(typeof chunk === "string" ? chunk.replace(/[\u2028\u2029]/g, escapeOf) : chunk, ...rest);
  response.write = escaped as RawResponse["write"];
}

const escapeOf = (separator: string) => `\\u${separator.charCodeAt(0).toString(16)}`;
