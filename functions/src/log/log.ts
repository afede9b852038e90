import * as logger from "firebase-functions/logger";

/** Structured fields of a log entry. Never prompts, message texts, tokens or stacks. */
export type LogFields = Readonly<Record<string, string | number | boolean | undefined>>;

export interface Log {
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
}

/** Cloud Logging through firebase-functions: one JSON entry per call, fields as structured data. */
export const functionsLog: Log = {
  info: (message, fields) => { logger.info(message, fields ?? {}); },
  warn: (message, fields) => { logger.warn(message, fields ?? {}); },
  error: (message, fields) => { logger.error(message, fields ?? {}); },
};

export const silentLog: Log = { info: () => undefined, warn: () => undefined, error: () => undefined };
