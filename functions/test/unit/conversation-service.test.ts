import { ConversationService } from "../../src/session/conversations/conversation-service";
import { claimRequest, endRule, type SessionPolicy } from "../../src/session/session-rules";
import { MemoryStore } from "../../src/store/memory-store";
import type { StoredConversation } from "../../src/store/conversation-records";
import { StoreDataError } from "../../src/store/errors";
import type { ChatMessage, SessionState } from "../../src/store/records";
import type { HistoryWindow } from "../../src/store/session-store";
import { appendAt, CREATED_AT, exchange, newSession } from "../support/fixtures";

const MINUTE = 60_000;
const POLICY: SessionPolicy = { idleTtlMs: 30 * MINUTE, maxExchanges: 100 };
const LEASE_MS = MINUTE;
const USER = "user_12345";

/** The embedded store, counting the session-state reads a list makes, and how many run at once. */
class CountingStore extends MemoryStore {
  readonly stateReads: string[] = [];
  maxInFlight = 0;
  /** Sessions whose state reads as gone (deleted between the index read and this one). */
  readonly gone = new Set<string>();
  private inFlight = 0;

  override async readSessionState(sessionId: string): Promise<SessionState | null> {
    this.stateReads.push(sessionId);
    this.inFlight += 1;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    // One turn of the event loop, so that reads issued together overlap.
    await new Promise((resolve) => setImmediate(resolve));
    this.inFlight -= 1;
    return this.gone.has(sessionId) ? null : super.readSessionState(sessionId);
  }
}

/** A session of USER with its last activity at `at`, created in `store`. */
async function sessionAt(store: MemoryStore, at: number, id: string): Promise<string> {
  await store.createSession(newSession({ user_id: USER, created_at: at }, id));
  return id;
}

describe("ConversationService.list: the status of entries idle past the TTL", () => {
  // Past the 30-minute TTL of a session created at CREATED_AT, within the lease of a claim taken 29.5 minutes in.
  const now = CREATED_AT + 30.2 * MINUTE;
  let store: CountingStore;
  let service: ConversationService;

  beforeEach(() => {
    store = new CountingStore();
    service = new ConversationService({ store, clock: () => now, policy: POLICY, partialStaleMs: 9 * MINUTE });
  });

  const statuses = async () => Object.fromEntries((await service.list(USER, 20)).conversations.map(({ sessionId, status }) => [sessionId, status]));

  it("judges them by the session's own rule: active while a message that arrived before the TTL is answered, read all at once and only them", async () => {
    const idle = await sessionAt(store, CREATED_AT, "00000000-0000-4000-8000-000000000001");
    const answering = await sessionAt(store, CREATED_AT, "00000000-0000-4000-8000-000000000002");
    const gone = await sessionAt(store, CREATED_AT, "00000000-0000-4000-8000-000000000003");
    const recent = await sessionAt(store, CREATED_AT + 20 * MINUTE, "00000000-0000-4000-8000-000000000004");
    const ended = await sessionAt(store, CREATED_AT, "00000000-0000-4000-8000-000000000005");
    const claim = { hash: "h", fingerprint: "f", owner: "o", remember: false };
    const claimed = await store.updateState(answering, claimRequest(claim, CREATED_AT + 29.5 * MINUTE, LEASE_MS, POLICY));
    expect(claimed.found && claimed.outcome).toEqual({ kind: "claimed", alone: true });
    await store.updateState(ended, endRule(CREATED_AT, POLICY));
    store.gone.add(gone);

    expect(await statuses()).toEqual({ [idle]: "expired", [answering]: "active", [gone]: "expired", [recent]: "active", [ended]: "ended" });
    expect({ reads: [...store.stateReads].sort(), atOnce: store.maxInFlight }).toEqual({ reads: [idle, answering, gone].sort(), atOnce: 3 });
  });

  it("reads no session state when no entry on the page is idle past the TTL", async () => {
    await sessionAt(store, CREATED_AT + 10 * MINUTE, "00000000-0000-4000-8000-000000000006");
    const ended = await sessionAt(store, CREATED_AT, "00000000-0000-4000-8000-000000000007");
    await store.updateState(ended, endRule(CREATED_AT, POLICY));

    expect(Object.values(await statuses())).toEqual(["active", "ended"]);
    expect(store.stateReads).toEqual([]);
  });
});

describe("ConversationService.read: the replies being written", () => {
  const now = CREATED_AT + 5 * MINUTE;
  const partial = { text: "Sure, here", seq_after: 0, updated_at: now - 1_000 };

  it("lists a fresh partial of an active session, and none once the session is ended, though a late write left one", async () => {
    const store = new MemoryStore();
    const service = new ConversationService({ store, clock: () => now, policy: POLICY, partialStaleMs: 9 * MINUTE });
    const id = await sessionAt(store, CREATED_AT, "00000000-0000-4000-8000-000000000008");
    await store.writePartial(id, "p1", partial);
    expect((await service.read(id, undefined, { limit: 20 })).partials).toEqual([{ key: "p1", ...partial }]);

    await store.updateState(id, endRule(now - 500, POLICY));
    // The message cut off by the end runs on elsewhere, and writes its partial once more.
    await store.writePartial(id, "p1", { ...partial, text: "Sure, here is more" });
    const view = await service.read(id, undefined, { limit: 20 });
    expect({ status: view.summary.status, partials: view.partials }).toEqual({ status: "ended", partials: [] });
  });
});

describe("ConversationService.read: the newest page", () => {
  const now = CREATED_AT + 5 * MINUTE;

  /** The embedded store, recording the ranges of messages read; its window can trail by one exchange (a commit landing between it and the state's read). */
  class WindowStore extends MemoryStore {
    readonly ranges: [number, number][] = [];
    trailing = false;

    override async readWindow(sessionId: string, limit: number): Promise<HistoryWindow> {
      const window = await super.readWindow(sessionId, limit + 2);
      if (!this.trailing) return super.readWindow(sessionId, limit);
      return { messages: window.messages.slice(0, -2).slice(-limit), through: window.through - 1 };
    }

    override async readMessages(sessionId: string, first: number, last: number): Promise<ChatMessage[]> {
      this.ranges.push([first, last]);
      return super.readMessages(sessionId, first, last);
    }
  }

  async function talked(store: WindowStore, id: string, exchanges: number): Promise<void> {
    await sessionAt(store, CREATED_AT, id);
    for (let seq = 1; seq <= exchanges; seq += 1) await store.appendExchange(id, exchange(String(seq), CREATED_AT + seq), appendAt(CREATED_AT + seq));
  }

  it("is the window's when it is whole, with no read of messages but the title's", async () => {
    const store = new WindowStore();
    const service = new ConversationService({ store, clock: () => now, policy: POLICY, partialStaleMs: 9 * MINUTE });
    const id = "00000000-0000-4000-8000-000000000009";
    await talked(store, id, 3);
    for (const limit of [50, 4]) {
      store.ranges.length = 0;
      const view = await service.read(id, undefined, { limit });
      expect({ positions: view.messages.map(({ position }) => position), ranges: store.ranges }).toEqual({ positions: [1, 2, 3, 4, 5, 6].slice(-limit), ranges: [[1, 1]] });
    }
  });

  it("is read again across its positions when the window falls short of the session's count, and is then whole and numbered by position", async () => {
    const store = new WindowStore();
    const service = new ConversationService({ store, clock: () => now, policy: POLICY, partialStaleMs: 9 * MINUTE });
    const id = "00000000-0000-4000-8000-00000000000a";
    await talked(store, id, 3);
    store.trailing = true;
    for (const [limit, positions, range] of [[50, [1, 2, 3, 4, 5, 6], [1, 6]], [3, [4, 5, 6], [4, 6]]] as const) {
      store.ranges.length = 0;
      const view = await service.read(id, undefined, { limit });
      expect({ positions: view.messages.map(({ position }) => position), ranges: store.ranges }).toEqual({ positions, ranges: [[1, 1], range] });
      expect(view.messages.map(({ position, message }) => [position, message.content])).toEqual(
        positions.map((position) => [position, position % 2 === 1 ? `question ${(position + 1) / 2}` : `answer ${position / 2}`]),
      );
    }
  });
});

describe("ConversationService.sessions: each session as an export gives it", () => {
  /** The embedded store, whose session `holed` read whole lacks the messages at `missing` (removed from a store by hand). */
  class HoledStore extends MemoryStore {
    holed = "";
    missing = new Set<number>();

    override async readUserSessions(userId: string, after: string | undefined, limit: number): Promise<StoredConversation[]> {
      const sessions = await super.readUserSessions(userId, after, limit);
      return sessions.map((session) => (session.id === this.holed ? { ...session, messages: session.messages.filter(({ position }) => !this.missing.has(position)) } : session));
    }
  }

  it("gives each whole, and raises StoreDataError naming the first position its count includes that is missing, after the sessions before it", async () => {
    const store = new HoledStore();
    const service = new ConversationService({ store, clock: () => CREATED_AT, policy: POLICY, partialStaleMs: MINUTE });
    const ids = ["00000000-0000-4000-8000-00000000000b", "00000000-0000-4000-8000-00000000000c"];
    for (const id of ids) {
      await sessionAt(store, CREATED_AT, id);
      for (const seq of [1, 2, 3]) await store.appendExchange(id, exchange(String(seq), CREATED_AT + seq), appendAt(CREATED_AT + seq));
    }
    const given: string[] = [];
    const exportAll = async () => {
      given.length = 0;
      for await (const session of service.sessions(USER, undefined, 1)) given.push(`${session.id}:${session.messages.map(({ position }) => position).join(",")}`);
    };
    await exportAll();
    expect(given).toEqual(ids.map((id) => `${id}:1,2,3,4,5,6`));

    store.holed = ids[1]!;
    for (const [missing, first] of [[[3], 3], [[6], 6], [[1, 2, 5], 1]] as const) {
      store.missing = new Set(missing);
      const failed = await exportAll().catch((error: unknown) => error);
      expect({ failed: failed instanceof StoreDataError ? failed.path : failed, given }).toEqual({ failed: `userSessions/${ids[1]}/messages/m00000000${first}`, given: [`${ids[0]}:1,2,3,4,5,6`] });
    }
  });
});
