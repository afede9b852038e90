import type { z } from "zod";
import { StoreDataError } from "./errors";

/** Parses a value read from a database, naming the path when it does not fit the schema. */
export function parseStored<S extends z.ZodType>(schema: S, value: unknown, path: string): z.infer<S> {
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue && issue.path.length > 0 ? `${issue.path.join(".")}: ` : "";
    throw new StoreDataError(path, `${where}${issue?.message ?? "invalid"}`);
  }
  return parsed.data;
}
