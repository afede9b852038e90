import type { Instance } from "./instance";
import { maintenanceRunMs } from "./time-budget";

/** The scheduled function's body: one clean-up run within the function's timeout, its figures logged. */
export async function scheduledMaintenance(instance: Instance): Promise<void> {
  const started = Date.now();
  const report = await instance.maintain(undefined, maintenanceRunMs(instance.config));
  instance.log.info("maintenance", { ...report, duration_ms: Date.now() - started });
}
