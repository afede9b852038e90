import type { Instance } from "./instance";

/** The scheduled function's body: one clean-up run, its figures logged. */
export async function scheduledMaintenance(instance: Instance): Promise<void> {
  const started = Date.now();
  const report = await instance.maintain();
  instance.log.info("maintenance", { ...report, duration_ms: Date.now() - started });
}
