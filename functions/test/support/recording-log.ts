import type { Log, LogFields } from "../../src/log/log";

export interface Logged {
  readonly level: "info" | "warn" | "error";
  readonly message: string;
  readonly fields?: LogFields;
}

/** A log that keeps its entries, for a test to read what was logged (and what never was). */
export function recordingLog(entries: Logged[] = []): { readonly log: Log; readonly entries: Logged[] } {
  const keep = (level: Logged["level"]) => (message: string, fields?: LogFields) => { entries.push({ level, message, ...(fields ? { fields } : {}) }); };
  return { log: { info: keep("info"), warn: keep("warn"), error: keep("error") }, entries };
}
