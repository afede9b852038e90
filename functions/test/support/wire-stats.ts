import { describeUnless } from "./visible-skip";

/** What rtdb-wire counted for one namespace (its README: `/.wire/stats`). */
export interface WireStats {
  /** Puts, merges and transaction attempts: what the real service's limit of about 1,000 writes a second counts. */
  readonly writes: number;
  /** UTF-16 units of the data messages clients sent. */
  readonly unitsIn: number;
  readonly unitsOut: number;
  /** Listens clients have open now: those sent less those stopped. */
  readonly openListens: number;
}

/** `describe` when the database counts its writes (rtdb-wire), else a visibly skipped one that says why. */
export function describeWithWireStats(name: string, body: () => void): void {
  describeUnless(process.env.CHATIFY_RTDB_SKIP_REASON || process.env.CHATIFY_WIRE_STATS_SKIP_REASON || undefined, name, body);
}

function statsUrl(namespace: string): string {
  return `http://${process.env.FIREBASE_DATABASE_EMULATOR_HOST ?? ""}/.wire/stats?ns=${namespace}`;
}

export async function wireStats(namespace: string): Promise<WireStats> {
  const answer = await fetch(statsUrl(namespace));
  if (!answer.ok) throw new Error(`/.wire/stats answered ${answer.status}`);
  const stats = (await answer.json()) as Partial<WireStats> & { readonly listens?: number; readonly unlistens?: number };
  return { writes: stats.writes ?? 0, unitsIn: stats.unitsIn ?? 0, unitsOut: stats.unitsOut ?? 0, openListens: (stats.listens ?? 0) - (stats.unlistens ?? 0) };
}

/** Starts the namespace's counts from zero. */
export async function resetWireStats(namespace: string): Promise<void> {
  const answer = await fetch(statsUrl(namespace), { method: "DELETE" });
  if (!answer.ok) throw new Error(`DELETE /.wire/stats answered ${answer.status}`);
}
