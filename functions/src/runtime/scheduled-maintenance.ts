import type { Runtime } from "./runtime";

/** The scheduled function's body: one clean-up run, its figures logged. */
export function scheduledMaintenance(runtime: () => Runtime): () => Promise<void> {
  return async () => {
    const instance = runtime();
    const started = Date.now();
    const report = await instance.maintain();
    instance.log.info("maintenance", { ...report, duration_ms: Date.now() - started });
  };
}
