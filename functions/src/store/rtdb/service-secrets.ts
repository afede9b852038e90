import { randomBytes } from "node:crypto";
import type { Database, DataSnapshot } from "firebase-admin/database";
import { z } from "zod";
import { parseStored } from "../parse-stored";
import { serviceSecretPath } from "./paths";
import type { TransactionEngine } from "./transactions";

/** What a stored secret must be: 32 random bytes in base64url are 43 characters. */
const secretSchema = z.string().min(32);

/** One secret an instance listens to, and the last value its listener delivered. */
interface Watched {
  /** Undefined until the listener has delivered a secret, and after the secret is deleted. */
  current: string | undefined;
  stop: () => void;
}

/**
 * The deployment's secrets (`serviceSecrets/{name}`), the same on every instance and kept current
 * on each by a listener held for the instance's life. A value read once and kept would outlive a
 * deletion: the instance would go on accepting the cursors the deletion was meant to invalidate,
 * and refuse those signed with the secret made after it, until it was recycled
 * (docs/conversations.md, Cursors). With the listener, the database pushes a deletion and the new
 * secret to every instance as they happen, and a request finds the current one without a round
 * trip. Not a ListenerHolds hold: those are dropped when unused for minutes, and each read after
 * that would cost a round trip on a list or export request.
 */
export class ServiceSecrets {
  private readonly watched = new Map<string, Watched>();

  constructor(
    private readonly db: Database,
    private readonly engine: TransactionEngine,
  ) {}

  async get(name: string): Promise<string> {
    const known = this.watch(name).current;
    if (known !== undefined) return known;
    // First use on this instance (the listener's first value not in yet), or no secret stored.
    // The read is answered by the listener's data once it is in, so a missing secret costs the
    // transaction that makes it and no more.
    const path = serviceSecretPath(name);
    const ref = this.db.ref(path);
    const stored = (await this.engine.read("read service secret", ref)).val() as unknown;
    if (stored !== null) return parseStored(secretSchema, stored, path);
    // Whoever asks first creates it, in a transaction: instances that ask at once end up with
    // the one that landed.
    await this.engine.createIfAbsent(path, randomBytes(32).toString("base64url"), "create service secret");
    return parseStored(secretSchema, (await this.engine.read("read service secret", ref)).val(), path);
  }

  /** Stops listening (for a clean shutdown). */
  close(): void {
    for (const watched of this.watched.values()) watched.stop();
    this.watched.clear();
  }

  private watch(name: string): Watched {
    const existing = this.watched.get(name);
    if (existing) return existing;
    const ref = this.db.ref(serviceSecretPath(name));
    const watched: Watched = { current: undefined, stop: () => undefined };
    const onValue = (snapshot: DataSnapshot) => {
      const parsed = secretSchema.safeParse(snapshot.val());
      // A value that is not a secret is left to the read in `get`, which names it as bad data.
      watched.current = parsed.success ? parsed.data : undefined;
    };
    watched.stop = () => { ref.off("value", onValue); };
    // A cancelled listen (rules, a deleted app) ends the watch: the next request listens again.
    ref.on("value", onValue, () => {
      if (this.watched.get(name) === watched) this.watched.delete(name);
    });
    this.watched.set(name, watched);
    return watched;
  }
}
