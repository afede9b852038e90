import { ENDPOINTS, type Endpoint, type EndpointName } from "./endpoints";

/**
 * Functions that answer another endpoint's method on their path. Hosting rewrites match the path
 * only, and `/api/v1/chatbot/session/*` goes to `endSession`: so `endSession` answers `GET` there
 * as `getSession` does (the function URL `getSession/{id}` is the same endpoint on its own).
 */
const SHARED: Partial<Record<EndpointName, readonly EndpointName[]>> = {
  endSession: ["getSession"],
};

/** The endpoints function `name` serves: its own first. */
export function servedBy(name: EndpointName): readonly Endpoint[] {
  return [ENDPOINTS[name], ...(SHARED[name] ?? []).map((other) => ENDPOINTS[other])];
}
