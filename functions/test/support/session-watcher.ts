import { randomUUID } from "node:crypto";
import { initializeApp, type FirebaseApp } from "firebase/app";
import { connectDatabaseEmulator, getDatabase, onValue, ref, type Database } from "firebase/database";
import { withEmulatorHost } from "../../src/store/rtdb/instance-databases";

export interface Partial {
  /** Its key under `partials` (the writing request's claim id). */
  readonly key: string;
  readonly text: string;
  readonly seq_after: number;
  readonly updated_at: number;
}

/** A stored message as a client reads it: a reply names the partial it completed (`partial`). */
export interface StoredMessage {
  readonly role: string;
  readonly content: string;
  readonly partial?: string;
}

/** What one value event of the session node showed a client: the partials and the stored messages. */
export interface Seen {
  readonly partials: readonly Partial[];
  /** The stored messages' texts, in conversation order. */
  readonly messages: readonly string[];
  /** The stored messages whole, in conversation order. */
  readonly stored: readonly StoredMessage[];
  /** When the event came (performance.now()). */
  readonly at: number;
}

/**
 * A web client (the `firebase` JS SDK, as a page uses it) listening to one session node, as the
 * client contract of docs/api.md says: everything it saw, one entry per value event.
 */
export class SessionWatcher {
  readonly seen: Seen[] = [];
  private readonly unsubscribe: () => void;
  private readonly waiters: { readonly accept: (seen: Seen) => boolean; readonly resolve: () => void }[] = [];

  constructor(database: Database, sessionId: string) {
    this.unsubscribe = onValue(ref(database, `userSessions/${sessionId}`), (snapshot) => {
      const session = (snapshot.val() ?? {}) as { partials?: Record<string, Omit<Partial, "key">>; messages?: Record<string, StoredMessage> };
      const stored = Object.keys(session.messages ?? {}).sort().flatMap((key) => session.messages?.[key] ?? []);
      const seen: Seen = {
        partials: Object.entries(session.partials ?? {}).map(([key, partial]) => ({ key, ...partial })),
        messages: stored.map((message) => message.content),
        stored,
        at: performance.now(),
      };
      this.seen.push(seen);
      for (const waiter of [...this.waiters]) {
        if (!waiter.accept(seen)) continue;
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    });
  }

  /** Resolves once an event shows what `accept` takes (or one did already); rejects after `timeoutMs`. */
  until(accept: (seen: Seen) => boolean, timeoutMs = 5_000): Promise<void> {
    if (this.seen.some(accept)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { reject(new Error(`never seen; last: ${JSON.stringify(this.seen.at(-1))}`)); }, timeoutMs);
      this.waiters.push({ accept, resolve: () => { clearTimeout(timer); resolve(); } });
    });
  }

  /** The distinct partial texts seen, in order. */
  partialTexts(): string[] {
    const texts = this.seen.flatMap((seen) => seen.partials.map((partial) => partial.text));
    return texts.filter((text, index) => texts[index - 1] !== text);
  }

  close(): void {
    this.unsubscribe();
  }
}

/** A web SDK app of its own (as a page has) on `namespace` of the database emulator; the caller deletes the app. */
export function webClient(namespace: string): { app: FirebaseApp; database: Database } {
  return webClientAt(`https://${namespace}.firebaseio.com`);
}

/**
 * A web SDK app on the database at `url`, as a client given `database_url` opens it: a deployed
 * style URL goes to FIREBASE_DATABASE_EMULATOR_HOST (connectDatabaseEmulator), an emulator's own
 * (`http://HOST:PORT?ns=NAME`, a stand-in process of a suite's own) is used as it is.
 */
export function webClientAt(url: string): { app: FirebaseApp; database: Database } {
  const app = initializeApp({ projectId: "demo-chatify", databaseURL: url }, randomUUID());
  if (!url.startsWith("http://")) {
    const database = getDatabase(app);
    const [host, port] = (process.env.FIREBASE_DATABASE_EMULATOR_HOST ?? "").split(":");
    connectDatabaseEmulator(database, host ?? "127.0.0.1", Number(port));
    return { app, database };
  }
  // @firebase/database 1.1.5 (repoManagerDatabaseFromApp), in Node, sends every database to
  // FIREBASE_DATABASE_EMULATOR_HOST when it is set, whatever the URL says: unset while this one is made.
  return { app, database: withEmulatorHost(undefined, () => getDatabase(app)) };
}
