/**
 * What the platform gives each function instance. Declared here, apart from the triggers, so
 * that the time budget checked at instance start (runtime/time-budget.ts) is the one deployed.
 */
export const FUNCTION_TIMEOUT_SECONDS = 60;
/**
 * 512 MiB, not 256: at 50 concurrent messages on the database, a heap capped at 128 MiB (what
 * 256 MiB leaves) ran 120 full collections in 5 s at 4x the CPU per message and peaked at
 * 258 MiB of RSS, past the limit; capped at 256 MiB: 4 collections, 265 MiB (`npm run bench`, e).
 */
export const FUNCTION_MEMORY = "512MiB";
/** Requests one instance serves at once. */
export const FUNCTION_CONCURRENCY = 80;
export const MAX_INSTANCES = 10;
