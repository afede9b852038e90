import { ERROR_CODES } from "../http/error-codes";
import { API_BASES_PATH, APP_CHECK_PATH, type PagePolicy } from "./page-policy";

/** Where the API's error codes are served. */
export const ERROR_CODES_PATH = "/error-codes.json";

/**
 * The JSON files the page reads before it says it is ready, by the path they are served at: the
 * API bases its deployment allows (the policy's project) and every API error code with its
 * status and what its Retry-After means (http/error-codes.ts), so that the page words an error
 * from the server's own list instead of a copy, and how the page gets App Check tokens (none, or
 * reCAPTCHA Enterprise with the deployment's site key, and a limited-use token for each message
 * when the deployment consumes them). The local server answers them from here; Hosting
 * serves them from public/, where page-files.ts writes them.
 */
export function pageDataFiles(policy: PagePolicy): ReadonlyMap<string, unknown> {
  return new Map<string, unknown>([
    [API_BASES_PATH, policy.apiBasesFile],
    [ERROR_CODES_PATH, { errorCodes: ERROR_CODES }],
    [APP_CHECK_PATH, policy.appCheckFile],
  ]);
}
