import { createServer, type Server, type ServerResponse } from "node:http";
import { Agent } from "node:https";
import { connect, type AddressInfo } from "node:net";
import { deleteApp, initializeApp, type App, type Credential } from "firebase-admin/app";
import { getMessaging, type Messaging } from "firebase-admin/messaging";

/** The message of one `messages:send` request, as far as the tests read it. */
export interface FcmMessage {
  readonly token?: string;
  readonly data?: Readonly<Record<string, unknown>>;
  readonly notification?: { readonly title?: string; readonly body?: string };
  readonly [field: string]: unknown;
}

/** One `POST /v1/projects/PROJECT/messages:send` as the fake received it. */
export interface FcmRequest {
  readonly path: string;
  readonly authorization: string | undefined;
  readonly message: FcmMessage;
  /** Requests for this message's token so far, this one included: 1 on the first attempt, 2 on the SDK's first retry. */
  readonly attempt: number;
}

/**
 * FCM v1's per-message error codes (the `errorCode` of the `google.firebase.fcm.v1.FcmError`
 * detail), each with the HTTP status and canonical status FCM answers it with
 * (https://firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode).
 */
const FCM_ERRORS = {
  UNREGISTERED: { status: 404, canonical: "NOT_FOUND", message: "Requested entity was not found." },
  INVALID_ARGUMENT: { status: 400, canonical: "INVALID_ARGUMENT", message: "The registration token is not a valid FCM registration token" },
  QUOTA_EXCEEDED: { status: 429, canonical: "RESOURCE_EXHAUSTED", message: "Quota exceeded for the message target." },
  UNAVAILABLE: { status: 503, canonical: "UNAVAILABLE", message: "The service is currently unavailable." },
  INTERNAL: { status: 500, canonical: "INTERNAL", message: "Internal error encountered." },
  SENDER_ID_MISMATCH: { status: 403, canonical: "PERMISSION_DENIED", message: "SenderId mismatch" },
  THIRD_PARTY_AUTH_ERROR: { status: 401, canonical: "UNAUTHENTICATED", message: "Auth error from APNS or Web Push Service" },
} as const;

export type FcmErrorCode = keyof typeof FCM_ERRORS;

/**
 * How the fake answers one request, after `delayMs` if given: `accept` with a message name as
 * FCM does, `error` with FCM's error body for that code (and a Retry-After header when asked),
 * `hang` never (the client's own timeout ends it), `drop` by cutting the connection.
 */
export type FcmAnswer =
  | { readonly kind: "accept"; readonly delayMs?: number }
  | { readonly kind: "error"; readonly code: FcmErrorCode; readonly retryAfterSeconds?: number; readonly delayMs?: number }
  | { readonly kind: "hang" }
  | { readonly kind: "drop" };

export const ACCEPT: FcmAnswer = { kind: "accept" };

export function fcmError(code: FcmErrorCode, options: { readonly retryAfterSeconds?: number; readonly delayMs?: number } = {}): FcmAnswer {
  return { kind: "error", code, ...options };
}

/** FCM's largest payload (data and notification together), in bytes. */
const MAX_PAYLOAD_BYTES = 4096;

/**
 * A stand-in for the FCM v1 HTTP API on loopback (FCM has no emulator): it checks what FCM
 * checks before sending (the path's project, the bearer token, one target, string data values,
 * the payload's size), answering as FCM does when they fail, then answers each message as
 * `respond` says (default: accepted). It records every request it gets, retries included.
 */
export class FakeFcmServer {
  readonly requests: FcmRequest[] = [];
  /** Decides the answer to each well-formed request; `reset` restores "accept everything". */
  respond: (request: FcmRequest) => FcmAnswer = () => ACCEPT;
  private readonly server: Server;
  private readonly waiters: { readonly count: number; readonly wake: () => void }[] = [];
  private sent = 0;

  private constructor(
    readonly projectId: string,
    readonly accessToken: string,
  ) {
    this.server = createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on("data", (chunk: Buffer) => chunks.push(chunk));
      request.on("end", () => {
        this.answer(request.method, request.url ?? "", request.headers.authorization, Buffer.concat(chunks).toString("utf8"), response);
      });
    });
  }

  static async start(options: { readonly projectId?: string; readonly accessToken?: string } = {}): Promise<FakeFcmServer> {
    const fake = new FakeFcmServer(options.projectId ?? "demo-fcm", options.accessToken ?? "fake-access-token");
    await new Promise<void>((resolve) => fake.server.listen(0, "127.0.0.1", resolve));
    return fake;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  /** Requests for `token` so far. */
  attempts(token: string): number {
    return this.requests.filter((request) => request.message.token === token).length;
  }

  /** Resolves once `count` requests have been received since the last `reset`. */
  awaitRequests(count: number): Promise<void> {
    if (this.requests.length >= count) return Promise.resolve();
    return new Promise((wake) => this.waiters.push({ count, wake }));
  }

  reset(): void {
    this.requests.length = 0;
    this.respond = () => ACCEPT;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => { resolve(); }));
  }

  private answer(method: string | undefined, path: string, authorization: string | undefined, body: string, response: ServerResponse): void {
    if (method !== "POST" || path !== `/v1/projects/${this.projectId}/messages:send`) {
      // Google's front end answers an unknown path with an HTML page, not JSON.
      response.writeHead(404, { "content-type": "text/html; charset=UTF-8" }).end("<!DOCTYPE html><title>Error 404 (Not Found)</title>");
      return;
    }
    if (authorization !== `Bearer ${this.accessToken}`) {
      sendJson(response, 401, {
        error: {
          code: 401,
          message: "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
          status: "UNAUTHENTICATED",
          details: [{ "@type": "type.googleapis.com/google.rpc.ErrorInfo", reason: "ACCESS_TOKEN_TYPE_UNSUPPORTED", domain: "googleapis.com" }],
        },
      });
      return;
    }
    const message = parseMessage(body);
    const invalid = message === undefined ? "Invalid JSON payload received." : payloadProblem(message);
    if (message === undefined || invalid !== undefined) {
      sendJson(response, 400, errorBody("INVALID_ARGUMENT", invalid ?? "", "message"));
      return;
    }
    const recorded: FcmRequest = { path, authorization, message, attempt: message.token === undefined ? 1 : this.attempts(message.token) + 1 };
    this.requests.push(recorded);
    for (const waiter of this.waiters.filter((candidate) => this.requests.length >= candidate.count)) {
      this.waiters.splice(this.waiters.indexOf(waiter), 1);
      waiter.wake();
    }
    const step = this.respond(recorded);
    if (step.kind === "hang") return;
    if (step.kind === "drop") {
      response.socket?.destroy();
      return;
    }
    const send = () => {
      if (response.destroyed) return;
      if (step.kind === "accept") {
        this.sent += 1;
        sendJson(response, 200, { name: `projects/${this.projectId}/messages/${this.sent}` });
        return;
      }
      const headers: Record<string, string> = step.retryAfterSeconds === undefined ? {} : { "retry-after": String(step.retryAfterSeconds) };
      sendJson(response, FCM_ERRORS[step.code].status, errorBody(step.code, FCM_ERRORS[step.code].message, "message.token"), headers);
    };
    if (step.delayMs === undefined) send();
    else setTimeout(send, step.delayMs);
  }
}

/**
 * FCM's error body: Google's canonical error, with the FCM error code in a `FcmError` detail (the
 * detail firebase-admin reads first) and, for a bad argument, the field it concerns.
 */
function errorBody(code: FcmErrorCode, message: string, field: string) {
  const { status, canonical } = FCM_ERRORS[code];
  const details: object[] = [{ "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", errorCode: code }];
  if (code === "INVALID_ARGUMENT") details.push({ "@type": "type.googleapis.com/google.rpc.BadRequest", fieldViolations: [{ field, description: message }] });
  return { error: { code: status, message, status: canonical, details } };
}

function sendJson(response: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  response.writeHead(status, { "content-type": "application/json; charset=UTF-8", ...headers }).end(JSON.stringify(body));
}

function parseMessage(body: string): FcmMessage | undefined {
  try {
    const parsed: unknown = JSON.parse(body);
    if (typeof parsed !== "object" || parsed === null || !("message" in parsed)) return undefined;
    const message = parsed.message;
    return typeof message === "object" && message !== null ? (message as FcmMessage) : undefined;
  } catch {
    return undefined;
  }
}

/** What FCM refuses in a message whatever its token, as a 400 INVALID_ARGUMENT; undefined when none. */
function payloadProblem(message: FcmMessage): string | undefined {
  const targets = ["token", "topic", "condition"].filter((target) => typeof message[target] === "string");
  if (targets.length !== 1) return "Exactly one of token, topic or condition must be set.";
  if (message.data !== undefined && Object.values(message.data).some((value) => typeof value !== "string")) return "Invalid value at 'message.data': a string is expected.";
  const payloadBytes = Buffer.byteLength(JSON.stringify({ data: message.data ?? {}, notification: message.notification ?? {} }));
  return payloadBytes > MAX_PAYLOAD_BYTES ? "Message is too big" : undefined;
}

/** A firebase-admin Messaging that sends to a FakeFcmServer, and how to let it go. */
export interface FakeFcmMessaging {
  readonly app: App;
  readonly messaging: Messaging;
  close(): Promise<void>;
}

let apps = 0;

/**
 * firebase-admin's Messaging (14.5) pointed at `fake`, as far as the SDK allows: its default
 * transport, HTTP/2, connects to fcm.googleapis.com whatever the app's options say, so this one
 * uses the legacy HTTP/1.1 transport, which sends through `app.options.httpAgent`. The agent is an
 * https.Agent (the SDK asks for an https URL) whose every connection is plain TCP to the fake,
 * whatever the host: the SDK writes HTTP/1.1 on it, Host header and all, as it would inside TLS.
 * The credential hands out the fake's access token (the default credential fails offline);
 * `credential` replaces it, to test a refused or failing one.
 */
export function fakeFcmMessaging(fake: FakeFcmServer, options: { readonly credential?: Credential } = {}): FakeFcmMessaging {
  // maxSockets: a few dozen connections serve a 500-message call faster on loopback than 500 would.
  const agent = new (class extends Agent {
    override createConnection() {
      return connect(fake.port, "127.0.0.1");
    }
  })({ keepAlive: true, maxSockets: 32 });
  const credential: Credential = options.credential ?? { getAccessToken: async () => ({ access_token: fake.accessToken, expires_in: 3600 }) };
  apps += 1;
  const app = initializeApp({ projectId: fake.projectId, credential, httpAgent: agent }, `fake-fcm-${apps}`);
  const messaging = getMessaging(app);
  // Deprecated in firebase-admin 14.5 (to go once its HTTP/2 transport is as stable): the only transport that honours httpAgent.
  // eslint-disable-next-line @typescript-eslint/no-deprecated
  messaging.enableLegacyHttpTransport();
  return {
    app,
    messaging,
    close: async () => {
      await deleteApp(app);
      agent.destroy();
    },
  };
}
