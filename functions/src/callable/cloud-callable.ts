import type { CallableRequest, CallableResponse } from "firebase-functions/v2/https";
import { identityOf } from "../auth/firebase-identity";
import { clientAddress } from "../http/cloud-adapter";
import { toErrorAnswer } from "../http/error-response";
import type { CallableApi } from "./callable-api";
import { callableError } from "./callable-errors";
import type { CallableName } from "./callable-operations";

/** What firebase-functions' `onCall` runs: a handler returning the result, or throwing an HttpsError. */
export type CallableHandler = (request: CallableRequest<unknown>, response?: CallableResponse) => Promise<Record<string, unknown>>;

/**
 * An `onCall` handler serving `name` of the instance's callables. The platform has verified the
 * tokens (an ID token or App Check token that fails is `unauthenticated` before this runs). A
 * client that goes away mid-stream is handled as on the SSE route: `sendChunk` then does
 * nothing, and the message runs on to its end (stored, partial removed), its result unsent.
 */
export function callableHandler(name: CallableName, callables: () => Promise<CallableApi>): CallableHandler {
  return async (request, response) => {
    let api: CallableApi;
    try {
      api = await callables();
    } catch (error) {
      // An instance that could not start (a bad param): the same error on every call.
      throw callableError(toErrorAnswer(error));
    }
    const { rawRequest } = request;
    const forwarded = rawRequest.headers["x-forwarded-for"];
    const address = clientAddress(Array.isArray(forwarded) ? forwarded.join(", ") : forwarded, rawRequest.socket.remoteAddress);
    const chunks = request.acceptsStreaming && response ? { send: (chunk: { readonly text: string }) => void response.sendChunk(chunk).catch(() => false) } : undefined;
    return api(
      name,
      {
        data: request.data,
        ...(request.auth ? { caller: identityOf(request.auth.token) } : {}),
        ...(request.app ? { app: { ...(request.app.alreadyConsumed === undefined ? {} : { alreadyConsumed: request.app.alreadyConsumed }) } } : {}),
        ...(address === undefined ? {} : { clientAddress: address }),
        bodyBytes: Buffer.isBuffer(rawRequest.rawBody) ? rawRequest.rawBody.length : 0,
      },
      chunks,
    );
  };
}
