import type { Response } from "express";
import type { Request } from "firebase-functions/v2/https";
import { CALLABLES, type CallableName } from "../callable/callable-operations";
import { callableHandler, type CallableHandler } from "../callable/cloud-callable";
import { cloudHandler } from "../http/cloud-adapter";
import { eventTriggerTimeoutSeconds } from "../function-options";
import type { EndpointName } from "../http/endpoints";
import { cloudInstance } from "./cloud-instance";
import { scheduledMaintenance } from "./scheduled-maintenance";

/**
 * Everything a deployed function runs, behind one module that `index.ts` loads on first use
 * (`onInit`, or the first request): config, firebase-admin, the model SDK, zod and the session
 * module stay out of the module load that every cold start and the CLI's discovery pay.
 */
export { cloudInstance };

const api = async () => (await cloudInstance()).api;

export const handlers: Readonly<Record<EndpointName, (request: Request, response: Response) => Promise<void>>> = {
  createSession: cloudHandler("createSession", api),
  sendMessage: cloudHandler("sendMessage", api),
  endSession: cloudHandler("endSession", api),
  listSessions: cloudHandler("listSessions", api),
  getSession: cloudHandler("getSession", api),
  exportUserData: cloudHandler("exportUserData", api),
  eraseUserData: cloudHandler("eraseUserData", api),
  connections: cloudHandler("connections", api),
  connection: cloudHandler("connection", api),
  acceptConnection: cloudHandler("acceptConnection", api),
  declineConnection: cloudHandler("declineConnection", api),
  blockConnection: cloudHandler("blockConnection", api),
  connectionMessages: cloudHandler("connectionMessages", api),
  devices: cloudHandler("devices", api),
};

const callableApi = async () => (await cloudInstance()).callables;

/** The callables' handlers, one per entry of CALLABLES. */
export const callables = Object.fromEntries(
  Object.keys(CALLABLES).map((name) => [name, callableHandler(name as CallableName, callableApi)]),
) as Readonly<Record<CallableName, CallableHandler>>;

/**
 * A Firebase Auth user was deleted at `eventTime` (the event's `time`): their data goes too (the
 * first pass within half the trigger's timeout, the rest by the sweep), and what the ID tokens they
 * still hold write until those expire (ErasureService.eraseDeletedUser). The trigger's timeout is
 * TIMEOUT_SECONDS capped for an event trigger, not TIMEOUT_SECONDS itself. A failure before the
 * erasure is recorded is thrown, so that the platform retries the event.
 */
export async function eraseDeletedUser(uid: string, eventTime: string | undefined): Promise<void> {
  const instance = await cloudInstance();
  const now = Date.now();
  await instance.erasure.eraseDeletedUser(uid, deletionTime(eventTime, now), erasureDeadline(now, instance.config.deploy.timeoutSeconds));
}

/** When the user was deleted: the event's time (the same on each retry), or `now` for an event without a readable one. */
export function deletionTime(eventTime: string | undefined, now: number): number {
  const parsed = eventTime === undefined ? Number.NaN : Date.parse(eventTime);
  return Number.isFinite(parsed) ? parsed : now;
}

/** When the deleted user's first erasure pass stops: half of the timeout the trigger really runs with. */
export function erasureDeadline(now: number, timeoutSeconds: number): number {
  return now + (eventTriggerTimeoutSeconds(timeoutSeconds) * 1000) / 2;
}

export async function maintain(): Promise<void> {
  await scheduledMaintenance(await cloudInstance());
}
