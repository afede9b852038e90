import type { Database, DataSnapshot, Query } from "firebase-admin/database";
import type { z } from "zod";
import { withDeadline } from "../deadline";
import { StoreDataError, StoreUnavailableError } from "../errors";
import { fromJsonLeaf, toJsonLeaf, type RecordForm } from "./json-leaf";
import { parseStored } from "../parse-stored";
import { sessionStateSchema, type SessionState } from "../records";
import type { SweepPosition } from "../sweep-page";
import type { LedgerRule, Ruled, StateRule } from "../session-store";

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
    const { decided, value, runs } = await this.transactParsed(path, operation, sessionStateSchema, rule, (raw, state, result) => nodeOf(raw, state, result.next));
    if (!decided) return { ruled: { found: false }, wrote: false, strayPartials: [], value, runs };
    const { outcome, next, strayPartials = [] } = decided.result;
    const wrote = next !== undefined;
    return { ruled: { found: true, outcome, state: next ?? decided.state }, wrote, strayPartials: wrote ? strayPartials : [], value, runs };
  }

  /**
   * A transaction on a small state node at `path` (a session's, a connection's), parsed with
   * `schema`, that must exist: `rule` decides from the parsed state, `nodeOf` gives the node to
   * write (the state it leaves, with whatever rides beside it). Returns the last run's state and
   * result (undefined when there is no node), the node as stored now, and how often the rule ran.
   * A result with a `next` that the server did not commit is an unknown fate: StoreUnavailableError.
   */
  async transactParsed<S, R extends { readonly next?: unknown }>(
    path: string,
    operation: string,
    schema: z.ZodType<S>,
    rule: (state: S) => R,
    nodeOf: (raw: Readonly<Record<string, unknown>>, state: S, result: R) => Record<string, unknown>,
  ): Promise<{ decided: { state: S; result: R } | undefined; value: unknown; runs: number }> {
    let written: unknown;
    const { decided, committed, snapshot, runs } = await this.transact(path, operation, (raw) => {
      const current = raw as Readonly<Record<string, unknown>> | null;
      written = null;
      // null is also what an instance without a copy sees first: writing null back makes
      // the server answer with the real node (hash mismatch) instead of aborting on a guess.
      if (current === null) return { decided: undefined, write: null };
      const state = schema.safeParse(current);
      // Malformed: abort, and report it below instead of "not found".
      if (!state.success) return { decided: undefined, write: undefined };
      const result = rule(state.data);
      written = nodeOf(current, state.data, result);
      return { decided: { state: state.data, result }, write: written };
    });
    // Committed, the node is what the last run wrote, parsed by it already: no second conversion.
    const value: unknown = committed ? written : snapshot.val();
    if (!committed && value !== null) parseStored(schema, value, path);
    if (decided?.result.next !== undefined && !committed) throw new StoreUnavailableError(operation);
    return { decided, value: value ?? null, runs };
  }

  /**
   * Applies `rule` in a transaction on the record at `path`, which may not exist yet. Unlike a
   * session, a missing record is a valid start: a cold instance's null guess is corrected by the
   * server (hash mismatch) before anything is written over real data. `form`: how the record is
   * written (json-leaf.ts).
   */
  async transactRecord<R extends object, O>(path: string, schema: z.ZodType<R>, operation: string, rule: LedgerRule<R, O>, form: RecordForm = "tree"): Promise<O> {
    const { decided } = await this.transact(path, operation, (current) => {
      const record = current === null ? null : schema.safeParse(form === "json" ? fromJsonLeaf(current) : current);
      if (record !== null && !record.success) throw new StoreDataError(path, record.error.issues[0]?.message ?? "invalid");
      const { outcome, next } = rule(record === null ? null : record.data);
      // "No change" writes the record back as it is (or null for none): see `transact`.
      if (next === undefined) return { decided: outcome, write: current };
      return { decided: outcome, write: form === "json" ? toJsonLeaf(next) : (JSON.parse(JSON.stringify(next)) as unknown) };
    });
    return decided as O;
  }

  /** Children of `path` whose `child` is at most `cutoff`, oldest first (children without it are left out). */
  async keysOrderedBy(path: string, child: string, cutoff: number, limit: number, operation: string): Promise<string[]> {
    return (await this.orderedBy(path, child, cutoff, limit, operation)).map((entry) => entry.key);
  }

  /**
   * As `keysOrderedBy`, each with its `child`, and after `after` (exclusive: the entry a page
   * ended on), so that a caller can page past children it could not handle.
   */
  async orderedBy(path: string, child: string, cutoff: number, limit: number, operation: string, after?: SweepPosition): Promise<SweepPosition[]> {
    if (limit <= 0) return [];
    const ordered = this.db.ref(path).orderByChild(child);
    const snapshot = await this.read(operation, (after === undefined ? ordered.startAt(0) : ordered.startAfter(after.value, after.key)).endAt(cutoff).limitToFirst(limit));
    const entries: SweepPosition[] = [];
    snapshot.forEach((entry: DataSnapshot) => {
      const value: unknown = entry.child(child).val();
      // The query's bounds are numbers, which a value of any other type sorts outside of.
      if (entry.key !== null && typeof value === "number") entries.push({ key: entry.key, value });
    });
    return entries;
  }

  /**
   * Removes the children of `path` whose `child` is at most `cutoff`, `limit` at most (found by
   * `keysOrderedBy`); returns how many this call removed. Each in a transaction that checks the
   * child again (`orderedUpTo`), not one multi-path delete of what the query found: a write
   * landing in between (a take from an address's bucket, a key claimed anew) moves the child past
   * the cutoff, and stays. Two calls at once count each child once. All settled, the first
   * failure is rethrown: the others are not left running.
   */
  async deleteOrderedBy(path: string, child: string, cutoff: number, limit: number, what: string): Promise<number> {
    const keys = await this.keysOrderedBy(path, child, cutoff, limit, `find ${what}`);
    const results = await Promise.allSettled(
      keys.map(async (key) => {
        // Kept, the node is written back as it is, so the server confirms it (see `transact`).
        const { decided, committed } = await this.transact(`${path}/${key}`, `delete ${what}`, (current) => {
          const gone = orderedUpTo(current, child, cutoff);
          return { decided: gone, write: gone ? null : current };
        });
        return decided === true && committed;
      }),
    );
    const failed = results.find((result) => result.status === "rejected");
    if (failed !== undefined) throw failed.reason instanceof Error ? failed.reason : new StoreUnavailableError(`delete ${what}`);
    return results.filter((result) => result.status === "fulfilled" && result.value).length;
  }

  /**
   * Writes `value` at `path` unless something is there that `stays` (by default, anything). What
   * does not stay is replaced whole. False when it kept what was there; "created" when it wrote on
   * an empty node, "replaced" when on one that did not stay.
   */
  async createIfAbsent(path: string, value: unknown, operation: string, stays: (current: unknown) => boolean = () => true): Promise<false | "created" | "replaced"> {
    // Returning the value for an empty node writes it; `undefined` keeps an existing one. The
    // update function runs again on each value the server sends back: its last run is the one committed.
    const last = { replaced: false };
    const result = await this.call(
      operation,
      this.db.ref(path).transaction(
        (current: unknown) => {
          last.replaced = current !== null && !stays(current);
          return current === null || last.replaced ? value : undefined;
        },
        undefined,
        false,
      ),
    );
    if (!result.committed) return false;
    return last.replaced ? "replaced" : "created";
  }
}

/**
 * Whether `node`'s `child` is a number at most `cutoff`: what the queries of `orderedBy` find
 * (their bounds are numbers, which a value of any other type sorts outside of), and what
 * `deleteOrderedBy` checks again before it removes a node.
 */
function orderedUpTo(node: unknown, child: string, cutoff: number): boolean {
  if (typeof node !== "object" || node === null) return false;
  const value: unknown = (node as Record<string, unknown>)[child];
  return typeof value === "number" && value <= cutoff;
}
