import { APP_CHECK_HEADER, appCheckTokenOf, type AppCheckVerifier } from "../auth/app-check";
import type { EndpointName } from "./endpoints";
import type { HttpRequest } from "./http-types";

/**
 * The endpoints whose calls consume their App Check token when replay protection is on: the
 * calls that cost (the model). Consuming is a round trip to App Check and needs a limited-use
 * token from the client for each call, so only where a replayed token would be worth stopping.
 */
export const REPLAY_PROTECTED: ReadonlySet<EndpointName> = new Set<EndpointName>(["sendMessage"]);

/**
 * The HTTP routes' App Check step (REQUIRE_APP_CHECK): the `X-Firebase-AppCheck` token of a
 * request verified before the endpoint runs, so an unattested client learns nothing about the
 * API (not even whether it sent a valid ID token or body). Rejects with the App Check errors
 * (401 APP_CHECK_REQUIRED, 401 APP_CHECK_INVALID, 503 APP_CHECK_UNAVAILABLE).
 */
export function appCheckGate(verifier: AppCheckVerifier, replayProtection: boolean): (endpoint: EndpointName, request: HttpRequest) => Promise<void> {
  return async (endpoint, request) => {
    await verifier.verify(appCheckTokenOf(request.headers[APP_CHECK_HEADER]), { consume: replayProtection && REPLAY_PROTECTED.has(endpoint) });
  };
}
