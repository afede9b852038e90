import { userKey } from "../session/ledger/limits";
import type { ConnectionAdapter } from "../store/connection-erasure-store";
import type { StoredMessage } from "../store/connection-store";
import type { ConnectionView } from "./connection-service";
import { participantOf } from "./known-connections";

/**
 * One of the user's connections as an export gives it: as they see it, with its messages after
 * `after` (0 unless an earlier part already gave those), oldest first, read as they are written;
 * `continued` when an earlier part began it (its entry there to be joined), however many of its
 * messages it gave (none, when that part failed right after the connection's fields).
 */
export interface ExportedConnection {
  readonly view: ConnectionView;
  readonly after: number;
  readonly continued: boolean;
  readonly messages: AsyncIterable<StoredMessage>;
}

/** Where the connections of an export start: after connection `after`; in connection `within.id`, after its message `within.position`. */
export interface ConnectionsFrom {
  readonly after: string | undefined;
  readonly within?: { readonly id: string; readonly position: number };
}

/** The user's devices as an export gives them: when each was registered, never the token (a credential for the device). */
export interface ExportedDevices {
  readonly registeredAt: readonly number[];
  readonly previews: boolean | null;
}

/** Messages read at once while a connection is exported (the store's page limit). */
const MESSAGE_PAGE = 100;

/** What connections hold of a user, for their export (docs/conversations.md, "Export"). */
export class ConnectionExport {
  constructor(private readonly store: Pick<ConnectionAdapter, "scanListedConnections" | "readConnectionState" | "readConnectionMessages" | "readDevices">) {}

  /**
   * The user's connections in id order after `from.after` (from `from.within` when an earlier
   * part split it), from their list, each with its
   * messages a page at a time as the writer takes them: the other user decides how many there
   * are, so memory holds one page, never a whole connection. One listed but gone (erased with the
   * other user) is left out.
   */
  async *connections(userId: string, from: ConnectionsFrom, pageSize: number): AsyncGenerator<ExportedConnection> {
    let cursor = from.after;
    for (;;) {
      const page = await this.store.scanListedConnections(userKey(userId), cursor, pageSize);
      for (const { id, meta } of page) {
        // Listed since the export passed its place (as a session made during an export can be): the cursor can hold one split connection, not two.
        if (from.within !== undefined && id < from.within.id) continue;
        const state = meta ? await this.store.readConnectionState(id) : null;
        if (!meta || !state) continue;
        const continued = from.within?.id === id;
        const after = from.within && continued ? Math.min(from.within.position, state.message_count) : 0;
        yield { view: { id, meta, state, you: participantOf(meta, userId) }, after, continued, messages: this.messages(id, after, state.message_count) };
      }
      if (page.length < pageSize) return;
      cursor = page.at(-1)?.id;
    }
  }

  async devices(userId: string): Promise<ExportedDevices> {
    const record = await this.store.readDevices(userKey(userId));
    return {
      registeredAt: Object.values(record?.tokens ?? {})
        .map((device) => device.updated_at)
        .sort((x, y) => x - y),
      previews: record?.previews ?? null,
    };
  }

  /**
   * The connection's messages after position `after` through `through` (its count when its state
   * was read, as the entry says), oldest first. The store pages backwards by `before`, so each page
   * asks for the positions just past the last one given; only a run that continues it is taken,
   * so no message is given twice or out of order.
   */
  private async *messages(connectionId: string, after: number, through: number): AsyncGenerator<StoredMessage> {
    let last = after;
    while (last < through) {
      const page = await this.store.readConnectionMessages(connectionId, { before: Math.min(last + MESSAGE_PAGE, through) + 1, limit: MESSAGE_PAGE });
      // Erased since its state was read (with the other user): nothing more of it to give.
      if (page === null) return;
      const start = last;
      for (const message of page) {
        if (message.position !== last + 1) continue;
        yield message;
        last = message.position;
      }
      if (last === start) return;
    }
  }
}
