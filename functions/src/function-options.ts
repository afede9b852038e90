/**
 * What the platform gives each function instance. Declared here, apart from the triggers, so
 * that the time budget checked at instance start (runtime/time-budget.ts) is the one deployed.
 */
export const FUNCTION_TIMEOUT_SECONDS = 60;
export const FUNCTION_MEMORY = "256MiB";
/** Requests one instance serves at once. */
export const FUNCTION_CONCURRENCY = 80;
export const MAX_INSTANCES = 10;
