import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { deleteApp, initializeApp, type App } from "firebase-admin/app";
import type { Config } from "../../src/config";
import { silentLog } from "../../src/log/log";
import type { PushNotification } from "../../src/notify/push-notification";
import type { PushSender, TokenResult } from "../../src/notify/push-sender";
import { composeInstance } from "../../src/runtime/instance";
import { LocalServers } from "../../test/support/local-servers";
import { NO_TOKENS } from "../../test/support/service-env";
import { send, type Answer } from "../shared/http-client";
import { countsSince, type RtdbWire, type WireCounts } from "../cost/rtdb-wire";

/** A push sender the bench swaps while the instance runs: each case its own. */
export class SwitchableSender implements PushSender {
  readonly name = "bench";
  current: PushSender = { name: "none", send: async () => [] };

  send(notification: PushNotification, tokens: readonly string[]): Promise<readonly TokenResult[]> {
    return this.current.send(notification, tokens);
  }
}

/**
 * One function instance built by the composition root with its production stores (firebase-admin
 * on rtdb-wire) behind the local server, on a namespace of its own so that /.wire/stats counts are
 * its own; and two users with an accepted connection between them.
 */
export class ConnectionRig {
  private sent = 0;

  private constructor(
    readonly namespace: string,
    readonly baseUrl: string,
    readonly connectionId: string,
    readonly users: { readonly sender: string; readonly recipient: string },
    private readonly app: App,
    private readonly servers: LocalServers,
  ) {}

  static async start(config: Config, sender: PushSender, options: { readonly devices: number; readonly namespace: string; readonly extra?: Partial<Parameters<typeof composeInstance>[1]> }): Promise<ConnectionRig> {
    const app = initializeApp({ projectId: "demo-chatify", databaseURL: `https://${options.namespace}.firebaseio.com` }, randomUUID());
    const servers = new LocalServers();
    const baseUrl = await servers.serve(composeInstance(config, { app, identity: NO_TOKENS, log: silentLog, pushSender: sender, ...options.extra }));
    const users = { sender: `sender-${randomUUID().slice(0, 8)}`, recipient: `recipient-${randomUUID().slice(0, 8)}` };
    const asked = await call(`${baseUrl}/api/v1/connections`, { user_id: users.sender, other_user_id: users.recipient });
    const connectionId = (asked.body.connection as { connection_id: string }).connection_id;
    await call(`${baseUrl}/api/v1/connections/${connectionId}/accept`, { user_id: users.recipient });
    for (let i = 0; i < options.devices; i += 1) await call(`${baseUrl}/api/v1/devices`, { user_id: users.recipient, token: `bench-token-${i}-${randomUUID()}` });
    const rig = new ConnectionRig(options.namespace, baseUrl, connectionId, users, app, servers);
    // Warm: the instance holds the connection's state and both users' devices after its first messages.
    for (let i = 0; i < 2; i += 1) await rig.message();
    return rig;
  }

  /** One message from the sender, timed from request to answer. */
  async message(keyed = false): Promise<number> {
    this.sent += 1;
    const started = performance.now();
    await call(`${this.baseUrl}/api/v1/connections/${this.connectionId}/messages`, { user_id: this.users.sender, message: `Message ${this.sent}: see you at eight?` }, keyed ? { "idempotency-key": randomUUID() } : {});
    return performance.now() - started;
  }

  /** One message, timed, and what it cost on the wire (what the instance sends after its answer included). */
  async measured(wire: RtdbWire, latencyMs: number, keyed: boolean): Promise<{ ms: number; wire: WireCounts }> {
    const before = await wire.counts(this.namespace);
    const ms = await this.message(keyed);
    await sleep(latencyMs + 5);
    return { ms, wire: countsSince(before, await wire.counts(this.namespace)) };
  }

  async close(): Promise<void> {
    await this.servers.close();
    await deleteApp(this.app);
  }
}

async function call(url: string, body: unknown, headers: Readonly<Record<string, string>> = {}): Promise<Answer> {
  const answer = await send(url, { body, headers });
  if (answer.status < 200 || answer.status > 299) throw new Error(`${url} answered ${answer.status}: ${JSON.stringify(answer.body)} ${answer.error ?? ""}`);
  return answer;
}
