import { StoreUnavailableError } from "../../src/store/errors";
import type { SessionStore } from "../../src/store/session-store";

/**
 * How an armed store call fails:
 * - `before`: the call never reaches the database (a request that could not be sent);
 * - `after`: the call is applied, then its answer is lost (a reply that never came back).
 */
export type Fault = "before" | "after";

type Method = keyof SessionStore;

/** The port's calls that answer at once (no database call to fail): passed through as they are, not made async. */
const SYNCHRONOUS: ReadonlySet<string> = new Set<Method>(["onClosed", "guessSession", "prepareSession", "prepareUsage", "guessUsage", "prepareServiceUsage", "reaches"]);

/**
 * A store that delegates every call to a real adapter, except the calls a test arms to fail,
 * once each. It stands between the service and a real database, so a test can make a chosen
 * step of a request fail and then look at what the real database holds.
 */
export class FaultyStore {
  /** Per method, what its next calls do: fail as a fault, or pass (`undefined`). */
  private readonly armed = new Map<Method, (Fault | undefined)[]>();
  readonly store: SessionStore;
  readonly failed: Method[] = [];

  constructor(inner: SessionStore) {
    const proxy = new Proxy(inner, {
      get: (target, property, receiver) => {
        const value: unknown = Reflect.get(target, property, receiver);
        if (typeof value !== "function" || typeof property !== "string") return value;
        if (SYNCHRONOUS.has(property)) return (...args: unknown[]) => Reflect.apply(value, target, args) as unknown;
        const method = property as Method;
        return async (...args: unknown[]) => {
          const fault = this.armed.get(method)?.shift();
          if (fault === undefined) return Reflect.apply(value, target, args) as unknown;
          this.failed.push(method);
          if (fault === "after") await Reflect.apply(value, target, args);
          throw new StoreUnavailableError(`${method} (injected ${fault})`);
        };
      },
    });
    this.store = proxy;
  }

  /** A coming call of `method` fails as `fault`: the next one, or the one after `passing` calls that succeed. */
  arm(method: Method, fault: Fault, passing = 0): void {
    this.armed.set(method, [...(this.armed.get(method) ?? []), ...Array<undefined>(passing).fill(undefined), fault]);
  }

  reset(): void {
    this.armed.clear();
    this.failed.length = 0;
  }
}
