import { userKey } from "../session/ledger/limits";
import type { ConnectionAdapter } from "../store/connection-erasure-store";
import type { StoredMessage } from "../store/connection-store";
import type { ConnectionView } from "./connection-service";
import { participantOf } from "./known-connections";

/** One of the user's connections as an export gives it: as they see it, with every message of both sides, oldest first. */
export interface ExportedConnection {
  readonly view: ConnectionView;
  readonly messages: readonly StoredMessage[];
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
   * The user's connections in id order after `after`, from their list, each read whole (its
   * messages a page at a time, backwards from the newest): memory holds one connection. One
   * listed but gone (erased with the other user) is left out.
   */
  async *connections(userId: string, after: string | undefined, pageSize: number): AsyncGenerator<ExportedConnection> {
    let cursor = after;
    for (;;) {
      const page = await this.store.scanListedConnections(userKey(userId), cursor, pageSize);
      for (const { id, meta } of page) {
        const state = meta ? await this.store.readConnectionState(id) : null;
        if (!meta || !state) continue;
        yield { view: { id, meta, state, you: participantOf(meta, userId) }, messages: await this.messages(id) };
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

  private async messages(connectionId: string): Promise<StoredMessage[]> {
    const pages: StoredMessage[][] = [];
    let before: number | undefined;
    for (;;) {
      const page = await this.store.readConnectionMessages(connectionId, { limit: MESSAGE_PAGE, ...(before === undefined ? {} : { before }) });
      pages.unshift(page);
      const first = page[0]?.position;
      if (first === undefined || first <= 1) return pages.flat();
      before = first;
    }
  }
}
