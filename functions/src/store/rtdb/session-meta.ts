import { z } from "zod";
import { parseStored } from "../parse-stored";
import { generationSettingsSchema, type SessionMeta } from "../records";
import { sessionFieldPath, type SESSION_FIELDS } from "./paths";

/**
 * A session's fields fixed at creation (SESSION_FIELDS, stored beside its state), as its meta:
 * `valueOf` gives each field's stored value, parsed here where it is stored (a bad one names its path).
 */
export function sessionMetaOf(sessionId: string, valueOf: (field: (typeof SESSION_FIELDS)[number]) => unknown): SessionMeta {
  const field = <S extends z.ZodType>(schema: S, name: (typeof SESSION_FIELDS)[number]): z.infer<S> => parseStored(schema, valueOf(name), sessionFieldPath(sessionId, name));
  return {
    user_id: field(z.string(), "user_id"),
    template_id: field(z.string(), "template_id"),
    template_name: field(z.string(), "template_name"),
    system_prompt: field(z.string(), "system_prompt"),
    settings: field(generationSettingsSchema, "settings"),
    created_at: field(z.number(), "created_at"),
  };
}
