import { HttpsError, onCall, type CallableFunction, type CallableOptions, type CallableRequest, type CallableResponse } from "firebase-functions/v2/https";
import type { CallableErrorDetails } from "./callable-errors";
import { decodingRefusal, nestingRefusal, type DataRefusal } from "./callable-data";

/** What a callable trigger runs once firebase-functions has checked the request: index.ts's, or a test's. */
export type TriggerHandler = (request: CallableRequest<unknown>, response?: CallableResponse) => Promise<Record<string, unknown>>;

export type CallableTrigger = CallableFunction<unknown, Promise<Record<string, unknown>>>;

/**
 * `onCall(options, handler)`, refusing data firebase-functions cannot decode as invalid-argument
 * (`INVALID_REQUEST`, naming the data) instead of failing. firebase-functions 7.4's onCall runs
 * `decode(req.body.data)` (lib/common/providers/https.js) after its own checks of the request and
 * its tokens, before the handler: it throws on an object with an `@type` key other than an
 * Int64Value or UInt64Value of a number (which the Functions client SDK sends as it is), and
 * recurses (arrays nested a few thousand deep overflow the stack). Either is answered 500
 * `internal` and logged "Unhandled error" at error level: anyone could fail calls and write
 * error lines at will.
 *
 * Such data is found first, without recursion (callable-data.ts), and handed to `decode` as null;
 * the handler then refuses the call without running `handler`. So the refusal is onCall's own
 * answer, after the same checks: CORS, the method and content type, the ID and App Check tokens,
 * and an error event ending a streamed call. Any other request reaches onCall as it came. The
 * trigger is onCall's function behind a Proxy, so everything firebase-functions sets on it for
 * the CLI's discovery, the emulator and tests (`__endpoint`, the `__trigger` getter, `run`,
 * `stream`, and whatever a later version adds) reads through unchanged.
 *
 * A body without `data` is onCall's to refuse (400, "Bad Request"), but its isValidRequest logs
 * the body first (`logger.warn("Request body is missing data.", req.body)`), and the logger's
 * copy and JSON.stringify recurse: one nested some thousands deep failed the same way. Such a
 * body reaches onCall empty, for the same answer.
 */
export function callableTrigger(options: CallableOptions, handler: TriggerHandler): CallableTrigger {
  const refused = new WeakMap<object, DataRefusal>();
  const trigger = onCall(options, async (request: CallableRequest<unknown>, response?: CallableResponse) => {
    const refusal = refused.get(request.rawRequest);
    if (refusal) {
      const details: CallableErrorDetails = { code: "INVALID_REQUEST", fields: [refusal.issue] };
      throw new HttpsError("invalid-argument", refusal.message, details);
    }
    return handler(request, response);
  });
  return new Proxy(trigger, {
    apply(target, thisArg, args: Parameters<CallableTrigger>) {
      const [request] = args;
      const body: unknown = request.body;
      if (typeof body === "object" && body !== null && "data" in body) {
        const refusal = decodingRefusal(body.data);
        if (refusal) {
          refused.set(request, refusal);
          request.body = { ...body, data: null };
        }
      } else if (nestingRefusal(body)) {
        request.body = {};
      }
      return Reflect.apply(target, thisArg, args);
    },
  });
}
