import type { SessionStore } from "../../src/store/session-store";

/** `store`, with every partial reply it is asked to write recorded in `written` (null: a removal). */
export function recordingPartials(store: SessionStore, written: (string | null)[]): SessionStore {
  return new Proxy(store, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property, target);
      if (property === "writePartial") {
        return (...args: Parameters<SessionStore["writePartial"]>) => {
          written.push(args[2]?.text ?? null);
          return target.writePartial(...args);
        };
      }
      return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}
