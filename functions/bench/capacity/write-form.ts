import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { deleteApp, initializeApp } from "firebase-admin/app";
import { getDatabase } from "firebase-admin/database";
import { PartialWriter } from "../../src/session/message/partial-writer";
import { freshNamespace } from "../../test/support/rtdb";
import type { RtdbWire } from "../cost/rtdb-wire";

/** The texts a PartialWriter with `maxIntervalMs` sends for `chunks` arriving `chunkDelayMs` apart, in real time. */
export async function partialTexts(chunks: readonly string[], chunkDelayMs: number, maxIntervalMs: number): Promise<string[]> {
  const texts: string[] = [];
  const writer = new PartialWriter((partial) => { if (partial) texts.push(partial.text); }, 0, Date.now, maxIntervalMs);
  for (const chunk of chunks) {
    await sleep(chunkDelayMs);
    writer.write(chunk);
  }
  writer.stop();
  return texts;
}

/**
 * What the same partial writes upload in each form, counted by rtdb-wire: `set` of the whole text
 * each time (today's form: `{text, seq_after, updated_at}`), or `update` adding only the new text
 * as a numbered child (`{seq_after, updated_at, chunks: {0: …, 1: …}}`, which every reader would
 * have to join).
 */
export async function unitsByForm(wire: RtdbWire, texts: readonly string[]): Promise<{ whole: number; deltas: number }> {
  const namespace = freshNamespace("capacity-f");
  const app = initializeApp({ projectId: "demo-chatify", databaseURL: `https://${namespace}.firebaseio.com` }, randomUUID());
  try {
    const db = getDatabase(app);
    // The connection opens before the count starts.
    await db.ref("userSessions/s/opened").set(true);
    const measure = async (path: string, write: (ref: ReturnType<typeof db.ref>, text: string, index: number, previous: string) => Promise<void>): Promise<number> => {
      const ref = db.ref(path);
      const before = await wire.unitsIn(namespace);
      let previous = "";
      for (const [index, text] of texts.entries()) {
        await write(ref, text, index, previous);
        previous = text;
      }
      return (await wire.unitsIn(namespace)) - before;
    };
    const whole = await measure("userSessions/s/partials/whole", (ref, text) => ref.set({ text, seq_after: 7, updated_at: Date.now() }));
    const deltas = await measure("userSessions/s/partials/deltas", (ref, text, index, previous) =>
      index === 0 ? ref.set({ seq_after: 7, updated_at: Date.now(), chunks: { 0: text } }) : ref.update({ [`chunks/${index}`]: text.slice(previous.length), updated_at: Date.now() }),
    );
    return { whole, deltas };
  } finally {
    await deleteApp(app);
  }
}
