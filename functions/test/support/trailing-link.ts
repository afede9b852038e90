import { freshNamespace, RtdbInstances } from "./rtdb";
import { parseHost, TcpProxy } from "./tcp-proxy";

/**
 * One fresh namespace reached two ways: `direct`, and `slow` through a proxy that a test stalls
 * (`proxy.stall()`), so that what an instance on `slow` listens to trails the database as far as
 * its link is held up. The stores a test makes are closed with it (`track`).
 */
export class TrailingLink {
  private readonly stores: { close(): void }[] = [];

  private constructor(
    readonly proxy: TcpProxy,
    readonly direct: RtdbInstances,
    readonly slow: RtdbInstances,
  ) {}

  static async start(prefix: string): Promise<TrailingLink> {
    const proxy = await TcpProxy.start(parseHost(process.env.FIREBASE_DATABASE_EMULATOR_HOST ?? ""));
    const namespace = freshNamespace(prefix);
    return new TrailingLink(proxy, new RtdbInstances(namespace), new RtdbInstances(namespace, proxy.address));
  }

  /** `stores`, closed with the link. */
  track<T extends { close(): void }>(...stores: T[]): T[] {
    this.stores.push(...stores);
    return stores;
  }

  async close(): Promise<void> {
    this.proxy.resume();
    for (const store of this.stores.splice(0)) store.close();
    await this.direct.close();
    await this.slow.close();
    await this.proxy.stop();
  }
}
