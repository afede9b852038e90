import type { IdentityVerifier } from "../../src/auth/identity";
import { resolveConfig, type Config } from "../../src/config";

/**
 * The environment of a service under test (the HTTP suites, the soak, the window bench): the
 * model is a fake OpenAI server at `fakeBaseUrl`, not retried, and the usage limits are out of the
 * way (suites about limits, or runs that want retries, set their own in `overrides`).
 */
export function serviceEnv(fakeBaseUrl: string, overrides: Readonly<Record<string, string>> = {}): Record<string, string> {
  return {
    OPENAI_API_KEY: "sk-test-key",
    OPENAI_BASE_URL: fakeBaseUrl,
    OPENAI_MAX_RETRIES: "0",
    USER_MESSAGES_PER_MINUTE: "100000",
    USER_MAX_ACTIVE_SESSIONS: "100000",
    SESSION_MAX_EXCHANGES: "100000",
    ADDRESS_SESSIONS_PER_HOUR: "100000",
    CONNECTION_MESSAGES_PER_MINUTE: "100000",
    CONNECTION_REQUESTS_PER_HOUR: "100000",
    ...overrides,
  };
}

/**
 * The configuration of `serviceEnv`, read as the local server reads its own: an ID token is
 * optional (REQUIRE_AUTH defaults to false) unless `overrides` sets REQUIRE_AUTH.
 */
export function serviceConfig(fakeBaseUrl: string, overrides: Readonly<Record<string, string>> = {}): Config {
  return resolveConfig(serviceEnv(fakeBaseUrl, overrides), { requireAuth: false });
}

/** For a runtime that is sent no ID tokens (REQUIRE_AUTH=false): a token would be refused. */
export const NO_TOKENS: IdentityVerifier = {
  verify: (): Promise<never> => Promise.reject(new Error("this run sends no ID tokens")),
};
