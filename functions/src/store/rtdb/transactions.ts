import type { Database, DataSnapshot, Query } from "firebase-admin/database";
import { withDeadline } from "../deadline";
import { StoreUnavailableError } from "../errors";
import { parseStored } from "../parse-stored";
import { sessionStateSchema, type SessionState } from "../records";
import type { Ruled, StateRule } from "../session-store";

/**
 * Reads once through a listener. `get()` is avoided on purpose: in @firebase/database 1.1.5
 * (firebase-admin 14.5), a `get()` answer is applied to the SDK's copy of the node after newer
 * data the server already pushed to a listener there, so the copy goes stale for good and every
 * transaction on the node reruns against it until it fails with "maxretry".
 * test/contract/rtdb-read-hazard.test.ts fails if reads go back to `get()`.
 */
export function readOnce(query: Query): Promise<DataSnapshot> {
  return query.once("value");
}

/** What a transaction on a session's `state` decided and left. */
export interface StateResult<O> {
  readonly ruled: Ruled<O>;
  /** Whether the rule's last run changed the state (and the server committed it). */
  readonly wrote: boolean;
  /** Partial replies of dropped claims, to remove with the copy (see StateRule). */
  readonly strayPartials: readonly string[];
  /** The state node as stored now (null for none). */
  readonly value: unknown;
  /** How often the rule ran: 1 when the server took its first answer. */
  readonly runs: number;
}

/**
 * The node to write at `state`, from the raw node read there, the state it parsed to, and the
 * state the rule leaves (undefined when it changes nothing: the node is still written back).
 */
export type StateNodeOf = (raw: Readonly<Record<string, unknown>>, state: SessionState, next: SessionState | undefined) => Record<string, unknown>;

/** Database calls with a deadline each, and the transactions every write here goes through. */
export class TransactionEngine {
  constructor(
    private readonly db: Database,
    private readonly timeoutMs: number,
  ) {}

  call<T>(operation: string, work: Promise<T>): Promise<T> {
    return withDeadline(operation, this.timeoutMs, work);
  }

  /** One read of `query` (see readOnce), within the deadline. */
  read(operation: string, query: Query): Promise<DataSnapshot> {
    return this.call(operation, readOnce(query));
  }

  /**
   * One database transaction at `path`. `run` decides from the current value what to write and
   * what to report; only its last run counts (the handler reruns on contention). Two things hold
   * for every transaction here:
   * - a decision that changes nothing still writes the value back unchanged, so the server
   *   confirms it: a run may have seen another in-flight transaction's result that the server has
   *   not committed (the SDK's "latest state"), and aborting would trust it;
   * - `run` may throw: the handler must not (it leaves the SDK's queue stuck), so it aborts and the
   *   error is rethrown once the transaction is over.
   */
  async transact<D>(
    path: string,
    operation: string,
    run: (current: unknown) => { decided: D; write: unknown },
  ): Promise<{ decided: D | undefined; committed: boolean; snapshot: DataSnapshot; runs: number }> {
    const last: { decided?: D; error?: unknown; runs: number } = { runs: 0 };
    const result = await this.call(
      operation,
      this.db.ref(path).transaction(
        (current: unknown) => {
          last.runs += 1;
          last.decided = undefined;
          last.error = undefined;
          try {
            const { decided, write } = run(current);
            last.decided = decided;
            return write;
          } catch (error) {
            last.error = error;
            return undefined;
          }
        },
        undefined,
        false,
      ),
    );
    if (last.error !== undefined) throw last.error instanceof Error ? last.error : new Error(`${operation} failed`, { cause: last.error });
    return { decided: last.decided, committed: result.committed, snapshot: result.snapshot, runs: last.runs };
  }

  /**
   * Runs `rule` in a transaction on the session state at `path` and returns what its last run
   * decided: the one that committed, or the outcome of one that changed nothing. `nodeOf` turns
   * the state the rule leaves into the node to write.
   */
  async transactState<O>(path: string, operation: string, rule: StateRule<O>, nodeOf: StateNodeOf): Promise<StateResult<O>> {
    const notFound = { ruled: { found: false } as Ruled<O>, wrote: false, strayPartials: [] as readonly string[] };
    let written: unknown;
    const { decided, committed, snapshot, runs } = await this.transact(path, operation, (raw) => {
      const current = raw as Readonly<Record<string, unknown>> | null;
      written = null;
      // null is also what an instance without a copy sees first: writing null back makes
      // the server answer with the real node (hash mismatch) instead of aborting on a guess.
      if (current === null) return { decided: notFound, write: null };
      const state = sessionStateSchema.safeParse(current);
      // Malformed: abort, and report it below instead of "not found".
      if (!state.success) return { decided: notFound, write: undefined };
      const { outcome, next, strayPartials = [] } = rule(state.data);
      written = nodeOf(current, state.data, next);
      const ruled: Ruled<O> = { found: true, outcome, state: next ?? state.data };
      const wrote = next !== undefined;
      return { decided: { ruled, wrote, strayPartials: wrote ? strayPartials : [] }, write: written };
    });
    // Committed, the node is what the last run wrote, parsed by it already: no second conversion.
    const value: unknown = committed ? written : snapshot.val();
    if (!committed && value !== null) parseStored(sessionStateSchema, value, path);
    const last = decided ?? notFound;
    if (last.wrote && !committed) throw new StoreUnavailableError(operation);
    return { ...last, value: value ?? null, runs };
  }

  /** Writes `value` at `path` unless something is there; true when it wrote. */
  async createIfAbsent(path: string, value: unknown, operation: string): Promise<boolean> {
    // Returning the value for an empty node writes it; `undefined` keeps an existing one.
    const result = await this.call(operation, this.db.ref(path).transaction((current: unknown) => (current === null ? value : undefined), undefined, false));
    return result.committed;
  }
}
