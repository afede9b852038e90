import type { Response } from "express";
import type { Request } from "firebase-functions/v2/https";
import { cloudHandler } from "../http/cloud-adapter";
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
  connections: cloudHandler("connections", api),
  connection: cloudHandler("connection", api),
  acceptConnection: cloudHandler("acceptConnection", api),
  declineConnection: cloudHandler("declineConnection", api),
  blockConnection: cloudHandler("blockConnection", api),
  connectionMessages: cloudHandler("connectionMessages", api),
  devices: cloudHandler("devices", api),
};

export async function maintain(): Promise<void> {
  await scheduledMaintenance(await cloudInstance());
}
