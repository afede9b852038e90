import { AppCheckInvalidError, AppCheckRequiredError } from "../auth/app-check";
import { InvalidTokenError, type Identity } from "../auth/identity";
import type { Config } from "../config";
import { REPLAY_PROTECTED } from "../http/app-check-gate";
import { ENDPOINTS, endpointBodies, type EndpointContext } from "../http/endpoints";
import { toErrorAnswer } from "../http/error-response";
import { gatheredBody } from "../http/gathered-body";
import { HttpError } from "../http/http-error";
import type { ConnectionsContext } from "../http/connection-endpoints";
import type { UserDataContext } from "../http/user-data-context";
import type { Log } from "../log/log";
import type { SessionService } from "../session/session-service";
import { callableFailure } from "./callable-errors";
import { CALLABLES, type CallableName } from "./callable-operations";
import { callableRequest } from "./callable-request";
import { CallableStream, type ChunkSink } from "./callable-stream";

/** A call as the platform hands it over, its tokens already checked (cloud-callable.ts). */
export interface Call {
  readonly data: unknown;
  /** The caller whose ID token the platform verified; absent when the call carried none. */
  readonly caller?: Identity;
  /** The App Check token the platform verified, if any; `alreadyConsumed` with replay protection. */
  readonly app?: { readonly alreadyConsumed?: boolean };
  readonly clientAddress?: string;
  /** The request body's size as received. */
  readonly bodyBytes: number;
}

/**
 * One instance's callables: answers a call with the body the HTTP route answers, or throws the
 * CallableFailure that stands for the HTTP refusal (callable-errors.ts). Given `chunks`, a streamed
 * call (`.stream()` on the client) gets the reply's text as it is written.
 */
export type CallableApi = (name: CallableName, call: Call, chunks?: ChunkSink) => Promise<Record<string, unknown>>;

export interface CallableApiDeps {
  readonly sessions: Pick<SessionService, "create" | "send" | "end">;
  readonly log: Log;
  /** A user's conversations and data (issue 16), for the callables that stand for its routes. */
  readonly userData: UserDataContext;
  /** Connections between users and devices, for the callables that stand for their routes (the endpoints' own context). */
  readonly connections: ConnectionsContext;
  readonly config: Pick<Config, "requireAuth" | "requireAppCheck" | "appCheckReplayProtection" | "maxMessageChars" | "maxBodyBytes">;
  /** The database a session's clients listen to (docs/sharding.md); absent: none answered. */
  readonly databaseUrl?: (sessionId: string) => string | undefined;
}

/**
 * The callables' boundary: each call becomes the HTTP request it stands for and is answered by
 * the same endpoint, so validation, the session module, limits and the error table are the HTTP
 * routes' own. What the platform verified (the ID token, the App Check token) replaces what
 * the HTTP boundary checks itself.
 */
export function createCallableApi(deps: CallableApiDeps): CallableApi {
  const { config, log } = deps;
  const bodies = endpointBodies(config.maxMessageChars);
  return async (name, call, chunks) => {
    const operation = CALLABLES[name];
    const endpoint = ENDPOINTS[operation.endpoint];
    const started = Date.now();
    const stream = chunks && new CallableStream(chunks);
    const logged = { endpoint: endpoint.name, via: "callable", streamed: stream !== undefined };
    try {
      attested(call, config, REPLAY_PROTECTED.has(endpoint.name), log);
      if (call.bodyBytes > config.maxBodyBytes) throw new HttpError("PAYLOAD_TOO_LARGE", `The call must be at most ${config.maxBodyBytes} bytes`);
      const request = callableRequest(operation, call.data, call);
      const route = endpoint.match(request.path);
      if (!route) throw new HttpError("INVALID_REQUEST", "The call's data names no route");
      const context: EndpointContext = {
        sessions: deps.sessions,
        userData: deps.userData,
        connections: deps.connections,
        bodies,
        authenticate: () => callerOf(call, config.requireAuth),
        ...(deps.databaseUrl ? { databaseUrl: deps.databaseUrl } : {}),
      };
      const result = await endpoint.handle(request, route, context, stream);
      log.info("request", { ...logged, status: result.status, duration_ms: Date.now() - started });
      // A callable's answer is one message: a body produced in pieces (an export part) is gathered.
      return "produce" in result ? await gatheredBody(result) : result.body;
    } catch (error) {
      const answer = toErrorAnswer(error);
      if (answer.status >= 500) {
        // Name and message only: stacks and causes may carry prompts, keys or tokens.
        log.error("request failed", { endpoint: endpoint.name, via: "callable", error: error instanceof Error ? error.name : typeof error, detail: error instanceof Error ? error.message : undefined });
      }
      log.info("request", { ...logged, status: answer.status, code: answer.code, duration_ms: Date.now() - started });
      throw callableFailure(answer);
    }
  };
}

/** The caller: the platform's verified ID token when the call carried one; none required, nobody. */
function callerOf(call: Call, requireAuth: boolean): Promise<Identity | undefined> {
  if (call.caller) return Promise.resolve(call.caller);
  if (requireAuth) return Promise.reject(new InvalidTokenError("an ID token is required"));
  return Promise.resolve(undefined);
}

/**
 * What the platform did with App Check, held to the instance's own config: firebase-functions
 * enforces it from the same params (callable-options.ts), but reads REQUIRE_APP_CHECK=1 as false
 * where the instance reads true (7.4, BooleanParam), and with `consumeAppCheckToken` does not
 * refuse a token used before: it sets `app.alreadyConsumed` for the handler to check.
 */
function attested(call: Call, config: CallableApiDeps["config"], replayProtected: boolean, log: Log): void {
  if (!config.requireAppCheck) return;
  if (!call.app) throw new AppCheckRequiredError("an App Check token is required");
  if (config.appCheckReplayProtection && replayProtected && call.app.alreadyConsumed === true) {
    log.info("app check token refused", { reason: "replayed" });
    throw new AppCheckInvalidError("the App Check token was already used");
  }
}
