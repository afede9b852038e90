import type { ConnectionExport } from "../connections/connection-export";
import type { ConversationService } from "../session/conversations/conversation-service";
import type { ErasureService } from "../session/erasure/erasure-service";
import type { CursorCodec } from "./cursor-codec";
import type { QuerySchemas } from "./query-schemas";

/** What the endpoints of a user's conversations and data need, built once per instance. */
export interface UserDataContext {
  readonly conversations: Pick<ConversationService, "owner" | "list" | "read" | "sessions" | "completes" | "usage" | "asNow">;
  readonly erasure: Pick<ErasureService, "erase">;
  /** What connections hold of the user, for their export. */
  readonly connections: Pick<ConnectionExport, "connections" | "devices">;
  readonly cursors: CursorCodec;
  readonly queries: QuerySchemas;
  readonly clock: () => number;
  readonly limits: UserDataLimits;
}

/** How much one answer may carry or take: a function has a timeout, and Hosting holds a whole answer before sending it. */
export interface UserDataLimits {
  /** An export's part ends after the session that takes it past this many bytes of JSON; the next part continues with its cursor. */
  readonly exportPartBytes: number;
  /** ... or once it has run this long. */
  readonly exportPartMs: number;
  /** Sessions an export reads at once: what it holds in memory. */
  readonly exportReadPage: number;
  /** How long an erasure's first pass may run in a request; the sweep finishes what is left. */
  readonly eraseRequestMs: number;
}
